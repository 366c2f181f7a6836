"""The review's hostile inputs, one test each: a one-line refusal, status 2, nothing written.

The fuzz (test_cli_fuzz.py) draws such inputs at random; these pin the listed examples:
a non-UTF-8 or empty prompts file for ``generate``, ``--budget nan``, ``--out`` pointing at
a directory, ``output_dir`` pointing at a file, a 50 MB record, an empty file given to
``validate-data``, out-of-range numbers that used to reach numpy or torch.
"""

from __future__ import annotations

import contextlib
import io
import json
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from kd_train.cliutil import EXIT_INPUT_ERROR

pytestmark = pytest.mark.xdist_group("cli-fuzz")

RECORD = '{"schema_version": 1, "id": "%s", "prompt": "hi ", "completion": "yo"}\n'


def run(main: Callable[[Sequence[str]], int], argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = main(argv)
        except SystemExit as exc:
            status = int(exc.code or 0)
    return status, err.getvalue()


def refused(main: Callable[[Sequence[str]], int], argv: list[str], *needles: str) -> str:
    """Assert ``argv`` exits 2 with one error line holding every needle; return that line."""
    status, err = run(main, [str(a) for a in argv])
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert status == EXIT_INPUT_ERROR, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], err
    return lines[0]


def kd_train_main(argv: Sequence[str]) -> int:
    from kd_train.cli import main

    return main(argv)


def kd_eval_main(argv: Sequence[str]) -> int:
    from kd_eval.cli import main

    return main(argv)


def kd_convert_main(argv: Sequence[str]) -> int:
    from kd_convert.cli import main

    return main(argv)


def generate_argv(tmp_path: Path, prompts: Path, out: Path, *extra: str) -> list[str]:
    return [
        "generate",
        *("--prompts", str(prompts), "--out", str(out)),
        *("--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--max-attempts", "1"),
        *extra,
    ]


def test_a_non_utf8_prompts_file_is_refused_naming_file_and_line(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b'{"id": "a", "prompt": "ok"}\n{"id": "b", "prompt": "caf\xe9"}\n')
    out = tmp_path / "out" / "gen.jsonl"
    refused(kd_train_main, generate_argv(tmp_path, prompts, out), f"{prompts}:2:", "UTF-8")
    assert not (tmp_path / "out").exists()


def test_an_empty_prompts_file_is_refused(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b"\n")
    refused(kd_train_main, generate_argv(tmp_path, prompts, tmp_path / "g.jsonl"), "no prompt")


