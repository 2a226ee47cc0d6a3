"""Synthetic pedestrians: render.py draws them, generator.py writes datasets."""
