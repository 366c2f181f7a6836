"""The run configuration: typed, validated at the edge, read from YAML or TOML.

A run config is plain data with seven sections (every key optional unless marked)::

    student:   {path: DIR}  or  {config: {model_type: llama, ...}, tokenizer: DIR}
    teacher:   {kind: hf | cached | records | http | none, path: DIR, topk: K,
                eval_path: DIR, http: {base_url, model, scoring, api_key_env, store, ...}}
    data:      {train: FILE (required), eval: FILE, eval_fraction: 0.1, max_length: 256}
    loss:      kd_train.losses.LossConfig as a mapping (divergence, temperature, weights, ...)
    optim:     {lr: 3e-4, weight_decay: 0.0, betas: [0.9, 0.999], eps: 1e-8,
                warmup_steps: 0, min_lr_ratio: 0.1}
    train:     {seed, max_steps (required), batch_size, grad_accum, clip_norm,
                precision: fp32 | bf16, eval_every, early_stopping_patience,
                checkpoint_every, keep_checkpoints, threads}
    distributed: {strategy: ddp | fsdp}
    output_dir: DIR (required)

:func:`parse_config` checks every key before anything runs; an error names the key path
(``train.precision``) and, for a choice, the allowed values. Relative paths are resolved
against the config file's directory by :func:`load_config`.

>>> from kd_train.trainer.config import parse_config
>>> cfg = parse_config({"student": {"path": "s"}, "data": {"train": "d.jsonl"},
...                     "train": {"max_steps": 10}, "output_dir": "out"})
>>> (cfg.teacher.kind, cfg.train.batch_size, cfg.train.precision)
('none', 8, 'fp32')
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kd_train.errors import KDTrainError
from kd_train.generate.config import http_teacher_config
from kd_train.losses import LossArgumentError, LossConfig
from kd_train.losses.terms import uses_per_token
from kd_train.teachers.http import HTTPTeacherConfig

T = TypeVar("T")

#: The endpoint keys ``teacher.http`` takes
#: (those of :class:`~kd_train.teachers.http.HTTPTeacherConfig`).
HTTP_ENDPOINT_KEYS = frozenset(f.name for f in dataclasses.fields(HTTPTeacherConfig))


class RunConfigError(KDTrainError):
    """A run config is malformed; the message names the key path and what is allowed."""


@dataclass(frozen=True)
class StudentConfig:
    """The student: a saved ``transformers`` model dir, or a config plus a tokenizer dir.

    ``config`` is passed to ``transformers.AutoConfig.for_model`` (so it needs
    ``model_type``); GQA students set ``num_key_value_heads < num_attention_heads``.
    """

    path: str | None = None
    config: dict[str, Any] | None = None
    tokenizer: str | None = None


@dataclass(frozen=True)
class HTTPSettings:
    """The ``teacher.http`` section: a live OpenAI-compatible endpoint that scores prompts.

    ``endpoint`` holds the endpoint, scoring form, prices, budget, limits and retry policy
    (:class:`~kd_train.teachers.http.HTTPTeacherConfig`; its ``top_logprobs`` is
    ``teacher.topk``). ``api_key_env`` names the environment variable holding the key (the
    key itself is never in a config). ``store`` is the database URL of the response cache
    and budget ledger (default: ``kd-store.sqlite`` in the run directory).
    """

    endpoint: HTTPTeacherConfig
    api_key_env: str | None = None
    store: str | None = None


@dataclass(frozen=True)
class TeacherConfig:
    """Where the teacher's distribution comes from; ``kind`` is one of :data:`TEACHER_KINDS`.

    ``hf``: a saved ``transformers`` model at ``path``, run in the loop (dense, or top-k
    with ``topk``). ``cached``: ``path`` is a ``kd-train cache-logits`` cache of
    ``data.train``; when ``data.eval`` is a separate file its batches are not in that
    cache, so ``eval_path`` is then required, a second cache built from ``data.eval`` by
    the same teacher. ``records``: the top-k ``kd-train generate`` stored in the dataset
    rows (every record must have it). ``http``: a live endpoint (``http``) scoring every
    batch, ``topk`` alternatives per position. ``none``: CE only.
    """

    kind: str = "none"
    path: str | None = None
    topk: int | None = None
    eval_path: str | None = None
    http: HTTPSettings | None = None


@dataclass(frozen=True)
class DataConfig:
    """KD datasets (JSONL of :class:`kd_train.data.schema.KDRecord`) and tokenisation limits.

    Without ``eval``, the last ``eval_fraction`` of the train file is held out.
    """

    train: str
    eval: str | None = None
    eval_fraction: float = 0.1
    max_length: int = 256


@dataclass(frozen=True)
class OptimConfig:
    """AdamW and its schedule: linear warmup then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1


