"""A fake clock for the time budgets (newsrec_cli.clock), so that a budget test is counted in
training steps and passes the same on a busy machine as on an idle one."""

from __future__ import annotations

import pytest

from newsrec_cli import clock


class FakeClock:
    """Stands in for both budget clocks. Time moves only by `advance` and, when `per_step` is
    set, by `per_step` seconds at each read of train's clock (which train reads once when the run
    starts and once after each step), so a budget of B seconds is B / per_step steps."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, per_step: float = 0.0) -> None:
        self.now, self.per_step = 1000.0, per_step
        monkeypatch.setattr(clock, "monotonic", self.monotonic)
        monkeypatch.setattr(clock, "wall", self.wall)

    def monotonic(self) -> float:
        self.now += self.per_step
        return self.now

    def wall(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
