import json
import os

import pytest
from kd_train.cli import main
from kd_train.store import open_store, sqlite_url
from kd_train.testing import LoopbackTeacherServer, generate_argv

KEY = "sk-cli-secret-0123"


def run_cli(server, prompts_file, tmp_path, *extra):
    out = tmp_path / "run" / "out.jsonl"
    return main([*generate_argv(server.base_url, prompts_file, out), *extra])


def test_generate_writes_records_and_prints_a_summary(server, prompts_file, tmp_path, capsys):
    assert run_cli(server, prompts_file, tmp_path) == 0
    out = capsys.readouterr().out
    assert "paid requests    6" in out
    assert "unconfirmed      $0.000000" in out  # every request was answered
    assert (tmp_path / "run" / "kd-store.sqlite").is_file()
    assert len((tmp_path / "run" / "out.jsonl").read_text().splitlines()) == 6


def test_second_run_pays_nothing(server, prompts_file, tmp_path, capsys):
    run_cli(server, prompts_file, tmp_path)
    capsys.readouterr()
    assert run_cli(server, prompts_file, tmp_path) == 0
    out = capsys.readouterr().out
    assert "already written  6" in out
    assert "paid requests    0" in out
    assert server.counts["ok"] == 6


def test_budget_stop_exits_3_with_a_clear_message(server, prompts_file, tmp_path, capsys):
    assert run_cli(server, prompts_file, tmp_path, "--budget", "0.001") == 3
    assert "budget 'default' exhausted" in capsys.readouterr().err


def test_endpoint_billing_past_max_tokens_stops_the_run_with_exit_3(
    tiny_teacher_dir, prompts_file, tmp_path, capsys
):
    with LoopbackTeacherServer(tiny_teacher_dir, extra_billed_tokens=100) as overbilling:
        code = run_cli(overbilling, prompts_file, tmp_path, "--budget", "5", "--concurrency", "1")
        requests = overbilling.counts["ok"]
    assert code == 3
    assert "does not honour max_tokens" in capsys.readouterr().err
    assert requests == 1  # stopped at the first overrun, nothing more was sent


def test_missing_key_variable_exits_2_naming_it(
    server, prompts_file, tmp_path, capsys, monkeypatch
):
    monkeypatch.delenv("KD_NO_SUCH_KEY", raising=False)
    assert run_cli(server, prompts_file, tmp_path, "--api-key-env", "KD_NO_SUCH_KEY") == 2
    assert "KD_NO_SUCH_KEY" in capsys.readouterr().err


def test_key_from_env_is_used_and_never_printed(
    tiny_teacher_dir, prompts_file, tmp_path, capsys, monkeypatch
):
    from kd_train.testing import LoopbackTeacherServer

    monkeypatch.setenv("KD_TEST_KEY", KEY)
    with LoopbackTeacherServer(tiny_teacher_dir, api_key=KEY) as server:
        code = run_cli(server, prompts_file, tmp_path, "--api-key-env", "KD_TEST_KEY")
    captured = capsys.readouterr()
    assert code == 0
    assert KEY not in captured.out + captured.err
    for path in (tmp_path / "run").iterdir():
        assert KEY.encode() not in path.read_bytes()


def test_config_file_values_are_used_and_flags_win(server, prompts_file, tmp_path, capsys):
    config = tmp_path / "gen.yaml"
    config.write_text(json.dumps({"budget_name": "from-file", "budget": 0.0}))
    assert run_cli(server, prompts_file, tmp_path, "--config", str(config), "--budget", "5") == 0
    assert "budget           $5.000000" in capsys.readouterr().out
    store = open_store(sqlite_url(tmp_path / "run" / "kd-store.sqlite"))
    assert store.ledger.status("from-file").cap_nanos == 5 * 10**9
    store.close()


