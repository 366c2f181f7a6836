"""The typed configuration of an :class:`~kd_train.teachers.http.HTTPTeacher`, and its prices."""

from __future__ import annotations

from dataclasses import dataclass, field

from kd_train.store import usd_to_nanos
from kd_train.teachers.openai_api import PATHS, Api, Scoring
from kd_train.teachers.retry import RetryPolicy

#: The cap, in nano-USD, given to a budget created without one (no practical limit).
UNLIMITED_NANOS = 2**62


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
