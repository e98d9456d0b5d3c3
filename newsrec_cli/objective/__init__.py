"""The training objective owns what training and `diagnose` both compute: click samples and negatives, epoch batches, the losses, and the optimiser's parameter groups."""
