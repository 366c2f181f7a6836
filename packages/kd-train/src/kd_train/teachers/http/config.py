"""The typed configuration of an :class:`~kd_train.teachers.http.HTTPTeacher`, and its prices.

Two rules keep the budget and the key honest. A budget needs a price: at the default
prices of 0 every request costs nothing, so a cap would limit nothing
(:func:`budget_problem`). And the API key travels only in the ``Authorization`` header,
read from an environment variable: a ``base_url`` that carries a credential (a password in
``https://user:key@host``, a query parameter such as ``?api_key=``) is refused, since the
endpoint is logged, stored in the run registry and written to manifests
(:func:`url_credential`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from kd_train.store import UNLIMITED_NANOS, usd_to_nanos
from kd_train.teachers.openai_api import PATHS, Api, Scoring
from kd_train.teachers.retry import RetryPolicy

__all__ = ["UNLIMITED_NANOS", "HTTPTeacherConfig", "budget_problem", "url_credential"]

# Query parameter names that carry a credential (matched as a part of the name).
_SECRET_PARAM = re.compile(
    r"key|token|secret|passw|pwd|auth|sig|credential|session|bearer", re.IGNORECASE
)


def url_credential(url: str) -> str | None:
    """What credential ``url`` carries (described without its value), or ``None``.

    >>> from kd_train.teachers.http.config import url_credential
    >>> url_credential("https://u:sk-123@api.example.com/v1")
    'a user name and password before the host (user:password@)'
    >>> url_credential("https://api.example.com/v1?api_key=sk-123")
    "the query parameter 'api_key'"
    >>> url_credential("https://api.example.com/v1?api-version=2024-06-01") is None
    True
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if "@" in parts.netloc:
        if ":" in parts.netloc.rsplit("@", 1)[0]:
            return "a user name and password before the host (user:password@)"
        return "a user name before the host (user@)"
    for name, _value in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAM.search(name):
            return f"the query parameter {name!r}"
    if parts.fragment:
        return "a #fragment"
    return None


def budget_problem(
    budget: float | None, price_per_1k_prompt: float, price_per_1k_completion: float
) -> str | None:
    """Why this budget cannot limit anything (``None`` when it can).

    >>> from kd_train.teachers.http.config import budget_problem
    >>> budget_problem(5.0, 0.0, 0.0)[:24]
    'a budget needs prices: s'
    >>> budget_problem(5.0, 0.0, 0.002) is None
    True
    """
    if budget is None or price_per_1k_prompt > 0 or price_per_1k_completion > 0:
        return None
    return (
        "a budget needs prices: set price_per_1k_prompt and/or price_per_1k_completion "
        "(--price-per-1k-prompt / --price-per-1k-completion) above 0; at the default "
        "prices of 0 every request costs nothing and the budget would limit nothing"
    )


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
        sampling_extensions: also send llama.cpp's and vLLM's sampling parameters set to
            neutral values (``repeat_penalty`` 1, ``top_k`` 0, ``min_p`` 0, ...; see
            :data:`~kd_train.teachers.openai_api.NEUTRAL_EXTENSIONS`), so that no server
            default changes the tokens; set it false for the OpenAI API, which refuses them.
        timeout: seconds per attempt (connect, read, write and pool).
        concurrency: requests in flight at most.
        rpm: request starts per minute at most (``None``: no limit).
        retry: the backoff policy.
        price_per_1k_prompt: USD per 1000 prompt tokens.
        price_per_1k_completion: USD per 1000 completion tokens.
        budget: cap in USD on the spend of ``budget_name`` (``None``: a new budget has no
            cap; an existing one keeps its cap). Needs a price above 0.
        budget_name: the ledger budget this teacher charges; workers sharing it share the cap.
        change_budget: set the cap of an existing budget to ``budget`` (and resume it when
            halted); without it, another cap than the store's is refused.
    """

    base_url: str
    model: str
    api: Api = "completions"
    max_tokens: int = 256
    top_logprobs: int = 5
    scoring: Scoring = "echo"
    temperature: float = 0.0
    sampling_extensions: bool = True
    timeout: float = 60.0
    concurrency: int = 4
    rpm: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    price_per_1k_prompt: float = 0.0
    price_per_1k_completion: float = 0.0
    budget: float | None = None
    budget_name: str = "default"
    change_budget: bool = False

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
        problem = budget_problem(
            self.budget, self.price_per_1k_prompt, self.price_per_1k_completion
        )
        if problem is not None:
            raise ValueError(f"budget: {problem}")
        if self.change_budget and self.budget is None:
            raise ValueError("change_budget needs budget: the new cap in USD")
        credential = url_credential(self.base_url)
        if credential is not None:
            raise ValueError(
                f"base_url carries {credential}; put the API key in an environment "
                "variable and name it with api_key_env"
            )

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
