import pytest
from kd_eval.bench.targets import check_targets, default_targets_path, load_targets
from kd_eval.errors import ConfigError


def _bench(p95, decode):
    return {
        "configs": [
            {
                "seq_len": 16,
                "batch_size": 1,
                "latency_ms": {"p95": p95},
                "decode_tokens_per_s": decode,
            }
        ]
    }


def _targets(tmp_path, text):
    path = tmp_path / "targets.toml"
    path.write_text(text)
    return load_targets(path)


def test_the_shipped_example_defines_worker_judge_and_drafter():
    targets = {t.role: t for t in load_targets(default_targets_path())}
    assert set(targets) == {"worker", "judge", "drafter"}
    assert targets["worker"].limits["max_latency_p95_ms"] > 0


def test_each_limit_passes_or_fails_on_its_own(tmp_path):
    targets = _targets(
        tmp_path,
        "[worker]\nseq_len = 16\nbatch_size = 1\n"
        "max_latency_p95_ms = 10\nmin_decode_tokens_per_s = 100\n",
    )
    rows = check_targets(_bench(p95=8.0, decode=50.0), targets)
    assert {r["limit"]: r["passed"] for r in rows} == {
        "max_latency_p95_ms": True,
        "min_decode_tokens_per_s": False,
    }


def test_a_configuration_that_was_not_measured_fails(tmp_path):
    targets = _targets(
        tmp_path, "[judge]\nseq_len = 128\nbatch_size = 8\nmax_latency_p95_ms = 1e9\n"
    )
    (row,) = check_targets(_bench(1.0, 1.0), targets)
    assert row["value"] is None
    assert row["passed"] is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[worker]\nseq_len = 16\nbatch_size = 1\nmax_speed = 3\n", "unknown key 'max_speed'"),
        ("[worker]\nbatch_size = 1\nmax_latency_p95_ms = 3\n", "'seq_len' must be an integer"),
        ("[worker]\nseq_len = 16\nbatch_size = 1\n", "no limits"),
        ("[worker]\nseq_len = 1\nbatch_size = 1\nmax_ttft_p95_ms = 'x'\n", "must be a number"),
        ("worker = 3\n", "a role is a table"),
        ("", "no roles"),
        ("[worker", "not valid TOML"),
    ],
)
def test_bad_targets_files_are_explained(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        _targets(tmp_path, text)


def test_missing_targets_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_targets(tmp_path / "none.toml")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_non_finite_limit_is_refused(tmp_path, value):
    path = tmp_path / "t.toml"
    path.write_text(f"[worker]\nseq_len = 16\nbatch_size = 1\nmax_latency_p95_ms = {value}\n")
    with pytest.raises(ConfigError, match="must be a finite number"):
        load_targets(path)


@pytest.mark.parametrize("measured", [float("nan"), float("inf")])
def test_a_non_finite_measured_value_fails_its_limit(tmp_path, measured):
    path = tmp_path / "t.toml"
    path.write_text("[worker]\nseq_len = 16\nbatch_size = 1\nmin_decode_tokens_per_s = 1\n")
    rows = check_targets(_bench(1.0, measured), load_targets(path))
    assert [r["passed"] for r in rows] == [False]
