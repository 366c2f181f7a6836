"""``HTTPTeacher``: an OpenAI-compatible endpoint that returns log-probs, made safe to pay for.

It generates (:meth:`HTTPTeacher.generate`, for ``kd-train generate``) and it scores prompts
for training (``teacher(batch)``, a :class:`~kd_train.teachers.base.Teacher`): one
completions request per row sends the row's token ids and reads back, at every position
``t``, the top-``k`` log-probs of the token after ``input_ids[:, t]`` (``k`` =
``top_logprobs``), as a top-k :class:`~kd_train.teachers.base.TeacherOutput` aligned like
logits. ``scoring`` picks the request form (:mod:`kd_train.teachers.openai_api`):

* ``"echo"``: ``echo: true, logprobs: k`` (OpenAI's legacy completions; vLLM too);
* ``"prompt_logprobs"``: vLLM's ``prompt_logprobs: k`` plus ``logprobs: k`` for the
  position after the last prompt token.

**Token check.** The endpoint must read the ids with the student's tokenizer. Every prompt
token the endpoint names (the echoed token, or the ``decoded_token`` in ``prompt_logprobs``)
is compared with the local tokenizer's; a mismatch raises :class:`HTTPTeacherError` naming
the row, the position and both tokens: the endpoint serves another tokenizer, and
cross-tokenizer distillation is not supported by this teacher kind. An alternative the
student's tokenizer does not have is refused the same way.

Every request goes through the same path:

1. **Cache.** The key is the SHA-256 of the model and the request body
   (:func:`~kd_train.store.cache.cache_key`); a hit is returned at no cost.
2. **Reserve.** The worst case ``w = ceil((P·p + M·c) / 1000)`` (``P`` prompt tokens — the
   token count when known, else the prompt's UTF-8 bytes + 16, ``M`` = ``max_tokens``,
   ``p``/``c`` the prices per 1000 tokens) is reserved in the ledger; if it does not fit
   under the cap, :class:`~kd_train.store.errors.BudgetExhaustedError` is raised and
   nothing is sent.
3. **Send** under the concurrency limit and the requests-per-minute limit.
4. **Settle** that attempt's reservation by what the provider may have billed:

   * an answer: the cost from its ``usage`` (estimated from token counts and marked
     ``estimated`` when the endpoint reports none); charge and cache entry in one
     transaction;
   * sent, but no usable answer — a timeout on our side, a connection dropped after
     sending, a malformed 200 body, an HTTP 5xx: an *unconfirmed* charge of ``w`` with
     the reason, because the model may have run and been billed;
   * never sent or refused — a connect error, an HTTP 4xx (429 included): released.

Retries (429, 5xx, timeouts, dropped connections, malformed bodies; exponential backoff
with jitter, honouring ``Retry-After``, :mod:`kd_train.teachers.retry`) repeat steps 1-4, so
every attempt checks the cache and the cap before it is sent. Hence what the provider can
have billed is at most the ledger's confirmed + unconfirmed charges + open reservations,
which never exceeds the cap, provided the endpoint honours ``max_tokens`` and its token
counts stay within the bound above. One that bills a request more than its reservation is
charged what it billed (the ledger records the truth) and
:class:`~kd_train.store.errors.BudgetOverrunError` stops the run at that request.

The API key is a constructor argument (the command line reads it from the environment
variable named in the config); it is sent only in the ``Authorization`` header, never
logged, never part of a cache key, the ledger or a message.
"""

from __future__ import annotations

import logging
import math
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import torch

from kd_train.data.batching import Batch
from kd_train.errors import KDTrainError
from kd_train.store import BudgetOverrunError, Store, cache_key, usd_to_nanos
from kd_train.store.ledger import Reservation
from kd_train.teachers.base import TeacherOutput
from kd_train.teachers.openai_api import (
    PATHS,
    Api,
    MalformedResponseError,
    Scoring,
    first_mismatch,
    generation_request,
    parse_generation,
    parse_scores,
    scoring_request,
    token_to_id,
)
from kd_train.teachers.ratelimit import RateLimiter
from kd_train.teachers.retry import RETRY_STATUSES, RetryPolicy, Uniform, parse_retry_after

