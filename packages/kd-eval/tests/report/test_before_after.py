import json
import re

from kd_eval.cli import main
from kd_eval.report.document import new_report, read_report, with_before, write_report
from kd_eval.report.html import render_html
from kd_eval.tasks.classification import classification_metrics


def _classification(predictions):
    m = classification_metrics(["a", "b", "a", "b"], predictions, ["a", "b"])
    return {"model": "m", "parameters": 1, "mode": "likelihood", "chance_accuracy": 0.5,
            **m.to_dict(), "examples": []}  # fmt: skip


BEFORE = new_report("8-ball-before", classification=_classification(["a", "a", "a", "a"]))
AFTER = new_report("8-ball-after", classification=_classification(["a", "b", "a", "b"]))


def comparison_rows(page):
    table = page.split("<h2>Before and after</h2>", 1)[1].split("</table>", 1)[0]
    return [
        [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", table)
        if "<td" in row
    ]


def test_every_headline_figure_shows_before_after_and_change():
    rows = comparison_rows(render_html(with_before(AFTER, BEFORE)))
    assert rows == [
        ["classification", "accuracy", "0.5", "1", "0.5"],
        ["classification", "macro-F1", "0.3333", "1", "0.6667"],
        ["classification", "chance accuracy", "0.5", "0.5", "0"],
    ]


def test_a_report_without_before_has_no_comparison():
    assert "Before and after" not in render_html(AFTER)


def test_kd_eval_report_attaches_the_before_results(tmp_path):
    write_report(tmp_path / "before.json", BEFORE)
    write_report(tmp_path / "after.json", AFTER)
    code = main(["report", str(tmp_path / "after.json"), "--before", str(tmp_path / "before.json"),
                 "--out-dir", str(tmp_path / "out")])  # fmt: skip
    written = read_report(tmp_path / "out" / "report.json")
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert (code, written["before"]["name"], "Before and after" in page) == (
        0,
        "8-ball-before",
        True,
    )
    assert json.loads((tmp_path / "out" / "report.json").read_text())["name"] == "8-ball-after"
