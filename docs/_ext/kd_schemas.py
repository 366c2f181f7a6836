"""Sphinx extension that publishes the JSON Schemas of the kd-train configs with the site.

When the HTML builder finishes, ``kd_train.schemas.write_schemas`` writes
``schemas/run.schema.json``, ``schemas/loss.schema.json`` and
``schemas/generate.schema.json`` into the built site, generated from the pydantic models
that validate the configs, so the published schemas are those of the code the site was built
from (nothing is committed that could go stale).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kd_train.schemas import write_schemas
from sphinx.application import Sphinx


def publish(app: Sphinx, exception: Exception | None) -> None:
    """Write the schemas under ``<html out>/schemas/`` after a successful HTML build."""
    if exception is None and app.builder.format == "html":
        write_schemas(Path(app.outdir) / "schemas")


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the build-finished hook."""
    app.connect("build-finished", publish)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
