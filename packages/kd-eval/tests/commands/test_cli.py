import json
import re

import pytest
from kd_eval.cli import main
from kd_eval.report.document import new_report, read_report, write_report
from kd_train.data.schema import KDRecord

FAST_BENCH = ["--seq-lens", "4", "--new-tokens", "2", "--warmup", "0", "--repeats", "3"]
FAST_BENCH += ["--no-progress"]


def _records():
    return [
        KDRecord(id="a", prompt="It is", completion=" certain."),
        KDRecord(id="b", prompt="Ask again", completion=" later."),
    ]


def test_fidelity_prints_intervals_and_writes_a_report(
    tmp_path, write_set, tiny_teacher_dir, tiny_llama_dir, capsys
):
    out = tmp_path / "fid.json"
    argv = ["fidelity", "--teacher", str(tiny_teacher_dir), "--student", str(tiny_llama_dir),
            "--data", str(write_set(_records())), "--resamples", "100", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "95% bootstrap intervals (100 resamples, seed 0)" in printed
    assert read_report(out)["fidelity"]["n_examples"] == 2


def test_drafter_prints_the_figures_and_writes_a_report(
    tmp_path, write_set, tiny_teacher_dir, tiny_llama_dir, capsys
):
    out = tmp_path / "draft.json"
    argv = ["drafter", "--teacher", str(tiny_teacher_dir), "--student", str(tiny_llama_dir),
            "--data", str(write_set(_records())), "--max-new-tokens", "6", "--draft-tokens", "2",
            "--resamples", "100", "--out", str(out), "--name", "d", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "2 prompts, up to 6 new tokens, drafts of 2; 95% bootstrap intervals" in printed
    assert "greedy outputs identical to the teacher alone: 2/2" in printed
    section = read_report(out)["drafter"]
    assert section["n_examples"] == 2
    assert set(section["aggregate"]) == {"acceptance_rate", "tokens_per_teacher_forward", "speedup"}


def test_a_drafter_report_renders_in_html(tmp_path, write_set, tiny_teacher_dir, tiny_llama_dir):
    out = tmp_path / "draft.json"
    argv = ["drafter", "--teacher", str(tiny_teacher_dir), "--student", str(tiny_llama_dir),
            "--data", str(write_set(_records()[:1])), "--max-new-tokens", "4",
            "--resamples", "20", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert main(["report", str(out), "--out-dir", str(tmp_path / "r")]) == 0
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "<h2>Drafter</h2>" in html
    assert "acceptance_rate" in html


def test_drafter_with_one_new_token_exits_2(write_set, tiny_teacher_dir, tiny_llama_dir, capsys):
    argv = ["drafter", "--teacher", str(tiny_teacher_dir), "--student", str(tiny_llama_dir),
            "--data", str(write_set(_records())), "--max-new-tokens", "1"]  # fmt: skip
    assert main([*argv, "--no-progress"]) == 2
    assert "max_new_tokens >= 2" in capsys.readouterr().err


def test_classify_with_the_8ball_labels(tmp_path, write_set, eightball_records, tiny_llama_dir):
    out = tmp_path / "cls.json"
    data = write_set(eightball_records[:2])
    assert main(["classify", str(tiny_llama_dir), "--data", str(data), "--out", str(out)]) == 0
    assert read_report(out)["classification"]["chance_accuracy"] == 1 / 20


def test_classify_with_a_label_file(tmp_path, write_set, tiny_llama_dir):
    labels = tmp_path / "labels.txt"
    labels.write_text("yes\nno\n")
    data = write_set([KDRecord(id="a", prompt="Q:", completion="yes")])
    out = tmp_path / "c.json"
    argv = ["classify", str(tiny_llama_dir), "--data", str(data), "--labels", str(labels)]
    assert main([*argv, "--out", str(out)]) == 0
    assert read_report(out)["classification"]["labels"] == ["yes", "no"]


def test_toolcalls_with_fixtures(tmp_path, write_set, tiny_llama_dir, capsys):
    fixtures = tmp_path / "fx.json"
    fixtures.write_text(json.dumps([{"name": "f", "arguments": {}, "result": 1}]))
    data = write_set([KDRecord(id="t", prompt="Q", completion='{"name": "f", "arguments": {}}')])
    argv = ["toolcalls", str(tiny_llama_dir), "--data", str(data), "--fixtures", str(fixtures),
            "--max-new-tokens", "3", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    assert "fixture_hit_rate" in capsys.readouterr().out


def test_bench_regression_against_a_faster_baseline_exits_1(tmp_path, tiny_llama_dir, capsys):
    baseline = tmp_path / "baseline.json"
    assert main(["bench", str(tiny_llama_dir), *FAST_BENCH, "--save-baseline", str(baseline)]) == 0
    fast = json.loads(baseline.read_text())
    for config in fast["configs"]:  # a baseline 100x faster than anything this run can do
        for key in ("latency_ms", "ttft_ms"):
            config[key] = {k: v / 100 for k, v in config[key].items()}
        config["prefill_tokens_per_s"] *= 100
        config["decode_tokens_per_s"] *= 100
    baseline.write_text(json.dumps(fast))
    capsys.readouterr()
    argv = ["bench", str(tiny_llama_dir), *FAST_BENCH, "--baseline", str(baseline)]
    assert main(argv) == 1
    assert "REGRESSED" in capsys.readouterr().out


def test_bench_against_its_own_figures_with_a_wide_tolerance_passes(tmp_path, tiny_llama_dir):
    baseline = tmp_path / "baseline.json"
    assert main(["bench", str(tiny_llama_dir), *FAST_BENCH, "--save-baseline", str(baseline)]) == 0
    argv = ["bench", str(tiny_llama_dir), *FAST_BENCH, "--baseline", str(baseline)]
    assert main([*argv, "--tolerance", "1000"]) == 0


def test_bench_targets_report_pass_and_fail(tmp_path, tiny_onnx, capsys):
    targets = tmp_path / "t.toml"
    targets.write_text(
        "[worker]\nseq_len = 4\nbatch_size = 1\nmax_latency_p95_ms = 1e9\n"
        "[drafter]\nseq_len = 4\nbatch_size = 1\nmin_decode_tokens_per_s = 1e12\n"
    )
    out = tmp_path / "bench.json"
    argv = ["bench", str(tiny_onnx), *FAST_BENCH, "--targets", str(targets), "--out", str(out)]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert re.search(r"target worker: max_latency_p95_ms 1e\+09 -> \S+ pass", printed)
    assert re.search(r"target drafter: min_decode_tokens_per_s 1e\+12 -> \S+ FAIL", printed)
    report = read_report(out)
    assert [row["passed"] for row in report["targets"]] == [True, False]
    assert report["name"] == "tiny"


def test_report_combines_results_into_json_and_html(
    tmp_path, write_set, eightball_records, tiny_onnx, tiny_llama_dir
):
    bench, cls = tmp_path / "bench.json", tmp_path / "cls.json"
    assert main(["bench", str(tiny_onnx), *FAST_BENCH, "--out", str(bench)]) == 0
    data = write_set(eightball_records[:1])
    assert main(["classify", str(tiny_llama_dir), "--data", str(data), "--out", str(cls)]) == 0
    argv = ["report", str(bench), str(cls), "--out-dir", str(tmp_path / "run"), "--name", "r1"]
    assert main(argv) == 0
    merged = read_report(tmp_path / "run" / "report.json")
    assert merged["name"] == "r1"
    assert merged["bench"] == read_report(bench)["bench"]
    assert merged["classification"] == read_report(cls)["classification"]
    page = (tmp_path / "run" / "report.html").read_text()
    assert "<h2>Benchmark</h2>" in page
    assert "<h2>Classification</h2>" in page


def test_curves_need_the_quality_in_every_report(tmp_path, tiny_onnx, capsys):
    bench = tmp_path / "bench.json"
    assert main(["bench", str(tiny_onnx), *FAST_BENCH, "--out", str(bench)]) == 0
    assert main(["curves", str(bench), "--quality", "forward_kl"]) == 2
    assert "has no forward_kl" in capsys.readouterr().err


def test_curves_write_one_png_per_cost_axis(tmp_path, capsys):
    paths = []
    for name, acc, params in (("s", 0.4, 10), ("m", 0.7, 100), ("l", 0.6, 1000)):
        report = {
            "model": name, "parameters": params, "mode": "likelihood", "n": 1,
            "accuracy": acc, "macro_f1": acc, "chance_accuracy": 0.05, "labels": [],
            "confusion": [], "reference_distribution": {}, "prediction_distribution": {},
        }  # fmt: skip
        paths.append(
            str(write_report(tmp_path / f"{name}.json", new_report(name, classification=report)))
        )
    out = tmp_path / "curves.json"
    argv = ["curves", *paths, "--quality", "accuracy", "--png-dir", str(tmp_path / "png")]
    assert main([*argv, "--out", str(out)]) == 0
    assert "Pareto front on parameters: s, m" in capsys.readouterr().out
    assert (tmp_path / "png" / "curves-parameters.png").read_bytes().startswith(b"\x89PNG")
    assert read_report(out)["curves"]["fronts"]["parameters"] == ["s", "m"]


@pytest.mark.parametrize(
    ("make_argv", "message"),
    [
        (lambda p, d, m: ["classify", str(p / "missing"), "--data", str(d)], "does not exist"),
        (lambda p, d, m: ["classify", str(m), "--data", str(d)], "does not belong"),
        (lambda p, d, m: ["classify", str(p), "--data", str(d)], "no config.json"),
        (lambda p, d, m: ["bench", str(p / "x.onnx")], "does not exist"),
        (lambda p, d, m: ["classify", str(p), "--data", str(d), "--labels", "zz"], "label set"),
    ],
)
def test_bad_inputs_exit_2_with_one_line_and_no_traceback(
    tmp_path, write_set, eightball_records, mismatched_model_dir, capsys, make_argv, message
):
    data = write_set(eightball_records[:1])
    assert main(make_argv(tmp_path, data, mismatched_model_dir)) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_an_empty_eval_set_exits_2(tmp_path, tiny_llama_dir, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["classify", str(tiny_llama_dir), "--data", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err


def test_a_malformed_row_exits_2_naming_file_and_line(tmp_path, tiny_llama_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"schema_version": 1, "id": "a", "prompt": "p", "completion": "Yes."}\nnope\n')
    argv = ["fidelity", "--teacher", str(tiny_llama_dir), "--student", str(tiny_llama_dir)]
    assert main([*argv, "--data", str(bad)]) == 2
    assert f"{bad}:2" in capsys.readouterr().err


def test_fidelity_across_two_tokenizers_reports_text_level_figures(
    tmp_path, write_set, tiny_llama_dir, small_vocab_model_dir, capsys
):
    out = tmp_path / "cross.json"
    argv = ["fidelity", "--teacher", str(small_vocab_model_dir), "--student", str(tiny_llama_dir),
            "--data", str(write_set(_records())), "--resamples", "100", "--out", str(out),
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "student_bits_per_byte" in printed
    section = read_report(out)["fidelity"]  # the report schema holds
    assert section["tokenizers"] == "different"
    assert "forward_kl" not in section["aggregate"]
    assert section["aggregate"]["teacher_bits_per_byte"]["value"] > 0