@dataclass(frozen=True)
class TrainConfig:
    """Loop settings. One optimiser step sees ``batch_size * grad_accum * world_size`` examples.

    ``threads`` sets ``torch.set_num_threads`` for the run (small models on a busy CPU
    are often fastest with 1); ``None`` keeps PyTorch's default.
    """

    max_steps: int
    seed: int = 0
    batch_size: int = 8
    grad_accum: int = 1
    clip_norm: float | None = 1.0
    precision: str = "fp32"
    eval_every: int = 0
    early_stopping_patience: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    threads: int | None = None


@dataclass(frozen=True)
class DistributedConfig:
    """How the processes of a ``torchrun`` launch share the student (ignored in one process).

    ``ddp``: every process holds the whole model and optimiser state; gradients are
    all-reduced. ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``); every process
    holds a shard of the weights, gradients and optimiser state; checkpoints and the final
    model are still full (gathered on rank 0).
    """

    strategy: str = "ddp"


@dataclass(frozen=True)
class RunConfig:
    """A whole run. :meth:`to_dict` gives back the JSON form stored in checkpoints."""

    student: StudentConfig
    data: DataConfig
    train: TrainConfig
    output_dir: str
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready plain data (``parse_config`` reads it back)."""
        data = dataclasses.asdict(self)
        data["loss"] = self.loss.to_dict()
        http = data["teacher"].pop("http")
        if http is not None:  # the flat form parse_config reads: endpoint keys + our own
            data["teacher"]["http"] = {**http.pop("endpoint"), **http}
        return json.loads(json.dumps(data))


#: The teacher kinds ``teacher.kind`` accepts.
TEACHER_KINDS = ("hf", "cached", "records", "http", "none")
#: Kinds that read a directory at ``teacher.path``.
PATH_KINDS = ("hf", "cached")
PRECISIONS = ("fp32", "bf16")
STRATEGIES = ("ddp", "fsdp")


def parse_config(data: Mapping[str, Any]) -> RunConfig:
    """Validate plain data (from YAML, TOML or JSON) and return a :class:`RunConfig`.

    Raises:
        RunConfigError: naming the key path, what was wrong and what is allowed.
    """
    root = _Section(data, "")
    student = _parse_student(root.section("student", required=True))
    teacher = _parse_teacher(root.section("teacher"))
    data_cfg = _parse_data(root.section("data", required=True))
    loss = _parse_loss(root.mapping("loss"), teacher)
    optim = _parse_optim(root.section("optim"))
    train = _parse_train(root.section("train", required=True))
    dist = _parse_distributed(root.section("distributed"))
    output_dir = root.get("output_dir", str, required=True)
    root.finish()
    _check_eval_cache(teacher, data_cfg)
    _check_teacher_serves(teacher, loss, dist)
    return RunConfig(student, data_cfg, train, output_dir, teacher, loss, optim, dist)


def _parse_loss(table: dict[str, Any], teacher: TeacherConfig) -> LossConfig:
    """Validate the ``loss`` table (by its owner, :class:`LossConfig`).

    Without ``loss.weights`` a run with a teacher optimises ``kd`` and a CE-only run
    (``teacher.kind: none``) optimises ``ce``.
    """
    if "weights" not in table:
        table = {**table, "weights": {"kd": 1.0} if teacher.kind != "none" else {"ce": 1.0}}
    try:
        return LossConfig.from_dict(table)
    except LossArgumentError as exc:
        raise RunConfigError(str(exc)) from exc


def _check_teacher_serves(
    teacher: TeacherConfig, loss: LossConfig, dist: DistributedConfig
) -> None:
    """Refuse, before anything runs, a loss the teacher kind cannot feed."""
    active = loss.active_terms()
    if teacher.kind == "none" and uses_per_token("kd", active, loss.span_loss):
        raise RunConfigError(
            "loss.weights has a KD term but teacher.kind is 'none': choose a teacher "
            "(hf, cached, records or http) or train on CE alone (loss.weights: {ce: 1.0})"
        )
    if "hidden" in active and teacher.kind != "hf":
        raise RunConfigError(
            f"loss.hidden: hidden-state matching needs the teacher's per-layer hidden states, "
            f"which only a local model computes; teacher.kind {teacher.kind!r} gives only "
            "next-token log-probs. Use teacher.kind 'hf', or remove loss.hidden and its weight"
        )
    if "hidden" in active and dist.strategy == "fsdp":
        raise RunConfigError(
            "loss.hidden with distributed.strategy 'fsdp' is not supported (the learned "
            "projections are not sharded); use strategy 'ddp' or drop loss.hidden"
        )


def load_config(path: str | Path) -> RunConfig:
    """Read a ``.yaml``/``.yml``/``.toml``/``.json`` run config; resolve its relative paths.

    Relative ``student.path``, ``student.tokenizer``, ``teacher.path``,
    ``teacher.eval_path``, ``data.*`` and ``output_dir`` are taken relative to the config
    file's directory.
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
    return resolve_paths(parse_config(data), file.parent)


