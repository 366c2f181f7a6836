"""Teacher sources behind one protocol: top-k log-probs for given token ids."""

from kd_train.teachers.base import Teacher, TopK

__all__ = ["Teacher", "TopK"]
