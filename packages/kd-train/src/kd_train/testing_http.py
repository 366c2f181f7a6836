"""A loopback OpenAI-compatible teacher server for tests, load scenarios and demos.

It serves real log-probs from a tiny real ``transformers`` model (greedy decoding) on
``127.0.0.1`` (port 0: the OS picks a free one), answering ``POST /v1/completions`` (text
or token-id prompts, ``echo``, ``logprobs``, and vLLM's ``prompt_logprobs`` and
``return_tokens_as_token_ids``) and ``POST /v1/chat/completions``
(``logprobs``/``top_logprobs``), with ``usage`` figures. Token strings are the
tokenizer's vocabulary strings (or ``"token_id:N"`` when asked), so
:func:`~kd_train.teachers.openai_api.token_to_id` maps them back exactly.
``prompt_logprobs[i]`` (``None`` for ``i = 0``) is vLLM's
``{"<id>": {"logprob", "rank", "decoded_token"}}`` of the top-k after the tokens before
``i``, plus prompt token ``i`` itself when it is outside the top-k.

Faults are injected per request, from a script (a list consumed in order, then ``ok``)
or at random with given rates:

``429``: HTTP 429 with ``Retry-After``; ``500``: HTTP 500; ``slow``: answers after
``slow_seconds``; ``stall``: waits ``stall_seconds`` (longer than a client timeout) then
answers; ``drop``: computes the completion, then closes the connection without a response;
``malformed``: computes the completion, then sends HTTP 200 with a truncated JSON body.
``extra_billed_tokens`` makes every answer report (and bill) that many completion tokens
more than it produced: a provider that does not honour ``max_tokens``.

Like a real provider, the server *bills* every completion it computes, whether or not the
client receives it (``drop``, ``malformed``, a ``stall`` the client gave up on): the
``usage`` of each is in ``LoopbackTeacherServer.billed``, so a test can check the
provider-side spend against the client's budget (call :meth:`~LoopbackTeacherServer.wait_idle`
first, for the stalled answers still being computed). 429 and 500 bill nothing.

>>> import tempfile, httpx
>>> from kd_train.testing import save_tiny_llama
>>> from kd_train.testing_http import FaultPlan, LoopbackTeacherServer
>>> model_dir = save_tiny_llama(tempfile.mkdtemp())
>>> with LoopbackTeacherServer(model_dir, faults=FaultPlan(script=["500"])) as server:
...     first = httpx.post(server.base_url + "/completions", json={"prompt": "hi"})
...     second = httpx.post(server.base_url + "/completions",
...                         json={"prompt": "hi", "max_tokens": 2, "logprobs": 3})
>>> first.status_code, second.status_code, len(second.json()["choices"][0]["logprobs"]["tokens"])
(500, 200, 2)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

#: The faults a :class:`FaultPlan` can inject.
FAULTS = ("429", "500", "slow", "stall", "drop", "malformed")


@dataclass
class FaultPlan:
    """Which fault (or ``"ok"``) each request gets: the ``script`` first, then ``rates``."""

    script: list[str] = field(default_factory=list)
    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = {f for f in [*self.script, *self.rates] if f not in (*FAULTS, "ok")}
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; choose from {FAULTS}")
        if sum(self.rates.values()) > 1.0:
            raise ValueError(f"fault rates add up to more than 1: {self.rates}")
        self._rng = random.Random(self.seed)  # noqa: S311 - test fault draws, not crypto
        self._lock = threading.Lock()

    def next(self) -> str:
        """Return the fault for the next request (thread-safe)."""
        with self._lock:
            if self.script:
                return self.script.pop(0)
            draw = self._rng.random()
            for fault, rate in sorted(self.rates.items()):
                if draw < rate:
                    return fault
                draw -= rate
            return "ok"


class _Model:
    """The tiny model behind the server: greedy generation and per-position top-k."""

    def __init__(self, model_dir: str | Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.lock = threading.Lock()

    def encode(self, prompt: str | list[int]) -> list[int]:
        ids = list(prompt) if isinstance(prompt, list) else self.tokenizer(prompt)["input_ids"]
        return ids or [self.tokenizer.bos_token_id]

    @torch.no_grad()
    def run(self, ids: list[int], max_tokens: int) -> tuple[list[int], torch.Tensor]:
        """Greedy-extend ``ids`` by up to ``max_tokens``; return new ids and all log-probs."""
        with self.lock:
            seq = torch.tensor([ids])
            for _ in range(max_tokens):
                nxt = int(self.model(seq).logits[0, -1].argmax())
                seq = torch.cat([seq, torch.tensor([[nxt]])], dim=1)
                if nxt == self.tokenizer.eos_token_id:
                    break
            logprobs = torch.log_softmax(self.model(seq).logits[0].float(), dim=-1)
        return seq[0, len(ids) :].tolist(), logprobs

    def names(self, ids: list[int], as_ids: bool) -> list[str]:
        """Token strings of ``ids``: vocabulary strings, or ``"token_id:N"`` (``as_ids``)."""
        if as_ids:
            return [f"token_id:{i}" for i in ids]
        return list(self.tokenizer.convert_ids_to_tokens(ids))

    def top(self, logprobs: torch.Tensor, k: int, as_ids: bool = False) -> list[tuple[str, float]]:
        values, idx = logprobs.topk(k)
        names = self.names(idx.tolist(), as_ids)
        return [(n, float(v)) for n, v in zip(names, values.tolist(), strict=True)]

    def prompt_entry(self, logprobs: torch.Tensor, token: int, k: int) -> dict[str, Any]:
        """One ``prompt_logprobs`` entry (vLLM's): the top-``k``, plus ``token`` if outside it."""
        best = logprobs.topk(k).indices.tolist()
        chosen = [*best, *([] if token in best else [token])]
        return {
            str(i): {
                "logprob": float(logprobs[i]),
                "rank": int((logprobs > logprobs[i]).sum()) + 1,
                "decoded_token": str(self.tokenizer.decode([i])),
            }
            for i in chosen
        }


class LoopbackTeacherServer:
    """The server; use as a context manager or call :meth:`start` / :meth:`stop`.

    Attributes:
        base_url: ``http://127.0.0.1:PORT/v1`` once started.
        counts: requests seen per outcome (``"ok"`` and each fault name).
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
    ) -> None:
        self.model = _Model(model_dir)
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
        chat = path.endswith("/chat/completions")
        if chat:
            prompt: str | list[int] = "\n".join(m["content"] for m in body["messages"])
            k = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
        else:
            prompt, k = body["prompt"], int(body.get("logprobs") or 0)
        ids = self.model.encode(prompt)
        echo = bool(body.get("echo")) and not chat
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        new, logprobs = self.model.run(ids, int(body.get("max_tokens", 16)))
        tok = self.model.tokenizer
        shown = range(1 if echo else len(ids), len(ids) + len(new))
        tokens = self.model.names(ids + new if echo else new, as_ids)
        tops = [self.model.top(logprobs[i - 1], k, as_ids) if k else [] for i in shown]
        text = str(tok.decode(new, skip_special_tokens=True))
        # extra_billed_tokens: a provider that bills more than max_tokens (ignores it).
        usage = {
            "prompt_tokens": len(ids),
            "completion_tokens": len(new) + self.extra_billed_tokens,
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if chat:
            content = [
                {
                    "token": t,
                    "logprob": top[0][1] if top else 0.0,
                    "top_logprobs": [{"token": a, "logprob": lp} for a, lp in top],
                }
                for t, top in zip(tokens, tops, strict=True)
            ]
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": {"content": content} if k else None,
                "finish_reason": "stop",
            }
        else:
            top_dicts: list[dict[str, float] | None] = [dict(t) for t in tops]
            if echo:
                top_dicts.insert(0, None)
                text = str(tok.decode(ids, skip_special_tokens=True)) + text
            choice = {
                "index": 0,
                "text": text,
                "logprobs": {"tokens": tokens, "top_logprobs": top_dicts} if k else None,
                "finish_reason": "stop",
            }
            if body.get("prompt_logprobs"):
                pk = int(body["prompt_logprobs"])
                choice["prompt_logprobs"] = [None] + [
                    self.model.prompt_entry(logprobs[i - 1], ids[i], pk) for i in range(1, len(ids))
                ]
        out: dict[str, Any] = {
            "object": "completion",
            "model": body.get("model", ""),
            "choices": [choice],
        }
        if self.report_usage:
            out["usage"] = usage
        with self._lock:
            self.billed.append(usage)
        return out, usage

    def _tally(self, outcome: str) -> None:
        with self._lock:
            self.counts[outcome] += 1

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
        out, usage = server._complete(self.path, body)  # billed now, delivered or not
        if fault == "drop":
            self.close_connection = True
            return None
        if fault == "malformed":
            return self._send_raw(200, b'{"choices": [{"text": "trunc')
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


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a model directory on loopback until interrupted (for demos and load runs)."""
    parser = argparse.ArgumentParser(prog="python -m kd_train.testing_http")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--fault", action="append", default=[], metavar="NAME=RATE")
    parser.add_argument("--retry-after", type=float, default=0.0)
    args = parser.parse_args(argv)
    rates = {name: float(rate) for name, rate in (f.split("=", 1) for f in args.fault)}
    with LoopbackTeacherServer(
        args.model_dir, faults=FaultPlan(rates=rates), retry_after=args.retry_after
    ) as server:
        print(server.base_url, flush=True)
        threading.Event().wait()
    return 0  # pragma: no cover - only reached through KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())


def write_prompts(
    path: str | Path, n: int, text: str = "Ask again later {i}", prefix: str = "r"
) -> list[str]:
    """Write ``n`` prompt records ``{"id": f"{prefix}{i}", "prompt": text.format(i=i)}``.

    Returns their ids, in file order (the input of ``kd-train generate --prompts``).
    """
    ids = [f"{prefix}{i}" for i in range(n)]
    lines = (json.dumps({"id": rid, "prompt": text.format(i=i)}) for i, rid in enumerate(ids))
    Path(path).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return ids


#: Options of :func:`generate_argv` unless the caller gives them.
GENERATE_DEFAULTS: dict[str, object] = {
    "model": "tiny",
    "max_tokens": 2,
    "top_logprobs": 2,
    "price_per_1k_prompt": 1,
    "price_per_1k_completion": 1,
    "retry_base_delay": 0,
}


def generate_argv(
    base_url: str, prompts: str | Path, out: str | Path, **options: object
) -> list[str]:
    """The ``kd-train generate`` arguments (after the program name) against ``base_url``.

    Keyword options become flags (``max_tokens=3`` -> ``--max-tokens 3``) over
    :data:`GENERATE_DEFAULTS`; ``None`` leaves a default flag out. Progress bars are off.

    >>> from kd_train.testing_http import generate_argv
    >>> argv = generate_argv("http://h/v1", "p.jsonl", "o.jsonl", max_tokens=3, model=None)
    >>> argv[:3], argv[7:9], "--model" in argv, argv[-1]
    (['generate', '--prompts', 'p.jsonl'], ['--max-tokens', '3'], False, '--no-progress')
    """
    argv = ["generate", "--prompts", str(prompts), "--out", str(out), "--base-url", base_url]
    for key, value in {**GENERATE_DEFAULTS, **options}.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    return [*argv, "--no-progress"]
