"""Test fault injection, the one mechanism: a training process that dies at a chosen point, so
tests can check that `--resume` turns any death into the uninterrupted run and that a
distributed job ends (instead of hanging) when a rank dies.

`NEWSREC_FAULT=[RANK:]POINT:STEP[:HOW]` (RANK defaults to 0), POINT one of:

- `step`: right before global step STEP (1-based), the steps before it done and nothing after;
- `save`: while last.pt of global step STEP is being written: its temporary file is complete,
  the rename has not happened (last.pt is still the previous one).

HOW is `kill` (the default: a real SIGKILL, no handler or cleanup runs, as `kill -9` from
outside) or `exit` (`os._exit(FAULT_EXIT_CODE)`, as a worker that crashed). Unset, nothing
happens: the loop holds None and checks one attribute per step. Used by
tests/test_train_kills.py and tests/test_ddp.py.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

from newsrec_cli.errors import SettingsError

FAULT_ENV = "NEWSREC_FAULT"
FAULT_EXIT_CODE = 17  # the `exit` fault's status
POINTS = ("step", "save")
HOWS = ("kill", "exit")


@dataclass(frozen=True)
class Fault:
    """Where and how this process dies (see the module doc)."""

    point: str
    step: int
    how: str = "kill"

    def due(self, point: str, step: int) -> bool:
        return point == self.point and step == self.step

    def strike(self) -> None:
        """Die now, as planned; never returns."""
        sys.stdout.flush()
        sys.stderr.flush()
        if self.how == "exit":
            os._exit(FAULT_EXIT_CODE)
        os.kill(os.getpid(), signal.SIGKILL)


def planned_fault(rank: int) -> Fault | None:
    """This rank's planned fault from `FAULT_ENV`, or None."""
    raw = os.environ.get(FAULT_ENV)
    if not raw:
        return None
    parts = raw.split(":")
    if parts and parts[0] in POINTS:
        parts = ["0", *parts]
    if len(parts) == 3:
        parts.append("kill")
    usage = f"{FAULT_ENV}={raw!r}: [RANK:]POINT:STEP[:HOW] expected, POINT one of {', '.join(POINTS)}"
    if len(parts) != 4 or parts[1] not in POINTS or parts[3] not in HOWS:
        raise SettingsError(f"{usage}, HOW one of {', '.join(HOWS)}")
    try:
        target, step = int(parts[0]), int(parts[2])
    except ValueError:
        raise SettingsError(usage) from None
    return Fault(parts[1], step, parts[3]) if target == rank else None
