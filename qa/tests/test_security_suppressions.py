"""The security gate holds against suppressions: each is a finding until the register says why.

The planted module is the audit's: eight unsafe calls, each with the named suppressions that
silence bandit and semgrep. Both scanners honour them, so only the suppression scan sees the
calls; with nothing in the register every line must fail the gate.
"""

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from qa.security import register, scan, suppressions
from qa.security.__main__ import check, cmd_accept
from qa.security.findings import Finding
from qa.security.suppressions import RULE_PREFIX, directives
from qa.security.suppressions import scan as scan_suppressions

PLANTED_CALLS = [
    f"    {call}  {nosec}# nosemgrep: {rule}"
    for call, nosec, rule in [
        ("a = pickle.loads(blob)", "# nosec B301  ", "pickle-load"),
        ("subprocess.run(cmd, shell=True, check=False)", "# nosec B602  ", "subprocess-shell-true"),
        ("os.system(cmd)", "# nosec B605  ", "subprocess-shell-true"),
        ("b = yaml.load(text, Loader=yaml.Loader)", "# nosec B506  ", "yaml-load-unsafe"),
        ("c = requests.get(url, verify=False, timeout=5)", "# nosec B501  ", "tls-verify-disabled"),
        ("d = httpx.Client(verify=False, timeout=5)", "# nosec B501  ", "tls-verify-disabled"),
        ("e = torch.load(path)", "# nosec B614  ", "torch-load-untrusted-path"),
        (
            "f = AutoModel.from_pretrained(path, trust_remote_code=True)",
            "# nosec B615  ",
            "trust-remote-code",
        ),
    ]
]
PLANTED = "\n".join(
    [
        '"""Eight unsafe calls, each silenced by name."""',
        "",
        "import os",
        "import pickle  # nosec B403",
        "import subprocess  # nosec B404",
        "",
        "import httpx",
        "import requests",
        "import torch",
        "import yaml",
        "from transformers import AutoModel",
        "",
        "",
        "def unsafe(blob: bytes, cmd: str, text: str, url: str, path: str) -> None:",
        '    """Every call here is unsafe."""',
        *PLANTED_CALLS,
        "",
    ]
)
FIRST_CALL = 16  # line of PLANTED_CALLS[0]


def _semgrep_or_skip() -> None:
    try:
        scan.semgrep_executable()
    except scan.ToolError as exc:
        pytest.skip(f"semgrep binary absent (set KD_SEMGREP or run `nox -s tests`): {exc}")


def _tree(tmp_path: Path, body: str) -> Path:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "planted.py").write_text(body)
    return tmp_path


def test_eight_named_suppressions_each_fail_the_gate_with_their_line(tmp_path: Path) -> None:
    _semgrep_or_skip()
    root = _tree(tmp_path, PLANTED)
    res = check(root, ["pkg"], [], root / "accepted.toml", run_rule_tests=False)
    assert not res.passed
    # the scanners honour the named suppressions: only the suppression scan reports the calls
    assert {f.rule.split(":")[0] for f in res.new} == {"suppress"}
    lines = {f.line for f in res.new}
    assert set(range(FIRST_CALL, FIRST_CALL + 8)) <= lines
    assert "pkg/planted.py:17: [suppress:nosec B602]" in "\n".join(f.describe() for f in res.new)


def test_the_same_calls_without_suppressions_are_caught_by_the_scanners(tmp_path: Path) -> None:
    _semgrep_or_skip()
    bare = "\n".join(line.split("  # nos")[0] for line in PLANTED.splitlines()) + "\n"
    root = _tree(tmp_path, bare)
    res = check(root, ["pkg"], [], root / "accepted.toml", run_rule_tests=False)
    semgrep = {f.line: f.rule for f in res.new if f.rule.startswith("semgrep:")}
    assert semgrep == {
        FIRST_CALL: "semgrep:pickle-load",
        FIRST_CALL + 1: "semgrep:subprocess-shell-true",
        FIRST_CALL + 2: "semgrep:subprocess-shell-true",
        FIRST_CALL + 3: "semgrep:yaml-load-unsafe",
        FIRST_CALL + 4: "semgrep:tls-verify-disabled",
        FIRST_CALL + 5: "semgrep:tls-verify-disabled",
        FIRST_CALL + 6: "semgrep:torch-load-untrusted-path",
        FIRST_CALL + 7: "semgrep:trust-remote-code",
    }


