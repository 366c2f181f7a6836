import pytest
from kd_eval.errors import MetricInputError
from kd_eval.tasks.classification import UNPARSED, classification_metrics, match_label
from kd_eval.tasks.labels import MAGIC_8_BALL_ANSWERS

# A 3-class case computed by hand:
#   reference: a a a b b c     predicted: a a b b c c
#   confusion (rows reference a,b,c; columns predicted a,b,c):
#     a: [2, 1, 0]   b: [0, 1, 1]   c: [0, 0, 1]
#   F1_a = 2·2/(2·2+0+1) = 0.8; F1_b = 2·1/(2+1+1) = 0.5; F1_c = 2·1/(2+1+0) = 2/3
REFS = ["a", "a", "a", "b", "b", "c"]
PREDS = ["a", "a", "b", "b", "c", "c"]


def test_three_class_confusion_matrix_matches_the_hand_computed_one():
    m = classification_metrics(REFS, PREDS, ["a", "b", "c"])
    assert m.confusion == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_three_class_accuracy_and_macro_f1_match_the_hand_computed_values():
    m = classification_metrics(REFS, PREDS, ["a", "b", "c"])
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.per_class_f1 == pytest.approx({"a": 0.8, "b": 0.5, "c": 2 / 3})
    assert m.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_class_distributions_count_references_and_predictions():
    m = classification_metrics(REFS, PREDS, ["a", "b", "c"])
    assert m.reference_distribution == {"a": 3, "b": 2, "c": 1}
    assert m.prediction_distribution == {"a": 2, "b": 2, "c": 2}


def test_labels_absent_from_both_sides_do_not_dilute_macro_f1():
    m = classification_metrics(["a", "b"], ["a", "b"], ["a", "b", "c", "d"])
    assert m.macro_f1 == 1.0
    assert m.labels == ["a", "b", "c", "d"]


def test_unparsed_predictions_are_wrong_and_get_their_own_last_column():
    m = classification_metrics(["a", "b"], ["a", UNPARSED], ["a", "b"])
    assert m.accuracy == 0.5
    assert m.labels[-1] == UNPARSED
    assert m.confusion[1] == [0, 0, 1]
    assert UNPARSED not in m.per_class_f1


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 references but 1 predictions"):
        classification_metrics(["a", "b"], ["a"])


def test_generated_text_is_matched_to_the_longest_label_it_starts_with():
    assert match_label("Yes definitely. Sure", MAGIC_8_BALL_ANSWERS) == "Yes definitely."
    assert match_label("yes.", MAGIC_8_BALL_ANSWERS) == "Yes."
    assert match_label("Perhaps", MAGIC_8_BALL_ANSWERS) == UNPARSED


def test_the_magic_8_ball_has_twenty_distinct_answers():
    assert len(set(MAGIC_8_BALL_ANSWERS)) == 20


# -- degenerate inputs -------------------------------------------------------------------


def test_no_examples_are_refused():
    with pytest.raises(MetricInputError, match="zero examples"):
        classification_metrics([], [])
    with pytest.raises(MetricInputError, match="zero examples"):
        classification_metrics([], [], labels=["a", "b"])


def test_one_example_is_scored_like_any_other():
    right = classification_metrics(["a"], ["a"])
    wrong = classification_metrics(["a"], ["b"])
    assert (right.accuracy, right.macro_f1) == (1.0, 1.0)
    assert (wrong.accuracy, wrong.macro_f1, wrong.per_class_f1) == (0.0, 0.0, {"a": 0.0, "b": 0.0})


def test_every_prediction_unparsed_scores_zero():
    m = classification_metrics(["a", "b"], [UNPARSED, UNPARSED])
    assert (m.accuracy, m.macro_f1) == (0.0, 0.0)
    assert m.labels[-1] == UNPARSED


def test_labels_never_seen_get_no_f1_and_do_not_dilute_the_macro_f1():
    m = classification_metrics(["a"], ["a"], labels=["a", "b", "c"])
    assert (m.macro_f1, m.per_class_f1) == (1.0, {"a": 1.0})
    assert m.confusion == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]
