"""The run configuration: typed, validated at the edge, read from YAML, TOML or JSON.

A run config is plain data with eight sections (every key optional unless marked)::

    student:   {path: DIR}  or  {config: {model_type: llama, ...}, tokenizer: DIR},
               lora: {rank: 8, alpha: 16.0, dropout: 0.0, target_modules: [q_proj, ...]}
    teacher:   {kind: hf | cached | records | http | none, path: DIR, topk: K,
                eval_path: DIR, http: {base_url, model, scoring, api_key_env, store, ...}}
    data:      {train: FILE (required), eval: FILE, eval_fraction: 0.1, max_length: 256}
    loss:      kd_train.losses.LossConfig as a mapping (divergence, temperature, weights, ...)
    optim:     {lr: 3e-4, weight_decay: 0.0, betas: [0.9, 0.999], eps: 1e-8,
                warmup_steps: 0, min_lr_ratio: 0.1}
    train:     {seed, max_steps (required), batch_size, grad_accum, clip_norm,
                precision: fp32 | bf16, eval_every, early_stopping_patience,
                checkpoint_every, keep_checkpoints, threads,
                on_policy: {lmbda, temperature, top_p, top_k, max_new_tokens, seq_kd,
                            log_samples}}
    distributed: {strategy: ddp | fsdp}
    qat:       {scheme: int8 | int4 (required), group_size: 32 | 64 (int4), start_step: 0}
    output_dir: DIR (required)

:class:`RunConfig` is a pydantic model; its sections live in
:mod:`kd_train.trainer.train_config` and :mod:`kd_train.trainer.teacher_config`, its JSON
Schema is ``kd-train schema run``. :func:`parse_config` checks every key before anything
runs; an error has one line per problem, naming the key path (``train.precision``) and, for
a choice or an unknown key, the allowed values. Relative paths are resolved against the
config file's directory by :func:`load_config`.

>>> from kd_train.trainer.config import parse_config
>>> cfg = parse_config({"student": {"path": "s"}, "data": {"train": "d.jsonl"},
...                     "train": {"max_steps": 10}, "output_dir": "out"})
>>> (cfg.teacher.kind, cfg.train.batch_size, cfg.train.precision)
('none', 8, 'fp32')
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator

from kd_train.losses import LossConfig
from kd_train.losses.terms import uses_per_token
from kd_train.trainer.teacher_config import (
    HTTP_ENDPOINT_KEYS,
    PATH_KINDS,
    TEACHER_KINDS,
    HTTPSettings,
    TeacherConfig,
)
from kd_train.trainer.train_config import (
    PRECISIONS,
    STRATEGIES,
    DataConfig,
    DistributedConfig,
    LoraConfig,
    OnPolicyConfig,
    OptimConfig,
    QATConfig,
    StudentConfig,
    TrainConfig,
)
from kd_train.typed_config import ConfigModel, InvalidConfigError, PathStr, validate

__all__ = [
    "HTTP_ENDPOINT_KEYS",
    "PATH_KINDS",
    "PRECISIONS",
    "SCORING_KINDS",
    "STRATEGIES",
    "TEACHER_KINDS",
    "DataConfig",
    "DistributedConfig",
    "HTTPSettings",
    "LoraConfig",
    "OnPolicyConfig",
    "OptimConfig",
    "QATConfig",
    "RunConfig",
    "RunConfigError",
    "StudentConfig",
    "TeacherConfig",
    "TrainConfig",
    "load_config",
    "parse_config",
    "resolve_paths",
]


#: The teacher kinds that can score text sampled during a run (``train.on_policy``).
SCORING_KINDS = ("hf", "http")
_CANNOT_SCORE = {
    "cached": "a cache holds only the dataset's own token sequences",
    "records": "the records hold top-k only for their own completions",
    "none": "there is no teacher",
}


class RunConfigError(InvalidConfigError):
    """A run config is malformed; the message names the key path and what is allowed."""


class RunConfig(ConfigModel):
    """A whole run. :meth:`to_dict` gives back the JSON form stored in checkpoints.

    Without ``loss.weights`` a run with a teacher optimises ``kd`` and a CE-only run
    (``teacher.kind: none``) optimises ``ce``.
    """

    student: StudentConfig = Field(description="The student model.")
    data: DataConfig = Field(description="The KD datasets.")
    train: TrainConfig = Field(description="The loop.")
    output_dir: PathStr = Field(
        description="The run directory (checkpoints, metrics, the final student)."
    )
    teacher: TeacherConfig = Field(default=TeacherConfig(), description="The teacher's source.")
    loss: LossConfig = Field(
        default_factory=LossConfig,
        description="The loss terms and their weights (a LossConfig).",
    )
    optim: OptimConfig = Field(default=OptimConfig(), description="AdamW and its schedule.")
    distributed: DistributedConfig = Field(
        default=DistributedConfig(),
        description="How ``torchrun`` processes share the student.",
    )
    qat: QATConfig | None = Field(
        default=None,
        description="Quantization-aware distillation (``null``: the student trains in float).",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_weights(cls, data: Any) -> Any:
        """Without ``loss.weights``: ``kd`` with a teacher, ``ce`` without one."""
        if not isinstance(data, Mapping):
            return data
        loss = data.get("loss") or {}
        if not isinstance(loss, Mapping) or "weights" in loss:
            return data
        teacher = data.get("teacher")
        kind = teacher.get("kind") if isinstance(teacher, Mapping) else None
        if isinstance(teacher, TeacherConfig):
            kind = teacher.kind
        weights = {"kd": 1.0} if kind not in (None, "none") else {"ce": 1.0}
        return {**data, "loss": {**loss, "weights": weights}}

    @model_validator(mode="after")
    def _cached_teacher_serves_every_file(self) -> RunConfig:
        """A cached teacher needs a cache for every file it serves: data.train, and data.eval."""
        if self.teacher.kind != "cached":
            return self
        if self.data.eval is not None and self.teacher.eval_path is None:
            raise InvalidConfigError(
                "data.eval: a separate file, but teacher.path is a cache of data.train only: "
                "build a cache of data.eval with 'kd-train cache-logits --data EVAL_FILE' "
                "(same teacher) and give it as teacher.eval_path, or drop data.eval to hold "
                "out data.eval_fraction of data.train"
            )
        if self.data.eval is None and self.teacher.eval_path is not None:
            raise InvalidConfigError(
                "teacher.eval_path: set but data.eval is not: the held-out records come from "
                "data.train and are in teacher.path; remove teacher.eval_path or set data.eval"
            )
        return self

    @model_validator(mode="after")
    def _teacher_serves_the_loss(self) -> RunConfig:
        """Refuse, before anything runs, a loss the teacher kind cannot feed."""
        active, kind = self.loss.active_terms(), self.teacher.kind
        if kind == "none" and uses_per_token("kd", active, self.loss.span_loss):
            raise InvalidConfigError(
                "loss.weights: has a KD term but teacher.kind is 'none': choose a teacher "
                "(hf, cached, records or http) or train on CE alone (loss.weights: {ce: 1.0})"
            )
        if "hidden" in active and kind != "hf":
            raise InvalidConfigError(
                "loss.hidden: hidden-state matching needs the teacher's per-layer hidden "
                f"states, which only a local model computes; teacher.kind {kind!r} gives only "
                "next-token log-probs. Use teacher.kind 'hf', or remove loss.hidden and its weight"
            )
        on_policy = self.train.on_policy
        if on_policy is not None and (on_policy.lmbda > 0 or on_policy.seq_kd):
            if kind not in SCORING_KINDS:
                raise InvalidConfigError(
                    f"train.on_policy: teacher.kind {kind!r} cannot score text sampled during "
                    f"the run ({_CANNOT_SCORE.get(kind, '')}); use teacher.kind 'hf' or "
                    "'http', or remove train.on_policy"
                )
            if on_policy.seq_kd and kind != "hf":
                raise InvalidConfigError(
                    f"train.on_policy.seq_kd: the teacher samples completions in the loop only "
                    f"when it is a local model (teacher.kind 'hf'; it is {kind!r}). For an "
                    "endpoint, make the teacher's completions once with 'kd-train generate' "
                    "and train on that dataset, or set seq_kd: false"
                )
        if self.qat is not None and self.student.lora is not None:
            raise InvalidConfigError(
                "qat: not supported with student.lora: torchao would fake-quantize the "
                "adapters' own small linear layers, and the merged weights would be quantized "
                "with scales training never saw. Train the LoRA student first, then run QAT "
                "on its merged student (student.path: RUN/student) without student.lora"
            )
        if self.student.lora is not None and self.distributed.strategy == "fsdp":
            raise InvalidConfigError(
                "student.lora: not supported with distributed.strategy 'fsdp' (the frozen "
                "base would be sharded with its adapters); use strategy 'ddp'"
            )
        if self.qat is not None and self.distributed.strategy == "fsdp":
            raise InvalidConfigError(
                "qat: not supported with distributed.strategy 'fsdp' (torchao's fake "
                "quantizers do not run on sharded weights); use strategy 'ddp' or drop qat"
            )
        if self.loss.cross_tokenizer is None and self.teacher.tokenizer is not None:
            raise InvalidConfigError(
                "teacher.tokenizer: only read with loss.cross_tokenizer (an endpoint with the "
                "student's tokenizer needs none); remove it or set loss.cross_tokenizer"
            )
        if self.loss.cross_tokenizer is not None:
            if kind not in ("hf", "cached", "http"):
                raise InvalidConfigError(
                    f"loss.cross_tokenizer: teacher.kind {kind!r} is not supported; a teacher "
                    "with its own tokenizer runs as teacher.kind 'hf' (its tokenizer is read "
                    "from teacher.path), 'cached' (kd-train cache-logits --student-tokenizer) "
                    "or 'http' (with teacher.tokenizer)"
                )
            if kind == "http" and self.teacher.tokenizer is None:
                raise InvalidConfigError(
                    "teacher.tokenizer: required for an http teacher with "
                    "loss.cross_tokenizer (the endpoint model's tokenizer directory)"
                )
            if on_policy is not None or self.distributed.strategy == "fsdp":
                raise InvalidConfigError(
                    "loss.cross_tokenizer: not supported with train.on_policy or "
                    "distributed.strategy 'fsdp'; remove one of them"
                )
        if "hidden" in active and self.distributed.strategy == "fsdp":
            raise InvalidConfigError(
                "loss.hidden: not supported with distributed.strategy 'fsdp' (the learned "
                "projections are not sharded); use strategy 'ddp' or drop loss.hidden"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready plain data (``parse_config`` reads it back)."""
        data = self.model_dump(mode="json")
        if data["teacher"]["http"] is None:  # the stored form has no empty http table
            del data["teacher"]["http"]
        # Keys added later are left out while unset, so older runs' configs still match.
        if data["qat"] is None:
            del data["qat"]
        if data["student"]["lora"] is None:
            del data["student"]["lora"]
        if data["teacher"]["tokenizer"] is None:
            del data["teacher"]["tokenizer"]
        if data["loss"]["cross_tokenizer"] is None:
            del data["loss"]["cross_tokenizer"]
        return data