@pytest.mark.parametrize(
    ("comment", "expected"),
    [
        ("# nosec", ["nosec"]),
        ("# nosec B602, B603", ["nosec B602,B603"]),
        ("# nosemgrep", ["nosemgrep"]),
        ("# nosemgrep: pickle-load", ["nosemgrep: pickle-load"]),
        ("# noqa", ["noqa"]),
        ("# NOQA:S301", ["NOQA: S301"]),
        ("# noqa: E501, S603", ["noqa: E501,S603"]),
        ("# noqa: N812 - conventional alias", []),
        ("# ruff: noqa: S", ["ruff: noqa"]),
        ("# pragma: no cover - macOS only", ["pragma: no cover"]),
        ("# pragma: no branch", ["pragma: no branch"]),
        ("#pragma:no cover", ["pragma: no cover"]),
        ("# type: ignore", ["type: ignore"]),
        ("# type: ignore[arg-type]", ["type: ignore[arg-type]"]),
        ("# mypy: ignore-errors", ["mypy: ignore-errors"]),
        ("# pyright: ignore[reportCallIssue]", ["pyright: ignore[reportCallIssue]"]),
        ("# a comment that says why", []),
    ],
)
def test_every_kind_of_suppression_is_recognised(comment: str, expected: list[str]) -> None:
    assert [d for d, _ in directives(comment)] == expected


def test_docstrings_and_strings_that_quote_a_suppression_are_not_findings(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text(
        '"""Write # pragma: no cover to ..."""\nX = "# type: ignore"\ny = 1  # nosec B101\n'
    )
    found, errors = scan_suppressions(tmp_path, [f])
    assert errors == []
    assert [(x.line, x.rule) for x in found] == [(3, "suppress:nosec B101")]


def _accept_all(root: Path, findings: list[Finding], path: Path) -> None:
    for f in findings:
        register.accept(f, "a fixture of this test: the module is never imported", path)


def test_a_registered_suppression_passes_and_keeps_its_entry_when_lines_move(
    tmp_path: Path,
) -> None:
    body = '"""M."""\n\nimport random\n\nrng = random.Random(1)  # noqa: S311 - toy data\n'
    root = _tree(tmp_path, body)
    reg = root / "accepted.toml"
    found, _ = scan_suppressions(root, [root / "pkg" / "planted.py"])
    _accept_all(root, found, reg)
    assert check(root, ["pkg"], [], reg, run_rule_tests=False, scanners=False).passed
    (root / "pkg" / "planted.py").write_text(
        "# a new first line\n" + body.replace(" - toy", " - a")
    )
    assert check(root, ["pkg"], [], reg, run_rule_tests=False, scanners=False).passed


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda b: b.replace("S311", "S311,S324"), "the directive is widened"),
        (lambda b: b.replace("Random(1)", "Random(2)"), "the code under it changed"),
        (lambda b: b + "rng2 = random.Random(1)  # noqa: S311\n", "the line is copied"),
        (lambda b: b + "rng = random.Random(1)  # noqa: S311 - toy data\n", "an identical copy"),
    ],
)
def test_a_register_entry_never_covers_another_line(
    tmp_path: Path, change: Callable[[str], str], why: str
) -> None:
    body = '"""M."""\n\nimport random\n\nrng = random.Random(1)  # noqa: S311 - toy data\n'
    root = _tree(tmp_path, body)
    reg = root / "accepted.toml"
    found, _ = scan_suppressions(root, [root / "pkg" / "planted.py"])
    _accept_all(root, found, reg)
    (root / "pkg" / "planted.py").write_text(change(body))
    res = check(root, ["pkg"], [], reg, run_rule_tests=False, scanners=False)
    assert not res.passed, why
    assert res.new
    assert all(f.rule.startswith(RULE_PREFIX) for f in res.new)


def test_a_stale_entry_fails_the_gate_and_prune_semantics_drop_one_copy(tmp_path: Path) -> None:
    body = '"""M."""\n\nX = 1  # pragma: no cover\n'
    root = _tree(tmp_path, body)
    reg = root / "accepted.toml"
    found, _ = scan_suppressions(root, [root / "pkg" / "planted.py"])
    _accept_all(root, found + found, reg)  # two entries, one line
    res = check(root, ["pkg"], [], reg, run_rule_tests=False, scanners=False)
    assert not res.passed
    assert len(res.stale) == 1
    assert res.new == []


def test_accept_refuses_a_suppression_that_is_not_on_that_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _tree(tmp_path, '"""M."""\n\nX = 1  # pragma: no cover\n')
    code = cmd_accept("suppress:nosec B602", "pkg/planted.py:3", "a long enough reason", root)
    assert code == 2
    assert "has no '# nosec B602'" in capsys.readouterr().err


def test_the_local_rules_pass_their_own_tests() -> None:
    _semgrep_or_skip()
    ok, text = scan.rule_tests()
    assert ok, text
    rules = sorted(p.stem for p in scan.RULES.glob("*.yaml"))
    assert {"pickle_load", "tls_verify", "torch_artifact_load", "trust_remote_code"} <= set(rules)


