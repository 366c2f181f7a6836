import pytest
from kd_train.testing import LoopbackTeacherServer


@pytest.fixture
def server(tiny_teacher_dir):
    srv = LoopbackTeacherServer(tiny_teacher_dir).start()
    yield srv
    srv.stop()


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(f'{{"id": "p{i}", "prompt": "The quick {i}"}}\n' for i in range(6)))
    return path
