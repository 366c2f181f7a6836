"""semgrep --test cases for trust-remote-code."""

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, pipeline

name = "local-dir"
# ruleid: trust-remote-code
m = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=True)
# ruleid: trust-remote-code
cfg = AutoConfig.from_pretrained(name, revision="main", trust_remote_code=True)
# ruleid: trust-remote-code
pipe = pipeline("text-generation", model=name, trust_remote_code=True)
# ruleid: trust-remote-code
kwargs = {"trust_remote_code": True}
# ruleid: trust-remote-code
kwargs2 = dict(trust_remote_code=True)
opts: dict[str, bool] = {}
# ruleid: trust-remote-code
opts["trust_remote_code"] = True
# ok: trust-remote-code
t = AutoTokenizer.from_pretrained(name)
# ok: trust-remote-code
m2 = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=False)
