import base64
import re

from kd_eval.report.document import new_report
from kd_eval.report.html import render_html, write_html
from kd_eval.tasks.classification import classification_metrics

EVIL = '<script>alert("x")</script>'


def _report():
    m = classification_metrics(["a", EVIL], ["a", "a"], ["a", EVIL])
    classification = {"model": EVIL, "parameters": 1, "mode": "likelihood",
                      "chance_accuracy": 0.5, **m.to_dict(), "examples": []}  # fmt: skip
    targets = [{"role": "worker", "seq_len": 8, "batch_size": 1, "limit": "max_latency_p95_ms",
                "threshold": 1.0, "value": 2.0, "passed": False}]  # fmt: skip
    return new_report(EVIL, classification=classification, targets=targets)


def test_all_text_is_escaped():
    page = render_html(_report())
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_plots_are_embedded_as_png_data_uris():
    page = render_html(_report())
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) == 2  # confusion matrix and class distribution
    assert all(base64.b64decode(u).startswith(b"\x89PNG") for u in uris)


def test_the_page_loads_nothing_from_outside():
    page = render_html(_report())
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<link" not in page


def test_failed_targets_are_marked():
    assert '<span class="fail">FAIL</span>' in render_html(_report())


def test_sections_that_were_not_computed_are_left_out():
    page = render_html(_report())
    assert "<h2>Classification</h2>" in page
    assert "<h2>Fidelity</h2>" not in page


def test_written_page_is_the_rendered_page(tmp_path):
    report = _report()
    path = write_html(tmp_path / "r.html", report)
    assert path.read_text(encoding="utf-8") == render_html(report)
