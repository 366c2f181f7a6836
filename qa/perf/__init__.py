"""QA tool: perf (see qa/gates.toml)."""
