"""Test fault injection: a training process that kills itself with a real SIGKILL at a chosen
point, so that tests can check that `--resume` turns any kill into the uninterrupted run.

`NEWSREC_FAULT_KILL=[RANK:]POINT:STEP` (RANK defaults to 0), POINT one of:

- `step`: right before global step STEP (1-based), the steps before it done and nothing after;
- `save`: while last.pt of global step STEP is being written: its temporary file is complete,
  the rename has not happened (last.pt is still the previous one).

Unset, nothing happens. Used by tests/test_train_kills.py and tests/test_ddp.py.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

from newsrec_cli.errors import SettingsError

KILL_ENV = "NEWSREC_FAULT_KILL"
POINTS = ("step", "save")


@dataclass(frozen=True)
class Kill:
    """Where this process dies (see the module doc)."""

    point: str
    step: int

    def due(self, point: str, step: int) -> bool:
        return point == self.point and step == self.step


def planned_kill(rank: int) -> Kill | None:
    """This rank's planned kill from `KILL_ENV`, or None."""
    raw = os.environ.get(KILL_ENV)
    if not raw:
        return None
    parts = raw.split(":")
    if len(parts) == 2:
        parts = ["0", *parts]
    try:
        target, point, step = int(parts[0]), parts[1], int(parts[2])
    except (ValueError, IndexError):
        raise SettingsError(f"{KILL_ENV}={raw!r}: [RANK:]POINT:STEP expected") from None
    if point not in POINTS or len(parts) != 3:
        raise SettingsError(f"{KILL_ENV}={raw!r}: POINT is one of {', '.join(POINTS)}")
    return Kill(point, step) if target == rank else None


def kill_now() -> None:
    """SIGKILL to this process: no handler, no cleanup, as `kill -9` from outside."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)
