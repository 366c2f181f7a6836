"""The fp32, post-training-quantized and QAT students of one run, compared side by side."""
