"""The client side of a loopback run: a prompts file and the ``kd-train generate`` arguments.

>>> from kd_train.testing import generate_argv
>>> argv = generate_argv("http://h/v1", "p.jsonl", "o.jsonl", max_tokens=3, model=None)
>>> argv[:3], argv[7:9], "--model" in argv, argv[-1]
(['generate', '--prompts', 'p.jsonl'], ['--max-tokens', '3'], False, '--no-progress')
"""

from __future__ import annotations

import json
from pathlib import Path


def write_prompts(
    path: str | Path, n: int, text: str = "Ask again later {i}", prefix: str = "r"
) -> list[str]:
    """Write ``n`` prompt records ``{"id": f"{prefix}{i}", "prompt": text.format(i=i)}``.

    Returns their ids, in file order (the input of ``kd-train generate --prompts``).
    """
    ids = [f"{prefix}{i}" for i in range(n)]
    lines = (json.dumps({"id": rid, "prompt": text.format(i=i)}) for i, rid in enumerate(ids))
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return ids


#: Options of :func:`generate_argv` unless the caller gives them.
GENERATE_DEFAULTS: dict[str, object] = {
    "model": "tiny",
    "max_tokens": 2,
    "top_logprobs": 2,
    "price_per_1k_prompt": 1,
    "price_per_1k_completion": 1,
    "retry_base_delay": 0,
}


def generate_argv(
    base_url: str, prompts: str | Path, out: str | Path, **options: object
) -> list[str]:
    """The ``kd-train generate`` arguments (after the program name) against ``base_url``.

    Keyword options become flags (``max_tokens=3`` -> ``--max-tokens 3``) over
    :data:`GENERATE_DEFAULTS`; ``None`` leaves a default flag out. Progress bars are off.
    """
    argv = ["generate", "--prompts", str(prompts), "--out", str(out), "--base-url", base_url]
    for key, value in {**GENERATE_DEFAULTS, **options}.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return [*argv, "--no-progress"]