def resolve_paths(cfg: RunConfig, base: Path) -> RunConfig:
    """Return ``cfg`` with every relative path made absolute against ``base``."""

    def fix(p: str | None) -> str | None:
        return None if p is None else str((base / p).resolve())

    student = dataclasses.replace(
        cfg.student, path=fix(cfg.student.path), tokenizer=fix(cfg.student.tokenizer)
    )
    teacher = dataclasses.replace(
        cfg.teacher, path=fix(cfg.teacher.path), eval_path=fix(cfg.teacher.eval_path)
    )
    data = dataclasses.replace(cfg.data, train=str(fix(cfg.data.train)), eval=fix(cfg.data.eval))
    return dataclasses.replace(
        cfg, student=student, teacher=teacher, data=data, output_dir=str(fix(cfg.output_dir))
    )


def _parse_student(s: _Section) -> StudentConfig:
    out = StudentConfig(
        path=s.get("path", str),
        config=s.mapping("config") or None,
        tokenizer=s.get("tokenizer", str),
    )
    s.finish()
    if (out.path is None) == (out.config is None):
        raise RunConfigError("student: give exactly one of 'path' (a saved model) or 'config'")
    if out.config is not None:
        if "model_type" not in out.config:
            raise RunConfigError("student.config.model_type is required (e.g. 'llama', 'qwen2')")
        if out.tokenizer is None:
            raise RunConfigError("student.tokenizer is required with student.config")
    return out