def cap_of(tmp_path, name="default"):
    store = open_store(sqlite_url(tmp_path / "run" / "kd-store.sqlite"))
    try:
        return store.ledger.status(name).cap_nanos, store.ledger.events(name)
    finally:
        store.close()


def test_a_worker_without_budget_keeps_the_shared_cap(server, prompts_file, tmp_path, capsys):
    assert run_cli(server, prompts_file, tmp_path, "--budget", "5") == 0
    assert run_cli(server, prompts_file, tmp_path) == 0  # once reset the cap to 2**62
    cap, events = cap_of(tmp_path)
    assert cap == 5 * 10**9
    assert [e.kind for e in events] == ["created"]
    assert "budget           $5.000000" in capsys.readouterr().out.split("prompts")[-1]


def test_another_cap_without_change_budget_exits_2_and_changes_nothing(
    server, prompts_file, tmp_path, capsys
):
    assert run_cli(server, prompts_file, tmp_path, "--budget", "5") == 0
    capsys.readouterr()
    assert run_cli(server, prompts_file, tmp_path, "--budget", "50") == 2
    err = capsys.readouterr().err
    assert "has a cap of $5.000000; this run asks for a cap of $50.000000" in err
    assert "--change-budget" in err
    assert "Traceback" not in err
    assert cap_of(tmp_path)[0] == 5 * 10**9


def test_change_budget_sets_the_cap_and_says_so(server, prompts_file, tmp_path, capsys):
    assert run_cli(server, prompts_file, tmp_path, "--budget", "5") == 0
    capsys.readouterr()
    assert run_cli(server, prompts_file, tmp_path, "--budget", "7", "--change-budget") == 0
    err = capsys.readouterr().err
    assert "budget 'default': cap changed from 5000000000 to 7000000000 nano-USD" in err
    cap, events = cap_of(tmp_path)
    assert cap == 7 * 10**9
    assert (events[-1].kind, events[-1].actor.rsplit(":", 1)[-1]) == (
        "cap_changed",
        str(os.getpid()),
    )


def test_change_budget_without_budget_exits_2(server, prompts_file, tmp_path, capsys):
    assert run_cli(server, prompts_file, tmp_path, "--change-budget") == 2
    assert "change_budget: needs budget" in capsys.readouterr().err


@pytest.mark.parametrize("config", [{}, {"price_per_1k_prompt": 0}])
def test_budget_without_prices_exits_2_naming_the_price_keys(
    server, prompts_file, tmp_path, capsys, config
):
    source = tmp_path / "gen.json"
    source.write_text(json.dumps(config))
    out = tmp_path / "run" / "out.jsonl"
    argv = generate_argv(server.base_url, prompts_file, out, price_per_1k_prompt=None,
                         price_per_1k_completion=None, budget=5, config=source)  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "budget: a budget needs prices: set price_per_1k_prompt and/or price_per_1k_completion "
        "(--price-per-1k-prompt / --price-per-1k-completion) above 0; at the default prices "
        "of 0 every request costs nothing and the budget would limit nothing"
    )
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
    assert server.counts["ok"] == 0


def test_a_halted_budget_stops_the_next_worker_before_it_sends(
    tiny_teacher_dir, prompts_file, tmp_path, capsys
):
    with LoopbackTeacherServer(tiny_teacher_dir, extra_billed_tokens=100) as overbilling:
        run_cli(overbilling, prompts_file, tmp_path, "--budget", "5", "--concurrency", "1")
        capsys.readouterr()
        (tmp_path / "run" / "out.jsonl").unlink()  # a fresh output: only the ledger remembers
        (tmp_path / "run" / "out.jsonl.teacher.json").unlink()
        with LoopbackTeacherServer(tiny_teacher_dir) as honest:
            code = run_cli(honest, prompts_file, tmp_path, "--max-tokens", "3")
            sent = honest.counts["ok"]
    assert code == 3
    assert "budget 'default' is halted" in capsys.readouterr().err
    assert sent == 0
