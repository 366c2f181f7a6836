"""No input ends in a traceback: a property-based fuzz of the three command lines.

For every subcommand of ``kd-train``, ``kd-eval`` and ``kd-convert``, hypothesis draws an
argument vector from the real parser's own options (values from pools of hostile ones:
non-finite and negative numbers, paths to missing files, directories where files are
expected and the reverse, non-UTF-8 and empty files, an existing output of another run)
and the contents of the input files (KD records, broken JSON, non-UTF-8 bytes, run and
generate configs with one value spoiled). The CLI's ``main`` runs in-process, and:

* the exit status is one of :data:`kd_train.cliutil.EXIT_CODES` (0, 1, 2, 3);
* standard error holds no traceback, and a status 2 comes with a one-line message;
* nothing outside the example's output directory changed (a snapshot of the input tree,
  the shared tiny model included), and after a status 2 nothing inside it changed either
  (bad input is refused before anything is written).

The bounded run (a few derandomized examples per command line) is part of the normal
suite; the long one is marked ``slow``. Two subprocess smoke cases check the installed
console scripts the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kd_train.cliutil import EXIT_CODES

pytestmark = pytest.mark.xdist_group("cli-fuzz")

CLIS = ("kd-train", "kd-eval", "kd-convert")

# Arguments that name something the command writes; everything else is read.
OUTPUT_DESTS = {"out", "output_dir", "save_baseline", "png_dir", "quarantine", "out_dir"}
READ_ONLY = {("kd-convert", "verify", "out_dir")}

NUMBERS = ["0", "1", "-1", "2", "3", "nan", "inf", "-inf", "1e308", "0.5", "-0.0", "1e999"]
TEXTS = ["", "x", "8ball", "--", "a,b", "1,,2", "\udcff", "http://127.0.0.1:9/v1", "ünï"]
INPUTS = [
    "in/data.jsonl",
    "in/config.yaml",
    "in/empty.jsonl",
    "in/latin1.txt",
    "in/report.json",
    "in/a_dir",
    "in/missing.jsonl",
    "in/broken_model",
    "MODEL",
]
OUTPUTS = ["out/new.json", "out/newdir", "out/existing.json", "out/existing_dir", "in/a_dir"]


def main_of(cli: str) -> Callable[[Sequence[str]], int]:
    """The in-process entry point of ``cli``."""
    if cli == "kd-train":
        from kd_train.cli import main
    elif cli == "kd-eval":
        from kd_eval.cli import main
    else:
        from kd_convert.cli import main
    return main


def parser_of(cli: str) -> argparse.ArgumentParser:
    """The real parser of ``cli``."""
    module = {"kd-train": "kd_train", "kd-eval": "kd_eval", "kd-convert": "kd_convert"}[cli]
    make: Callable[[], argparse.ArgumentParser] = __import__(
        f"{module}.cli", fromlist=["make_parser"]
    ).make_parser
    return make()


def subcommands(cli: str) -> dict[str, argparse.ArgumentParser]:
    """``name -> parser`` of every subcommand of ``cli``."""
    for action in parser_of(cli)._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError(f"{cli} has no subcommands")


ALL = [(cli, name) for cli in CLIS for name in sorted(subcommands(cli))]


# ---- input files ---------------------------------------------------------------------


def record(i: int, **extra: Any) -> str:
    body = {"schema_version": 1, "id": f"r{i}", "prompt": f"p{i} ", "completion": f"c{i}"}
    return json.dumps({**body, **extra})


VALID_DATA = (record(0) + "\n" + record(1) + "\n" + record(2) + "\n").encode()
DATA = st.one_of(
    st.just(VALID_DATA),
    st.sampled_from(
        [
            b"",
            b"\n",
            b"\xff\xfe{}\n",
            (record(0) + "\n" + record(0) + "\n").encode(),  # duplicate id
            (record(0) + "\n" + record(0).replace('"r0"', '"r9"') + "\n").encode(),  # same tokens
            (record(0) + "\nnot json\n").encode(),
            record(0, teacher_topk={"ids": [[1]], "logprobs": [[float("nan")]]}).encode(),
            b'{"schema_version": 1}\n',
            b"[1, 2]\n",
            b'{"id": "p0", "prompt": "hi"}\n',
            (record(0) + "\n").encode() * 2 + b"{" + b" " * 5000 + b"}\n",
        ]
    ),
)


def run_config(root: str, model: str) -> dict[str, Any]:
    return {
        "student": {"path": model},
        "teacher": {"kind": "none"},
        "loss": {"weights": {"ce": 1.0}},
        "data": {"train": f"{root}/in/data.jsonl", "eval_fraction": 0.0, "max_length": 32},
        "train": {"max_steps": 1, "batch_size": 2, "threads": 1},
        "output_dir": f"{root}/out/run",
    }


def generate_config(root: str) -> dict[str, Any]:
    return {
        "prompts": f"{root}/in/data.jsonl",
        "out": f"{root}/out/gen.jsonl",
        "base_url": "http://127.0.0.1:9/v1",
        "model": "m",
        "retry": {"max_attempts": 1, "base_delay": 0.0},
    }


SPOILERS = [float("nan"), float("inf"), -1, 0, "x", None, [], {}, 1e308, "out/existing.json"]


@st.composite
def config_text(draw: st.DrawFn, root: str, model: str, sub: str) -> bytes:
    usual = {"distill": "run", "resume": "run", "generate": "generate"}.get(sub, "junk")
    kind = draw(st.sampled_from([usual, usual, "run", "generate", "junk"]))
    if kind == "junk":
        return draw(st.sampled_from([b"", b"\xff\xfe", b"- a\n- b\n", b"a: [", b"{}", b"x: 1"]))
    config = run_config(root, model) if kind == "run" else generate_config(root)
    keys = [(k,) for k in config] + [
        (k, sub) for k, v in config.items() if isinstance(v, dict) for sub in v
    ]
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        path = draw(st.sampled_from(keys))
        value = draw(st.sampled_from(SPOILERS))
        if isinstance(value, str) and value.startswith("out/"):
            value = f"{root}/{value}"
        target = config
        for key in path[:-1]:
            target = target[key] if isinstance(target.get(key), dict) else {}
        target[path[-1]] = value
    # JSON is YAML: nan and inf are written as YAML's .nan / .inf by the loader's rules.
    text = json.dumps(config).replace("NaN", ".nan").replace("Infinity", ".inf")
    return text.encode()


REPORTS = st.sampled_from(
    [b"{}", b"[]", b"not json", b"\xff", b'{"schema_version": 1, "name": "x"}', b""]
)


# ---- argv ------------------------------------------------------------------------------


def is_output(cli: str, sub: str, action: argparse.Action) -> bool:
    return action.dest in OUTPUT_DESTS and (cli, sub, action.dest) not in READ_ONLY


# A value each option accepts, by its destination: most draws use it, so that the command
# gets past its parser and meets the hostile files and values further in.
GOOD = {
    "config": ["in/config.yaml"],
    "data": ["in/data.jsonl"],
    "file": ["in/data.jsonl"],
    "prompts": ["in/data.jsonl"],
    "teacher": ["MODEL", "in/broken_model"],
    "student": ["MODEL", "in/broken_model"],
    "model": ["MODEL", "in/broken_model", "in/report.json"],
    "model_dir": ["MODEL", "in/broken_model"],
    "tokenizer": ["MODEL", "in/a_dir"],
    "labels": ["8ball", "in/latin1.txt", "in/data.jsonl"],
    "inputs": ["in/report.json"],
    "reports": ["in/report.json"],
    "before": ["in/report.json"],
    "fixtures": ["in/report.json", "in/data.jsonl"],
    "targets": ["in/config.yaml", "in/latin1.txt"],
    "baseline": ["in/report.json"],
    "run_dir": ["out/prev_run", "out/existing_dir", "in/a_dir", "MODEL"],
    "lengths": ["8,16", "8"],
    "seq_lens": ["8"],
    "batch_sizes": ["1"],
    "store": ["STORE"],
    "base_url": ["http://127.0.0.1:9/v1"],
    "out_dir": ["out/newdir", "out/existing_dir", "MODEL"],
}


def expects_number(action: argparse.Action) -> str | None:
    """``"int"`` or ``"float"`` when ``action`` takes a number, else ``None``."""
    kind = action.type if action.type in (int, float) else None
    name = getattr(action.type, "__name__", "")
    if kind is int or name.endswith("int"):
        return "int"
    if kind is float or name.endswith("float"):
        return "float"
    return None


@st.composite
def value_for(draw: st.DrawFn, cli: str, sub: str, action: argparse.Action) -> list[str]:
    """One or two values for ``action``: mostly one it accepts, else a hostile one."""
    number = expects_number(action)
    if action.choices is not None:
        good: list[str] = sorted(map(str, action.choices))
    elif action.dest in GOOD and not (is_output(cli, sub, action) and action.dest != "out_dir"):
        good = GOOD[action.dest]
    elif is_output(cli, sub, action):
        good = OUTPUTS[:2]
    elif number is not None:
        good = ["1", "2"] if number == "int" else ["0.5", "1"]
    else:
        good = ["x"]
    if is_output(cli, sub, action):
        bad = st.sampled_from(OUTPUTS)
    elif number is not None:
        bad = st.sampled_from(NUMBERS + TEXTS)
    else:
        bad = st.sampled_from(INPUTS + NUMBERS + TEXTS)
    pool = st.sampled_from(good) if draw(st.integers(0, 9)) < 7 else bad
    count = 2 if action.nargs in ("+", "*") and draw(st.booleans()) else 1
    return [draw(pool) for _ in range(count)]


@st.composite
def argv_for(draw: st.DrawFn, cli: str, sub: str) -> list[str]:
    """An argument vector for ``cli sub`` drawn from its parser's actions."""
    parser = subcommands(cli)[sub]
    argv = [sub]
    positionals: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:
            if draw(st.integers(0, 9)) > 0:  # now and then one is missing
                positionals += draw(value_for(cli, sub, action))
            continue
        wanted = draw(st.integers(0, 9)) < (9 if action.required else 2)
        if not wanted:
            continue
        flag = draw(st.sampled_from(action.option_strings))
        if action.nargs == 0:
            argv.append(flag)
        else:
            argv += [flag, *draw(value_for(cli, sub, action))]
    return argv + positionals


