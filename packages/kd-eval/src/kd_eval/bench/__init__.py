"""Performance benchmarks: latency, time to first token, tokens/s and memory, per target."""
