"""Statistics shared by the metrics: bootstrap confidence intervals and percentiles."""
