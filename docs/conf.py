"""Sphinx configuration of the kd site. No network at build time: no intersphinx."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import kd_convert
import kd_eval
import kd_train

sys.path.insert(0, str(Path(__file__).parent / "_ext"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

project = "kd"
author = "The kd developers"
copyright = "2026, The kd developers"
release = (
    f"kd-train {kd_train.__version__} · kd-eval {kd_eval.__version__}"
    f" · kd-convert {kd_convert.__version__}"
)

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
    "sphinx_argparse_cli",
    "kd_data",
    "kd_schemas",
    "kd_qa_status",
    "kd_mutation_report",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = "kd: distil, evaluate, export — with proof"
html_static_path = ["_static"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Nitpicky mode (-n) checks every cross-reference to our own code. Third-party types have
# no inventory offline (no intersphinx), so references into them are ignored by name.
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(torch|transformers|tokenizers|numpy|np|onnx|onnxruntime|coremltools|sqlalchemy|httpx|argparse|pathlib|matplotlib|safetensors|pydantic|pydantic_core)(\..*)?",
    ),
    (
        r"py:.*",
        r"(Tensor|Path|Namespace|ArgumentParser|ModuleType|PreTrainedTokenizerFast|LlamaConfig|LlamaForCausalLM|PreTrainedModel|PreTrainedTokenizerBase)",
    ),
    (r"py:.*", r"(collections\.abc|typing|types|contextlib|random)\..*"),
]

doctest_global_setup = """
import os
os.environ["HF_HUB_OFFLINE"] = "1"
"""
