"""What a study found: one row per trial, the best and the defaults' trial, best.toml, a final test.

`study_report()` reads the storage only, so it works on a running study too (`tune show`).
The best trial is chosen on validation: its validation AUC is the maximum of many noisy figures
and so optimistic; `final_test()` is the one honest number, on the split that played no part in the search, taken once.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from newsrec_cli import atomic
from newsrec_cli.errors import InputError, SettingsError
from newsrec_cli.evaluate.runner import evaluate
from newsrec_cli.mind.dataset import load_dataset
from newsrec_cli.settings import DataSettings, EvaluateSettings, GraphSettings, StageSettings, TrainSettings
from newsrec_cli.tune.study import (
    TuneSetup,
    counted,
    load_study,
    quiet_optuna,
    retried,
    retry_of,
    trial_settings,
)

BEST_TOML = "best.toml"
FINAL_TEST = "final_test.json"
# Not written to best.toml: they say where and how fast to train, not what (and the study's
# --time-budget would otherwise cut the retraining short).
HARDWARE = frozenset({"device", "workers", "threads", "eval_batch_size", "time_budget"})
OPTIMISTIC = (
    "chosen on the selection split: the best trial's selection figures are optimistic "
    "(the maximum over trials, trained epochs only); only --final-test, on a split that chose "
    "nothing, tells how it generalises"
)
STATES = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "queued",
}


@dataclass
class TrialRow:
    number: int
    state: str  # complete | pruned | failed | running | queued
    params: dict[str, Any]
    metrics: dict[str, float]  # validation metrics of the trial's best epoch
    epochs: int | None
    best_epoch: int | None
    seconds: float | None
    run_dir: str | None
    defaults: bool = False
    stopped: str | None = None
    error: str | None = None
    retried: bool = False
    retry_of: int | None = None

    @property
    def auc(self) -> float:
        return self.metrics.get("auc", math.nan)

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "defaults": self.defaults,
            "auc": None if math.isnan(self.auc) else self.auc,
            "metrics": self.metrics,
            "params": self.params,
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "seconds": self.seconds,
            "run_dir": self.run_dir,
            "stopped": self.stopped,
            "error": self.error,
            "retried": self.retried,
            "retry_of": self.retry_of,
        }


@dataclass
class StudyReport:
    out: Path
    study: str
    storage: str
    wanted: int
    counted: int
    space: dict[str, Any]
    rows: list[TrialRow]  # best first: complete, pruned, running, queued, failed
    best: TrialRow | None
    defaults: TrialRow | None
    best_toml: Path | None = None
    final_test: dict[str, Any] | None = None
    note: str = OPTIMISTIC
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "study": self.study,
            "storage": self.storage,
            "trials_wanted": self.wanted,
            "trials_counted": self.counted,
            "counts": self.counts,
            "space": self.space,
            "best": self.best.to_dict() if self.best else None,
            "defaults": self.defaults.to_dict() if self.defaults else None,
            "best_toml": str(self.best_toml) if self.best_toml else None,
            "final_test": self.final_test,
            "note": self.note,
            "trials": [row.to_dict() for row in self.rows],
        }


def trial_row(trial: Any, again: set[int] | frozenset[int] = frozenset()) -> TrialRow:
    """A trial as the report shows it; `again`: the numbers of the trials queued again."""
    attrs = trial.user_attrs
    return TrialRow(
        number=trial.number,
        state=STATES.get(trial.state.name, trial.state.name.lower()),
        params={**dict(trial.params), **attrs.get("outside_space", {})},
        metrics=dict(attrs.get("metrics", {})),
        epochs=attrs.get("epochs"),
        best_epoch=attrs.get("best_epoch"),
        seconds=attrs.get("seconds"),
        run_dir=attrs.get("run_dir"),
        defaults=bool(attrs.get("defaults")),
        stopped=attrs.get("stopped"),
        error=attrs.get("error"),
        retried=bool(attrs.get("retried")) or trial.number in again,
        retry_of=retry_of(trial),
    )


def _order(row: TrialRow) -> tuple[int, float, int]:
    rank = {"complete": 0, "pruned": 1, "running": 2, "queued": 3, "failed": 4}.get(row.state, 5)
    auc = row.auc if math.isfinite(row.auc) else -math.inf
    return rank, -auc, row.number


def study_report(setup: TuneSetup) -> StudyReport:
    """Every trial of the study, best first, with the best complete trial and the defaults' trial."""
    quiet_optuna()
    try:
        study = load_study(setup)
    except KeyError:
        raise InputError(
            f"study {setup.study!r} not found in {setup.storage_url()}", path=setup.out
        ) from None
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    rows = sorted((trial_row(t, again) for t in trials), key=_order)
    complete = [r for r in rows if r.state == "complete" and math.isfinite(r.auc)]
    defaults = [r for r in rows if r.defaults and r.state == "complete"] or [r for r in rows if r.defaults]
    counts: dict[str, int] = {}
    for row in rows:
        key = "requeued" if row.retried else row.state
        counts[key] = counts.get(key, 0) + 1
    report = StudyReport(
        out=setup.out,
        study=setup.study,
        storage=setup.storage_url(),
        wanted=setup.trials,
        counted=counted(trials),
        space=setup.space.to_dict() if setup.space else {},
        rows=rows,
        best=complete[0] if complete else None,
        defaults=defaults[0] if defaults else None,
        counts=counts,
    )
    if (setup.out / BEST_TOML).is_file():
        report.best_toml = setup.out / BEST_TOML
    if (setup.out / FINAL_TEST).is_file():
        report.final_test = json.loads((setup.out / FINAL_TEST).read_text(encoding="utf-8"))
    return report