logger = logging.getLogger(__name__)

#: The cap, in nano-USD, given to a budget created without one (no practical limit).
UNLIMITED_NANOS = 2**62

_CROSS = (
    "an HTTP teacher must share the student's tokenizer; cross-tokenizer distillation is "
    "not supported by this teacher kind"
)

#: Tokens added to a text prompt's byte count for the worst case (chat template, BOS).
PROMPT_OVERHEAD_TOKENS = 16


class HTTPTeacherError(KDTrainError):
    """A request failed for good, or the endpoint cannot score for this student.

    Failed for good: a non-retryable status, or retries exhausted. Cannot score: another
    tokenizer than the student's, or fewer alternatives than asked.
    """


@dataclass(frozen=True)
class HTTPTeacherConfig:
    """Typed configuration of an :class:`HTTPTeacher` (holds no secret).

    Attributes:
        base_url: the API root, e.g. ``"https://api.example.com/v1"``.
        model: the model name sent in every request.
        api: ``"completions"`` or ``"chat"`` for generation (scoring uses completions).
        max_tokens: completion length limit of generation requests.
        top_logprobs: alternatives per generated token (0: none), and per position when
            scoring prompts for training (then at least 1).
        scoring: how prompts are scored for training: ``"echo"`` (``echo`` + ``logprobs``)
            or ``"prompt_logprobs"`` (vLLM's); see the module docstring.
        temperature: sampling temperature (0: greedy).
        timeout: seconds per attempt (connect, read, write and pool).
        concurrency: requests in flight at most.
        rpm: request starts per minute at most (``None``: no limit).
        retry: the backoff policy.
        price_per_1k_prompt: USD per 1000 prompt tokens.
        price_per_1k_completion: USD per 1000 completion tokens.
        budget: cap in USD on the spend of ``budget_name`` (``None``: no cap).
        budget_name: the ledger budget this teacher charges; workers sharing it share the cap.
    """

    base_url: str
    model: str
    api: Api = "completions"
    max_tokens: int = 256
    top_logprobs: int = 5
    scoring: Scoring = "echo"
    temperature: float = 0.0
    timeout: float = 60.0
    concurrency: int = 4
    rpm: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    price_per_1k_prompt: float = 0.0
    price_per_1k_completion: float = 0.0
    budget: float | None = None
    budget_name: str = "default"

    def __post_init__(self) -> None:
        if self.api not in PATHS:
            raise ValueError(f"api must be 'completions' or 'chat', got {self.api!r}")
        if self.scoring not in ("echo", "prompt_logprobs"):
            raise ValueError(f"scoring must be 'echo' or 'prompt_logprobs', got {self.scoring!r}")
        for name in ("max_tokens", "concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("top_logprobs", "price_per_1k_prompt", "price_per_1k_completion"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.budget is not None and self.budget < 0:
            raise ValueError(f"budget must be >= 0 USD, got {self.budget}")

    def cost_nanos(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Cost in nano-USD, rounded up: ``ceil((P·p + C·c) / 1000)`` with prices in nano-USD.

        >>> from kd_train.teachers.http import HTTPTeacherConfig
        >>> cfg = HTTPTeacherConfig("http://x/v1", "m", price_per_1k_prompt=1.0,
        ...                         price_per_1k_completion=2.0)
        >>> cfg.cost_nanos(1000, 500)
        2000000000
        """
        total = prompt_tokens * usd_to_nanos(self.price_per_1k_prompt)
        total += completion_tokens * usd_to_nanos(self.price_per_1k_completion)
        return -(-total // 1000)


@dataclass(frozen=True)
class Response:
    """One answered request: the JSON body, its cost (0 on a cache hit) and where it came from."""

    key: str
    body: dict[str, Any]
    cost_nanos: int
    estimated: bool
    cached: bool


@dataclass
class Counters:
    """What a teacher did so far (updated under the teacher's lock).

    ``spent_nanos`` is the confirmed cost of answered requests; ``unconfirmed`` counts the
    attempts sent without a usable answer and ``unconfirmed_nanos`` their worst case, charged
    to the budget because the provider may have billed them.
    """

    cache_hits: int = 0
    paid: int = 0
    retries: int = 0
    failed: int = 0
    spent_nanos: int = 0
    unconfirmed: int = 0
    unconfirmed_nanos: int = 0


class HTTPTeacher:
    """A teacher behind an OpenAI-compatible HTTP endpoint; see the module docstring.

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
        self._vocab: dict[str, int] | None = None
        #: Set by the first request billed past its reservation; no request is sent after it.
        self._overrun: BudgetOverrunError | None = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._limiter = RateLimiter(config.rpm)
        self._rng: Uniform = rng or random.Random()  # noqa: S311 - backoff jitter, not crypto
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=config.base_url.rstrip("/"),
            headers=headers,
            timeout=config.timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=config.concurrency),
        )
        if store is not None:
            cap = UNLIMITED_NANOS if config.budget is None else usd_to_nanos(config.budget)
            store.ledger.ensure_budget(config.budget_name, cap)

    def __repr__(self) -> str:
        return f"HTTPTeacher(model={self.config.model!r}, base_url={self.config.base_url!r})"

    def __enter__(self) -> HTTPTeacher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    @property
    def vocab_size(self) -> int:
        """Size of the tokenizer's vocabulary (a tokenizer is required)."""
        return len(self._require_tokenizer())

    def generate(self, prompt: str) -> Response:
        """Answer ``prompt`` (``config.api``, ``max_tokens``, ``top_logprobs``); see the module."""
        cfg = self.config
        body = generation_request(
            cfg.api, cfg.model, prompt, cfg.max_tokens, cfg.top_logprobs, cfg.temperature
        )
        return self._request(PATHS[cfg.api], body, self._prompt_bound(prompt), cfg.max_tokens)

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

        One request per row (``config.scoring``) scores the row's unmasked tokens through
        the same path as generation (cache, budget, retries, rate limit); the rows are sent
        ``config.concurrency`` at a time. Returns a top-k
        :class:`~kd_train.teachers.base.TeacherOutput`: ``ids`` int64 and ``logprobs``
        float32 ``[B, T, k]``, ``mask = attention_mask.bool()``, ``aligned="logits"`` (row
        ``t`` is the distribution of the token after ``input_ids[:, t]``), on the device of
        ``input_ids``. Masked positions hold distinct placeholder ids ``0 .. k-1`` at
        :math:`\log \frac{1}{k+1}` each.

        Raises:
            HTTPTeacherError: the endpoint names a prompt token differently from the local
                tokenizer (another tokenizer), returns fewer than ``k`` alternatives, or an
                answer without the scores; or as for every request.
        """
        vocab = self._vocab_map()
        batch, length = input_ids.shape
        ids = torch.arange(k, dtype=torch.int64).expand(batch, length, k).clone()
        logprobs = torch.full((batch, length, k), -math.log(k + 1), dtype=torch.float32)
        rows = {}
        for row in range(batch):
            positions = attention_mask[row].nonzero().flatten().tolist()
            if positions:
                rows[row] = (positions, [int(t) for t in input_ids[row, positions].tolist()])
        with ThreadPoolExecutor(max_workers=self.config.concurrency) as pool:
            scored = {
                row: pool.submit(self._score_row, row, positions, tokens, k)
                for row, (positions, tokens) in rows.items()
            }
        for row, (positions, _tokens) in rows.items():
            tops = scored[row].result()  # the first failed row, in row order, raises
            for pos, top in zip(positions, tops, strict=True):
                if len(top) < k:
                    raise HTTPTeacherError(
                        f"topk: the endpoint returned {len(top)} alternatives at position "
                        f"{pos} of row {row}, fewer than k={k}; lower teacher.topk"
                    )
                ids[row, pos] = torch.tensor(
                    [self._token_id(t, vocab, row, pos) for t, _ in top[:k]]
                )
                logprobs[row, pos] = torch.tensor([lp for _, lp in top[:k]])
        return TeacherOutput(
            ids=ids.to(input_ids.device),
            logprobs=logprobs.to(input_ids.device),
            mask=attention_mask.bool(),
            aligned="logits",
        )

    def _score_row(
        self, row: int, positions: list[int], tokens: list[int], k: int
    ) -> list[list[tuple[str, float]]]:
        """Request the scores of one row's ``tokens`` and check the endpoint's tokenizer."""
        scoring = self.config.scoring
        body = scoring_request(scoring, self.config.model, tokens, k)
        answer = self._request(PATHS["completions"], body, len(tokens), 1)
        try:
            scores = parse_scores(scoring, answer.body, tokens)
        except MalformedResponseError as exc:
            raise HTTPTeacherError(f"topk: {exc}") from exc
        bad = first_mismatch(self._require_tokenizer(), tokens, scores.returned)
        if bad is not None:
            sent = self._require_tokenizer().convert_ids_to_tokens(tokens[bad])
            raise HTTPTeacherError(
                f"topk: row {row}, position {positions[bad]}: sent token id {tokens[bad]} "
                f"({sent!r}), the endpoint returned {scores.returned[bad]!r}: it serves "
                f"another tokenizer than the student's ({_CROSS})"
            )
        return scores.top

    @staticmethod
    def _token_id(token: str, vocab: dict[str, int], row: int, pos: int) -> int:
        try:
            return token_to_id(token, vocab)
        except KDTrainError:
            raise HTTPTeacherError(
                f"topk: row {row}, position {pos}: the endpoint returned the alternative "
                f"{token!r}, which is not in the student's tokenizer. Either the endpoint "
                f"serves another tokenizer ({_CROSS}), or it names tokens by their text: "
                "with vLLM, set teacher.http.scoring to 'prompt_logprobs' (it asks for "
                "'token_id:N' names)"
            ) from None

    # -- the request path -------------------------------------------------------------

    def _request(
        self, path: str, body: dict[str, Any], prompt_tokens: int, completion_tokens: int
    ) -> Response:
        key = cache_key(self.config.model, {"path": path, "body": body})
        worst = self.config.cost_nanos(prompt_tokens, completion_tokens)
        policy = self.config.retry
        problem = "no attempt made"
        for attempt in range(1, policy.max_attempts + 1):
            # Checked before every attempt: another worker may have paid for this answer
            # while ours timed out, and a cached answer costs nothing more.
            hit = self._cached(key)
            if hit is not None:
                return hit
            outcome = self._attempt(path, body, key, worst)
            if isinstance(outcome, Response):
                return outcome
            problem, retry_after = outcome
            if attempt == policy.max_attempts:
                break
            wait = policy.delay(attempt, retry_after, self._rng)
            logger.warning(
                "POST %s%s: %s; retry %d/%d in %.2f s",
                self.config.base_url,
                path,
                problem,
                attempt,
                policy.max_attempts - 1,
                wait,
            )
            self._count(retries=1)
            threading.Event().wait(wait)
        self._count(failed=1)
        raise HTTPTeacherError(
            f"POST {self.config.base_url}{path} failed after {policy.max_attempts} attempts: "
            f"{problem}. Check that the endpoint is up, or raise retry.max_attempts"
        )

    def _cached(self, key: str) -> Response | None:
        if self.store is None:
            return None
        hit = self.store.cache.get(key)
        if hit is None:
            return None
        self._count(cache_hits=1)
        return Response(key, hit.body, 0, hit.estimated, cached=True)

    def _attempt(
        self, path: str, body: dict[str, Any], key: str, worst: int
    ) -> Response | tuple[str, float | None]:
        """Send once under a fresh reservation; return the answer or ``(problem, retry_after)``.

        The reservation's fate follows what the provider may have billed: settled to the
        reported cost on an answer; released when the request surely never reached the
        model (connect error, an HTTP 4xx refusal); otherwise — timeout, dropped connection,
        malformed 200, HTTP 5xx — charged as unconfirmed at ``worst``.
        """
        self._limiter.acquire()
        with self._slots:
            if self._overrun is not None:
                raise self._overrun
            reservation = self._reserve(worst)
            try:
                reply = self._client.post(path, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                self._release(reservation)
                return f"connection failed before sending ({type(exc).__name__}: {exc})", None
            except httpx.TimeoutException as exc:
                problem = f"timed out after {self.config.timeout} s ({type(exc).__name__})"
                self._unconfirmed(reservation, key, worst, problem)
                return problem, None
            except httpx.TransportError as exc:
                problem = f"connection lost after sending ({type(exc).__name__}: {exc})"
                self._unconfirmed(reservation, key, worst, problem)
                return problem, None
            except BaseException as exc:
                self._unconfirmed(reservation, key, worst, f"interrupted ({type(exc).__name__})")
                raise
        if reply.status_code != 200:
            problem = f"HTTP {reply.status_code}"
            if reply.status_code >= 500:
                self._unconfirmed(reservation, key, worst, problem)
            else:
                self._release(reservation)
            if reply.status_code in RETRY_STATUSES:
                return problem, parse_retry_after(reply.headers.get("retry-after"))
            self._count(failed=1)
            raise HTTPTeacherError(_status_message(reply, self.config.base_url + path))
        try:
            answer = dict(reply.json())
            cost, estimated = self._cost(path, body, answer)
        except (ValueError, TypeError, MalformedResponseError) as exc:
            problem = f"malformed response body ({exc})"
            self._unconfirmed(reservation, key, worst, problem)
            return problem, None
        if reservation is not None and self.store is not None:
            self.store.ledger.settle(
                reservation,
                cost_nanos=cost,
                key=key,
                model=self.config.model,
                body=answer,
                estimated=estimated,
            )
        self._count(paid=1, spent_nanos=cost)
        if reservation is not None and cost > worst:
            usage = f"usage {answer.get('usage', 'not reported')}"
            self._overrun = BudgetOverrunError(self.config.budget_name, worst, cost, usage)
            raise self._overrun
        return Response(key, answer, cost, estimated, cached=False)

    def _reserve(self, worst: int) -> Reservation | None:
        if self.store is None:
            return None
        return self.store.ledger.reserve(self.config.budget_name, worst, self.owner)

    def _release(self, reservation: Reservation | None) -> None:
        if reservation is not None and self.store is not None:
            self.store.ledger.release(reservation)

    def _unconfirmed(
        self, reservation: Reservation | None, key: str, worst: int, reason: str
    ) -> None:
        if reservation is not None and self.store is not None:
            self.store.ledger.settle_unconfirmed(reservation, key=key, reason=reason)
        self._count(unconfirmed=1, unconfirmed_nanos=worst)

    def _cost(self, path: str, body: dict[str, Any], answer: dict[str, Any]) -> tuple[int, bool]:
        api: Api = "chat" if path == PATHS["chat"] else "completions"
        gen = parse_generation(api, answer)
        if gen.usage is not None:
            usage = gen.usage
            return self.config.cost_nanos(usage.prompt_tokens, usage.completion_tokens), False
        prompt = body.get("prompt", body.get("messages", [{}])[0].get("content", ""))
        n_prompt = len(prompt) if isinstance(prompt, list) else self._count_tokens(prompt)
        n_completion = len(gen.tokens) if gen.tokens else self._count_tokens(gen.text)
        return self.config.cost_nanos(n_prompt, n_completion), True

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

    def _vocab_map(self) -> dict[str, int]:
        if self._vocab is None:
            self._vocab = dict(self._require_tokenizer().get_vocab())
        return self._vocab

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self.counters, name, getattr(self.counters, name) + delta)


def _status_message(reply: httpx.Response, url: str) -> str:
    excerpt = reply.text[:200].replace("\n", " ")
    if reply.status_code in (401, 403):
        return (
            f"POST {url}: HTTP {reply.status_code}: the endpoint refused the API key; check "
            "the environment variable named by api_key_env"
        )
    return f"POST {url}: HTTP {reply.status_code} (not retried): {excerpt}"
