from kd_train.store import open_store, sqlite_url


def test_run_registry_records_config_and_status(tmp_path):
    store = open_store(sqlite_url(tmp_path / "s.sqlite"))
    run_id = store.runs.start("generate", {"model": "m", "budget": 1.5})
    row = store.runs.get(run_id)
    assert (row["status"], row["config"], row["finished_at"]) == (
        "running",
        {"model": "m", "budget": 1.5},
        None,
    )
    store.runs.finish(run_id, "budget")
    row = store.runs.get(run_id)
    assert row["status"] == "budget"
    assert row["finished_at"] >= row["started_at"]
    store.close()
