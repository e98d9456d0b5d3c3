"""The clocks of the time budgets (`train --time-budget`, `tune --time-budget`).

One seam, read at call time, so that a test drives a budget with a fake clock instead of racing
the machine's speed: `monkeypatch.setattr(clock, "monotonic", fake)`. Only the budget checks read
these; speeds, durations and heartbeats keep the `time` module's own clocks.
"""

from __future__ import annotations

import time


def monotonic() -> float:
    """Seconds of a clock that never goes back: train's budget, within one process."""
    return time.monotonic()


def wall() -> float:
    """Seconds since the epoch: tune's deadline, shared by its worker processes."""
    return time.time()
