"""Experiment configs: one ml_collections ConfigDict per file (`get_config()`)."""
