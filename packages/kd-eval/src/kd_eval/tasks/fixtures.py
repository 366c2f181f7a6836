"""Recorded tool results, replayed deterministically (no network, no real tool runs).

A fixture file is JSON: a list of ``{"name": str, "arguments": object, "result": any}``.
Replaying a predicted call looks up its canonical JSON
(:meth:`~kd_eval.tasks.toolcalls.ToolCall.key`); a hit returns the recorded result, a miss
means the model asked for a call nobody recorded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kd_eval.errors import ConfigError
from kd_eval.tasks.toolcalls import ToolCall


def load_fixtures(path: str | Path) -> dict[str, Any]:
    """Read a fixture file into a map from call key to recorded result.

    Raises:
        ConfigError: the file is missing, not JSON, or an entry lacks ``name``/``arguments``.

    >>> import json, tempfile, pathlib
    >>> from kd_eval.tasks.fixtures import load_fixtures
    >>> from kd_eval.tasks.toolcalls import ToolCall
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "fx.json"
    >>> _ = p.write_text(json.dumps([{"name": "f", "arguments": {"x": 1}, "result": 2}]))
    >>> load_fixtures(p)[ToolCall("f", {"x": 1}).key()]
    2
    """
    source = Path(path)
    try:
        entries = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"fixture file {source} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: a fixture file is a JSON list of recorded calls")
    table: dict[str, Any] = {}
    for i, entry in enumerate(entries):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("name"), str)
            or not isinstance(entry.get("arguments"), dict)
        ):
            raise ConfigError(
                f"{source}: entry {i} needs a string 'name' and an object 'arguments'"
            )
        table[ToolCall(entry["name"], entry["arguments"]).key()] = entry.get("result")
    return table
