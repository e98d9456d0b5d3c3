"""The training callbacks of one tune trial: validation AUC to the pruner, stop with the parent."""

from __future__ import annotations

import math
import os
from typing import Any

from newsrec_cli.runs.records import TrainCallbacks
from newsrec_cli.tune.events import TuneEvents


class TrialPruned(Exception):
    """Raised from the epoch callback when the pruner stops a trial (caught by `run_trial`)."""


class TrialCallbacks(TrainCallbacks):
    """Train callbacks of one trial: report each epoch's validation AUC, prune, stop with the parent."""

    def __init__(self, trial: Any, prunable: bool, parent_pid: int | None, events: TuneEvents) -> None:
        self.trial = trial
        self.prunable = prunable
        self.parent_pid = parent_pid
        self.events = events
        self.records: list[Any] = []

    def on_step(self, done: int, loss: float, samples_per_s: float) -> bool:
        # A worker process whose parent died (kill -9) stops: it is re-parented, getppid changes.
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def on_epoch_end(self, record: Any) -> None:
        self.records.append(record)
        self.events.on_epoch_end(self.trial.number, record)
        auc = record.metrics.get("auc", math.nan)
        if not math.isfinite(auc):
            return
        self.trial.report(auc, record.epoch)
        # Epoch 0 is the untrained model (the content prior alone), about the same in every trial:
        # comparing there would prune at random. Decisions start after the first trained epoch.
        if self.prunable and record.epoch > 0 and not record.partial and self.trial.should_prune():
            raise TrialPruned