@pytest.mark.parametrize(
    "plant",
    [
        ("tls_verify.py", "r5 = requests.get(url, timeout=5)", "# ruleid: tls-verify-disabled"),
        ("pickle_load.py", "n3 = np.load", "# ruleid: pickle-load"),
        ("torch_artifact_load.py", "k = torch.jit.load", "# ruleid: torch-load-untrusted-path"),
        ("trust_remote_code.py", "t = AutoTokenizer", "# ruleid: trust-remote-code"),
    ],
)
def test_a_rule_test_that_expects_a_missed_finding_fails(
    tmp_path: Path, plant: tuple[str, str, str]
) -> None:
    _semgrep_or_skip()
    rules = tmp_path / "rules"
    shutil.copytree(scan.RULES, rules)
    case, before, mark = plant
    path = rules / "tests" / case
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(before))
    lines[at - 1] = mark  # was "# ok: ...": the safe line is now claimed unsafe
    path.write_text("\n".join(lines) + "\n")
    ok, _ = scan.rule_tests(rules, rules / "tests")
    assert not ok


def test_a_rule_without_test_cases_fails(tmp_path: Path) -> None:
    _semgrep_or_skip()
    rules = tmp_path / "rules"
    shutil.copytree(scan.RULES, rules)
    (rules / "tests" / "tls_verify.py").unlink()
    ok, text = scan.rule_tests(rules, rules / "tests")
    assert not ok
    assert "tls_verify" in text


def test_semgrep_is_found_through_kd_semgrep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KD_SEMGREP", os.devnull)
    assert scan.semgrep_executable() == os.devnull


def test_a_bandit_file_in_a_scanned_folder_cannot_skip_tests(tmp_path: Path) -> None:
    root = _tree(tmp_path, '"""M."""\n\nimport pickle\n\nX = pickle.loads(b"")\n')
    (root / "pkg" / ".bandit").write_text("[bandit]\nskips: B301,B403\n")
    found, scanned = scan.bandit(root, ["pkg"], [], [])
    assert {"bandit:B301", "bandit:B403"} <= {f.rule for f in found}
    assert scanned == {"pkg/__init__.py", "pkg/planted.py"}


def test_a_semgrepignore_that_hides_a_file_fails_the_gate(tmp_path: Path) -> None:
    _semgrep_or_skip()
    root = _tree(tmp_path, '"""M."""\n\nimport pickle\n\nX = pickle.loads(b"")\n')
    # semgrep reads .semgrepignore (and .gitignore) inside a git work tree
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".semgrepignore").write_text("planted.py\n")
    res = check(root, ["pkg"], [], root / "accepted.toml", run_rule_tests=False)
    assert not res.passed
    assert any(
        "semgrep did not scan 1 file(s) in scope: ['pkg/planted.py']" in e for e in res.errors
    )


PYPROJECT = """
[tool.ruff.lint]
ignore = ["E501", "S301"]
[tool.ruff.lint.per-file-ignores]
"pkg/*" = ["D", "S"]
[tool.coverage.report]
exclude_also = ["def unsafe"]
[tool.coverage.run]
omit = ["pkg/planted.py"]
[[tool.mypy.overrides]]
module = "pkg.*"
ignore_errors = true
"""


def test_exemptions_in_configuration_are_findings_too(tmp_path: Path) -> None:
    root = _tree(tmp_path, '"""M."""\n')
    (root / "pyproject.toml").write_text(PYPROJECT)
    res = check(
        root, ["pkg"], ["pkg/gen"], root / "a.toml", ["B301"], run_rule_tests=False, scanners=False
    )
    assert not res.passed
    assert sorted(f.code for f in res.new) == [
        'bandit skip "B301"',
        'coverage exclude_also "def unsafe"',
        'coverage omit "pkg/planted.py"',
        'mypy ignore_errors "pkg.*"',
        'ruff ignore "S301"',
        'ruff per-file-ignores pkg/* "S"',
        'security exclude "pkg/gen"',
    ]
    _accept_all(root, res.new, root / "a.toml")
    again = check(
        root, ["pkg"], ["pkg/gen"], root / "a.toml", ["B301"], run_rule_tests=False, scanners=False
    )
    assert again.passed
    (root / "pyproject.toml").write_text(PYPROJECT.replace('"def unsafe"', '"def "'))
    widened = check(
        root, ["pkg"], ["pkg/gen"], root / "a.toml", ["B301"], run_rule_tests=False, scanners=False
    )
    assert [f.code for f in widened.new] == ['coverage exclude_also "def "']


def test_a_scope_without_a_package_source_fails(tmp_path: Path) -> None:
    root = _tree(tmp_path, '"""M."""\n')
    for folder in ("packages/a/src", "packages/b/src", "qa"):
        (root / folder).mkdir(parents=True)
    res = check(
        root, ["packages/a/src", "qa"], [], root / "a.toml", run_rule_tests=False, scanners=False
    )
    assert res.errors == ["scope: packages/b/src is not in [security] paths of qa/gates.toml"]
    assert not res.passed


def test_the_repository_scope_is_complete() -> None:
    from qa import gates

    sec = gates.security(gates.read())
    assert suppressions.missing_scope(gates.ROOT, list(sec.paths)) == []
    assert "noxfile.py" in sec.paths