# ----------------------------------------------------------------------------- best.toml


def _changed(settings: StageSettings, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Fields that differ from the stage's defaults (None has no TOML spelling: left out)."""
    defaults = type(settings)()
    return {
        name: getattr(settings, name)
        for name in type(settings).model_fields
        if name not in skip
        and getattr(settings, name) is not None
        and getattr(settings, name) != getattr(defaults, name)
    }


def best_settings(setup: TuneSetup, row: TrialRow) -> TrainSettings:
    return trial_settings(setup, row.params)


def write_best_toml(setup: TuneSetup, report: StudyReport) -> Path | None:
    """best.toml: the best complete trial's settings, as `newsrec train --config best.toml` reads them."""
    row = report.best
    if row is None:
        return None
    sections = {
        "train": _changed(best_settings(setup, row), HARDWARE),
        "data": _changed(DataSettings(**setup.data_settings)),
        "graph": _changed(GraphSettings(**setup.graph_settings)),
    }
    data = f" {setup.data}" + (f" --embeddings {setup.store}" if setup.store else "")
    data += f" --graph {setup.graph}" if setup.graph else ""
    lines = [
        f"# newsrec tune: the best of {report.counted} trials of study {report.study!r} ({setup.out}):",
        f"# trial {row.number} ({row.run_dir}), validation AUC {row.auc:.4f}, "
        f"nDCG@10 {row.metrics.get('ndcg@10', math.nan):.4f} (epoch {row.best_epoch} of {row.epochs}).",
        "# These are validation figures of the trial chosen on validation: optimistic.",
        "# Settings that differ from the defaults; hardware settings (threads, device) are left out.",
        f"# Train it: newsrec train{data} --config {setup.out / BEST_TOML} --out runs/best",
    ]
    tables = {name: values for name, values in sections.items() if name == "train" or values}
    path = setup.out / BEST_TOML
    atomic.write_text(path, "\n".join(lines) + "\n\n" + tomli_w.dumps(tables))
    report.best_toml = path
    return path


# ----------------------------------------------------------------------------- final test


def check_test_split(data: Path, data_settings: DataSettings) -> str:
    """The split the final test reports, checked before a study spends hours: labelled, and not
    the one that chooses the trials' epochs (SettingsError otherwise). Returns it in words."""
    ds = data_settings
    dataset = load_dataset(data, on_bad_lines=ds.on_bad_lines)
    chosen = dataset.protocol(ds.split, ds.valid_days, ds.valid_fraction, ds.seed, ds.select_on)
    if chosen.same:
        raise SettingsError(
            f"--final-test: with data.select_on = 'valid' and no labelled test/, {chosen.report_name} "
            "chooses the trials' epochs, so no split is left that played no part in the search"
        )
    if not chosen.report.labeled:
        raise SettingsError(f"--final-test: {chosen.report_name} has no click labels (NewsID-0/1)")
    return chosen.report_name


def final_test(setup: TuneSetup, report: StudyReport, device: str = "auto") -> dict[str, Any]:
    """Evaluate the best trial once on the split the protocol reports (test/ when valid/ chose
    the epochs, valid/ when train/'s last day did): it played no part in the search. A second
    call returns the stored result."""
    path = setup.out / FINAL_TEST
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        stored["repeated"] = True  # the test split was looked at already: not evaluated again
        report.final_test = stored
        return stored
    row = report.best
    if row is None or row.run_dir is None:
        raise SettingsError("--final-test: the study has no complete trial to test")
    check_test_split(setup.data, DataSettings(**setup.data_settings))
    evaluation = evaluate(
        EvaluateSettings(split="auto", device=device),
        data=setup.data,
        run_dir=setup.out / row.run_dir,
        out_dir=setup.out / "final_test",
    )
    result = evaluation.rows[0].result
    assert result is not None  # a labelled split, checked above
    stored = {
        "trial": row.number,
        "run_dir": row.run_dir,
        "split_note": evaluation.split_note,
        "chosen_on": evaluation.chosen_on,
        "reported_on": evaluation.reported_on,
        "valid": row.metrics,
        "test": result.to_dict(),
        "evaluated": datetime.now(UTC).isoformat(timespec="seconds"),
        "repeated": False,
    }
    atomic.write_text(path, json.dumps(stored, indent=2) + "\n")
    report.final_test = stored
    return stored