# Keep the slow paths short (a refused endpoint is asked once; a benchmark times twice).
BOUNDS = {
    ("kd-train", "generate"): ["--max-attempts", "1", "--retry-base-delay", "0", "--timeout", "2"],
    ("kd-eval", "bench"): ["--warmup", "0", "--repeats", "2", "--seq-lens", "8"],
    ("kd-eval", "drafter"): ["--max-new-tokens", "4", "--resamples", "20"],
    ("kd-eval", "fidelity"): ["--resamples", "20"],
    ("kd-eval", "quantization"): ["--resamples", "20", "--runs", "1", "--length", "8"],
    ("kd-eval", "toolcalls"): ["--max-new-tokens", "4"],
}


# ---- the world of one example ------------------------------------------------------------


def snapshot(*roots: Path, skip: Path | None = None) -> dict[str, str]:
    """``path -> digest`` of every file and directory under ``roots`` (``skip`` left out)."""
    seen: dict[str, str] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            if skip is not None and (here == skip or skip in here.parents):
                dirnames[:] = []
                continue
            seen[str(here)] = "dir"
            for name in filenames:
                path = here / name
                seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


def build_world(root: Path, data: bytes, config: bytes, report: bytes) -> None:
    (root / "in" / "a_dir").mkdir(parents=True)
    (root / "in" / "broken_model").mkdir()
    (root / "in" / "broken_model" / "config.json").write_text('{"model_type": "nope"')
    (root / "in" / "data.jsonl").write_bytes(data)
    (root / "in" / "config.yaml").write_bytes(config)
    (root / "in" / "empty.jsonl").write_bytes(b"")
    (root / "in" / "latin1.txt").write_bytes("caf\xe9 na\xefve\n".encode("latin-1"))
    (root / "in" / "report.json").write_bytes(report)
    (root / "out" / "existing_dir").mkdir(parents=True)
    (root / "out" / "existing.json").write_text('{"from": "another run"}\n')
    (root / "out" / "prev_run").mkdir()  # a run directory with a config and no checkpoint
    (root / "out" / "prev_run" / "config.json").write_text(json.dumps(run_config(str(root), "")))


