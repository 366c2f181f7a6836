"""A loopback OpenAI-compatible teacher server for tests, load scenarios and demos.

It serves real log-probs from a tiny real ``transformers`` model on ``127.0.0.1``, with
faults injected per request, from a script (a list consumed in order, then ``ok``) or at
random with given rates. The pieces, one job each:

* :mod:`~kd_train.testing.server.faults`: which fault each request gets
  (:class:`~kd_train.testing.server.faults.FaultPlan`);
* :mod:`~kd_train.testing.server.model`: the model behind it (greedy decoding, top-k);
* :mod:`~kd_train.testing.server.answers`: the OpenAI/vLLM JSON answers;
* :mod:`~kd_train.testing.server.loopback`: the HTTP server, its faults and its bill
  (:class:`~kd_train.testing.server.loopback.LoopbackTeacherServer`);
* :mod:`~kd_train.testing.server.client`: a prompts file and the ``kd-train generate``
  arguments against the server (:func:`~kd_train.testing.server.client.write_prompts`,
  :func:`~kd_train.testing.server.client.generate_argv`).

``python -m kd_train.testing.server MODEL_DIR`` serves a model until interrupted.

>>> import tempfile, httpx
>>> from kd_train.testing import FaultPlan, LoopbackTeacherServer, save_tiny_llama
>>> model_dir = save_tiny_llama(tempfile.mkdtemp())
>>> with LoopbackTeacherServer(model_dir, faults=FaultPlan(script=["500"])) as server:
...     first = httpx.post(server.base_url + "/completions", json={"prompt": "hi"})
...     second = httpx.post(server.base_url + "/completions",
...                         json={"prompt": "hi", "max_tokens": 2, "logprobs": 3})
>>> first.status_code, second.status_code, len(second.json()["choices"][0]["logprobs"]["tokens"])
(500, 200, 2)
"""

from kd_train.testing.server.client import GENERATE_DEFAULTS, generate_argv, write_prompts
from kd_train.testing.server.faults import FAULTS, FaultPlan
from kd_train.testing.server.loopback import LoopbackTeacherServer

__all__ = [
    "FAULTS",
    "GENERATE_DEFAULTS",
    "FaultPlan",
    "LoopbackTeacherServer",
    "generate_argv",
    "write_prompts",
]
