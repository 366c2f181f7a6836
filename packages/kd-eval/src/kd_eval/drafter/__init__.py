"""The student as a speculative drafter for its teacher (transformers assisted generation)."""
