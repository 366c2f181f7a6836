"""Label sets shared by the data that trains on them and the evaluation that scores them.

The 8-ball demo pipeline writes its records from :data:`MAGIC_8_BALL_ANSWERS`, and
``kd-eval classify --labels 8ball`` scores against the same tuple, so the training's labels
and the evaluation's always agree. Both import it from here; neither imports the other.

>>> from kd_train.data.labels import MAGIC_8_BALL_ANSWERS
>>> len(MAGIC_8_BALL_ANSWERS), MAGIC_8_BALL_ANSWERS[0]
(20, 'It is certain.')
"""

from __future__ import annotations

#: The twenty classic Magic 8-Ball answers (10 affirmative, 5 non-committal, 5 negative).
MAGIC_8_BALL_ANSWERS: tuple[str, ...] = (
    "It is certain.",
    "It is decidedly so.",
    "Without a doubt.",
    "Yes definitely.",
    "You may rely on it.",
    "As I see it, yes.",
    "Most likely.",
    "Outlook good.",
    "Yes.",
    "Signs point to yes.",
    "Reply hazy, try again.",
    "Ask again later.",
    "Better not tell you now.",
    "Cannot predict now.",
    "Concentrate and ask again.",
    "Don't count on it.",
    "My reply is no.",
    "My sources say no.",
    "Outlook not so good.",
    "Very doubtful.",
)
