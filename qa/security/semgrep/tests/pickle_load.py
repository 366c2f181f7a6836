"""semgrep --test cases for pickle-load."""

import _pickle
import json
import pickle
import shelve
from pickle import loads as unpickle

import cloudpickle
import cPickle
import dill
import joblib
import numpy as np
import pandas as pd

blob = b""
# ruleid: pickle-load
a = pickle.loads(blob)
with open("x.pkl", "rb") as fh:
    # ruleid: pickle-load
    b = pickle.load(fh)
    # ruleid: pickle-load
    u = pickle.Unpickler(fh).load()
# ruleid: pickle-load
c = dill.loads(blob)
# ruleid: pickle-load
c2 = cPickle.loads(blob)
# ruleid: pickle-load
c3 = _pickle.loads(blob)
# ruleid: pickle-load
c4 = cloudpickle.loads(blob)
# ruleid: pickle-load
c5 = unpickle(blob)
# ruleid: pickle-load
j = joblib.load("model.joblib")
# ruleid: pickle-load
s = shelve.open("cache.db")
# ruleid: pickle-load
p = pd.read_pickle("frame.pkl")
# ruleid: pickle-load
n = np.load("arr.npy", allow_pickle=True)
# ruleid: pickle-load
n2 = np.load("arr.npz", mmap_mode="r", allow_pickle=True)
# ok: pickle-load
d = pickle.dumps({"a": 1})
# ok: pickle-load
e = json.loads("{}")
# ok: pickle-load
n3 = np.load("arr.npy")
# ok: pickle-load
n4 = np.load("arr.npy", allow_pickle=False)
