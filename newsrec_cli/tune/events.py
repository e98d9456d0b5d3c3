"""What a study tells the command layer while it runs (its own module: the study and the trial
callbacks both use it, and the study imports the callbacks)."""

from __future__ import annotations

from typing import Any


class TuneEvents:
    """Hooks the command layer overrides to show progress (only the in-process worker calls them)."""

    def on_trial_start(self, number: int, params: dict[str, Any], defaults: bool) -> None: ...

    def on_epoch_end(self, number: int, record: Any) -> None: ...

    def on_trial_end(self, trial: Any) -> None:
        """`trial` is Optuna's FrozenTrial of the finished trial."""

    def on_poll(self, counted: int, total: int) -> None:
        """While waiting for worker processes: trials counted so far."""
