"""The run config's ``teacher`` section: which kind of teacher, and what each kind reads.

:data:`TEACHER_KINDS` lists the kinds; which keys a kind needs or refuses is checked by a
model validator of :class:`TeacherConfig`. Rules that involve other sections (a cached
teacher's eval cache, the loss terms a kind can serve) live on
:class:`kd_train.trainer.config.RunConfig`.

>>> from kd_train.trainer.teacher_config import TeacherConfig
>>> TeacherConfig(kind="hf", path="models/teacher").topk is None
True
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field, Strict, model_validator

from kd_train.generate.config import EndpointSettings
from kd_train.typed_config import ConfigModel, InvalidConfigError, OneOf, PathStr, Str

#: The teacher kinds ``teacher.kind`` accepts.
TEACHER_KINDS = ("hf", "cached", "records", "http", "none")
#: Kinds that read a directory at ``teacher.path``.
PATH_KINDS = ("hf", "cached")
#: The endpoint keys ``teacher.http`` takes
#: (those of :class:`~kd_train.teachers.http.HTTPTeacherConfig`).
HTTP_ENDPOINT_KEYS = frozenset(EndpointSettings.model_fields)


class HTTPSettings(EndpointSettings):
    """The ``teacher.http`` section: a live OpenAI-compatible endpoint that scores prompts.

    The endpoint keys (scoring form, prices, budget, limits and retry policy) are those of
    :class:`~kd_train.generate.config.EndpointSettings`; ``endpoint`` gives them as a
    :class:`~kd_train.teachers.http.HTTPTeacherConfig` (its ``top_logprobs`` is
    ``teacher.topk``). ``api_key_env`` names the environment variable holding the key (the
    key itself is never in a config). ``store`` is the database URL of the response cache
    and budget ledger (default: ``kd-store.sqlite`` in the run directory).
    """

    key_prefix: ClassVar[str] = "teacher.http."

    api_key_env: Str | None = Field(
        default=None, description="The name of the environment variable holding the API key."
    )
    store: Str | None = Field(
        default=None, description="Database URL of the response cache and budget ledger."
    )


class TeacherConfig(ConfigModel):
    """Where the teacher's distribution comes from; ``kind`` is one of ``TEACHER_KINDS``.

    ``hf``: a saved ``transformers`` model at ``path``, run in the loop (dense, or top-k
    with ``topk``). ``cached``: ``path`` is a ``kd-train cache-logits`` cache of
    ``data.train``; when ``data.eval`` is a separate file its batches are not in that
    cache, so ``eval_path`` is then required, a second cache built from ``data.eval`` by
    the same teacher. ``records``: the top-k ``kd-train generate`` stored in the dataset
    rows (every record must have it). ``http``: a live endpoint (``http``) scoring every
    batch, ``topk`` alternatives per position; with ``loss.cross_tokenizer``, ``tokenizer``
    is the endpoint model's own tokenizer. ``none``: CE only.
    """

    kind: Annotated[str, OneOf(TEACHER_KINDS)] = Field(
        default="none", description="The teacher's source."
    )
    path: PathStr | None = Field(
        default=None,
        description="``hf``: the model directory; ``cached``: the cache of ``data.train``.",
    )
    topk: Annotated[int, Strict(), Field(ge=1)] | None = Field(
        default=None,
        description="hf: top-k instead of dense; cached: k to read; http: k to ask for.",
    )
    eval_path: PathStr | None = Field(
        default=None,
        description="``cached`` with a separate ``data.eval``: the cache of ``data.eval``.",
    )
    http: HTTPSettings | None = Field(default=None, description="``http``: the endpoint.")
    tokenizer: PathStr | None = Field(
        default=None,
        description="``http`` with ``loss.cross_tokenizer``: the endpoint model's own "
        "tokenizer (a local directory).",
    )

    @model_validator(mode="after")
    def _keys_fit_the_kind(self) -> TeacherConfig:
        """Each kind gets the keys it reads and no other."""
        kind = self.kind
        if kind in PATH_KINDS and self.path is None:
            raise InvalidConfigError(f"teacher.path: required when teacher.kind is {kind!r}")
        if kind not in PATH_KINDS and self.path is not None:
            raise InvalidConfigError(
                f"teacher.path: only read when teacher.kind is 'hf' or 'cached' (it is "
                f"{kind!r}); remove it"
            )
        if kind == "http" and self.http is None:
            raise InvalidConfigError(
                "teacher.http: required when teacher.kind is 'http' (base_url, model, ...)"
            )
        if kind != "http" and self.http is not None:
            raise InvalidConfigError(
                f"teacher.http: only read when teacher.kind is 'http' (it is {kind!r}); remove it"
            )
        if kind == "http" and self.topk is None:
            raise InvalidConfigError(
                "teacher.topk: required when teacher.kind is 'http': the number of prompt "
                "log-probs the endpoint returns per position (e.g. 8)"
            )
        if kind == "records" and self.topk is not None:
            raise InvalidConfigError(
                "teacher.topk: not read when teacher.kind is 'records': the records hold the "
                "k that kd-train generate stored; remove it"
            )
        if self.tokenizer is not None and kind != "http":
            raise InvalidConfigError(
                f"teacher.tokenizer: only read when teacher.kind is 'http' (it is {kind!r}); "
                "an hf teacher's tokenizer is read from teacher.path"
            )
        if self.eval_path is not None and kind != "cached":
            raise InvalidConfigError(
                f"teacher.eval_path: only read when teacher.kind is 'cached' (it is {kind!r}); "
                "remove it"
            )
        return self
