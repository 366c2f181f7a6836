"""The JSON Schemas of the configs: ``run`` (``kd-train distill``), ``loss`` and ``generate``.

Each schema is generated from the pydantic model that validates the config
(:class:`~kd_train.trainer.config.RunConfig`, :class:`~kd_train.losses.config.LossConfig`,
:class:`~kd_train.generate.config.GenerateConfig`), so it cannot drift from what the loader
accepts. ``kd-train schema run`` prints one; the docs site publishes all three, for editors
that complete and check a ``run.yaml`` (``# yaml-language-server: $schema=...``). A schema
describes the keys, types, ranges and choices; rules across keys (a teacher kind that
cannot serve a loss term, for example) are checked by the loader only.

>>> from kd_train.schemas import config_schemas
>>> schemas = config_schemas()
>>> sorted(schemas)
['generate', 'loss', 'run']
>>> schemas["run"]["additionalProperties"], schemas["run"]["required"]
(False, ['student', 'data', 'train', 'output_dir'])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kd_train.atomic import atomic_write_text
from kd_train.generate.config import GenerateConfig
from kd_train.losses.config import LossConfig
from kd_train.trainer.config import RunConfig

#: The JSON Schema dialect pydantic writes.
DIALECT = "https://json-schema.org/draft/2020-12/schema"

#: Config name to the model that validates it.
CONFIGS: dict[str, type[BaseModel]] = {
    "run": RunConfig,
    "loss": LossConfig,
    "generate": GenerateConfig,
}


def config_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of the config ``name`` (one of :data:`CONFIGS`).

    Raises:
        KeyError: ``name`` is not a config.
    """
    return {"$schema": DIALECT, **CONFIGS[name].model_json_schema()}


def config_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every config, by name."""
    return {name: config_schema(name) for name in CONFIGS}


def write_schemas(directory: str | Path) -> list[Path]:
    """Write ``<name>.schema.json`` for every config into ``directory``; return the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in config_schemas().items():
        path = out / f"{name}.schema.json"
        atomic_write_text(path, json.dumps(schema, indent=2) + "\n")
        written.append(path)
    return written
