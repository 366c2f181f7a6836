"""A loopback OpenAI-compatible teacher server, and its HTTP request handler.

It serves real log-probs from a tiny real ``transformers`` model (greedy decoding,
:class:`~kd_train.testing.server.model.ServedModel`) on ``127.0.0.1`` (port 0: the OS picks
a free one), in the formats of :mod:`kd_train.testing.server.answers`, with ``usage``
figures. Each request gets the fault its :class:`~kd_train.testing.server.faults.FaultPlan`
draws. ``extra_billed_tokens`` makes every answer report (and bill) that many completion
tokens more than it produced: a provider that does not honour ``max_tokens``. ``style``
picks the answers' format: ``"openai"`` (with vLLM's extensions) or ``"llama.cpp"``
(llama-cpp-python's server, quirks included; :mod:`kd_train.testing.server.answers`).

Like a real provider, the server *bills* every completion it computes, whether or not the
client receives it (``drop``, ``malformed``, a ``stall`` the client gave up on): the
``usage`` of each is in ``LoopbackTeacherServer.billed``, so a test can check the
provider-side spend against the client's budget (call :meth:`~LoopbackTeacherServer.wait_idle`
first, for the stalled answers still being computed). 429 and 500 bill nothing.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from kd_train.testing.server.answers import Refusal, build_answer
from kd_train.testing.server.faults import FaultPlan
from kd_train.testing.server.model import ServedModel


class LoopbackTeacherServer:
    """The server; use as a context manager or call :meth:`start` / :meth:`stop`.

    Attributes:
        base_url: ``http://127.0.0.1:PORT/v1`` once started.
        counts: requests seen per outcome (``"ok"``, ``"refused"`` and each fault name).
        style: the answers' format (``"openai"`` or ``"llama.cpp"``).
        answered: the ``usage`` of every 200 answer with a valid body, in order.
        billed: the ``usage`` of every completion computed, received by the client or not.
        client_gone: requests whose client hung up before the answer was written (a killed
            or timed-out client); counted, not printed as a traceback.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        faults: FaultPlan | None = None,
        api_key: str | None = None,
        retry_after: float = 0.0,
        slow_seconds: float = 0.2,
        stall_seconds: float = 5.0,
        report_usage: bool = True,
        extra_billed_tokens: int = 0,
        style: Literal["openai", "llama.cpp"] = "openai",
    ) -> None:
        self.model = ServedModel(model_dir)
        self.style = style
        self.faults = faults or FaultPlan()
        self.api_key = api_key
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.stall_seconds = stall_seconds
        self.report_usage = report_usage
        self.extra_billed_tokens = extra_billed_tokens
        self.counts: dict[str, int] = Counter()
        self.answered: list[dict[str, int]] = []
        self.billed: list[dict[str, int]] = []
        self.client_gone = 0
        self.base_url = ""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LoopbackTeacherServer:
        """Bind to ``127.0.0.1`` on a free port and serve in a background thread."""
        handler = type("Handler", (_Handler,), {"owner": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.owner = self
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LoopbackTeacherServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until no request is being handled; return whether that happened in time."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def billed_nanos(self, price_per_1k_prompt: float, price_per_1k_completion: float) -> int:
        """What the server billed, in nano-USD, at these prices (USD per 1000 tokens).

        Each request costs ``ceil((P·p + C·c) / 1000)``, rounded like
        :meth:`kd_train.teachers.http.HTTPTeacherConfig.cost_nanos`.
        """
        p, c = round(price_per_1k_prompt * 1e9), round(price_per_1k_completion * 1e9)
        with self._lock:
            usages = list(self.billed)
        return sum(
            -(-(u["prompt_tokens"] * p + u["completion_tokens"] * c) // 1000) for u in usages
        )

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Compute (and bill) the JSON answer to ``body`` at ``path`` (no fault injection)."""
        return self._complete(path, body)[0]

    def _complete(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
        out, usage = build_answer(
            self.model, path, body, extra_billed_tokens=self.extra_billed_tokens, style=self.style
        )
        if self.report_usage:
            out["usage"] = usage
        with self._lock:
            self.billed.append(usage)
        return out, usage

    def _tally(self, outcome: str, instead_of: str | None = None) -> None:
        with self._lock:
            self.counts[outcome] += 1
            if instead_of is not None:
                self.counts[instead_of] -= 1

    def _answered(self, usage: dict[str, int]) -> None:
        with self._lock:
            self.answered.append(usage)

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1

    def _leave(self) -> None:
        with self._idle:
            self._in_flight -= 1
            self._idle.notify_all()


def _blank(answer: dict[str, Any]) -> None:
    """Make ``answer`` an empty completion that stopped at once."""
    choice = answer["choices"][0]
    if "message" in choice:
        choice["message"]["content"] = ""
        choice["logprobs"] = {"content": []} if choice.get("logprobs") else None
    else:
        choice["text"] = ""
        choice["logprobs"] = {"tokens": [], "top_logprobs": []} if choice.get("logprobs") else None
    choice["finish_reason"] = "stop"


class _Server(ThreadingHTTPServer):
    """The HTTP server; a client that hangs up mid-answer is counted, not a traceback."""

    owner: LoopbackTeacherServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Count ``ConnectionResetError`` / ``BrokenPipeError``; report anything else."""
        if isinstance(sys.exc_info()[1], ConnectionResetError | BrokenPipeError):
            with self.owner._lock:
                self.owner.client_gone += 1
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    owner: LoopbackTeacherServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet; counts are kept on the server object

    def do_POST(self) -> None:
        self.owner._enter()
        try:
            self._post()
        finally:
            self.owner._leave()

    def _post(self) -> None:
        server = self.owner
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
            server._tally("unauthorized")
            return self._send(401, {"error": {"message": "invalid api key"}})
        fault = server.faults.next()
        server._tally(fault)
        if fault == "429":
            headers = {"Retry-After": f"{server.retry_after:g}"}
            return self._send(429, {"error": {"message": "rate limited"}}, headers)
        if fault == "500":
            return self._send(500, {"error": {"message": "injected failure"}})
        if fault in ("slow", "stall"):
            time.sleep(server.slow_seconds if fault == "slow" else server.stall_seconds)
        if self.path not in ("/v1/completions", "/v1/chat/completions"):
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        try:
            body = json.loads(raw)
        except ValueError:
            return self._send(400, {"error": {"message": "request body is not JSON"}})
        try:
            out, usage = server._complete(self.path, body)  # billed now, delivered or not
        except Refusal as refusal:  # invalid: refused before the model runs, billed nothing
            server._tally("refused", instead_of=fault)
            return self._send(refusal.status, refusal.body)
        if fault == "drop":
            self.close_connection = True
            return None
        if fault == "malformed":
            return self._send_raw(200, b'{"choices": [{"text": "trunc')
        if fault == "empty":
            _blank(out)
        self._send(200, out)
        server._answered(usage)
        return None

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(body).encode(), headers)

    def _send_raw(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. after a stall); nothing to answer
