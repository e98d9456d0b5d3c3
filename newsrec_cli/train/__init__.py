"""Training owns the training loop: set-up, phases, schedules, resume state, distributed ranks (the run folder is `newsrec_cli.runs`, the loss `newsrec_cli.objective`)."""

from newsrec_cli.train.loop import train, train_job

__all__ = ["train", "train_job"]
