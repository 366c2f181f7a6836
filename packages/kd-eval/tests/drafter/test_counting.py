import pytest
from kd_eval.drafter.counting import (
    DRAFT_SETTINGS,
    accepted_tokens,
    assisted,
    counting_forwards,
    recording_drafts,
    teacher_alone,
)
from kd_eval.errors import KDEvalError
from kd_eval.loading.models import load_model

PROMPT = [1, 40, 41, 42, 43]


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir):
    return load_model(tiny_teacher_dir)


@pytest.fixture(scope="module")
def student(tiny_llama_dir):
    return load_model(tiny_llama_dir)


def test_a_draft_counts_up_to_its_first_mismatch():
    assert accepted_tokens([(1, [5, 6, 9, 6])], [0, 5, 6, 7, 6]) == 2


def test_draft_tokens_past_the_end_of_the_output_are_not_accepted():
    assert accepted_tokens([(3, [7, 8])], [0, 1, 2, 7]) == 1


def test_the_teacher_alone_runs_one_forward_per_new_token(teacher):
    alone = teacher_alone(teacher.model, PROMPT, 10, 0)
    assert len(alone.new_ids) == 10
    assert alone.teacher_forwards == 10


def test_assisted_generation_counts_rounds_drafts_and_acceptances(teacher, student):
    drafted = assisted(teacher.model, student.model, PROMPT, 10, 0, draft_tokens=3)
    assert drafted.new_ids == teacher_alone(teacher.model, PROMPT, 10, 0).new_ids
    # every round adds its accepted draft tokens plus one token of the teacher's
    assert drafted.accepted == len(drafted.new_ids) - drafted.teacher_forwards
    assert 0 <= drafted.accepted <= drafted.proposed <= 3 * drafted.teacher_forwards


def test_a_drafter_equal_to_its_teacher_has_every_draft_accepted(student, tiny_llama_dir):
    twin = load_model(tiny_llama_dir).model
    drafted = assisted(student.model, twin, PROMPT, 12, 0, draft_tokens=3)
    assert drafted.accepted == drafted.proposed > 0
    assert drafted.teacher_forwards < len(drafted.new_ids)


def test_drafting_settings_and_generate_are_restored_afterwards(student):
    config = student.model.generation_config
    before = {name: getattr(config, name) for name in DRAFT_SETTINGS}
    with recording_drafts(student.model, 4):
        assert config.num_assistant_tokens == 4
        assert "generate" in vars(student.model)
    assert {name: getattr(config, name) for name in DRAFT_SETTINGS} == before
    assert "generate" not in vars(student.model)


def test_forward_hook_is_removed_after_counting(teacher):
    with counting_forwards(teacher.model) as calls:
        teacher_alone(teacher.model, PROMPT, 2, 0)
    teacher_alone(teacher.model, PROMPT, 2, 0)
    assert calls == [2]


def test_one_model_object_as_teacher_and_drafter_is_refused(student):
    with pytest.raises(KDEvalError, match="load the student separately"):
        assisted(student.model, student.model, PROMPT, 4, 0, draft_tokens=2)
