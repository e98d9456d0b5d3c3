"""Train every variant with every seed (resumable), score one split, and compare with baselines.

    result = run_ablation("data/mind", "ablations/a", store="stores/minilm", seeds=[0, 1, 2])

Each run is a normal run directory, `OUT/runs/<variant>/seed<k>`, so `evaluate` and `diagnose`
work on it; a finished run is not trained again, an interrupted one is resumed. The reported
split is never the one that chose the epochs where the data allows it (see `report_split`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_cli import atomic
from newsrec_cli.ablate.stats import mean_std, paired_bootstrap
from newsrec_cli.ablate.variants import Variant
from newsrec_cli.embed.store import EmbeddingStore
from newsrec_cli.errors import InputError
from newsrec_cli.evaluate import baselines
from newsrec_cli.evaluate.metrics import compute_metrics
from newsrec_cli.evaluate.model_scores import run_scores
from newsrec_cli.mind import Impressions, MindDataset, load_dataset
from newsrec_cli.mind.protocol import Protocol
from newsrec_cli.runs.files import CONFIG
from newsrec_cli.runs.loading import load_run
from newsrec_cli.runs.records import TrainFunction, TrainJob
from newsrec_cli.settings import DataSettings, GraphSettings, TrainSettings

METRICS = ("auc", "mrr", "ndcg@5", "ndcg@10")
RESULT_FILE = "ablation.json"
CONTENT = "content (centred)"  # the training-free row every variant is compared with


@dataclass
class AblationRow:
    """One line of the table: a variant (mean over seeds) or a baseline (one value)."""

    name: str
    kind: str  # "model" or "baseline"
    seeds: list[int]
    values: dict[str, list[float]]  # metric -> one value per seed
    per_impression: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # seed-averaged
    vs_full: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    vs_content: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    note: str = ""

    def summary(self, metric: str) -> tuple[float, float]:
        return mean_std(self.values[metric])

    def to_dict(self) -> dict[str, Any]:
        def ci(d: dict[str, tuple[float, float, float]]) -> dict[str, Any]:
            return {m: {"diff": v[0], "low": v[1], "high": v[2]} for m, v in d.items()}

        return {
            "name": self.name,
            "kind": self.kind,
            "seeds": self.seeds,
            "note": self.note,
            "mean": {m: self.summary(m)[0] for m in self.values},
            "std": {m: self.summary(m)[1] for m in self.values},
            "per_seed": self.values,
            "vs_full": ci(self.vs_full),
            "vs_content": ci(self.vs_content),
        }


@dataclass
class AblationResult:
    out: Path
    split: str
    split_note: str
    impressions: int
    rows: list[AblationRow]

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "split": self.split,
            "split_note": self.split_note,
            "impressions": self.impressions,
            "metrics": list(METRICS),
            "rows": [r.to_dict() for r in self.rows],
        }


Say = Callable[[str], None]


def protocol_of(dataset: MindDataset, data_settings: DataSettings) -> Protocol:
    return dataset.protocol(
        data_settings.split,
        data_settings.valid_days,
        data_settings.valid_fraction,
        data_settings.seed,
        data_settings.select_on,
    )


def report_split(dataset: MindDataset, data_settings: DataSettings) -> tuple[str, Impressions, str]:
    """The labelled split the table reports, as the runs' protocol defines it (`mind/protocol.py`):
    never the split that chose the epochs unless --select-on valid asked for it (said so)."""
    chosen = protocol_of(dataset, data_settings)
    split = "test" if chosen.report is dataset.splits.get("test") else "valid"
    note = chosen.title
    if chosen.same:
        note += "; every model row is optimistic"
    return split, chosen.report, note


def run_dir_of(out: Path, variant: Variant, seed: int) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.=-]+", "-", variant.name).strip("-")
    return out / "runs" / slug / f"seed{seed}"


def run_ablation(
    data: str | Path,
    out: str | Path,
    *,
    store: str | Path,
    graph: str | Path | None = None,
    variants: list[Variant],
    seeds: list[int],
    settings: TrainSettings | None = None,
    data_settings: DataSettings | None = None,
    graph_settings: GraphSettings | None = None,
    say: Say | None = None,
    train: TrainFunction,
    train_callbacks: Callable[[Variant, int], Any] | None = None,
) -> AblationResult:
    """Train (or resume, or skip) every variant x seed, score the report split, compare, write ablation.json.

    `train` is the training function (the training package's `train`), given by the caller.
    """
    out, data = Path(out), Path(data)
    say = say or (lambda _msg: None)
    settings = settings or TrainSettings()
    data_settings = data_settings or DataSettings()
    graph_settings = graph_settings or GraphSettings()
    dataset = load_dataset(data, on_bad_lines=data_settings.on_bad_lines)
    split, target, note = report_split(dataset, data_settings)
    if not target.labeled:
        raise InputError(f"the {split} impressions have no labels: nothing to compare on", path=target.source)
    labels, offsets = target.labels.astype(np.int64), target.candidate_offsets
    # the clicks the runs trained on (popularity's counts, the content centre)
    train_imps = protocol_of(dataset, data_settings).train
    # the labelled impressions before the reported split (what a run's popularity may count)
    known = (
        dataset.splits.get("train")
        if split == "test" or target is dataset.splits.get("valid")
        else train_imps
    )

    def per_impression(scores: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        result = compute_metrics(scores, labels, offsets, METRICS)
        return dict(result.values), dict(result.per_impression)

    rows: list[AblationRow] = []
    for variant in variants:
        values: dict[str, list[float]] = {m: [] for m in METRICS}
        stacked: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
        for seed in seeds:
            run_dir = run_dir_of(out, variant, seed)
            callbacks = train_callbacks(variant, seed) if train_callbacks else None
            if (run_dir / CONFIG).exists():
                say(f"{variant.name}, seed {seed}: resuming or reusing {run_dir}")
                train(TrainJob(data=None, out=run_dir, resume=True), callbacks)
            else:
                say(f"{variant.name}, seed {seed}: training {run_dir}")
                job = TrainJob(
                    data=Path(data),
                    out=run_dir,
                    store=None if store is None else Path(store),
                    graph=None if graph is None else Path(graph),
                    settings=settings.model_copy(update={**variant.changes, "seed": seed}),
                    data_settings=data_settings or DataSettings(),
                    graph_settings=graph_settings or GraphSettings(),
                )
                train(job, callbacks)
            run = load_run(run_dir, settings.device)
            scores = run_scores(run, dataset, target, known, "offline")  # with popularity: frozen
            means, per = per_impression(scores)
            for m in METRICS:
                values[m].append(means[m])
                stacked[m].append(per[m])
        rows.append(
            AblationRow(
                variant.name,
                "model",
                list(seeds),
                values,
                {m: np.mean(stacked[m], axis=0) for m in METRICS},
                note=variant.note,
            )
        )

    say("baselines: content, popularity, random")
    opened = EmbeddingStore.open(store)
    for name, scores in (
        (CONTENT, baselines.content_scores(opened, target, dataset.news_vocab, centred_on=train_imps)),
        ("content", baselines.content_scores(opened, target, dataset.news_vocab)),
        ("popularity", baselines.popularity_scores(train_imps, target)),
        ("random", baselines.random_scores(target)),
    ):
        means, per = per_impression(scores)
        rows.append(AblationRow(name, "baseline", [], {m: [means[m]] for m in METRICS}, per))

    full = rows[0]
    content = next(r for r in rows if r.name == CONTENT)
    for row in rows:
        for m in METRICS:
            if row is not full:
                row.vs_full[m] = paired_bootstrap(row.per_impression[m], full.per_impression[m])
            if row is not content:
                row.vs_content[m] = paired_bootstrap(row.per_impression[m], content.per_impression[m])
    result = AblationResult(out, split, note, len(target), rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / RESULT_FILE, json.dumps(result.to_dict(), indent=2) + "\n")
    return result
