"""Teachers for tests: the real :class:`~kd_train.teachers.hf.HFTeacher`, interrupted on cue."""

from __future__ import annotations

import torch

from kd_train.teachers.hf import HFTeacher


class InterruptedTeacher(HFTeacher):
    """The real teacher, stopped (as by Ctrl-C) at its ``stop_at``-th forward pass.

    Args:
        teacher: the loaded teacher whose model, tokenizer and source it shares.
        stop_at: the 1-based forward pass that raises :class:`KeyboardInterrupt`.
    """

    def __init__(self, teacher: HFTeacher, stop_at: int) -> None:
        super().__init__(teacher.model, teacher.tokenizer, source=teacher.source)
        #: Forward passes so far.
        self.calls = 0
        self.stop_at = stop_at

    def log_probs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The teacher's log-probs, or :class:`KeyboardInterrupt` at pass ``stop_at``."""
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        return super().log_probs(input_ids, attention_mask)
