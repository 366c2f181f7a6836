"""QA tool: mutation (see qa/gates.toml)."""
