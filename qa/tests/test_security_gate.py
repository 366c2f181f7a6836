import json
from pathlib import Path

import pytest

from qa.security import register
from qa.security.__main__ import check
from qa.security.findings import Finding, blanket_suppressions, parse_bandit, parse_semgrep

PLANTED = '''"""A module with a planted unsafe load."""

import torch


def restore(path: str) -> object:
    """Load a checkpoint."""
    return torch.load(path)
'''


def _package(tmp_path: Path, body: str) -> Path:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "ckpt.py").write_text(body)
    return tmp_path


def test_planted_torch_load_is_caught_by_semgrep_and_fails_the_gate(tmp_path: Path) -> None:
    root = _package(tmp_path, PLANTED)
    res = check(root, ["pkg"], [], root / "accepted.toml", run_rule_tests=False)
    assert sorted((f.rule, f.file, f.line) for f in res.new) == [
        ("bandit:B614", "pkg/ckpt.py", 8),
        ("semgrep:torch-load-untrusted-path", "pkg/ckpt.py", 8),
    ]
    assert not res.passed


def test_an_accepted_finding_passes_and_survives_lines_added_above(tmp_path: Path) -> None:
    root = _package(tmp_path, PLANTED)
    line = PLANTED.splitlines()[7]
    for rule in ("semgrep:torch-load-untrusted-path", "bandit:B614"):
        finding = Finding(rule, "pkg/ckpt.py", 8, line, "")
        register.accept(
            finding, "a fixture of this test: the file is never loaded", root / "a.toml"
        )
    (root / "pkg" / "ckpt.py").write_text("# a new first line\n" + PLANTED)
    res = check(root, ["pkg"], [], root / "a.toml", run_rule_tests=False)
    assert res.new == []
    assert res.passed


def test_an_accepted_entry_without_justification_fails(tmp_path: Path) -> None:
    path = tmp_path / "accepted.toml"
    path.write_text('[[accepted]]\nrule = "bandit:B603"\nfile = "a.py"\nfingerprint = "0a"\n')
    assert register.problems(register.load(path)) == [
        "accepted.toml entry 1 (bandit:B603 a.py 0a): no justification "
        "(`why`, at least 20 characters)"
    ]
    root = _package(tmp_path, '"""Nothing to find."""\n')
    res = check(root, ["pkg"], [], path, run_rule_tests=False)
    assert not res.passed
    assert res.stale == register.load(path)


def test_accept_refuses_an_empty_justification(tmp_path: Path) -> None:
    finding = Finding("bandit:B603", "a.py", 1, "x", "")
    with pytest.raises(ValueError, match="justification"):
        register.accept(finding, "ok", tmp_path / "a.toml")


def test_blanket_suppressions_fail_but_ones_naming_a_rule_do_not(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(
        '"""Docs may say # nosec freely."""\n'
        "import subprocess  # nosec\n"
        "import pickle  # nosec B403\n"
        "x = 1  # nosemgrep\n"
        "y = 2  # nosemgrep: pickle-load\n"
    )
    assert blanket_suppressions(tmp_path, [f]) == [
        "m.py:2: # nosec",
        "m.py:4: # nosemgrep",
    ]


def test_fingerprint_ignores_line_numbers_and_spacing_but_not_code() -> None:
    a = Finding("bandit:B602", "x.py", 1, "run(c,  shell=True)", "")
    assert (
        a.fingerprint == Finding("bandit:B602", "x.py", 50, "  run(c, shell=True)", "").fingerprint
    )
    assert a.fingerprint != Finding("bandit:B602", "x.py", 1, "run(d, shell=True)", "").fingerprint


def test_reports_are_parsed_with_paths_relative_to_the_root(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("import pickle\npickle.loads(b)\n")
    bandit = {
        "results": [
            {
                "filename": str(tmp_path / "a.py"),
                "line_number": 2,
                "test_id": "B301",
                "issue_text": "pickle",
            }
        ]
    }
    semgrep = {
        "results": [
            {
                "path": "a.py",
                "start": {"line": 2},
                "check_id": "qa.security.semgrep.pickle-load",
                "extra": {"message": "Unpickling\n runs code"},
            }
        ]
    }
    assert parse_bandit(bandit, tmp_path) == [
        Finding("bandit:B301", "a.py", 2, "pickle.loads(b)", "pickle")
    ]
    assert parse_semgrep(json.loads(json.dumps(semgrep)), tmp_path) == [
        Finding("semgrep:pickle-load", "a.py", 2, "pickle.loads(b)", "Unpickling runs code")
    ]


def test_rewrite_keeps_the_header_and_the_fingerprints(tmp_path: Path) -> None:
    path = tmp_path / "accepted.toml"
    path.write_text("# the register\n")
    a = Finding("bandit:B603", "a.py", 3, "run(['git'])  # why", "")
    b = Finding("bandit:B607", "b.py", 9, "run(['ls'])", "")
    register.accept(a, "a fixed argument list, never a shell", path)
    register.accept(b, "a fixed argument list, never a shell", path)
    entries = register.load(path)
    register.rewrite(entries[1:], path)
    assert path.read_text().startswith("# the register\n")
    assert register.load(path) == entries[1:]
    assert [e.key for e in entries] == [a.key, b.key]