def _parse_teacher(s: _Section) -> TeacherConfig:
    out = TeacherConfig(
        kind=s.choice("kind", TEACHER_KINDS, "none"),
        path=s.get("path", str),
        topk=s.get("topk", int, minimum=1),
        eval_path=s.get("eval_path", str),
        http=_parse_http(s.mapping("http")) if "http" in s.data else None,
    )
    s.finish()
    if out.kind in PATH_KINDS and out.path is None:
        raise RunConfigError(f"teacher.path is required when teacher.kind is {out.kind!r}")
    if out.kind not in PATH_KINDS and out.path is not None:
        raise RunConfigError(
            f"teacher.path is only read when teacher.kind is 'hf' or 'cached' (it is "
            f"{out.kind!r}); remove it"
        )
    if (out.kind == "http") != (out.http is not None):
        raise RunConfigError(
            "teacher.http (base_url, model, ...) is required when teacher.kind is 'http' "
            "and read only then"
        )
    if out.kind == "http" and out.topk is None:
        raise RunConfigError(
            "teacher.topk is required when teacher.kind is 'http': the number of prompt "
            "log-probs the endpoint returns per position (e.g. 8)"
        )
    if out.kind == "records" and out.topk is not None:
        raise RunConfigError(
            "teacher.topk is not read when teacher.kind is 'records': the records hold the "
            "k that kd-train generate stored; remove it"
        )
    if out.eval_path is not None and out.kind != "cached":
        raise RunConfigError(
            f"teacher.eval_path is only read when teacher.kind is 'cached' (it is {out.kind!r}); "
            "remove it"
        )
    return out


def _parse_http(table: dict[str, Any]) -> HTTPSettings:
    """Validate ``teacher.http``: the endpoint's keys plus ``api_key_env`` and ``store``."""
    own = {"api_key_env", "store"}
    allowed = HTTP_ENDPOINT_KEYS | own
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise RunConfigError(
            f"unknown key 'teacher.http.{unknown[0]}' in config; allowed keys here: "
            f"{', '.join(sorted(allowed))}"
        )
    for required in ("base_url", "model"):
        if not isinstance(table.get(required), str) or not table[required]:
            raise RunConfigError(f"teacher.http.{required} is required (a string)")
    for key in own:
        if table.get(key) is not None and not isinstance(table[key], str):
            raise RunConfigError(f"teacher.http.{key} must be str, got {table[key]!r}")
    try:
        endpoint = http_teacher_config(
            {k: v for k, v in table.items() if k not in own}, "teacher.http"
        )
    except KDTrainError as exc:
        raise RunConfigError(str(exc)) from exc
    return HTTPSettings(endpoint, table.get("api_key_env"), table.get("store"))


def _check_eval_cache(teacher: TeacherConfig, data: DataConfig) -> None:
    """A cached teacher needs a cache for every file it serves: data.train, and data.eval."""
    if teacher.kind != "cached":
        return
    if data.eval is not None and teacher.eval_path is None:
        raise RunConfigError(
            "data.eval is a separate file, but teacher.path is a cache of data.train only: "
            "build a cache of data.eval with 'kd-train cache-logits --data EVAL_FILE' (same "
            "teacher) and give it as teacher.eval_path, or drop data.eval to hold out "
            "data.eval_fraction of data.train"
        )
    if data.eval is None and teacher.eval_path is not None:
        raise RunConfigError(
            "teacher.eval_path is set but data.eval is not: the held-out records come from "
            "data.train and are in teacher.path; remove teacher.eval_path or set data.eval"
        )


def _parse_data(s: _Section) -> DataConfig:
    out = DataConfig(
        train=s.get("train", str, required=True),
        eval=s.get("eval", str),
        eval_fraction=s.get("eval_fraction", float, 0.1, minimum=0.0, maximum=0.9),
        max_length=s.get("max_length", int, 256, minimum=2),
    )
    s.finish()
    return out


def _parse_optim(s: _Section) -> OptimConfig:
    betas = s.get("betas", list, [0.9, 0.999])
    if len(betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in betas):
        raise RunConfigError(f"optim.betas must be two numbers in [0, 1), got {betas!r}")
    out = OptimConfig(
        lr=s.get("lr", float, 3e-4, minimum=0.0),
        weight_decay=s.get("weight_decay", float, 0.0, minimum=0.0),
        betas=(float(betas[0]), float(betas[1])),
        eps=s.get("eps", float, 1e-8, minimum=0.0),
        warmup_steps=s.get("warmup_steps", int, 0, minimum=0),
        min_lr_ratio=s.get("min_lr_ratio", float, 0.1, minimum=0.0, maximum=1.0),
    )
    s.finish()
    return out


