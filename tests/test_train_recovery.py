"""Runs that stop early are recoverable: a run killed before its first last.pt resumes from step 0,
`--overwrite` starts over on purpose, and `--time-budget` partial epochs never choose model.pt
(resume after a budget stop equals an uninterrupted run, as after Ctrl-C)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from clock_helpers import FakeClock
from train_helpers import hashing_store, synth
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.errors import InputError, SettingsError
from newsrec_cli.runs.records import TrainCallbacks
from newsrec_cli.settings import TrainSettings
from newsrec_cli.train import train

FAST: dict[str, Any] = {
    "dim": 16,
    "heads": 2,
    "history": 10,
    "batch_size": 32,
    "threads": 1,
    "valid_impressions": 40,
}
runner = CliRunner()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("recovery_synth")
    data = synth(root)
    return data, hashing_store(data, root / "store")


def fast(**overrides: Any) -> TrainSettings:
    return TrainSettings(**{**FAST, **overrides})


@pytest.fixture(scope="module")
def uninterrupted(synthetic: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(folder, result) of the run that the budget-stopped runs must equal once resumed: trained
    once for both of them (read only)."""
    data, store = synthetic
    out = tmp_path_factory.mktemp("recovery_full") / "full"
    return out, train(data, out, store=store, settings=fast(epochs=3, patience=2))


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs (the loop saves no last.pt on it)."""


class KillAtStart(TrainCallbacks):
    """Dies as training starts: config.json and the vocabularies are written, no last.pt yet."""

    def on_start(self, info: Any) -> None:
        raise Killed


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    data, store = synthetic
    settings = fast(max_steps=6)
    full = train(data, tmp_path / "full", store=store, settings=settings)
    with pytest.raises(Killed):
        train(data, tmp_path / "cut", store=store, settings=settings, callbacks=KillAtStart())
    assert (tmp_path / "cut" / "config.json").is_file() and not (tmp_path / "cut" / "last.pt").exists()
    resumed = train(None, tmp_path / "cut", settings=settings, resume=True)
    assert resumed.info.resumed_at == (1, 0)
    assert resumed.stopped == "max_steps"
    assert_same_weights(tmp_path / "full" / "model.pt", tmp_path / "cut" / "model.pt")
    assert [r.metrics for r in resumed.history] == [r.metrics for r in full.history]
    lines = (tmp_path / "cut" / "history.jsonl").read_text().splitlines()
    assert len(lines) == len(full.history)


def test_overwrite_starts_over_and_keeps_foreign_files(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    data, store = synthetic
    run = tmp_path / "run"
    args = ["train", str(data), "-e", str(store), "-o", str(run), "--dim", "16", "--heads", "2"]
    args += ["--threads", "1", "--valid-impressions", "40", "--json"]
    first = runner.invoke(app, [*args, "--max-steps", "2"])
    assert first.exit_code == 0, first.output
    (run / "notes.txt").write_text("mine\n")
    (run / "metrics.json").write_text("{}\n")
    again = runner.invoke(app, [*args, "--max-steps", "3"])
    assert again.exit_code == 1
    assert "--overwrite" in again.stderr and "already holds a run" in again.stderr
    over = runner.invoke(app, [*args, "--max-steps", "3", "--overwrite"])
    assert over.exit_code == 0, over.output
    result = json.loads(over.stdout)
    assert result["history"][-1]["global_step"] == 3 and result["info"]["resumed_at"] is None
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["global_step"] for h in history if h["epoch"] > 0] == [3]  # nothing of the first run
    assert (run / "notes.txt").read_text() == "mine\n"
    assert not (run / "metrics.json").exists()  # metrics of the old model would be wrong now
    assert json.loads((run / "config.json").read_text())["settings"]["train"]["max_steps"] == 3
    both = runner.invoke(app, [*args, "--resume", "--overwrite"])
    assert both.exit_code == 2 and "choose one" in both.stderr


def test_resume_and_overwrite_together_are_refused(synthetic: tuple[Path, Path], tmp_path: Path) -> None:
    data, store = synthetic
    with pytest.raises(SettingsError, match="choose one"):
        train(data, tmp_path / "r", store=store, settings=fast(), resume=True, overwrite=True)
    with pytest.raises(InputError, match="run directory not found"):
        train(None, tmp_path / "never", settings=fast(), resume=True)


class SlowAt(TrainCallbacks):
    """Moves the fake clock past `budget` at (epoch, step), so that --time-budget stops the run
    right there, in the middle of an epoch, however fast or busy the machine is."""

    def __init__(self, epoch: int, step: int, budget: float, clock: FakeClock) -> None:
        self.epoch, self.step, self.current = epoch, step, 0
        self.budget, self.clock = budget, clock

    def on_epoch_start(self, epoch: int, steps: int, done: int) -> None:
        self.current = epoch

    def on_step(self, done: int, loss: float, samples_per_s: float) -> bool:
        if self.current == self.epoch and done == self.step:
            self.clock.advance(self.budget)
        return False


def full_epochs(history: list[Any]) -> list[tuple[int, int, dict[str, float], bool]]:
    return [(r.epoch, r.global_step, r.metrics, r.best) for r in history if not r.partial]


@pytest.mark.parametrize("where", ["first_step", "mid_epoch_2"])
def test_resume_after_a_time_budget_equals_an_uninterrupted_run(
    synthetic: tuple[Path, Path],
    uninterrupted: tuple[Path, Any],
    tmp_path: Path,
    where: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, store = synthetic
    settings = fast(epochs=3, patience=2)
    full_dir, full = uninterrupted
    if where == "first_step":
        cut = train(
            data, tmp_path / "cut", store=store, settings=fast(epochs=3, patience=2, time_budget=1e-3)
        )
        assert cut.history[-1].steps == 1
    else:
        budget, clock = 6.0, FakeClock(monkeypatch)
        cut = train(
            data,
            tmp_path / "cut",
            store=store,
            settings=fast(epochs=3, patience=2, time_budget=budget),
            callbacks=SlowAt(epoch=2, step=2, budget=budget, clock=clock),
        )
        assert (cut.history[-1].epoch, cut.history[-1].steps) == (2, 2)
        monkeypatch.undo()
    assert cut.stopped == "time_budget"
    last = cut.history[-1]
    assert last.partial and not last.best  # shown, never chosen
    assert (tmp_path / "cut" / "model.pt").is_file()  # a run stopped early can still be evaluated
    if where == "first_step":
        # Before any full epoch, model.pt is the untrained model's epoch 0 when the run validates
        # one, else the part epoch, marked provisional.
        assert cut.best_epoch in (None, 0)
        saved = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
        assert saved["epoch"] == 0 if cut.best_epoch == 0 else saved["partial"] is True
    resumed = train(None, tmp_path / "cut", settings=settings, resume=True)
    assert resumed.stopped == full.stopped
    assert_same_weights(full_dir / "model.pt", tmp_path / "cut" / "model.pt")
    assert_same_weights(full_dir / "last.pt", tmp_path / "cut" / "last.pt")
    assert full_epochs(resumed.history) == full_epochs(full.history)
    assert (resumed.best_epoch, resumed.best_metrics) == (full.best_epoch, full.best_metrics)
    saved = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    assert saved["epoch"] == full.best_epoch and "partial" not in saved


class KillAt(TrainCallbacks):
    """kill -9 at (epoch, step): the step ran, nothing after it (no Ctrl-C save, no validation)."""

    def __init__(self, epoch: int, step: int) -> None:
        self.epoch, self.step, self.current = epoch, step, 0

    def on_epoch_start(self, epoch: int, steps: int, done: int) -> None:
        self.current = epoch

    def on_step(self, done: int, loss: float, samples_per_s: float) -> bool:
        if self.current == self.epoch and done == self.step:
            raise Killed
        return False


def test_checkpoint_every_lets_a_killed_run_resume_inside_the_epoch(
    synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    data, store = synthetic
    settings = fast(epochs=2, checkpoint_every=3)
    full = train(data, tmp_path / "full", store=store, settings=fast(epochs=2))
    with pytest.raises(Killed):
        train(data, tmp_path / "cut", store=store, settings=settings, callbacks=KillAt(epoch=2, step=5))
    saved = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    steps_per_epoch = full.info.steps_per_epoch
    # Step 5 of epoch 2 is global step steps_per_epoch + 5; the kill comes before that step's own
    # checkpoint, so last.pt holds the last multiple of 3 before it.
    expected = (steps_per_epoch + 4) // 3 * 3
    assert expected > steps_per_epoch  # inside epoch 2, not its start
    assert saved["state"]["global_step"] == expected
    resumed = train(None, tmp_path / "cut", settings=settings, resume=True)
    assert resumed.info.resumed_at == (2, expected - steps_per_epoch)
    assert_same_weights(tmp_path / "full" / "model.pt", tmp_path / "cut" / "model.pt")
    assert_same_weights(tmp_path / "full" / "last.pt", tmp_path / "cut" / "last.pt")
    assert full_epochs(resumed.history) == full_epochs(full.history)
