"""QA tool: security (see qa/gates.toml)."""