def _parse_train(s: _Section) -> TrainConfig:
    out = TrainConfig(
        max_steps=s.get("max_steps", int, required=True, minimum=1),
        seed=s.get("seed", int, 0),
        batch_size=s.get("batch_size", int, 8, minimum=1),
        grad_accum=s.get("grad_accum", int, 1, minimum=1),
        clip_norm=s.get("clip_norm", float, 1.0, minimum=0.0, nullable=True),
        precision=s.choice("precision", PRECISIONS, "fp32"),
        eval_every=s.get("eval_every", int, 0, minimum=0),
        early_stopping_patience=s.get("early_stopping_patience", int, 0, minimum=0),
        checkpoint_every=s.get("checkpoint_every", int, 0, minimum=0),
        keep_checkpoints=s.get("keep_checkpoints", int, 2, minimum=1),
        threads=s.get("threads", int, None, minimum=1),
    )
    s.finish()
    return out


def _parse_distributed(s: _Section) -> DistributedConfig:
    out = DistributedConfig(strategy=s.choice("strategy", STRATEGIES, "ddp"))
    s.finish()
    return out


class _Section:
    """Reads the keys of one mapping, type-checks them and remembers which were used."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            raise RunConfigError(f"{path or 'config'} must be a mapping, got {type(data).__name__}")
        self.data, self.path, self.used = data, path, set[str]()

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def section(self, name: str, required: bool = False) -> _Section:
        if name not in self.data:
            if required:
                raise RunConfigError(f"missing required section {self.key(name)!r}")
            return _Section({}, self.key(name))
        self.used.add(name)
        return _Section(self.data[name], self.key(name))

    def mapping(self, name: str) -> dict[str, Any]:
        value = self.get(name, dict, {})
        return dict(value)

    def get(
        self,
        name: str,
        kind: type[T],
        default: Any = None,
        *,
        required: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
        nullable: bool = False,
    ) -> T:
        if name not in self.data or self.data[name] is None:
            if required:
                raise RunConfigError(f"missing required key {self.key(name)!r}")
            if name in self.data:  # an explicit null: None where allowed, else the default
                self.used.add(name)
                return None if nullable else default  # type: ignore[return-value]
            return default
        self.used.add(name)
        value = self.data[name]
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise RunConfigError(
                f"{self.key(name)} must be {kind.__name__}, got {type(value).__name__} {value!r}"
            )
        if minimum is not None and value < minimum:
            raise RunConfigError(f"{self.key(name)} must be >= {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise RunConfigError(f"{self.key(name)} must be <= {maximum}, got {value!r}")
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in allowed:
            raise RunConfigError(
                f"{self.key(name)} must be one of {', '.join(allowed)}; got {value!r}"
            )
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            known = ", ".join(sorted(_KNOWN.get(self.path, ())))
            raise RunConfigError(
                f"unknown key {self.key(unknown[0])!r} in config; allowed keys here: {known}"
            )


_KNOWN: dict[str, tuple[str, ...]] = {
    "": ("student", "teacher", "data", "loss", "optim", "train", "distributed", "output_dir"),
    "student": tuple(f.name for f in dataclasses.fields(StudentConfig)),
    "teacher": tuple(f.name for f in dataclasses.fields(TeacherConfig)),
    "teacher.http": (),
    "data": tuple(f.name for f in dataclasses.fields(DataConfig)),
    "optim": tuple(f.name for f in dataclasses.fields(OptimConfig)),
    "train": tuple(f.name for f in dataclasses.fields(TrainConfig)),
    "distributed": tuple(f.name for f in dataclasses.fields(DistributedConfig)),
}
