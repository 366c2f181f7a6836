"""Fidelity of a student to its teacher: KL, top-1 agreement, top-k overlap, perplexity."""
