"""semgrep --test cases for torch-load-without-weights-only."""

import torch

path = "model.pt"
# ruleid: torch-load-without-weights-only
a = torch.load(path)
# ruleid: torch-load-without-weights-only
b = torch.load(path, map_location="cpu", weights_only=False)
# ruleid: torch-load-without-weights-only
c = torch.serialization.load(path)
# ok: torch-load-without-weights-only
d = torch.load(path, weights_only=True)
# ok: torch-load-without-weights-only
e = torch.load(path, map_location="cpu", weights_only=True)
