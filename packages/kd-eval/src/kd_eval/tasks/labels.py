"""Ready label sets for classification tasks."""

from __future__ import annotations

from kd_train.pipelines import toydata

#: The 20 answers of the classic Magic 8-Ball (10 affirmative, 5 non-committal, 5 negative).
#: The same tuple as ``kd_train.pipelines.toydata.MAGIC_8_BALL_ANSWERS``, from which the
#: 8-ball pipeline writes its data, so the evaluation's labels always match the training's.
MAGIC_8_BALL_ANSWERS: tuple[str, ...] = toydata.MAGIC_8_BALL_ANSWERS

#: Label sets known by name on the command line (``--labels 8ball``).
LABEL_SETS: dict[str, tuple[str, ...]] = {"8ball": MAGIC_8_BALL_ANSWERS}
