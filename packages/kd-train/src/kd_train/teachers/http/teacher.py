"""The client: it builds the requests, reads the answers and composes the parts that send them.

See :mod:`kd_train.teachers.http` for the request path.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import torch

from kd_train.data.batching import Batch
from kd_train.errors import KDTrainError
from kd_train.store import Store, cache_key
from kd_train.teachers.base import TeacherOutput
from kd_train.teachers.http.budget import Budget
from kd_train.teachers.http.cache import ResponseCache
from kd_train.teachers.http.config import HTTPTeacherConfig
from kd_train.teachers.http.exchange import Call, Counters, HTTPTeacherError, Response
from kd_train.teachers.http.retrying import Retrying
from kd_train.teachers.http.scoring import EndpointShape, after_each, probe_endpoint, read_scores
from kd_train.teachers.http.throttle import Throttle
from kd_train.teachers.http.wire import Wire
from kd_train.teachers.openai_api import (
    PATHS,
    MalformedResponseError,
    first_mismatch,
    generation_request,
    parse_usage,
    scoring_request,
)
from kd_train.teachers.retry import Uniform
from kd_train.teachers.tokens import Mapped, TokenMap, map_alternatives

logger = logging.getLogger(__name__)

_CROSS = (
    "an HTTP teacher must share the student's tokenizer; cross-tokenizer distillation is "
    "not supported by this teacher kind"
)

#: Tokens added to a text prompt's byte count for the worst case (BOS and the like).
PROMPT_OVERHEAD_TOKENS = 16

#: The prompt tokens reserved for the request that measures a chat template's overhead.
CHAT_PROBE_TOKENS = 1024


class HTTPTeacher:
    """A teacher behind an OpenAI-compatible HTTP endpoint; see :mod:`kd_train.teachers.http`.

    Args:
        config: endpoint, limits, prices and budget.
        api_key: sent as ``Authorization: Bearer ...`` when given; never logged or stored.
        store: response cache + ledger; required when ``config.budget`` is set.
        tokenizer: the teacher's tokenizer: maps returned token strings to ids (needed by
            :meth:`topk`) and counts prompt tokens for the worst case.
        owner: the name this worker's reservations and charges carry in the ledger.
        transport: an ``httpx`` transport (tests); default: real network.
        rng: randomness of the backoff jitter.
    """

    def __init__(
        self,
        config: HTTPTeacherConfig,
        *,
        api_key: str | None = None,
        store: Store | None = None,
        tokenizer: Any | None = None,
        owner: str = "kd-train",
        transport: httpx.BaseTransport | None = None,
        rng: Uniform | None = None,
    ) -> None:
        if config.budget is not None and store is None:
            raise ValueError("a budget needs a store (the ledger lives there); pass store=")
        self.config = config
        self.store = store
        self.tokenizer = tokenizer
        self.owner = owner
        self.counters = Counters()
        self._token_map: TokenMap | None = None
        self._shape: EndpointShape | None = None
        self._chat_overhead: int | None = None
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._wire = Wire(config, api_key, transport)
        budget = Budget(self._wire, config, store, owner, self._count, self._count_tokens)
        limited = Throttle(budget, config.rpm, config.concurrency)
        jitter: Uniform = rng or random.Random()  # noqa: S311 - backoff jitter, not crypto
        # retry -> cache -> limits -> budget -> wire: every attempt checks the cache first.
        self._stack = Retrying(
            ResponseCache(limited, store, self._count),
            config.retry,
            jitter,
            self._count,
            config.base_url,
        )

    def __repr__(self) -> str:
        return f"HTTPTeacher(model={self.config.model!r}, base_url={self.config.base_url!r})"

    def __enter__(self) -> HTTPTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._wire.close()

    @property
    def vocab_size(self) -> int:
        """Size of the tokenizer's vocabulary (a tokenizer is required)."""
        return len(self._require_tokenizer())

    def generate(self, prompt: str) -> Response:
        """Answer ``prompt`` (``config.api``, ``max_tokens``, ``top_logprobs``).

        The worst case counts the prompt's UTF-8 bytes +
        :data:`~kd_train.teachers.http.teacher.PROMPT_OVERHEAD_TOKENS` as
        its tokens, plus, for ``chat``, the tokens the endpoint's chat template adds
        (:meth:`chat_overhead`: a default system prompt is about 30 tokens on llama.cpp).
        """
        cfg = self.config
        bound = self._prompt_bound(prompt)
        if cfg.api == "chat":
            bound += self.chat_overhead()
        body = generation_request(
            cfg.api,
            cfg.model,
            prompt,
            cfg.max_tokens,
            cfg.top_logprobs,
            cfg.temperature,
            cfg.sampling_extensions,
        )
        return self._request(PATHS[cfg.api], body, bound, cfg.max_tokens)

    def chat_overhead(self) -> int:
        """Prompt tokens the endpoint's chat template adds to a message: measured once.

        One chat request with a one-word message and ``max_tokens`` 1 (reserved at
        :data:`~kd_train.teachers.http.teacher.CHAT_PROBE_TOKENS` prompt tokens, charged as
        billed): its ``usage.prompt_tokens`` less the message's own bound. 0 when the
        endpoint reports no usage.
        """
        with self._probe_lock:
            if self._chat_overhead is None:
                cfg = self.config
                body = generation_request(
                    "chat", cfg.model, "Hi", 1, 1, 0.0, cfg.sampling_extensions
                )
                answer = self._request(PATHS["chat"], body, CHAT_PROBE_TOKENS, 1)
                usage = parse_usage(answer.body)
                seen = usage.prompt_tokens if usage is not None else 0
                self._chat_overhead = max(
                    0, seen - self._prompt_bound("Hi") + PROMPT_OVERHEAD_TOKENS
                )
            return self._chat_overhead

    def __call__(self, batch: Batch) -> TeacherOutput:
        """Score the batch's rows: :meth:`topk` with ``k = config.top_logprobs``.

        Raises:
            HTTPTeacherError: ``top_logprobs`` is below 1, or as :meth:`topk`.
        """
        k = self.config.top_logprobs
        if k < 1:
            raise HTTPTeacherError(
                f"an HTTP teacher scores training rows with top_logprobs alternatives per "
                f"position (teacher.topk in a run config), and it is {k}; set it >= 1"
            )
        return self.topk(batch.input_ids, batch.attention_mask, k)

    def topk(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int) -> TeacherOutput:
        r"""Top-``k`` next-token log-probs at every position of ``input_ids`` ``[B, T]``.

        The first call probes the endpoint (:meth:`endpoint_shape`). Then one request per
        row (``config.scoring``; the row's token ids, or their text where the endpoint
        takes no ids) scores the row's unmasked tokens through the same path as
        generation (cache, budget, retries, rate limit); the rows are sent
        ``config.concurrency`` at a time. Returns a top-k
        :class:`~kd_train.teachers.base.TeacherOutput`: ``ids`` int64 and ``logprobs``
        float32 ``[B, T, k]``, ``aligned="logits"`` (row ``t`` is the distribution of the
        token after ``input_ids[:, t]``), on the device of ``input_ids``. ``mask`` is
        ``attention_mask.bool()`` less the positions the endpoint gave no usable
        distribution for: none (the first token, on a ``shifted`` endpoint), or one whose
        alternatives fit several token ids (``""``); they are counted in
        ``counters.unscored`` and logged, never shortened. Masked positions hold distinct
        placeholder ids ``0 .. k-1`` at :math:`\log \frac{1}{k+1}` each.

        Raises:
            HTTPTeacherError: the endpoint's prompt scoring cannot be established; it names
                a prompt token differently from the local tokenizer (another tokenizer), or
                an alternative that is no token of it; or as for every request.
        """
        tm = self._tokens()
        self.endpoint_shape(k)
        batch, length = input_ids.shape
        ids = torch.arange(k, dtype=torch.int64).expand(batch, length, k).clone()
        logprobs = torch.full((batch, length, k), -math.log(k + 1), dtype=torch.float32)
        mask = attention_mask.bool().cpu().clone()
        rows = {}
        for row in range(batch):
            positions = attention_mask[row].nonzero().flatten().tolist()
            if positions:
                rows[row] = (positions, [int(t) for t in input_ids[row, positions].tolist()])
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            scored = {
                row: pool.submit(self._score_row, row, positions, tokens, k, tm)
                for row, (positions, tokens) in rows.items()
            }
        unscored: list[str] = []
        for row, (positions, _tokens) in rows.items():
            mapped = scored[row].result()  # the first failed row, in row order, raises
            for pos, got in zip(positions, mapped, strict=True):
                if got is not None and got.problem is None:
                    ids[row, pos] = torch.tensor(got.ids)
                    logprobs[row, pos] = torch.tensor(got.logprobs)
                    continue
                if got is not None and got.foreign:
                    raise HTTPTeacherError(
                        f"topk: row {row}, position {pos}: {got.problem}, so not in the "
                        f"student's tokenizer: the endpoint serves another tokenizer ({_CROSS})"
                    )
                mask[row, pos] = False
                unscored.append(f"row {row} position {pos}: {got.problem if got else 'none'}")
        if unscored:
            self._count(unscored=len(unscored))
            logger.warning(
                "%s: %d positions without a usable teacher distribution are masked (%s)",
                self.config.base_url,
                len(unscored),
                "; ".join(unscored[:3]),
            )
        return TeacherOutput(
            ids=ids.to(input_ids.device),
            logprobs=logprobs.to(input_ids.device),
            mask=mask.to(input_ids.device),
            aligned="logits",
        )

    def endpoint_shape(self, k: int | None = None) -> EndpointShape:
        """How the endpoint scores prompts: probed once, on first use (a few requests).

        See :func:`~kd_train.teachers.http.scoring.probe_endpoint`; the probe's requests go
        through the cache and the budget like any other.

        Raises:
            HTTPTeacherError: the endpoint's shape or alignment cannot be established.
        """
        with self._probe_lock:
            if self._shape is None:
                self._shape = probe_endpoint(
                    self._request,
                    self.config.scoring,
                    self.config.model,
                    self._require_tokenizer(),
                    k or max(1, self.config.top_logprobs),
                    self.config.base_url,
                    self._tokens(),
                )
                logger.info("%s scores prompts as %s", self.config.base_url, self._shape)
            return self._shape

    def _score_row(
        self, row: int, positions: list[int], tokens: list[int], k: int, tm: TokenMap
    ) -> list[Mapped | None]:
        """Score one row's ``tokens``, check the endpoint read them so, map the alternatives."""
        scoring, shape, tokenizer = self.config.scoring, self.endpoint_shape(k), self.tokenizer
        if shape.ids:
            prompt: list[int] | str = tokens
            bound = len(tokens)
        else:
            prompt = str(
                self._require_tokenizer().decode(
                    tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False
                )
            )
            bound = len(tokens) + PROMPT_OVERHEAD_TOKENS
        body = scoring_request(scoring, self.config.model, prompt, k)
        answer = self._request(PATHS["completions"], body, bound, 1)
        try:
            scores = read_scores(scoring, answer.body, tokens)
        except MalformedResponseError as exc:
            raise HTTPTeacherError(f"topk: {exc}") from exc
        names = scores.names[: len(tokens)]
        if len(names) < len(tokens):
            raise HTTPTeacherError(
                f"topk: row {row}: the endpoint read the row as {len(names)} tokens, the "
                f"student's tokenizer wrote {len(tokens)}"
            )
        bad = first_mismatch(tokenizer, tokens, names, tm)
        if bad is not None:
            sent = self._require_tokenizer().convert_ids_to_tokens(tokens[bad])
            how = "" if shape.ids else " (it takes text only, and re-tokenized the row)"
            raise HTTPTeacherError(
                f"topk: row {row}, position {positions[bad]}: sent token id {tokens[bad]} "
                f"({sent!r}), the endpoint returned {names[bad]!r}{how}: it serves "
                f"another tokenizer than the student's ({_CROSS})"
            )
        return [
            None if entry is None else map_alternatives(tm, [(t, lp, None) for t, lp in entry], k)
            for entry in after_each(scores, len(tokens), shape.alignment)
        ]

    # -- the request path -------------------------------------------------------------

    def _request(
        self, path: str, body: dict[str, Any], prompt_tokens: int, completion_tokens: int
    ) -> Response:
        key = cache_key(self.config.model, {"path": path, "body": body})
        worst = self.config.cost_nanos(prompt_tokens, completion_tokens)
        return self._stack.send(Call(path, body, key, worst))

    # -- helpers ------------------------------------------------------------------------

    def _prompt_bound(self, prompt: str) -> int:
        return len(prompt.encode("utf-8")) + PROMPT_OVERHEAD_TOKENS

    def _count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            return len(text.encode("utf-8"))
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _require_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise KDTrainError(
                "HTTPTeacher needs the teacher's tokenizer for token ids (tokenizer=...)"
            )
        return self.tokenizer

    def _tokens(self) -> TokenMap:
        with self._lock:
            if self._token_map is None:
                self._token_map = TokenMap.of(self._require_tokenizer())
            return self._token_map

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.counters, name, getattr(self.counters, name) + delta)
