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

**Probe.** Servers differ in what they accept and how they align the scores (llama.cpp's
server takes text prompts only and shifts echoed scores by one), so the first scoring call
probes the endpoint once with a prompt whose answer is known
(:mod:`~kd_train.teachers.http.scoring`) and refuses one whose shape cannot be established.
Returned token strings (vocabulary strings, token text, ``"token_id:N"``, ``bytes``) are
mapped to ids the way the tokenizer family stores bytes (:mod:`~kd_train.teachers.tokens`);
a position whose alternatives do not each fit one id is masked and counted, never shortened.

**Token check.** The endpoint must read the ids with the student's tokenizer. Every prompt
token the endpoint names (the echoed token, or the ``decoded_token`` in ``prompt_logprobs``)
is compared with the local tokenizer's; a mismatch raises :class:`HTTPTeacherError` naming
the row, the position and both tokens: the endpoint serves another tokenizer, and
cross-tokenizer distillation is not supported by this teacher kind. An alternative the
student's tokenizer does not have is refused the same way.

Every request goes through the same stack of parts, each in its own module, in the manner
of ``httpx``'s transports (:mod:`~kd_train.teachers.http.retrying` ->
:mod:`~kd_train.teachers.http.cache` -> :mod:`~kd_train.teachers.http.throttle` ->
:mod:`~kd_train.teachers.http.budget` -> :mod:`~kd_train.teachers.http.wire`):

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
   * never sent or refused — a connect error, an HTTP 4xx (429 included), any error status
     whose body carries a validation error (llama.cpp answers an invalid request with a
     500): released, and a validation error is not retried.

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

from kd_train.teachers.http.config import UNLIMITED_NANOS, HTTPTeacherConfig
from kd_train.teachers.http.exchange import (
    Counters,
    HTTPTeacherError,
    RequestRefusedError,
    Response,
)
from kd_train.teachers.http.teacher import PROMPT_OVERHEAD_TOKENS, HTTPTeacher

__all__ = [
    "PROMPT_OVERHEAD_TOKENS",
    "UNLIMITED_NANOS",
    "Counters",
    "HTTPTeacher",
    "HTTPTeacherConfig",
    "HTTPTeacherError",
    "RequestRefusedError",
    "Response",
]
