"""Metrics, prediction files and baselines of `newsrec evaluate`."""
