import pytest
from kd_eval.bench.measure import (
    MEMORY_METHOD,
    BenchSettings,
    bench_model,
    config_figures,
    peak_rss_mb,
)
from kd_eval.errors import BenchError


def test_prefill_and_decode_throughput_come_from_median_times():
    # TTFT median 20 ms for 2x16 tokens -> 1600 tok/s; decode median (60-20)=40 ms for
    # 2x(5-1)=8 tokens -> 200 tok/s.
    f = config_figures(16, 2, 5, [50.0, 60.0, 70.0], [20.0, 20.0, 20.0])
    assert f["prefill_tokens_per_s"] == pytest.approx(1600.0)
    assert f["decode_tokens_per_s"] == pytest.approx(200.0)
    assert f["latency_ms"]["p50"] == 60.0


def test_a_single_new_token_has_no_decode_throughput():
    assert config_figures(8, 1, 1, [5.0], [5.0])["decode_tokens_per_s"] is None


def test_bench_of_a_model_directory_measures_every_configuration(tiny_llama_dir):
    settings = BenchSettings(seq_lens=(4, 8), batch_sizes=(1, 2), new_tokens=3, warmup=1, repeats=4)
    result = bench_model(tiny_llama_dir, settings).to_dict()
    shapes = [(c["seq_len"], c["batch_size"]) for c in result["configs"]]
    assert shapes == [(4, 1), (4, 2), (8, 1), (8, 2)]
    for config in result["configs"]:
        lat, ttft = config["latency_ms"], config["ttft_ms"]
        assert lat["n"] == ttft["n"] == 4
        assert lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert ttft["p50"] <= lat["p50"]
        assert config["prefill_tokens_per_s"] > 0
        assert config["decode_tokens_per_s"] > 0
        assert config["peak_rss_mb"] >= config["peak_rss_delta_mb"] >= 0
    assert result["kind"] == "hf"
    assert result["parameters"] > 0
    assert result["memory_method"] == MEMORY_METHOD


def test_peak_rss_is_a_positive_number_of_mebibytes():
    assert 1 < peak_rss_mb() < 1e6


def test_log_says_how_many_timed_requests_back_the_percentiles(tiny_llama_dir):
    lines: list[str] = []
    settings = BenchSettings(seq_lens=(4,), new_tokens=2, warmup=0, repeats=3)
    bench_model(tiny_llama_dir, settings, log=lines.append)
    assert "3 timed requests" in lines[0]
    assert "too few for a stable p99" in lines[0]


@pytest.mark.parametrize(
    "settings",
    [
        BenchSettings(seq_lens=()),
        BenchSettings(batch_sizes=(0,)),
        BenchSettings(new_tokens=0),
        BenchSettings(repeats=0),
    ],
)
def test_settings_that_cannot_measure_are_refused(settings):
    with pytest.raises(BenchError):
        settings.check()
