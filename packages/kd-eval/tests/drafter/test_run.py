import pytest
from kd_eval.drafter.run import FIGURES, aggregate, evaluate_drafter
from kd_eval.errors import EvalDataError, VocabularyMismatchError
from kd_eval.loading.models import load_model
from kd_train.data.schema import KDRecord

RECORDS = [
    KDRecord(id="a", prompt="The quick brown", completion=" fox jumps."),
    KDRecord(id="b", prompt="Call the tool", completion=" get_weather"),
    KDRecord(id="c", prompt="It is", completion=" certain."),
]
OPTS = {"max_new_tokens": 12, "draft_tokens": 3, "resamples": 100}


@pytest.fixture(scope="module")
def models(tiny_teacher_dir, tiny_llama_dir):
    return load_model(tiny_teacher_dir), load_model(tiny_llama_dir)


@pytest.fixture(scope="module")
def self_drafted(models, tiny_llama_dir):
    _, student = models
    return evaluate_drafter(student, load_model(tiny_llama_dir), RECORDS, **OPTS)


@pytest.fixture(scope="module")
def other_drafted(models):
    return evaluate_drafter(*models, RECORDS, **OPTS)


def test_a_student_identical_to_its_teacher_has_every_draft_accepted(self_drafted):
    assert self_drafted.aggregate["acceptance_rate"].value == 1.0
    assert self_drafted.aggregate["tokens_per_teacher_forward"].value > 1.0


def test_a_different_random_student_has_a_lower_acceptance_rate(self_drafted, other_drafted):
    rate = other_drafted.aggregate["acceptance_rate"].value
    assert rate < self_drafted.aggregate["acceptance_rate"].value


@pytest.mark.parametrize("run", ["self_drafted", "other_drafted"])
def test_greedy_outputs_equal_the_teacher_alone(run, request):
    result = request.getfixturevalue(run)
    assert result.n_identical == len(RECORDS)
    assert all(row["teacher_alone_forwards"] == row["new_tokens"] for row in result.examples)


@pytest.mark.parametrize("run", ["self_drafted", "other_drafted"])
def test_every_interval_holds_its_estimate(run, request):
    result = request.getfixturevalue(run)
    assert list(result.aggregate) == list(FIGURES)
    for estimate in result.aggregate.values():
        assert estimate.low <= estimate.value <= estimate.high


def test_the_json_form_sums_the_counts_of_every_prompt(other_drafted):
    data = other_drafted.to_dict()
    assert [row["id"] for row in data["examples"]] == ["a", "b", "c"]
    assert data["totals"]["accepted"] == sum(row["accepted"] for row in data["examples"])
    assert data["settings"] == {"max_new_tokens": 12, "draft_tokens": 3, "repeats": 1}
    rate = data["totals"]["accepted"] / data["totals"]["proposed"]
    assert data["aggregate"]["acceptance_rate"]["value"] == pytest.approx(rate)


def test_the_speedup_is_the_ratio_of_total_times():
    rows = [
        {"accepted": 1, "proposed": 2, "new_tokens": 3, "teacher_forwards": 2,
         "teacher_seconds": 3.0, "assisted_seconds": 1.0},
        {"accepted": 0, "proposed": 2, "new_tokens": 1, "teacher_forwards": 1,
         "teacher_seconds": 1.0, "assisted_seconds": 3.0},
    ]  # fmt: skip
    figures = aggregate(rows, resamples=50)
    assert figures["speedup"].value == pytest.approx(4.0 / 4.0)
    assert figures["acceptance_rate"].value == pytest.approx(1 / 4)
    assert figures["tokens_per_teacher_forward"].value == pytest.approx(4 / 3)


def test_no_proposed_draft_at_all_is_refused():
    row = {"accepted": 0, "proposed": 0, "new_tokens": 1, "teacher_forwards": 1,
           "teacher_seconds": 1.0, "assisted_seconds": 1.0}  # fmt: skip
    with pytest.raises(EvalDataError, match="no draft token"):
        aggregate([row])


def test_one_new_token_is_refused_because_nothing_can_be_drafted(models):
    with pytest.raises(EvalDataError, match="max_new_tokens >= 2"):
        evaluate_drafter(*models, RECORDS, max_new_tokens=1)


def test_empty_eval_set_is_refused(models):
    with pytest.raises(EvalDataError, match="empty"):
        evaluate_drafter(*models, [])


def test_a_student_with_another_vocabulary_is_refused(small_vocab_model_dir, models):
    teacher, _ = models
    with pytest.raises(VocabularyMismatchError, match="has 300"):
        evaluate_drafter(teacher, load_model(small_vocab_model_dir), RECORDS)
