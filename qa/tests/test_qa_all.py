import sys
from pathlib import Path

import pytest

from qa import __main__ as qa_main
from qa import summary


def test_all_runs_every_gate_past_failures_and_fails_if_one_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(qa_main, "REPORTS", tmp_path)
    monkeypatch.setattr(summary, "REPORTS", tmp_path)
    writer = (
        "import sys; from pathlib import Path; from qa import summary; "
        "summary.write(summary.Summary(sys.argv[1], '42%', '40%', sys.argv[2] == '0'), "
        "Path(sys.argv[3])); raise SystemExit(int(sys.argv[2]))"
    )
    commands = {
        "alpha": [sys.executable, "-c", writer, "alpha", "1", str(tmp_path)],
        "beta": [sys.executable, "-c", writer, "beta", "0", str(tmp_path)],
        "gamma": [sys.executable, "-c", "raise SystemExit(3)"],
    }
    monkeypatch.setattr(qa_main, "gate_commands", lambda base, quick: commands)
    assert qa_main.main(["all"]) == 1
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[-3:]]
    assert rows == [
        ["alpha", "42%", "40%", "FAIL"],
        ["beta", "42%", "40%", "pass"],
        ["gamma", "no", "summary", "(exit", "3)", "(0", "s)", "-", "FAIL"],
    ]


def test_all_passes_when_every_gate_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qa_main, "REPORTS", tmp_path)
    monkeypatch.setattr(summary, "REPORTS", tmp_path)
    code = (
        "import sys; from pathlib import Path; from qa import summary; "
        f"summary.write(summary.Summary('one', '1', '1', True), Path({str(tmp_path)!r}))"
    )
    monkeypatch.setattr(
        qa_main, "gate_commands", lambda base, quick: {"one": [sys.executable, "-c", code]}
    )
    assert qa_main.main(["all"]) == 0


def test_the_sessions_and_qa_all_share_the_gate_commands() -> None:
    cmds = qa_main.gate_commands("origin/main", quick=True)
    assert cmds["mutation"][1:] == ["-m", "qa.mutation", "--quick", "--base", "origin/main"]
    assert cmds["coverage"][1:] == ["-m", "qa.coverage", "run", "--base", "origin/main"]
    noxfile = (Path(__file__).resolve().parents[2] / "noxfile.py").read_text()
    for gate in ("coverage", "mutation", "security", "docs"):
        assert f'"qa.{gate}"' in noxfile
