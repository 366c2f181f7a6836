"""One attempt over HTTP, and what became of it: an answer, or a failure and who may pay.

Never sent: a connect error or a pool timeout (``billed=False``). Sent, but no usable
answer: a read/write timeout, a connection dropped after sending, a malformed 200 body
(``billed=True``). An HTTP error: ``billed`` for a 5xx (the model may have run), not for a
4xx refusal; retried when the status is in
:data:`~kd_train.teachers.retry.RETRY_STATUSES`, else ``final``. A 4xx or 5xx whose body
carries a validation error (:func:`validation_error`: FastAPI's 422 ``detail`` list,
pydantic's "N validation errors", OpenAI's ``invalid_request_error``) is a *refusal*:
``final``, ``refused`` and not billed, whatever its status: the request never reached the
model (llama.cpp's server answers a token-id prompt with such an HTTP 500).
"""

from __future__ import annotations

import re
from typing import Any

import httpx

from kd_train.teachers.http.config import HTTPTeacherConfig
from kd_train.teachers.http.exchange import Call, Failure, HTTPTeacherError
from kd_train.teachers.retry import RETRY_STATUSES, parse_retry_after


class Wire:
    """POST a :class:`~kd_train.teachers.http.exchange.Call`'s body; the bottom of the stack.

    Args:
        config: the base URL, the timeout and the connection limit.
        api_key: sent as ``Authorization: Bearer ...`` when given; never logged or stored.
        transport: an ``httpx`` transport (tests); default: real network.
    """

    def __init__(
        self,
        config: HTTPTeacherConfig,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base_url = config.base_url
        self._timeout = config.timeout
        if api_key and not _header_safe(api_key):
            # httpx would refuse the header with an error that quotes it: never show the key
            raise HTTPTeacherError(
                "the API key holds whitespace or characters an HTTP header cannot carry "
                "(a line break from copying it?); set the environment variable again"
            )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=config.base_url.rstrip("/"),
            headers=headers,
            timeout=config.timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=config.concurrency),
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def send(self, call: Call) -> dict[str, Any] | Failure:
        """Send ``call`` once; return the JSON body of a 200 answer, or the failure."""
        try:
            reply = self._client.post(call.path, json=call.body)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            problem = f"connection failed before sending ({type(exc).__name__}: {exc})"
            return Failure(problem, billed=False)
        except httpx.TimeoutException as exc:
            problem = f"timed out after {self._timeout} s ({type(exc).__name__})"
            return Failure(problem, billed=True)
        except httpx.TransportError as exc:
            problem = f"connection lost after sending ({type(exc).__name__}: {exc})"
            return Failure(problem, billed=True)
        status = reply.status_code
        if status != 200:
            invalid = (
                validation_error(reply) if status >= 400 and status not in (401, 403) else None
            )
            if invalid is not None:
                url = self._base_url + call.path
                problem = f"POST {url}: HTTP {status}: the endpoint refused the request: {invalid}"
                return Failure(problem, billed=False, final=True, refused=True)
            if status in RETRY_STATUSES:
                retry_after = parse_retry_after(reply.headers.get("retry-after"))
                return Failure(f"HTTP {status}", billed=status >= 500, retry_after=retry_after)
            message = _status_message(reply, self._base_url + call.path)
            return Failure(message, billed=status >= 500, final=True)
        try:
            return dict(reply.json())
        except (ValueError, TypeError) as exc:
            return Failure(f"malformed response body ({exc})", billed=True)


_VALIDATION = re.compile(
    r"validation errors?\b|invalid_request_error|unrecognized request argument|"
    r"extra_forbidden|extra inputs are not permitted",
    re.IGNORECASE,
)


def validation_error(reply: httpx.Response) -> str | None:
    """The validation error an error answer carries (an excerpt), or ``None``.

    >>> import httpx
    >>> from kd_train.teachers.http.wire import validation_error
    >>> body = {"error": {"message": "1 validation error: prompt: Input should be a valid "
    ...         "string", "type": "internal_server_error"}}
    >>> validation_error(httpx.Response(500, json=body))[:19]
    '1 validation error:'
    >>> validation_error(httpx.Response(500, json={"error": {"message": "CUDA OOM"}})) is None
    True
    """
    try:
        data = reply.json()
    except ValueError:
        data = None
    if reply.status_code == 422 and isinstance(data, dict) and isinstance(data.get("detail"), list):
        return str(data["detail"])[:300]
    error = data.get("error") if isinstance(data, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    text = " ".join(str(x) for x in (message, kind) if x) or reply.text
    match = _VALIDATION.search(text)
    if match is None:
        return None
    start = text.find(str(message)) if message and str(message) in text else match.start()
    return " ".join(text[start : start + 300].split())


def _header_safe(key: str) -> bool:
    """Whether ``key`` is printable ASCII without spaces (it goes in a header as it is)."""
    return all("!" <= ch <= "~" for ch in key)


def _status_message(reply: httpx.Response, url: str) -> str:
    excerpt = reply.text[:200].replace("\n", " ")
    if reply.status_code in (401, 403):
        return (
            f"POST {url}: HTTP {reply.status_code}: the endpoint refused the API key; check "
            "the environment variable named by api_key_env"
        )
    return f"POST {url}: HTTP {reply.status_code} (not retried): {excerpt}"
