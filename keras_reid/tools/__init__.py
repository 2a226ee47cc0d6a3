"""Command-line tools (python -m keras_reid.tools.<tool>)."""
