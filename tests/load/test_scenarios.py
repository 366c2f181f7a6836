"""Each load scenario at a small size: the same code as ``python -m tests.load.runner``.

Every test fails if the scenario lost, duplicated or overspent anything (its checks), and
asserts the counts that prove the scenario did what it claims (faults injected, kills
landed). Sizes are chosen so the whole file runs in about a minute on 2 cores.
"""

import pytest

from tests.load.scenarios import (
    generate_faults,
    generate_kill,
    shared_budget,
    train_kill,
    validator,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def assert_passed(result):
    assert result.passed, result.report()


def test_validator_quarantines_every_corrupt_row_with_its_line_number():
    config = validator.ValidatorConfig(
        target_bytes=3_000_000, probe_fraction=0.25, progress=False, max_bytes_per_row=2048
    )
    result = validator.run(config)
    assert_passed(result)
    assert result.tried["big: corrupt rows planted"] > 10


def test_generation_under_faults_loses_nothing_and_stays_under_budget():
    config = generate_faults.GenerateFaultsConfig(prompts=60, concurrency=16)
    result = generate_faults.run(config)
    assert_passed(result)
    assert result.tried["capped: records in output after"] < 60
    assert all(result.tried[f"requests answered {k}"] >= 1 for k in generate_faults.FAULT_KINDS)


def test_generation_killed_twice_equals_the_uninterrupted_run():
    result = generate_kill.run(generate_kill.GenerateKillConfig(prompts=30, kills=2))
    assert_passed(result)


def test_training_killed_in_checkpoint_writes_always_resumes():
    result = train_kill.run(train_kill.TrainKillConfig(max_steps=8, kills=2))
    assert_passed(result)


def test_two_workers_share_one_postgres_budget(pg_url):
    config = shared_budget.SharedBudgetConfig(prompts_per_worker=25, store_url=pg_url)
    result = shared_budget.run(config)
    assert_passed(result)
