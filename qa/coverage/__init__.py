"""Coverage gate: per-package floors from ``qa/gates.toml`` checked against ``coverage json``."""