def resolve(argv: list[str], root: Path, model: Path) -> list[str]:
    """Make the pool's relative paths absolute under ``root`` (and ``MODEL`` the model)."""
    out = []
    for arg in argv:
        if arg == "MODEL":
            out.append(str(model))
        elif arg == "STORE":
            out.append(f"sqlite:///{root}/out/store.sqlite")
        elif arg.startswith(("in/", "out/")):
            out.append(str(root / arg))
        else:
            out.append(arg)
    return out


@contextlib.contextmanager
def captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


def run_in_process(cli: str, argv: list[str]) -> tuple[int, str]:
    """Run ``cli argv`` in this process; return ``(status, stderr)``."""
    with captured() as (_, err):
        try:
            status = main_of(cli)(argv)
        except SystemExit as exc:  # argparse: usage errors and --help / --version
            status = exc.code if isinstance(exc.code, int) else 2
    return status, err.getvalue()


def check_outcome(cli: str, argv: list[str], status: int, stderr: str) -> None:
    shown = f"{cli} {' '.join(argv)}"
    assert status in EXIT_CODES, f"{shown}: exit status {status}\n{stderr}"
    assert "Traceback" not in stderr, f"{shown}: traceback\n{stderr}"
    if status == 2:
        errors = [line for line in stderr.splitlines() if ": error: " in line]
        assert len(errors) == 1, f"{shown}: expected one error line\n{stderr}"


