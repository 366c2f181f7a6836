"""semgrep --test cases for pickle-load."""

import json
import pickle

import dill

blob = b""
# ruleid: pickle-load
a = pickle.loads(blob)
with open("x.pkl", "rb") as fh:
    # ruleid: pickle-load
    b = pickle.load(fh)
# ruleid: pickle-load
c = dill.loads(blob)
# ok: pickle-load
d = pickle.dumps({"a": 1})
# ok: pickle-load
e = json.loads("{}")
