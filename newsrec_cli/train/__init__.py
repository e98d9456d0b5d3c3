"""Training: samples and batches, losses, schedules, checkpoints, the loop (set-up, phases, distributed ranks), run directories."""

from newsrec_cli.train.loop import TrainCallbacks, TrainResult, train
from newsrec_cli.train.run import DataContext, LoadedRun, build_model, load_run

__all__ = ["DataContext", "LoadedRun", "TrainCallbacks", "TrainResult", "build_model", "load_run", "train"]
