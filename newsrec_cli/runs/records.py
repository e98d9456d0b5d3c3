"""What a training run reports: the epoch records of history.jsonl, the run's plan, its result,
and the callbacks through which the command layer shows progress (the engine never prints)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from newsrec_cli import atomic
from newsrec_cli.errors import NewsrecError
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings


@dataclass
class EpochRecord:
    """One line of history.jsonl: an epoch (or the part of one before a stop) and its validation."""

    epoch: int
    steps: int
    global_step: int
    train_loss: float
    metrics: dict[str, float]
    valid_impressions: int
    skipped_auc: int
    lr: float
    seconds: float
    samples_per_s: float
    partial: bool = False
    best: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"] = {k: (None if math.isnan(v) else v) for k, v in self.metrics.items()}
        data["train_loss"] = None if math.isnan(self.train_loss) else self.train_loss  # epoch 0
        return data


@dataclass
class TrainInfo:
    """What the run is about to do, for the command to show before the first step."""

    run_dir: Path
    device: str
    validation: str
    train_impressions: int
    valid_impressions: int
    clicks: int
    dropped_clicks: int
    news: int
    news_with_id: int
    modalities: list[str]
    parameters: int
    steps_per_epoch: int
    total_steps: int
    epochs: int
    missing_text: list[str] = field(default_factory=list)
    resumed_at: tuple[int, int] | None = None  # (epoch, step in epoch), 1-based epoch
    threads: int = 1
    unverified_texts: int = 0  # news whose store vector has no text fingerprint to check
    finetune_text: int = 0  # text layers fine-tuned (--finetune-text), 0 = frozen store vectors
    cached_tokens: int = 0  # tokens of the news texts the fine-tuned layers run over
    cached_news: int = 0
    step_tokens: int = 0  # at most this many tokens go through the fine-tuned layers per step
    processes: int = 1  # ranks of a distributed run (each takes its share of every batch)
    determinism: str = "deterministic"  # or "NOT deterministic: why" (train/determinism.py)


@dataclass
class TrainResult:
    run_dir: Path
    info: TrainInfo
    history: list[EpochRecord]
    best_epoch: int | None
    best_metrics: dict[str, float]
    stopped: str  # epochs | early_stopping | max_steps | time_budget | already_finished
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        info = asdict(self.info)
        info["run_dir"] = str(self.info.run_dir)
        info["missing_text"] = {"count": len(self.info.missing_text), "first": self.info.missing_text[:5]}
        return {
            "run_dir": str(self.run_dir),
            "best_epoch": self.best_epoch,
            "best_metrics": {k: (None if math.isnan(v) else v) for k, v in self.best_metrics.items()},
            "stopped": self.stopped,
            "seconds": round(self.seconds, 2),
            "info": info,
            "history": [r.to_dict() for r in self.history],
        }


class TrainCallbacks:
    """Hooks the command layer overrides to show progress; the engine never prints."""

    def on_start(self, info: TrainInfo) -> None: ...

    def on_epoch_start(self, epoch: int, steps: int, done: int) -> None: ...

    def on_step(self, done: int, loss: float, samples_per_s: float) -> bool:
        """After each step; return True to stop (saved to last.pt, resumable)."""
        return False

    def on_validate(self, epoch: int, impressions: int) -> None: ...

    def on_epoch_end(self, record: EpochRecord) -> None: ...


def append_history(path: Path, record: EpochRecord) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record.to_dict()) + "\n")


def keep_history(path: Path, count: int) -> None:
    """Keep the first `count` records of history.jsonl (those a resumed last.pt had seen)."""
    if not path.is_file():
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
    if len(lines) > count:
        atomic.write_text(path, "".join(lines[:count]))


def read_history(path: Path) -> list[EpochRecord]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            raw = json.loads(line)
            raw["metrics"] = {k: (math.nan if v is None else v) for k, v in raw["metrics"].items()}
            raw["train_loss"] = math.nan if raw["train_loss"] is None else raw["train_loss"]
            records.append(EpochRecord(**raw))
    return records


def log_epoch(writer: Any, record: EpochRecord) -> None:
    """The epoch's loss and validation metrics as TensorBoard points at its global step."""
    writer.add_scalar("train/epoch_loss", record.train_loss, record.global_step)
    for name, value in record.metrics.items():
        if math.isfinite(value):
            writer.add_scalar(f"valid/{name}", value, record.global_step)
    writer.flush()


class TrainingInterrupted(NewsrecError):
    """Ctrl-C (or a callback) stopped training; last.pt holds the exact position."""

    exit_code = 130


class TrainingDiverged(NewsrecError):
    """The loss became NaN or infinite."""


@dataclass
class TrainJob:
    """What one training is asked to do: the paths and the resolved settings of every stage it
    reads. The engine takes it whole (`train_job`), and each rank of `--nproc` receives it as JSON."""

    data: Path | None
    out: Path
    store: Path | None = None
    graph: Path | None = None
    settings: TrainSettings = field(default_factory=TrainSettings)
    data_settings: DataSettings = field(default_factory=DataSettings)
    graph_settings: GraphSettings = field(default_factory=GraphSettings)
    resume: bool = False
    overwrite: bool = False

    def to_json(self) -> dict[str, Any]:
        paths = {"data": self.data, "out": self.out, "store": self.store, "graph": self.graph}
        return {
            **{k: None if v is None else str(Path(v).resolve()) for k, v in paths.items()},
            "resume": self.resume,
            "overwrite": self.overwrite,
            # Only what was given (flag, file, environment): on resume the rest comes from the run.
            "settings": self.settings.model_dump(mode="json", exclude_unset=True),
            "data_settings": self.data_settings.model_dump(mode="json", exclude_unset=True),
            "graph_settings": self.graph_settings.model_dump(mode="json", exclude_unset=True),
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TrainJob:
        def path(key: str) -> Path | None:
            return None if raw[key] is None else Path(raw[key])

        return cls(
            data=path("data"),
            out=Path(raw["out"]),
            store=path("store"),
            graph=path("graph"),
            resume=bool(raw["resume"]),
            overwrite=bool(raw["overwrite"]),
            settings=TrainSettings.model_validate(raw["settings"]),
            data_settings=DataSettings.model_validate(raw["data_settings"]),
            graph_settings=GraphSettings.model_validate(raw["graph_settings"]),
        )


class TrainFunction(Protocol):
    """The training loop's `train_job`: the command layer passes it to the packages that run
    training (ablate, tune), which therefore depend on this contract and not on train/."""

    def __call__(self, job: TrainJob, callbacks: TrainCallbacks | None = None) -> TrainResult: ...
