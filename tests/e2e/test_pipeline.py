"""The main job, stage by stage, through the same command lines `nox -s pipeline` runs.

Stages: ``python -m kd_train.pipelines all``; ``kd-eval fidelity`` of the toy student against
its teacher (untrained and distilled); ``kd-eval drafter`` of the same students as the toy
teacher's speculative drafter; ``kd-eval classify`` of the 8-ball student (run in
conftest.py, its figures checked in test_eightball.py); ``kd-eval report`` over the distilled
results; ``kd-convert export`` to ONNX and TorchScript followed by ``kd-convert verify``.
Each test checks one stage's artefacts and figures."""

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stages import WHEN, Distilled, read_json, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.xdist_group("pipeline")]

#: Parity bounds from docs/guides/export.md, written out so a loosened bound fails here.
PARITY = {"onnx": (0.999, 1e-3), "torchscript": (0.999, 1e-4)}
ARTIFACT = {"onnx": "model.onnx", "torchscript": "model.ts"}


@pytest.fixture(scope="module")
def fidelity(distilled: Distilled) -> dict[str, dict[str, Any]]:
    """``kd-eval fidelity`` aggregates of the toy student, keyed ``before``/``after``."""
    toy = distilled.summary["toy"]
    aggregates = {}
    for when, student in zip(WHEN, (distilled.init_dir("toy"), toy["student_dir"]), strict=True):
        out = distilled.out / "eval" / f"toy-fidelity-{when}.json"
        run_cli(
            *("kd-eval", "fidelity", "--teacher", toy["teacher_dir"], "--student", student),
            *("--data", distilled.heldout("toy"), "--out", out, "--no-progress"),
        )
        aggregates[when] = read_json(out)["fidelity"]["aggregate"]
    return aggregates


@pytest.fixture(scope="module")
def drafter(distilled: Distilled) -> dict[str, dict[str, Any]]:
    """``kd-eval drafter`` sections of the toy student as its teacher's drafter, by ``when``."""
    toy = distilled.summary["toy"]
    sections = {}
    for when, student in zip(WHEN, (distilled.init_dir("toy"), toy["student_dir"]), strict=True):
        out = distilled.out / "eval" / f"toy-drafter-{when}.json"
        run_cli(
            *("kd-eval", "drafter", "--teacher", toy["teacher_dir"], "--student", student),
            *("--data", distilled.heldout("toy"), "--max-new-tokens", "48"),
            *("--out", out, "--no-progress"),
        )
        sections[when] = read_json(out)["drafter"]
    return sections


@pytest.fixture(scope="module")
def report_dir(distilled: Distilled, fidelity, eightball_accuracy) -> Path:
    """``kd-eval report`` over the distilled toy fidelity and 8-ball classification."""
    ev = distilled.out / "eval"
    out = ev / "report"
    inputs = (ev / "toy-fidelity-after.json", ev / "8-ball-classify-after.json")
    run_cli("kd-eval", "report", *inputs, "--out-dir", out, "--name", "pipeline")
    return out


@pytest.fixture(scope="module")
def exports(distilled: Distilled) -> dict[str, tuple[Path, str]]:
    """The toy student exported to each format, then verified: ``{fmt: (dir, verify stdout)}``."""
    student = distilled.summary["toy"]["student_dir"]
    done = {}
    for fmt in PARITY:
        out = distilled.out / "export" / fmt
        run_cli("kd-convert", "export", "--format", fmt, student, out, "--no-progress")
        done[fmt] = (out, run_cli("kd-convert", "verify", "--trust-artifact", out).stdout)
    return done


def test_pipeline_all_distils_the_toy_students(distilled):
    toy, ball = distilled.summary["toy"], distilled.summary["8-ball"]
    assert toy["teacher_ce_after"] < 0.2 * toy["teacher_ce_before"]
    assert toy["student_heldout_kl_after"] < 0.5 * toy["student_heldout_kl_before"]
    assert ball["teacher_heldout_accuracy"] >= 0.9
    assert ball["student_heldout_accuracy_after"] >= 0.8
    assert ball["student_heldout_accuracy_before"] < 0.3
    assert ball["student_heldout_kl_after"] < 0.5 * ball["student_heldout_kl_before"]
    assert "student KL to teacher, held out" in distilled.stdout
    for name in ("toy", "8-ball"):
        assert (Path(distilled.summary[name]["student_dir"]) / "config.json").exists()
        assert distilled.heldout(name).stat().st_size > 0


def test_fidelity_kl_to_teacher_falls_tenfold_with_distillation(fidelity):
    before, after = fidelity["before"]["forward_kl"], fidelity["after"]["forward_kl"]
    assert after["value"] < 0.1 * before["value"]
    assert after["high"] < before["low"]  # the 95% intervals do not overlap


def test_fidelity_top1_agreement_rises_with_distillation(fidelity):
    assert fidelity["before"]["top1_agreement"]["value"] < 0.2
    assert fidelity["after"]["top1_agreement"]["value"] >= 0.8


def test_distillation_raises_the_drafters_acceptance_rate(drafter):
    before = drafter["before"]["aggregate"]["acceptance_rate"]
    after = drafter["after"]["aggregate"]["acceptance_rate"]
    assert after["value"] > before["value"]
    assert after["low"] > before["high"]  # the 95% intervals do not overlap
    tokens = drafter["after"]["aggregate"]["tokens_per_teacher_forward"]
    assert tokens["value"] > 1.0


@pytest.mark.parametrize("when", WHEN)
def test_drafting_leaves_the_teachers_greedy_output_unchanged(drafter, when):
    assert drafter[when]["n_identical"] == drafter[when]["n_examples"]


def test_report_merges_fidelity_and_classification_into_json_and_html(
    report_dir, distilled, eightball_accuracy
):
    report = read_json(report_dir / "report.json")
    assert report["name"] == "pipeline"
    assert report["fidelity"]["student"].endswith("distill-run/student")
    assert report["classification"]["accuracy"] == eightball_accuracy["after"]["accuracy"]
    html = (report_dir / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "<h2>Fidelity</h2>" in html
    assert "<h2>Classification</h2>" in html


@pytest.mark.parametrize("fmt", list(PARITY))
def test_export_verifies_against_its_contract(exports, fmt):
    out, verify_stdout = exports[fmt]
    assert (out / ARTIFACT[fmt]).stat().st_size > 0
    assert f"{fmt} export matches its contract" in verify_stdout
    assert read_json(out / "contract.json")["format"] == fmt


@pytest.mark.parametrize("fmt", list(PARITY))
def test_export_parity_is_inside_the_documented_bounds(exports, fmt):
    parity = read_json(exports[fmt][0] / "parity.json")
    min_cosine, max_abs = PARITY[fmt]
    assert parity["status"] == "passed"
    assert [case["length"] for case in parity["results"]] == [64, 128, 256]
    for case in parity["results"]:
        assert case["cosine"] >= min_cosine
        assert case["max_abs"] <= max_abs