@pytest.mark.parametrize("flag", ["--budget", "--temperature", "--timeout", "--rpm"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_generate_numbers_are_refused(tmp_path, flag, value):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "ok"}\n')
    argv = generate_argv(tmp_path, prompts, tmp_path / "g.jsonl", f"{flag}={value}")
    refused(kd_train_main, argv, "finite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl"]


def test_generate_out_pointing_at_a_directory_is_refused_before_anything_is_written(tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "ok"}\n')
    (tmp_path / "outdir").mkdir()
    refused(kd_train_main, generate_argv(tmp_path, prompts, tmp_path / "outdir"), "directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outdir", "prompts.jsonl"]
    assert not any((tmp_path / "outdir").iterdir())


@pytest.mark.parametrize("out", ["another-run.jsonl", "a-file/gen.jsonl"])
def test_generate_refuses_another_runs_output_before_the_store_is_made(tmp_path, out):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "ok"}\n')
    (tmp_path / "another-run.jsonl").write_bytes(b'{"from": "another run"}\npartial')
    (tmp_path / "a-file").write_text("x")
    store = f"sqlite:///{tmp_path}/store.sqlite"
    argv = generate_argv(tmp_path, prompts, tmp_path / out, "--store", store)
    refused(kd_train_main, argv, out.split("/")[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a-file",
        "another-run.jsonl",
        "prompts.jsonl",
    ]
    assert (tmp_path / "another-run.jsonl").read_bytes() == b'{"from": "another run"}\npartial'


def test_distill_output_dir_pointing_at_a_file_is_refused(tmp_path, tiny_llama_dir):
    data = tmp_path / "train.jsonl"
    data.write_text(RECORD % "a" + RECORD.replace("hi", "ho") % "b")
    (tmp_path / "taken").write_text("not a directory\n")
    config = {
        "student": {"path": str(tiny_llama_dir)},
        "teacher": {"kind": "none"},
        "loss": {"weights": {"ce": 1.0}},
        "data": {"train": str(data), "eval_fraction": 0.0, "max_length": 16},
        "train": {"max_steps": 1, "batch_size": 2, "threads": 1},
        "output_dir": str(tmp_path / "taken"),
    }
    (tmp_path / "run.json").write_text(json.dumps(config))
    before = sorted(p.name for p in tmp_path.iterdir())
    refused(
        kd_train_main,
        ["distill", "--config", tmp_path / "run.json", "--no-progress"],
        str(tmp_path / "taken"),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "taken").read_text() == "not a directory\n"


def big_record_file(path: Path, size: int) -> Path:
    with path.open("wb") as out:
        out.write((RECORD % "a").encode())
        out.write((RECORD.replace('"yo"', '"' + "y" * size + '"') % "b").encode())
    return path


def peak_while_refusing(argv: list[object], *needles: str) -> tuple[str, int]:
    tracemalloc.start()
    try:
        line = refused(kd_train_main, argv, *needles)
        return line, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_50_mb_record_is_refused_in_one_line_without_holding_it(tmp_path):
    path = big_record_file(tmp_path / "train.jsonl", 50 * 1024 * 1024)
    line, peak = peak_while_refusing(["validate-data", path], f"{path}:2:", "over the limit")
    assert "52,428,8" in line  # the size, counted while skipping
    # readline holds up to about twice the 16 MiB limit at once, never the 50 MB line
    assert peak < 40 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    # memory follows the limit, not the record
    argv = ["validate-data", path, "--max-record-bytes", "1000000"]
    _, peak = peak_while_refusing(argv, f"{path}:2:", "over the limit of 1,000,000 bytes")
    assert peak < 4 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


def test_the_record_limit_is_configurable_and_quarantines_the_row(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(RECORD % "a" + RECORD.replace("yo", "y" * 200) % "b")
    refused(kd_train_main, ["validate-data", path, "--max-record-bytes", "100"], f"{path}:2:")
    quarantine = tmp_path / "q.jsonl"
    argv = ["validate-data", path, "--max-record-bytes", "100", "--mode", "quarantine"]
    status, _ = run(kd_train_main, [str(a) for a in [*argv, "--quarantine", quarantine]])
    assert status == 0
    entry = json.loads(quarantine.read_text())
    assert (entry["line"], entry["code"], entry["raw"], entry["raw_base64"]) == (
        2,
        "record_too_large",
        None,
        None,
    )


@pytest.mark.parametrize("mode", ["strict", "quarantine"])
def test_an_empty_file_is_not_a_valid_dataset(tmp_path, mode):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    refused(kd_train_main, ["validate-data", path, "--mode", mode], f"{path}:1:", "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl"]  # no quarantine file


@pytest.mark.parametrize(
    "extra",
    [["--seed", "-1"], ["--top-k", "-3"], ["--top-k", "0"], ["--resamples", "nan"]],
)
def test_kd_eval_numbers_out_of_range_stop_at_the_parser(tmp_path, tiny_llama_dir, extra):
    data = tmp_path / "d.jsonl"
    data.write_text(RECORD % "a")
    argv = ["fidelity", "--teacher", tiny_llama_dir, "--student", tiny_llama_dir, "--data", data]
    refused(kd_eval_main, [*argv, *extra], extra[0])


def test_kd_eval_out_pointing_at_a_directory_is_refused(tmp_path):
    refused(kd_eval_main, ["curves", tmp_path / "r.json", "--out", tmp_path], "is a directory")


def test_kd_convert_export_into_a_file_is_refused(tmp_path, tiny_llama_dir):
    target = tmp_path / "a-file"
    target.write_text("x")
    refused(kd_convert_main, ["export", "--format", "onnx", tiny_llama_dir, target], "is a file")


def test_cache_logits_refuses_a_device_torch_does_not_know(tmp_path, tiny_llama_dir):
    data = tmp_path / "d.jsonl"
    data.write_text(RECORD % "a")
    argv = ["cache-logits", "--teacher", tiny_llama_dir, "--data", data, "--out", tmp_path / "c"]
    refused(kd_train_main, [*argv, "--k", "2", "--device", "x"], "--device 'x'")
    assert not (tmp_path / "c").exists()


def test_a_usage_error_is_one_line(tmp_path):
    line = refused(kd_train_main, ["validate-data", tmp_path, "--vocab-size", "x"], "--vocab-size")
    assert line.endswith("(see kd-train validate-data --help)")
