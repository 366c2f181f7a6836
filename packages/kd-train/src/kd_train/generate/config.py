"""The typed configuration of ``kd-train generate``, read from YAML/TOML and flags.

Keys (a config file holds any of them; a flag given on the command line wins):

``prompts``, ``out`` (paths), ``base_url``, ``model``, ``api`` (``completions``/``chat``),
``api_key_env`` (the *name* of the environment variable holding the key), ``max_tokens``,
``top_logprobs``, ``temperature``, ``sampling_extensions``, ``timeout``, ``concurrency``,
``rpm``, ``budget``
(USD; needs a price above 0), ``budget_name``, ``change_budget`` (set the cap of an existing
shared budget), ``price_per_1k_prompt``, ``price_per_1k_completion`` (USD),
``store`` (database URL; default: ``kd-store.sqlite`` next to ``out``), ``tokenizer``
(the teacher's tokenizer: a directory, or a ``.gguf`` model file), and ``retry``
(``max_attempts``, ``base_delay``, ``max_delay``, ``max_retry_after``).

The endpoint keys are :class:`EndpointSettings`, shared with the run config's
``teacher.http`` table.

>>> from kd_train.generate.config import generate_config
>>> cfg = generate_config({"prompts": "p.jsonl", "out": "run/out.jsonl",
...                        "base_url": "http://127.0.0.1:8000/v1", "model": "m"}, "flags")
>>> cfg.store_url.endswith("run/kd-store.sqlite"), cfg.teacher.max_tokens
(True, 256)
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import Field, Strict, model_validator

from kd_train.errors import KDTrainError
from kd_train.store import sqlite_url
from kd_train.teachers.http import HTTPTeacherConfig
from kd_train.teachers.http.config import budget_problem, url_credential
from kd_train.teachers.openai_api import Api, Scoring
from kd_train.teachers.retry import RetryPolicy
from kd_train.typed_config import Bool, ConfigModel, Float, InvalidConfigError, Str, validate

NonNegative = Annotated[float, Strict(), Field(ge=0.0)]
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
Positive = Annotated[int, Strict(), Field(ge=1)]
Name = Annotated[str, Strict(), Field(min_length=1)]


class RetrySettings(ConfigModel):
    """The ``retry`` table: :class:`~kd_train.teachers.retry.RetryPolicy` (seconds)."""

    max_attempts: Positive = Field(
        default=6, description="Attempts per request, the first included."
    )
    base_delay: NonNegative = Field(default=0.5, description="The backoff's first ceiling.")
    max_delay: NonNegative = Field(default=30.0, description="The largest backoff ceiling.")
    max_retry_after: NonNegative = Field(
        default=120.0, description="The longest ``Retry-After`` honoured."
    )


class EndpointSettings(ConfigModel):
    """An OpenAI-compatible endpoint: :class:`~kd_train.teachers.http.HTTPTeacherConfig`'s keys.

    The ``endpoint`` property builds the teacher's config from them.
    """

    base_url: Name = Field(description="The API root, e.g. ``http://127.0.0.1:8000/v1``.")
    model: Name = Field(description="The model name sent in every request.")
    api: Api = Field(
        default="completions", description="The generation API (scoring uses completions)."
    )
    max_tokens: Positive = Field(
        default=256, description="Completion length limit of generation requests."
    )
    top_logprobs: Annotated[int, Strict(), Field(ge=0)] = Field(
        default=5, description="Alternatives per generated token (0: none)."
    )
    scoring: Scoring = Field(
        default="echo",
        description="How prompts are scored for training (``echo`` or vLLM's ``prompt_logprobs``).",
    )
    temperature: Float = Field(default=0.0, description="Sampling temperature (0: greedy).")
    sampling_extensions: Bool = Field(
        default=True,
        description="Also send llama.cpp's and vLLM's sampling parameters at neutral values "
        "(``repeat_penalty`` 1, ``top_k`` 0, ...); ``false`` for the OpenAI API.",
    )
    timeout: Annotated[float, Strict(), Field(gt=0.0)] = Field(
        default=60.0, description="Seconds per attempt."
    )
    concurrency: Positive = Field(default=4, description="Requests in flight at most.")
    rpm: Float | None = Field(
        default=None, description="Request starts per minute at most (``null``: no limit)."
    )
    retry: RetrySettings = Field(default=RetrySettings(), description="The backoff policy.")
    price_per_1k_prompt: NonNegative = Field(default=0.0, description="USD per 1000 prompt tokens.")
    price_per_1k_completion: NonNegative = Field(
        default=0.0, description="USD per 1000 completion tokens."
    )
    budget: NonNegative | None = Field(
        default=None, description="Cap in USD on the spend of ``budget_name`` (``null``: no cap)."
    )
    budget_name: Str = Field(
        default="default", description="The ledger budget this teacher charges."
    )
    change_budget: Bool = Field(
        default=False,
        description="Set the cap of an existing (shared) budget to ``budget``; logged.",
    )

    #: Where these keys sit in their config (``"teacher.http."`` in a run config).
    key_prefix: ClassVar[str] = ""

    @model_validator(mode="after")
    def _budget_and_secrets(self) -> EndpointSettings:
        """A budget needs prices; no credential in ``base_url``; ``api_key_env`` is a name."""
        at = self.key_prefix
        problem = budget_problem(
            self.budget, self.price_per_1k_prompt, self.price_per_1k_completion
        )
        if problem is not None:
            raise InvalidConfigError(f"{at}budget: {problem}")
        if self.change_budget and self.budget is None:
            raise InvalidConfigError(f"{at}change_budget: needs {at}budget, the new cap in USD")
        credential = url_credential(self.base_url)
        if credential is not None:  # described without its value: the message is printed
            raise InvalidConfigError(
                f"{at}base_url: carries {credential}; a secret there would reach logs, the "
                f"run registry and manifests. Put the API key in an environment variable "
                f"and name it with {at}api_key_env"
            )
        name = getattr(self, "api_key_env", None)
        if name is not None and not _ENV_NAME.fullmatch(name):
            raise InvalidConfigError(
                f"{at}api_key_env: must be the NAME of the environment variable that holds "
                "the API key (letters, digits and _), not the key itself"
            )
        return self

    @property
    def endpoint(self) -> HTTPTeacherConfig:
        """The endpoint keys as the teacher's :class:`~kd_train.teachers.http.HTTPTeacherConfig`."""
        keys = set(EndpointSettings.model_fields) - {"retry"}
        return HTTPTeacherConfig(
            **self.model_dump(include=keys), retry=RetryPolicy(**self.retry.model_dump())
        )


