"""semgrep --test cases for torch-load-untrusted-path."""

import importlib.resources
from pathlib import Path

import torch
from torch.jit import load as jit_load

path = "model.pt"
# ruleid: torch-load-untrusted-path
a = torch.load(path)
# ruleid: torch-load-untrusted-path
b = torch.load(path, map_location="cpu", weights_only=False)
# ruleid: torch-load-untrusted-path
c = torch.load(path, weights_only=True)
# ruleid: torch-load-untrusted-path
d = torch.serialization.load(path)
# ruleid: torch-load-untrusted-path
e = torch.jit.load(str(path), map_location="cpu")
# ruleid: torch-load-untrusted-path
f = jit_load(path)
# ruleid: torch-load-untrusted-path
g = torch.export.load(Path(path) / "model.pt2")
# ruleid: torch-load-untrusted-path
h = torch.package.PackageImporter(path)  # type: ignore[attr-defined]
# ruleid: torch-load-untrusted-path
i = torch.load(f=path, weights_only=True)

here = Path(__file__).resolve().parent
# ok: torch-load-untrusted-path
j = torch.load(Path(__file__).parent / "golden.pt", weights_only=True)
# ok: torch-load-untrusted-path
k = torch.jit.load(here / "reference.ts")
bundled = importlib.resources.files("kd_convert") / "golden.pt2"
# ok: torch-load-untrusted-path
m = torch.export.load(str(bundled))
with importlib.resources.as_file(bundled) as local:
    # ok: torch-load-untrusted-path
    n = torch.load(local, weights_only=True)
