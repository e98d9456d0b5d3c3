"""`evaluate()`: score one split with a trained run, a prediction file and baselines, in one report.

The command layer calls `evaluate(...)` and renders the report; notebooks can call it too.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_cli import atomic
from newsrec_cli.embed.store import EmbeddingStore, TextCheck
from newsrec_cli.embed.text import check_store_texts
from newsrec_cli.errors import InputError, SettingsError
from newsrec_cli.evaluate import baselines
from newsrec_cli.evaluate.breakdown import Groups, category_groups, history_groups, metrics_by_group
from newsrec_cli.evaluate.metrics import MetricResult, compute_metrics, needs_probabilities, parse_metrics
from newsrec_cli.evaluate.model_scores import ModelScores
from newsrec_cli.evaluate.predictions import (
    align_ranks,
    read_predictions,
    scores_from_ranks,
    write_predictions,
)
from newsrec_cli.mind.behaviors import Impressions, distinct_news
from newsrec_cli.mind.dataset import SINGLE, MindDataset, load_dataset
from newsrec_cli.mind.popularity import FEATURES, protocol_view, slot_features
from newsrec_cli.settings import DataSettings, EvaluateSettings, TrainSettings

METRICS_FILE = "metrics.json"

Say = Callable[[str], None]


@dataclass
class Row:
    """One line of the table: a model, a prediction file or a baseline, with its metrics."""

    name: str
    kind: str  # "model", "file" or "baseline"
    result: MetricResult | None
    seconds: float
    groups: list[tuple[str, MetricResult]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "seconds": round(self.seconds, 3)}
        if self.result is not None:
            out.update(self.result.to_dict())
        if self.groups:
            out["groups"] = {name: result.to_dict() for name, result in self.groups}
        return out


@dataclass
class EvaluationReport:
    """Everything `newsrec evaluate` shows and writes."""

    data: str
    split: str
    split_note: str
    metrics: list[str]
    impressions: int
    candidates: int
    labeled: bool
    by: str
    rows: list[Row] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    run_dir: str | None = None
    protocol: str = "offline"  # how popularity reached the scores: offline or replay

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "split": self.split,
            "split_note": self.split_note,
            "protocol": self.protocol,
            "run_dir": self.run_dir,
            "metrics": self.metrics,
            "impressions": self.impressions,
            "candidates": self.candidates,
            "labeled": self.labeled,
            "by": self.by,
            "rows": [row.to_dict() for row in self.rows],
            "written": self.written,
        }


def select_split(
    dataset: MindDataset, split: str, data_settings: DataSettings, *, from_run: bool = False
) -> tuple[Impressions | None, Impressions, str]:
    """(training impressions or None, impressions to score, a sentence on where they come from).

    valid: the dataset's valid/ folder, else the split the training used (by time or impression,
    from the run's settings); the note says whether it chose the epoch. test: the test/ folder,
    labelled or not. A dataset without training impressions still has its valid/ folder scored.
    """
    if split == "valid" and "valid" in dataset.splits:
        note = f"validation: the dataset's own valid folder ({dataset.folders['valid']})"
        if from_run and data_settings.split == "auto" and data_settings.valid_days is None:
            note += ", the split that chose the epoch: its figures are optimistic"
        elif from_run:
            note += ", not used to choose the epoch (the run chose it on a split inside train/)"
        return dataset.splits.get("train"), dataset.splits["valid"], note
    if split == "valid":
        if "train" not in dataset.splits and SINGLE not in dataset.splits:
            raise InputError(
                f"no valid/ (or dev/) folder with behaviors.tsv (found: {', '.join(dataset.folders)}); "
                "use --split test",
                path=dataset.root,
            )
        train, valid, note = dataset.train_valid(
            split=data_settings.split,
            valid_days=data_settings.valid_days,
            valid_fraction=data_settings.valid_fraction,
            seed=data_settings.seed,
        )
        return train, valid, note
    if "test" not in dataset.splits:
        raise InputError("no test/ folder with behaviors.tsv (use --split valid)", path=dataset.root)
    train = dataset.splits.get("train")
    return train, dataset.splits["test"], f"test: {dataset.folders['test']}"


def file_split(dataset: MindDataset, split: str) -> tuple[Impressions | None, Impressions, str]:
    """The impressions a prediction file is scored against when no run chooses them.

    A single MIND folder: all of its behaviors.tsv. A parent: the folder of `split` (valid/ or
    dev/, test/), whole. Scoring a file needs labelled behaviors only, never training data.
    """
    if SINGLE in dataset.splits:
        imps = dataset.splits[SINGLE]
        return None, imps, f"all {len(imps):,} impressions of {dataset.folders[SINGLE] / 'behaviors.tsv'}"
    if split not in dataset.splits:
        wanted = "valid/ (or dev/)" if split == "valid" else f"{split}/"
        raise InputError(
            f"no {wanted} folder with behaviors.tsv to score the file against "
            f"(found: {', '.join(dataset.folders)}); name one with --split",
            path=dataset.root,
        )
    imps = dataset.splits[split]
    return dataset.splits.get("train"), imps, f"{split}: all of {dataset.folders[split] / 'behaviors.tsv'}"


def evaluate(
    settings: EvaluateSettings,
    *,
    data: Path,
    data_settings: DataSettings | None = None,  # used without a run; a run brings its own
    run_dir: Path | None = None,
    predictions: Path | None = None,
    embeddings: Path | None = None,
    out_dir: Path | None = None,
    say: Say | None = None,
) -> EvaluationReport:
    """Score the chosen split with every source asked for and write metrics.json (and predictions).

    Sources: the run in `run_dir`, the prediction file `predictions`, and with `settings.baselines`
    random, popularity and (given a store, or the run's) content. metrics.json goes to `out_dir`,
    else the run directory; with neither it is not written.
    """
    say = say or (lambda _msg: None)
    if run_dir is None and predictions is None and not settings.baselines:
        raise SettingsError("nothing to evaluate: give a RUN_DIR, --predictions FILE or --baselines")
    if settings.write_predictions and run_dir is None:
        raise SettingsError("--write-predictions needs a RUN_DIR (the model whose ranking is written)")
    metrics = parse_metrics(settings.metrics)

    model: ModelScores | None = None
    if run_dir is not None:
        model = ModelScores.open(run_dir, device=settings.device)
        # The run's own split, so "valid" means the impressions it was validated on.
        data_settings = model.data_settings
    data_settings = data_settings or DataSettings()

    say(f"reading {data}")
    dataset = load_dataset(data, on_bad_lines=data_settings.on_bad_lines)
    if model is None and predictions is not None:
        train, target, note = file_split(dataset, settings.split)
    else:
        train, target, note = select_split(dataset, settings.split, data_settings, from_run=model is not None)
    report = EvaluationReport(
        data=str(data),
        split=settings.split,
        split_note=note,
        metrics=metrics,
        impressions=len(target),
        candidates=len(target.candidates),
        labeled=target.labeled,
        by=settings.by,
        run_dir=str(run_dir) if run_dir else None,
        protocol=settings.protocol,
    )
    if not target.labeled and not settings.write_predictions:
        raise InputError(
            f"{target.source}: the {settings.split} impressions have no labels, so there is nothing to "
            "score; pass --write-predictions to write a leaderboard file",
        )
    groups = _groups(settings.by, target, dataset)

    def add(name: str, kind: str, scores: np.ndarray, seconds: float, scores_are: str = "logits") -> None:
        if not target.labeled:
            report.rows.append(Row(name, kind, None, seconds))
            return
        # logloss and ECE read probabilities: only a model's logits have them.
        row_metrics = [m for m in metrics if kind == "model" or not needs_probabilities([m])]
        start = time.perf_counter()
        labels, offsets = target.labels, target.candidate_offsets
        result = compute_metrics(scores, labels, offsets, row_metrics, scores_are=scores_are)
        by_group = (
            metrics_by_group(scores, labels, offsets, groups, row_metrics, scores_are=scores_are)
            if groups
            else []
        )
        report.rows.append(Row(name, kind, result, seconds + time.perf_counter() - start, by_group))

    if model is not None:
        say(f"scoring {len(target):,} impressions with {run_dir}")
        start = time.perf_counter()
        logits = model.score(
            dataset, target, batch_size=settings.batch_size, known=train, protocol=settings.protocol
        )
        add(f"model {run_dir.name}", "model", logits, time.perf_counter() - start)
        if settings.protocol != "offline" and model.run.model.popularity is None:
            say(f"note: {run_dir.name} was trained without popularity: it scores alike under both protocols")
        _say_unverified(say, model.run.text_check)
        if settings.write_predictions:
            folder = out_dir or run_dir
            assert folder is not None  # run_dir is set whenever predictions are written
            name = "prediction" if settings.protocol == "offline" else f"prediction-{settings.protocol}"
            txt, zipped = write_predictions(folder, target, logits, name)
            report.written += [str(txt), str(zipped)]

    if predictions is not None and target.labeled:
        start = time.perf_counter()
        ranks = align_ranks(predictions, read_predictions(predictions), target, scope=note)
        add(f"file {predictions.name}", "file", scores_from_ranks(ranks), time.perf_counter() - start)

    if settings.baselines and target.labeled:  # unlabeled: only the model's file is of use
        _add_baselines(
            add, settings, dataset, train, target, embeddings or (model.store if model else None), say
        )

    folder = out_dir or run_dir
    if folder is not None and target.labeled:
        path = folder / METRICS_FILE
        if out_dir is None and model is not None:
            path = folder / metrics_file_name(model.run.config, data, settings.split)
        if settings.protocol != "offline":  # metrics.json is the offline protocol's
            path = path.with_name(f"{path.stem}-{settings.protocol}{path.suffix}")
        atomic.write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")
        report.written.append(str(path))
    return report


def metrics_file_name(run_config: dict[str, Any], data: Path, split: str) -> str:
    """metrics.json for the run's own data and validation split; for any other data or split a
    name of its own (metrics-<folder>-<split>-<hash of the path>.json), so evaluating a run on
    other data never overwrites the metrics of its own."""
    own = run_config.get("data", {}).get("path")
    resolved = data.resolve()
    if split == "valid" and own and Path(own) == resolved:
        return METRICS_FILE
    digest = hashlib.sha1(str(resolved).encode("utf-8")).hexdigest()[:8]
    return f"metrics-{resolved.name or 'data'}-{split}-{digest}.json"


def _say_unverified(say: Say, check: TextCheck | None) -> None:
    if check is not None and check.unverified:
        say(
            f"note: {check.unverified:,} text vectors could not be checked against the news texts "
            "(a store without fingerprints: made before newsrec recorded them, or imported)"
        )


def _groups(by: str, target: Impressions, dataset: MindDataset) -> Groups | None:
    if by == "history-length":
        return history_groups(target)
    if by == "category":
        return category_groups(target, dataset.news)
    return None


def _add_baselines(
    add: Callable[..., None],
    settings: EvaluateSettings,
    dataset: MindDataset,
    train: Impressions | None,
    target: Impressions,
    store_path: Path | None,
    say: Say,
) -> None:
    start = time.perf_counter()
    add("random", "baseline", baselines.random_scores(target, settings.seed), time.perf_counter() - start)
    if train is None or not train.labeled:
        say("popularity baseline skipped: no labelled training impressions to count clicks in")
    elif settings.protocol == "replay":
        # Replay: each impression ranked by the smoothed CTR from every impression before it.
        start = time.perf_counter()
        defaults = TrainSettings()  # the half-life and smoothing a run has by default
        view = protocol_view(
            "replay",
            train,
            target,
            half_life_hours=defaults.popularity_half_life,
            prior=defaults.popularity_prior,
        )
        ctr = slot_features(view.counts, target, view.at)[:, FEATURES.index("ctr")].astype(np.float64)
        add("popularity (causal CTR)", "baseline", ctr, time.perf_counter() - start)
    else:
        start = time.perf_counter()
        scores = baselines.popularity_scores(train, target, settings.seed)
        add("popularity", "baseline", scores, time.perf_counter() - start)
    if store_path is None:
        say("content baseline skipped: no embedding store (pass --embeddings STORE)")
        return
    start = time.perf_counter()
    store = EmbeddingStore.open(store_path)
    used = [dataset.news_vocab.ids[i] for i in distinct_news(target)]
    _say_unverified(say, check_store_texts(store, dataset.news, used, data=dataset.root))
    scores = baselines.content_scores(store, target, dataset.news_vocab)
    add(f"content ({store_path.name})", "baseline", scores, time.perf_counter() - start)
    # The model's content prior starts from this one: the row shows what training adds to it.
    start = time.perf_counter()
    scores = baselines.content_scores(store, target, dataset.news_vocab, centred=True)
    add(f"content centred ({store_path.name})", "baseline", scores, time.perf_counter() - start)
