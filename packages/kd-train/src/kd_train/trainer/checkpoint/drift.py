"""Resume refuses drift: the config and the fingerprints must be the checkpoint's.

A checkpoint stores the run config it was trained with and the fingerprints of what the run
read (``data.train``, ``data.eval``, the tokenizer, the teacher: see
:func:`kd_train.trainer.outputs.run_fingerprints`).
:func:`~kd_train.trainer.checkpoint.require_same_run` compares them
with the config and fingerprints of the run being resumed and refuses every difference,
naming each key with its old and new value, all in one line::

    resume refused: the run differs from the checkpoint step-00000100 it resumes; ...
    train.batch_size: 8 -> 4; fingerprint.data.train: sha256:5d41402abc4b... -> ...

A change is accepted only when it is named (``kd-train resume RUN --allow-change KEY``; a
key also accepts every key under it); the accepted changes are returned as
:class:`~kd_train.trainer.checkpoint.ConfigChange` records, which the run keeps in its
state and its run manifest. The one key that may always differ is ``output_dir``: a run
directory that was moved resumes where it now is.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kd_train.errors import KDTrainError
from kd_train.trainer.checkpoint.manifest import read_manifest
from kd_train.trainer.checkpoint.state import ConfigChange
from kd_train.trainer.config import RunConfig

#: Keys that may differ without being named (where the run directory now is).
ALWAYS_ALLOWED = ("output_dir",)
#: The prefix of the fingerprint keys (``fingerprint.data.train``, ``fingerprint.teacher``).
FINGERPRINT = "fingerprint"
#: Stands for a key one side does not have.
_ABSENT = object()


class ResumeDriftError(KDTrainError):
    """A resumed run differs from its checkpoint; the message names each changed key."""


def changed_keys(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The dotted key paths whose values differ, with ``(before, after)``; lists compared whole.

    A key missing on one side has the value ``None`` there.

    >>> from kd_train.trainer.checkpoint.drift import changed_keys
    >>> changed_keys({"train": {"seed": 1, "lr": 8}}, {"train": {"seed": 1, "lr": 4}})
    {'train.lr': (8, 4)}
    >>> changed_keys({"optim": {"betas": [0.9, 0.99]}}, {"optim": {}})
    {'optim.betas': ([0.9, 0.99], None)}
    """
    found = _diff(before, after, "")
    return {key: (_plain(old), _plain(new)) for key, (old, new) in found.items()}


def require_same_run(
    stored_config: Mapping[str, Any],
    stored_fingerprints: Mapping[str, Any],
    config: Mapping[str, Any],
    fingerprints: Mapping[str, str | None],
    allow_change: Collection[str] = (),
    *,
    step: int = 0,
    where: str = "the checkpoint",
) -> list[ConfigChange]:
    """Refuse a resume whose config or fingerprints differ from the checkpoint's.

    Args:
        stored_config: the config the checkpoint holds (defaults filled in by the caller).
        stored_fingerprints: the fingerprints the checkpoint holds.
        config: the config of the run being resumed (``RunConfig.to_dict()``).
        fingerprints: its fingerprints.
        allow_change: keys whose change is accepted (a key accepts the keys under it).
        step: the checkpoint's step, recorded with each accepted change.
        where: the checkpoint, as messages name it.

    Returns:
        The accepted changes, one :class:`~kd_train.trainer.checkpoint.ConfigChange` per key.

    Raises:
        ResumeDriftError: a key changed without being named (one line naming each key), or an
            allowed key names nothing that changed (a typo would otherwise accept nothing).

    >>> from kd_train.trainer.checkpoint.drift import require_same_run
    >>> old = {"train": {"max_steps": 6, "batch_size": 8}, "output_dir": "a"}
    >>> new = {"train": {"max_steps": 9, "batch_size": 8}, "output_dir": "b"}
    >>> [c.key for c in require_same_run(old, {}, new, {}, ["train.max_steps"], step=6)]
    ['train.max_steps']
    >>> print(changed_keys(old, new))
    {'output_dir': ('a', 'b'), 'train.max_steps': (6, 9)}
    """
    changes = {
        key: values
        for key, values in _diff(stored_config, config, "").items()
        if not _covered(key, ALWAYS_ALLOWED)
    }
    for key, values in _diff(stored_fingerprints, fingerprints, "").items():
        changes[f"{FINGERPRINT}.{key}"] = values
    unused = sorted(a for a in set(allow_change) if not any(_covered(k, [a]) for k in changes))
    if unused:
        names = ", ".join(changes) or "none"
        raise ResumeDriftError(
            f"resume refused: --allow-change {' '.join(unused)} names no key that differs "
            f"from {where} (keys that differ: {names})"
        )
    refused = {key: v for key, v in changes.items() if not _covered(key, allow_change)}
    if refused:
        lines = [f"{key}: {_show(old)} -> {_show(new)}" for key, (old, new) in refused.items()]
        flags = " ".join(f"--allow-change {key}" for key in refused)
        raise ResumeDriftError(
            "; ".join(
                [
                    f"resume refused: the run differs from {where} it resumes",
                    *lines,
                    f"undo the changes, or accept each by name: {flags}",
                ]
            )
        )
    return [
        ConfigChange(step, key, _plain(old), _plain(new)) for key, (old, new) in changes.items()
    ]


def check_resume(
    ckpt: Path,
    config: Mapping[str, Any],
    fingerprints: Mapping[str, str | None],
    allow_change: Collection[str] = (),
) -> list[ConfigChange]:
    """Compare a run with the checkpoint ``ckpt`` it resumes, as ``require_same_run`` does.

    The checkpoint's manifest gives the stored config and fingerprints; the stored config
    gets the defaults of keys added since it was written
    (:func:`kd_train.trainer.checkpoint.drift.normalised`), so a newer kd-train does not
    report its new keys as changes.
    """
    manifest = read_manifest(Path(ckpt))
    return require_same_run(
        normalised(manifest.config),
        manifest.fingerprints,
        config,
        fingerprints,
        allow_change,
        step=manifest.step,
        where=f"the checkpoint {Path(ckpt).name}",
    )


def normalised(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored run config with the defaults of keys added since it was written filled in.

    A config this kd-train cannot read any more is returned as it is (every difference
    then shows).
    """
    try:
        return RunConfig.model_validate(dict(stored)).to_dict()
    except (ValidationError, KDTrainError):
        return dict(stored)


def _diff(before: Any, after: Any, prefix: str) -> dict[str, tuple[Any, Any]]:
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        found: dict[str, tuple[Any, Any]] = {}
        for key in sorted(set(before) | set(after), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            found.update(_diff(before.get(key, _ABSENT), after.get(key, _ABSENT), path))
        return found
    if (before is _ABSENT and after is None) or (after is _ABSENT and before is None):
        return {}  # an absent key and an explicit null mean the same
    if before is not _ABSENT and after is not _ABSENT and _same(before, after):
        return {}
    return {prefix or "config": (before, after)}


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON (so ``1`` and ``1.0`` differ, as a strict config tells them apart)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _plain(value: Any) -> Any:
    return None if value is _ABSENT else value


def _covered(key: str, allowed: Collection[str]) -> bool:
    return any(key == a or key.startswith((f"{a}.", f"{a}[")) for a in allowed)


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    if isinstance(value, str) and value.startswith("sha256:"):
        return value[:19] + "..."
    return json.dumps(value)
