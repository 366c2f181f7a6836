"""The typed configuration of ``kd-train generate``, read from YAML/TOML and flags.

Keys (a config file holds any of them; a flag given on the command line wins):

``prompts``, ``out`` (paths), ``base_url``, ``model``, ``api`` (``completions``/``chat``),
``api_key_env`` (the *name* of the environment variable holding the key), ``max_tokens``,
``top_logprobs``, ``temperature``, ``timeout``, ``concurrency``, ``rpm``, ``budget``
(USD), ``budget_name``, ``price_per_1k_prompt``, ``price_per_1k_completion`` (USD),
``store`` (database URL; default: ``kd-store.sqlite`` next to ``out``), ``tokenizer``
(directory of the teacher's tokenizer), and ``retry`` (``max_attempts``, ``base_delay``,
``max_delay``, ``max_retry_after``).

>>> from kd_train.generate.config import generate_config
>>> cfg = generate_config({"prompts": "p.jsonl", "out": "run/out.jsonl",
...                        "base_url": "http://127.0.0.1:8000/v1", "model": "m"}, "flags")
>>> cfg.store_url.endswith("run/kd-store.sqlite"), cfg.teacher.max_tokens
(True, 256)
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kd_train.errors import KDTrainError
from kd_train.store import sqlite_url
from kd_train.teachers.http import HTTPTeacherConfig
from kd_train.teachers.retry import RetryPolicy

_TEACHER_KEYS = {f.name for f in dataclasses.fields(HTTPTeacherConfig)} - {"retry"}
_RETRY_KEYS = {f.name for f in dataclasses.fields(RetryPolicy)}
_OWN_KEYS = {"prompts", "out", "api_key_env", "store", "tokenizer", "retry"}


@dataclass(frozen=True)
class GenerateConfig:
    """Everything ``kd-train generate`` needs, validated; holds no secret."""

    prompts: Path
    out: Path
    teacher: HTTPTeacherConfig
    store_url: str
    api_key_env: str | None = None
    tokenizer: Path | None = None

    def public(self) -> dict[str, Any]:
        """The configuration as JSON-able data, for the run registry (no secret in it)."""
        data = dataclasses.asdict(self.teacher)
        data.update(
            prompts=str(self.prompts),
            out=str(self.out),
            api_key_env=self.api_key_env,
            tokenizer=str(self.tokenizer) if self.tokenizer else None,
        )
        return data


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) mapping.

    Raises:
        kd_train.errors.KDTrainError: the file is missing, unparsable, or not a mapping.
    """
    source = Path(path)
    if not source.is_file():
        raise KDTrainError(f"config file {source} does not exist")
    text = source.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if source.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise KDTrainError(f"{source}: cannot parse config: {exc}") from None
    if not isinstance(data, dict):
        raise KDTrainError(f"{source}: the config must be a mapping of keys to values")
    return data


def http_teacher_config(data: dict[str, Any], source: str) -> HTTPTeacherConfig:
    """Build an :class:`~kd_train.teachers.http.HTTPTeacherConfig` from ``data``'s endpoint keys.

    Keys that are not the endpoint's are ignored.

    Raises:
        kd_train.errors.KDTrainError: ``retry`` has unknown keys or a value is invalid;
            the message names ``source``.
    """
    retry_data = data.get("retry") or {}
    if not isinstance(retry_data, dict) or set(retry_data) - _RETRY_KEYS:
        raise KDTrainError(f"{source}: 'retry' takes only the keys {sorted(_RETRY_KEYS)}")
    try:
        retry = RetryPolicy(**retry_data)
        return HTTPTeacherConfig(
            **{k: v for k, v in data.items() if k in _TEACHER_KEYS}, retry=retry
        )
    except (TypeError, ValueError) as exc:
        raise KDTrainError(f"{source}: invalid teacher settings: {exc}") from None


def generate_config(data: dict[str, Any], source: str) -> GenerateConfig:
    """Validate ``data`` (merged file + flags) into a :class:`GenerateConfig`.

    Raises:
        kd_train.errors.KDTrainError: a key is unknown, missing or invalid; the message
            names it and ``source``.
    """
    unknown = set(data) - _TEACHER_KEYS - _OWN_KEYS
    if unknown:
        raise KDTrainError(f"{source}: unknown keys {sorted(unknown)}")
    for required in ("prompts", "out", "base_url", "model"):
        if not data.get(required):
            raise KDTrainError(f"{source}: {required!r} is required (config key or flag)")
    teacher = http_teacher_config(data, source)
    out = Path(data["out"])
    return GenerateConfig(
        prompts=Path(data["prompts"]),
        out=out,
        teacher=teacher,
        store_url=data.get("store") or sqlite_url(out.parent / "kd-store.sqlite"),
        api_key_env=data.get("api_key_env"),
        tokenizer=Path(data["tokenizer"]) if data.get("tokenizer") else None,
    )
