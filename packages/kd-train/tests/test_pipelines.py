import json

from kd_train.pipelines import main, mean_forward_kl


def test_kl_of_a_model_to_itself_is_zero(tiny_llama_dir):
    assert abs(mean_forward_kl(tiny_llama_dir, tiny_llama_dir, ["hello world"])) < 1e-6


def test_kl_between_different_models_is_positive(tiny_llama_dir, tiny_teacher_dir):
    assert mean_forward_kl(tiny_teacher_dir, tiny_llama_dir, ["hello world"]) > 0


def test_pipeline_writes_its_summary(tmp_path, capsys):
    assert main(["all", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["student_init_kl"] > 0
    assert "student_init_kl" in capsys.readouterr().out
