"""Training owns the training loop: set-up, phases, schedules, resume state, distributed ranks (the run folder is `newsrec_cli.runs`, the loss `newsrec_cli.objective`)."""

from newsrec_cli.train.loop import train

__all__ = ["train"]
