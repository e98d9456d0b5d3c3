"""Hyper-parameter search over `train()` with Optuna (`newsrec tune`)."""