def parse_config(data: Mapping[str, Any], source: str = "") -> RunConfig:
    """Validate plain data (from YAML, TOML or JSON) and return a :class:`RunConfig`.

    Args:
        data: the parsed config.
        source: the file it came from, named at the start of every error line.

    Raises:
        RunConfigError: one line per problem, naming the key path, what was wrong and
            what is allowed.
    """
    return validate(RunConfig, data, RunConfigError, source)


def load_config(path: str | Path) -> RunConfig:
    """Read a ``.yaml``/``.yml``/``.toml``/``.json`` run config; resolve its relative paths.

    Relative ``student.path``, ``student.tokenizer``, ``teacher.path``,
    ``teacher.eval_path``, ``teacher.tokenizer``, ``data.*`` and ``output_dir`` are taken
    relative to the config file's directory.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise RunConfigError(f"cannot read config file {file}: {exc.strerror}") from exc
    try:
        if file.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        elif file.suffix == ".toml":
            data = tomllib.loads(text)
        elif file.suffix == ".json":
            data = json.loads(text)
        else:
            raise RunConfigError(
                f"config file {file}: unknown extension {file.suffix!r}; "
                "use .yaml, .yml, .toml or .json"
            )
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise RunConfigError(f"config file {file} is not valid {file.suffix[1:]}: {exc}") from exc
    if not isinstance(data, dict):
        raise RunConfigError(f"config file {file}: the top level must be a mapping of sections")
    return resolve_paths(parse_config(data, str(file)), file.parent)


def resolve_paths(cfg: RunConfig, base: Path) -> RunConfig:
    """Return ``cfg`` with every relative path made absolute against ``base``."""

    def fix(p: str | None) -> str | None:
        return None if p is None else str((base / p).resolve())

    student = cfg.student.model_copy(
        update={"path": fix(cfg.student.path), "tokenizer": fix(cfg.student.tokenizer)}
    )
    teacher = cfg.teacher.model_copy(
        update={
            "path": fix(cfg.teacher.path),
            "eval_path": fix(cfg.teacher.eval_path),
            "tokenizer": fix(cfg.teacher.tokenizer),
        }
    )
    data = cfg.data.model_copy(update={"train": fix(cfg.data.train), "eval": fix(cfg.data.eval)})
    return cfg.model_copy(
        update={
            "student": student,
            "teacher": teacher,
            "data": data,
            "output_dir": fix(cfg.output_dir),
        }
    )
