from kd_train.store import cache_key, open_store, sqlite_url


def test_cache_key_ignores_key_order():
    assert cache_key("m", {"a": 1, "b": [1, 2]}) == cache_key("m", {"b": [1, 2], "a": 1})


def test_cache_key_depends_on_model_and_request():
    base = cache_key("m", {"prompt": "x"})
    assert base != cache_key("other", {"prompt": "x"})
    assert base != cache_key("m", {"prompt": "y"})


def test_cache_miss_returns_none_and_counts_nothing(tmp_path):
    store = open_store(sqlite_url(tmp_path / "s.sqlite"))
    assert store.cache.get(cache_key("m", {})) is None
    assert len(store.cache) == 0
    store.close()
