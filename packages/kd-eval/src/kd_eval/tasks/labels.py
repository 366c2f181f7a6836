"""Ready label sets for classification tasks."""

from __future__ import annotations

#: The 20 answers of the classic Magic 8-Ball (10 affirmative, 5 non-committal, 5 negative).
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

#: Label sets known by name on the command line (``--labels 8ball``).
LABEL_SETS: dict[str, tuple[str, ...]] = {"8ball": MAGIC_8_BALL_ANSWERS}
