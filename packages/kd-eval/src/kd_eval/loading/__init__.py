"""Loading what an evaluation reads: saved models with their tokenizers, and eval sets."""
