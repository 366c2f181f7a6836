import pytest
from kd_eval.errors import EvalDataError
from kd_eval.loading.models import load_model
from kd_eval.tasks.labels import MAGIC_8_BALL_ANSWERS
from kd_eval.tasks.predict import classify_by_likelihood
from kd_eval.tasks.run import run_classification, run_toolcalls
from kd_train.data.schema import KDRecord


@pytest.fixture(scope="module")
def student(tiny_llama_dir):
    return load_model(tiny_llama_dir)


def test_likelihood_classification_reports_each_prediction(student, eightball_records):
    eightball_records = eightball_records[:3]
    section = run_classification(student, eightball_records, MAGIC_8_BALL_ANSWERS)
    expected = [
        classify_by_likelihood(student.model, student.tokenizer, r.prompt, MAGIC_8_BALL_ANSWERS)
        for r in eightball_records
    ]
    assert [row["prediction"] for row in section["examples"]] == expected
    hits = sum(row["prediction"] == row["reference"] for row in section["examples"])
    assert section["accuracy"] == hits / len(eightball_records)
    assert section["chance_accuracy"] == 1 / 20
    assert len(section["confusion"]) == 20


def test_generate_mode_labels_unmatched_text_unparsed(student, eightball_records):
    section = run_classification(
        student, eightball_records[:2], MAGIC_8_BALL_ANSWERS, mode="generate", max_new_tokens=4
    )
    # A random untrained model does not produce 8-ball answers.
    assert section["prediction_distribution"]["<unparsed>"] == 2


def test_reference_outside_the_label_set_is_named(student):
    record = KDRecord(id="odd", prompt="Q?", completion="Maybe.")
    with pytest.raises(EvalDataError, match=r"'odd'.*'Maybe\.' is not one of the 20 labels"):
        run_classification(student, [record], MAGIC_8_BALL_ANSWERS)


def test_a_single_label_is_not_a_classification(student, eightball_records):
    with pytest.raises(EvalDataError, match="at least 2"):
        run_classification(student, eightball_records, ["Yes."])


def test_empty_sets_are_refused(student):
    with pytest.raises(EvalDataError, match="empty"):
        run_classification(student, [], MAGIC_8_BALL_ANSWERS)
    with pytest.raises(EvalDataError, match="empty"):
        run_toolcalls(student, [])


def test_tool_call_run_scores_every_record(student):
    record = KDRecord(
        id="t",
        prompt="Weather?",
        completion='{"name": "get_weather", "arguments": {"city": "Paris"}}',
    )
    section = run_toolcalls(student, [record], fixtures={}, max_new_tokens=4)
    assert section["n"] == 1
    assert section["json_validity"] == 0.0  # random weights do not write JSON
    assert section["fixture_hit_rate"] == 0.0
    assert section["examples"][0]["id"] == "t"


def test_tool_call_reference_must_be_a_tool_call(student):
    with pytest.raises(EvalDataError, match=r"'t'.*not a JSON tool call"):
        run_toolcalls(student, [KDRecord(id="t", prompt="p", completion="hello")])
