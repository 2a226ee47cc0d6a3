"""Training: the custom loop, staged transfer with two-stepped fine-tuning, checkpoints."""
