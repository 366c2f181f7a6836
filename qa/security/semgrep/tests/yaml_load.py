"""semgrep --test cases for yaml-load-unsafe."""

import yaml
from yaml import SafeLoader

text = "a: 1"
# ruleid: yaml-load-unsafe
a = yaml.load(text)  # type: ignore[call-arg]
# ruleid: yaml-load-unsafe
b = yaml.load(text, Loader=yaml.Loader)
# ruleid: yaml-load-unsafe
c = yaml.unsafe_load(text)
# ruleid: yaml-load-unsafe
d = yaml.full_load(text)
# ok: yaml-load-unsafe
e = yaml.load(text, Loader=yaml.SafeLoader)
# ok: yaml-load-unsafe
f = yaml.load(text, Loader=SafeLoader)
# ok: yaml-load-unsafe
g = yaml.safe_load(text)
