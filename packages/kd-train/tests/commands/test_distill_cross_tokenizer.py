"""``kd-train distill`` with a teacher that has its own tokenizer (``loss.cross_tokenizer``)."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from kd_train.cli import main
from kd_train.models import llama_config, save_random_llama, train_tokenizer
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

# The teacher's tokenizer is trained on other text, with another vocabulary size: the two
# cut the same completions differently and share only part of their vocabularies.
TEACHER_CORPUS = (
    "Pack my box with five dozen liquor jugs; the weather in Paris is mild.",
    '{"city": "Berlin", "unit": "fahrenheit"} call get_time and get_weather',
    "def mul(x, y):\n    return x * y  # héllo wörld\n",
    "0123456789 +-*/=()[]{}<>:;,.!?'\"_#@$%&|\\~^`",
)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    tok = train_tokenizer(TEACHER_CORPUS, vocab_size=420)
    path = tmp_path_factory.mktemp("cross-teacher")
    save_random_llama(path, llama_config(len(tok), hidden_size=48), tok, seed=3)
    # A random model is nearly uniform; a sharper head gives the student a shape to learn.
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    model.save_pretrained(path)
    return path


@pytest.fixture
def make_config(tmp_path, tiny_llama_dir, teacher_dir):
    write_jsonl(tmp_path / "train.jsonl", tool_call_records(24))

    def make(method="align", max_steps=6, **train):
        cfg = {
            "student": {"path": str(tiny_llama_dir)},
            "teacher": {"kind": "hf", "path": str(teacher_dir)},
            "data": {"train": "train.jsonl", "eval_fraction": 0.25, "max_length": 64},
            "loss": {"cross_tokenizer": {"method": method}, "weights": {"kd": 1.0, "ce": 0.1}},
            "optim": {"lr": 1e-2},
            "train": {
                "max_steps": max_steps,
                "batch_size": 4,
                "threads": 1,
                **{"eval_every": max_steps, **train},
            },
            "output_dir": f"run-{method}",
        }
        path = tmp_path / f"{method}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_tokenizers_really_differ(tiny_llama_dir, teacher_dir):
    from transformers import AutoTokenizer

    student = AutoTokenizer.from_pretrained(tiny_llama_dir)
    teacher = AutoTokenizer.from_pretrained(teacher_dir)
    text = tool_call_records(1)[0].completion
    assert len(student) != len(teacher)
    assert student.tokenize(text) != teacher.tokenize(text)


def test_without_cross_tokenizer_the_vocabulary_mismatch_is_refused(make_config, capsys):
    path = make_config()
    cfg = yaml.safe_load(path.read_text())
    del cfg["loss"]["cross_tokenizer"]
    path.write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(path), "--no-progress"]) != 0
    assert "vocabulary mismatch" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["uld", "align"])
def test_cross_tokenizer_distill_moves_the_student_towards_the_teacher(make_config, method):
    path = make_config(method, max_steps=16, eval_every=1)
    assert main(["distill", "--config", str(path), "--no-progress"]) == 0
    metrics = rows(path.parent / f"run-{method}")
    held_out = [r["eval_kd"] for r in metrics]  # the same held-out records after every step
    assert all(torch.isfinite(torch.tensor(held_out)))
    assert held_out[-1] < 0.9 * held_out[0], held_out


def test_cross_tokenizer_run_resumes_bit_exactly(make_config, tmp_path):
    whole = make_config("align", max_steps=4, checkpoint_every=2)
    assert main(["distill", "--config", str(whole), "--no-progress"]) == 0
    reference = load_file(str(tmp_path / "run-align" / "student" / "model.safetensors"))
    reference_rows = rows(tmp_path / "run-align")

    cut = make_config("align", max_steps=4, checkpoint_every=2)
    cfg = yaml.safe_load(cut.read_text())
    cfg["output_dir"] = "run-cut"
    cut.write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(cut), "--no-progress"]) == 0
    run = tmp_path / "run-cut"
    # Roll the run back to its step-2 checkpoint, as if it had been killed at step 3.
    shutil.rmtree(run / "checkpoints" / "step-00000004")
    shutil.rmtree(run / "student")
    assert main(["resume", str(run), "--no-progress"]) == 0
    resumed = load_file(str(run / "student" / "model.safetensors"))
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key
    assert [r["kd"] for r in rows(run)] == [r["kd"] for r in reference_rows]


def test_a_teacher_kind_without_its_own_model_is_refused_up_front(make_config, capsys):
    path = make_config()
    cfg = yaml.safe_load(path.read_text())
    cfg["teacher"] = {"kind": "records"}
    path.write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "loss.cross_tokenizer: teacher.kind 'records' is not supported" in err


def cache(tmp_path, teacher_dir, student_tokenizer, name="cache", k=16):
    out = tmp_path / name
    argv = ["cache-logits", "--teacher", str(teacher_dir), "--data", str(tmp_path / "train.jsonl"),
            "--out", str(out), "--k", str(k), "--max-length", "64", "--no-progress",
            "--student-tokenizer", str(student_tokenizer)]  # fmt: skip
    assert main(argv) == 0
    return out


def as_cached(path, cache_dir, out):
    cfg = yaml.safe_load(path.read_text())
    cfg["teacher"] = {"kind": "cached", "path": str(cache_dir)}
    cfg["output_dir"] = out
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_full_cross_tokenizer_cache_gives_the_live_teachers_loss(
    make_config, tmp_path, teacher_dir, tiny_llama_dir
):
    live = make_config("align", max_steps=1)
    assert main(["distill", "--config", str(live), "--no-progress"]) == 0
    every_id = AutoModelForCausalLM.from_pretrained(teacher_dir).config.vocab_size
    full = cache(tmp_path, teacher_dir, tiny_llama_dir, k=every_id)  # only fp16 rounding left
    cached = as_cached(make_config("align", max_steps=1), full, "run-cached")
    assert main(["distill", "--config", str(cached), "--no-progress"]) == 0
    first_live = rows(tmp_path / "run-align")[0]
    first_cached = rows(tmp_path / "run-cached")[0]
    assert first_cached["kd"] == pytest.approx(first_live["kd"], rel=1e-2)
    assert first_cached["eval_kd"] == pytest.approx(first_live["eval_kd"], rel=1e-2)


def test_a_cached_cross_tokenizer_run_moves_the_student_towards_the_teacher(
    make_config, tmp_path, teacher_dir, tiny_llama_dir
):
    top = cache(tmp_path, teacher_dir, tiny_llama_dir, k=16)
    path = as_cached(make_config("uld", max_steps=16, eval_every=1), top, "run-cached")
    assert main(["distill", "--config", str(path), "--no-progress"]) == 0
    held_out = [r["eval_kd"] for r in rows(tmp_path / "run-cached")]
    assert held_out[-1] < 0.9 * held_out[0], held_out


def test_a_cache_made_for_another_student_tokenizer_is_refused(
    make_config, tmp_path, teacher_dir, capsys
):
    other = cache(tmp_path, teacher_dir, teacher_dir, name="other")  # the teacher's own
    path = as_cached(make_config("align"), other, "run-other")
    assert main(["distill", "--config", str(path), "--no-progress"]) == 2
    assert "was made with another tokenizer" in capsys.readouterr().err


def test_a_same_tokenizer_cache_is_refused_for_a_cross_tokenizer_run(
    make_config, tmp_path, teacher_dir, tiny_llama_dir, capsys
):
    plain = tmp_path / "plain"
    argv = ["cache-logits", "--teacher", str(teacher_dir), "--data", str(tmp_path / "train.jsonl"),
            "--out", str(plain), "--k", "4", "--max-length", "64", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    path = as_cached(make_config("align"), plain, "run-plain")
    assert main(["distill", "--config", str(path), "--no-progress"]) == 2
    assert "another tokenizer" in capsys.readouterr().err


def test_an_http_teacher_with_its_own_tokenizer_serves_what_the_cache_holds(
    make_config, tmp_path, teacher_dir, tiny_llama_dir
):
    from kd_train.data import TokenizeConfig, collate, encode_records, read_records
    from kd_train.teachers.cached import CachedTeacher
    from kd_train.teachers.cross import CrossTokenizerTeacher, cached_pairs, pair_records
    from kd_train.teachers.fingerprint import dataset_fingerprint, tokenizer_fingerprint
    from kd_train.testing import LoopbackTeacherServer
    from kd_train.trainer.components import open_http_teacher
    from kd_train.trainer.teacher_config import HTTPSettings
    from transformers import AutoTokenizer

    make_config()  # writes train.jsonl
    data = tmp_path / "train.jsonl"
    student, teacher = (AutoTokenizer.from_pretrained(d) for d in (tiny_llama_dir, teacher_dir))
    records = list(read_records(data))[:6]
    examples = list(encode_records(records, student, TokenizeConfig(max_length=64)))
    store = cache(tmp_path, teacher_dir, tiny_llama_dir, k=8)
    cached = CachedTeacher.open(
        store,
        tokenizer_fingerprint=tokenizer_fingerprint(student),
        dataset_fingerprint=dataset_fingerprint(data),
    )
    paired, vocab_map = cached_pairs(cached, examples, records, student)
    from_cache = CrossTokenizerTeacher(cached, paired, 0, vocab_map)
    batch = collate(examples, int(student.pad_token_id))
    stored = from_cache(batch)
    with LoopbackTeacherServer(teacher_dir) as server:
        settings = HTTPSettings(base_url=server.base_url, model="tiny")
        http = open_http_teacher(settings, 8, teacher, tmp_path, {})
        pairs = pair_records(records, student, teacher, TokenizeConfig(max_length=64))
        live = CrossTokenizerTeacher(http, pairs, int(teacher.pad_token_id))(batch)
    assert stored.cross is not None
    assert live.cross is not None
    # The cache's stored teacher tokens are the endpoint's tokenisation of the same text.
    for row, example in enumerate(examples):
        n = pairs[example.record_id].teacher.input_ids.numel()
        assert torch.equal(live.cross.teacher_ids[row, :n], stored.cross.teacher_ids[row, :n])

    # Positions the endpoint could not score drop their groups, counted as unaligned.
    def firsts(index):
        return set(zip(index.first_row.tolist(), index.first_pos.tolist(), strict=True))

    kept, every = firsts(live.cross.teacher), firsts(stored.cross.teacher)
    assert kept <= every
    assert live.cross.unaligned - stored.cross.unaligned >= len(every - kept)
    # Where both serve a group, the distributions agree (top-8, tail spread on both sides).
    rows, pos = live.cross.teacher.first_row, live.cross.teacher.first_pos - 1
    # (Probabilities: the cache keeps log-probs in fp16, so a tiny tail differs in its logs.)
    served, cached_rows = live.logits[rows, pos].exp(), stored.logits[rows, pos].exp()
    assert torch.allclose(served, cached_rows, atol=1e-3)


def test_teacher_tokenizer_is_read_only_by_a_cross_tokenizer_http_teacher(make_config, capsys):
    path = make_config()
    cfg = yaml.safe_load(path.read_text())
    cfg["teacher"]["tokenizer"] = "somewhere"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["distill", "--config", str(path), "--no-progress"]) == 2
    assert "teacher.tokenizer: only read when teacher.kind is 'http'" in capsys.readouterr().err


def test_kd_train_distill_runs_an_http_teacher_with_its_own_tokenizer(
    make_config, tmp_path, teacher_dir, capsys
):
    from kd_train.testing import LoopbackTeacherServer

    path = make_config("uld", max_steps=2)
    cfg = yaml.safe_load(path.read_text())
    with LoopbackTeacherServer(teacher_dir) as server:
        cfg["teacher"] = {
            "kind": "http",
            "topk": 8,
            "http": {"base_url": server.base_url, "model": "tiny"},
        }
        path.write_text(yaml.safe_dump(cfg))
        assert main(["distill", "--config", str(path), "--no-progress"]) == 2
        assert "teacher.tokenizer: required for an http teacher" in capsys.readouterr().err
        cfg["teacher"]["tokenizer"] = str(teacher_dir)
        path.write_text(yaml.safe_dump(cfg))
        assert main(["distill", "--config", str(path), "--no-progress"]) == 0
    metrics = rows(tmp_path / "run-uld")
    assert [r["step"] for r in metrics] == [1, 2]
    assert all(0 < r["kd"] < 2 for r in metrics)  # ULD of two distributions is at most 2
    ckpt = sorted((tmp_path / "run-uld" / "checkpoints").iterdir())[-1]
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert "teacher.tokenizer" in json.dumps(manifest)
