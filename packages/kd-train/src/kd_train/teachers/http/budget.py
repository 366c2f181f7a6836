"""The cost budget around each attempt: reserve the worst case, then settle what was billed.

Before an attempt is sent, its worst case ``w`` (``worst`` of its
:class:`~kd_train.teachers.http.exchange.Call`) is reserved in the ledger; if it does not fit
under the cap, :class:`~kd_train.store.errors.BudgetExhaustedError` is raised and nothing is
sent. After it, the reservation is settled by what the provider may have billed:

* an answer: the cost from its ``usage`` (estimated from token counts and marked
  ``estimated`` when the endpoint reports none); charge and cache entry in one transaction;
* sent, but no usable answer (a timeout, a dropped connection, a malformed 200 body, an
  HTTP 5xx, an interrupt): an *unconfirmed* charge of ``w`` with the reason;
* never sent or refused (a connect error, an HTTP 4xx, 429 included): released.

An answer billed past its reservation is charged what it cost (the ledger records the
truth), the ledger halts the budget for every worker sharing it, and
:class:`~kd_train.store.errors.BudgetOverrunError` stops the run: it is raised at that call
and at every later one, before anything more is sent (other workers get
:class:`~kd_train.store.errors.BudgetHaltedError` at their next reservation). The spend can
then pass the cap only by the excess of the requests already in flight: at most
``concurrency`` of them per worker (see :mod:`kd_train.store.ledger`).

Opening the budget never changes a shared cap unless the config says ``change_budget``,
and first reclaims reservations left by dead workers
(:meth:`~kd_train.store.ledger.Ledger.reclaim`).
Each reservation is leased for :data:`LEASE_FACTOR` times the attempt timeout, at least
:data:`~kd_train.store.ledger.DEFAULT_LEASE_S` seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kd_train.store import BudgetOverrunError, Store, usd_to_nanos
from kd_train.store.ledger import DEFAULT_LEASE_S, Reservation
from kd_train.teachers.http.config import HTTPTeacherConfig
from kd_train.teachers.http.exchange import Call, Count, Failure, Response
from kd_train.teachers.http.wire import Wire
from kd_train.teachers.openai_api import PATHS, Api, MalformedResponseError, parse_generation

#: A reservation's lease in attempt timeouts, far longer than one attempt can last.
LEASE_FACTOR = 20


class Budget:
    """Charge every attempt of ``wire`` to ``config.budget_name`` in ``store``'s ledger.

    Without a store nothing is reserved or charged; costs are still counted.

    Args:
        wire: sends the attempt.
        config: the model, the prices and the budget's name and cap.
        store: holds the ledger and the response cache (``None``: neither).
        owner: the name this worker's reservations and charges carry in the ledger.
        count: adds to the teacher's counters.
        count_tokens: the token count of a text, for costs the endpoint does not report.
    """

    def __init__(
        self,
        wire: Wire,
        config: HTTPTeacherConfig,
        store: Store | None,
        owner: str,
        count: Count,
        count_tokens: Callable[[str], int],
    ) -> None:
        self._wire = wire
        self._config = config
        self._store = store
        self._owner = owner
        self._count = count
        self._count_tokens = count_tokens
        #: Set by the first request billed past its reservation; no request is sent after it.
        self._overrun: BudgetOverrunError | None = None
        self._lease_s = max(DEFAULT_LEASE_S, LEASE_FACTOR * config.timeout)
        if store is not None:
            cap = None if config.budget is None else usd_to_nanos(config.budget)
            ledger = store.ledger
            ledger.open_budget(config.budget_name, cap, change=config.change_budget, actor=owner)
            ledger.reclaim(config.budget_name, actor=owner)

    def send(self, call: Call) -> Response | Failure:
        """Send ``call`` once under a fresh reservation; settle it by the outcome."""
        if self._overrun is not None:
            raise self._overrun
        reservation = self._reserve(call.worst)
        try:
            answer = self._wire.send(call)
        except BaseException as exc:
            self._unconfirmed(reservation, call, f"interrupted ({type(exc).__name__})")
            raise
        if isinstance(answer, Failure):
            if answer.billed:
                self._unconfirmed(reservation, call, answer.problem)
            else:
                self._release(reservation)
            return answer
        try:
            cost, estimated = self._cost(call, answer)
        except (ValueError, TypeError, MalformedResponseError) as exc:
            problem = f"malformed response body ({exc})"
            self._unconfirmed(reservation, call, problem)
            return Failure(problem, billed=True)
        if reservation is not None and self._store is not None:
            self._store.ledger.settle(
                reservation,
                cost_nanos=cost,
                key=call.key,
                model=self._config.model,
                body=answer,
                estimated=estimated,
            )
        self._count(paid=1, spent_nanos=cost)
        if reservation is not None and cost > call.worst:
            usage = f"usage {answer.get('usage', 'not reported')}"
            self._overrun = BudgetOverrunError(self._config.budget_name, call.worst, cost, usage)
            raise self._overrun
        return Response(call.key, answer, cost, estimated, cached=False)

    def _reserve(self, worst: int) -> Reservation | None:
        if self._store is None:
            return None
        return self._store.ledger.reserve(
            self._config.budget_name, worst, self._owner, lease_s=self._lease_s
        )

    def _release(self, reservation: Reservation | None) -> None:
        if reservation is not None and self._store is not None:
            self._store.ledger.release(reservation)

    def _unconfirmed(self, reservation: Reservation | None, call: Call, reason: str) -> None:
        if reservation is not None and self._store is not None:
            self._store.ledger.settle_unconfirmed(reservation, key=call.key, reason=reason)
        self._count(unconfirmed=1, unconfirmed_nanos=call.worst)

    def _cost(self, call: Call, answer: dict[str, Any]) -> tuple[int, bool]:
        """The answer's cost in nano-USD, and whether it is estimated (no ``usage``)."""
        api: Api = "chat" if call.path == PATHS["chat"] else "completions"
        gen = parse_generation(api, answer)
        if gen.usage is not None:
            usage = gen.usage
            return self._config.cost_nanos(usage.prompt_tokens, usage.completion_tokens), False
        body = call.body
        prompt = body.get("prompt", body.get("messages", [{}])[0].get("content", ""))
        n_prompt = len(prompt) if isinstance(prompt, list) else self._count_tokens(prompt)
        n_completion = len(gen.tokens) if gen.tokens else self._count_tokens(gen.text)
        if body.get("echo"):  # the answer repeats the prompt before what it generated
            n_completion = max(0, n_completion - n_prompt)
        return self._config.cost_nanos(n_prompt, n_completion), True