@pytest.fixture
def model(tiny_llama_dir: Path) -> Path:
    """The session's tiny model (hashed before and after each example: it must not change)."""
    return Path(tiny_llama_dir)


def differences(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Paths added, removed or changed between two :func:`snapshot` results."""
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def fuzz_one(cli: str, sub: str, model: Path, draw: st.DrawFn) -> None:
    with tempfile.TemporaryDirectory(prefix="kd-fuzz-") as tmp:
        root = Path(tmp)
        build_world(
            root,
            draw(DATA),
            draw(config_text(str(root), str(model), sub)),
            draw(REPORTS),
        )
        argv = resolve(
            [sub, *BOUNDS.get((cli, sub), []), *draw(argv_for(cli, sub))[1:]], root, model
        )
        inputs = snapshot(root, model, skip=root / "out")
        outputs = snapshot(root / "out")
        cwd = os.getcwd()
        os.chdir(root / "out")  # a default relative output lands in the output directory
        try:
            status, stderr = run_in_process(cli, argv)
        finally:
            os.chdir(cwd)
        shown = f"{cli} {' '.join(argv)}"
        check_outcome(cli, argv, status, stderr)
        changed = differences(inputs, snapshot(root, model, skip=root / "out"))
        # validate-data's default quarantine file sits next to its input, by design.
        quarantined = {p for p in changed if p.endswith(".quarantine.jsonl") and p not in inputs}
        assert changed <= quarantined, f"{shown} changed {sorted(changed - quarantined)}"
        if status == 2:  # refused before writing anything: no partial output either
            written = differences(outputs, snapshot(root / "out")) | changed
            assert not written, f"{shown} exited 2 and wrote {sorted(written)}"


BOUNDED = settings(
    max_examples=4,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize(("cli", "sub"), ALL, ids=[f"{c}-{s}" for c, s in ALL])
@BOUNDED
@given(data=st.data())
def test_no_input_ends_in_a_traceback(cli: str, sub: str, model: Path, data: st.DataObject) -> None:
    fuzz_one(cli, sub, model, data.draw)


@pytest.mark.slow
@pytest.mark.parametrize(("cli", "sub"), ALL, ids=[f"{c}-{s}" for c, s in ALL])
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_no_input_ends_in_a_traceback_long(
    cli: str, sub: str, model: Path, data: st.DataObject
) -> None:
    fuzz_one(cli, sub, model, data.draw)


def test_every_subcommand_is_fuzzed() -> None:
    """A new subcommand joins the fuzz by itself (the list comes from the parsers)."""
    assert ("kd-train", "validate-data") in ALL
    assert ("kd-eval", "bench") in ALL
    assert ("kd-convert", "verify") in ALL


@pytest.mark.parametrize(
    ("status", "stderr"),
    [
        (4, ""),
        (1, "Traceback (most recent call last):\n  ...\nValueError: x\n"),
        (2, "kd-train: error: one\nkd-train: error: two\n"),
        (2, "no error line at all\n"),
    ],
)
def test_the_fuzz_catches_each_planted_fault(status: int, stderr: str) -> None:
    with pytest.raises(AssertionError):
        check_outcome("kd-train", ["x"], status, stderr)


def test_a_change_outside_the_output_directory_is_seen(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "data.jsonl").write_text("a\n")
    before = snapshot(tmp_path)
    (tmp_path / "in" / "data.jsonl").write_text("b\n")
    (tmp_path / "in" / "new").mkdir()
    assert differences(before, snapshot(tmp_path)) == {
        str(tmp_path / "in" / "data.jsonl"),
        str(tmp_path / "in" / "new"),
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["kd-train", "validate-data", "in/latin1.txt"],
        ["kd-eval", "report", "in/report.json", "--out-dir", "in/latin1.txt"],
    ],
)
def test_console_scripts_refuse_bad_input_in_one_line(tmp_path: Path, argv: list[str]) -> None:
    build_world(tmp_path, b"", b"", b"\xff")
    script = Path(sys.executable).with_name(argv[0])
    done = subprocess.run(
        [str(script), *resolve(argv[1:], tmp_path, tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()  # progress lines may come first
    assert [line for line in lines if ": error: " in line] == lines[-1:], done.stderr