class GenerateConfig(EndpointSettings):
    """Everything ``kd-train generate`` needs, validated; holds no secret."""

    prompts: Path = Field(description="JSONL of ``{id, prompt}`` rows.")
    out: Path = Field(description="Output JSONL of KD records (appended; resumable).")
    api_key_env: Str | None = Field(
        default=None, description="The name of the environment variable holding the API key."
    )
    store: Str | None = Field(
        default=None, description="Store URL (default: ``kd-store.sqlite`` next to ``out``)."
    )
    tokenizer: Path | None = Field(
        default=None,
        description="The teacher's tokenizer (a directory, or the model's .gguf file): store "
        "top-k as token ids.",
    )

    @property
    def teacher(self) -> HTTPTeacherConfig:
        """The HTTP teacher's configuration."""
        return self.endpoint

    @property
    def store_url(self) -> str:
        """Database URL of the store (``store``, or ``kd-store.sqlite`` next to ``out``)."""
        return self.store or sqlite_url(self.out.parent / "kd-store.sqlite")

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


def generate_config(data: dict[str, Any], source: str) -> GenerateConfig:
    """Validate ``data`` (merged file + flags) into a :class:`GenerateConfig`.

    Raises:
        kd_train.typed_config.InvalidConfigError: a key is unknown, missing or invalid; one line
            per problem, naming ``source`` and the key path.
    """
    return validate(GenerateConfig, data, InvalidConfigError, source)
