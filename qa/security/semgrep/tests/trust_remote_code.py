"""semgrep --test cases for trust-remote-code."""

from transformers import AutoModelForCausalLM, AutoTokenizer

name = "local-dir"
# ruleid: trust-remote-code
m = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=True)
# ruleid: trust-remote-code
kwargs = {"trust_remote_code": True}
# ok: trust-remote-code
t = AutoTokenizer.from_pretrained(name)
# ok: trust-remote-code
m2 = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=False)
