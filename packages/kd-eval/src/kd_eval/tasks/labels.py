"""Ready label sets for classification tasks."""

from __future__ import annotations

from kd_train.data.labels import MAGIC_8_BALL_ANSWERS

#: Label sets known by name on the command line (``--labels 8ball``). ``8ball`` is
#: :data:`kd_train.data.labels.MAGIC_8_BALL_ANSWERS`, the tuple the 8-ball pipeline writes
#: its data from, so the evaluation's labels always match the training's.
LABEL_SETS: dict[str, tuple[str, ...]] = {"8ball": MAGIC_8_BALL_ANSWERS}

__all__ = ["LABEL_SETS", "MAGIC_8_BALL_ANSWERS"]
