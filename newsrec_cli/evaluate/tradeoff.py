"""`evaluate --tradeoff mmr`: what a re-ranker's weight λ costs in accuracy and buys in
diversity or calibration, over a grid of λ, with paired bootstrap intervals against λ = 0.

The model scores the split once; each λ re-ranks the same scores (`newsrec_cli.rerank`): the
impression's candidates (MIND's protocol), or with `--retrieve` the pool of best-scored news of
the split's catalogue (`newsrec_cli.evaluate.retrieve`). λ = 0 is the model's own order, so its
row equals plain `evaluate` (a row with λ > 0 scores the re-ranked order, one rank per candidate).

Each metric is averaged over impressions (Coverage@10 is a share of the split's candidates);
every λ's difference to λ = 0 gets a paired bootstrap 95% interval (`evaluate.paired`). The plot
is drawn by `evaluate.tradeoff_plot`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_cli.errors import SettingsError
from newsrec_cli.evaluate import beyond
from newsrec_cli.evaluate.beyond_rows import BeyondAccumulator, SplitFacts, kind_of
from newsrec_cli.evaluate.paired import RESAMPLES, Variant, compare
from newsrec_cli.evaluate.reranking import rerank_scores
from newsrec_cli.evaluate.rows import Lists, score_lists
from newsrec_cli.mind.behaviors import Impressions
from newsrec_cli.rerank import METHODS, RerankSpec

GRID: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
K = 10
ACCURACY = {"impressions": ("ndcg@10", "auc"), "retrieve": ("recall@10", "hit@10")}
BEYOND = ("ild@10", "calibration@10", "novelty@10", "coverage@10")  # the table's
LIST_METRICS = ("ild@10", "categories@10", "calibration@10", "novelty@10", "popularity@10")  # per impression
LOWER_IS_BETTER = ("calibration@10",)

Advance = Callable[[int], None]


def tradeoff_methods() -> tuple[str, ...]:
    """The re-rankers a sweep can take (every one but `none`)."""
    return tuple(m for m in METHODS if m != "none")


def parse_method(text: str) -> str:
    name = text.strip().lower()
    if name not in tradeoff_methods():
        raise SettingsError(
            f"--tradeoff: unknown re-ranker {text!r}; choose one of {', '.join(tradeoff_methods())}"
        )
    return name


def parse_grid(text: str) -> list[float]:
    """`0,0.1,0.5` -> [0.0, 0.1, 0.5], sorted, 0 added (the reference of every interval)."""
    values: list[float] = []
    for raw in text.split(","):
        if not raw.strip():
            continue
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(
                f"--grid: {raw.strip()!r} is not a number (e.g. --grid 0,0.1,0.3,1)"
            ) from None
        if not np.isfinite(value) or not 0.0 <= value <= 1.0:
            raise SettingsError(f"--grid: λ {raw.strip()} is outside [0, 1]")
        values.append(value)
    if not values:
        raise SettingsError("--grid: no λ given (e.g. --grid 0,0.1,0.3,1)")
    return sorted({0.0, *values})


@dataclass
class TradeoffRow:
    """One λ: each metric's mean and its difference to λ = 0 with the 95% interval."""

    weight: float
    values: dict[str, float]
    deltas: dict[str, tuple[float, float, float]]  # metric -> (difference, low, high)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lambda": self.weight,
            "values": {k: _json(v) for k, v in self.values.items()},
            "delta_vs_0": {
                k: {"mid": _json(m), "low": _json(lo), "high": _json(hi)}
                for k, (m, lo, hi) in self.deltas.items()
            },
        }


@dataclass
class TradeoffReport:
    """Everything `evaluate --tradeoff` shows and writes."""

    method: str
    protocol: str
    ranking: str  # "impressions" (their candidates) or "retrieve"
    data: str
    selection: str
    impressions: int
    metrics: list[str]
    resamples: int
    seed: int
    rows: list[TradeoffRow] = field(default_factory=list)
    written: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        how = "retrieved from the split's catalogue" if self.ranking == "retrieve" else "candidates re-ranked"
        return f"{self.method} trade-off: {self.data}, {self.selection}, {self.protocol} protocol, {how}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "protocol": self.protocol,
            "ranking": self.ranking,
            "data": self.data,
            "selection": self.selection,
            "impressions": self.impressions,
            "metrics": self.metrics,
            "bootstrap": {"resamples": self.resamples, "seed": self.seed, "level": 0.95},
            "rows": [row.to_dict() for row in self.rows],
            "written": self.written,
        }


def plot_name(method: str, protocol: str, retrieve: bool) -> str:
    """tradeoff-<method>-<protocol>[-retrieve].png, in the run folder."""
    return f"tradeoff-{method}-{protocol}{'-retrieve' if retrieve else ''}.png"


# ---------------------------------------------------------------- per-impression values


def split_facts(
    dataset: Any, train: Impressions | None, target: Impressions, store: Path | None
) -> SplitFacts:
    """Everything the list metrics and the re-rankers read about the split (`SplitFacts`)."""
    from newsrec_cli.embed.store import EmbeddingStore

    opened = EmbeddingStore.open(store) if store is not None else None
    return SplitFacts.build(dataset.news, train, target, opened)


def list_values(top: np.ndarray, target: Impressions, facts: SplitFacts) -> dict[str, np.ndarray]:
    """The beyond-accuracy values of each impression's top-10 list (I,), NaN where skipped or
    where the facts lack an input (no text vectors: ILD; no training impressions: novelty)."""
    names = [n for n in LIST_METRICS if kind_of(n) not in facts.missing]
    accumulator = BeyondAccumulator(names, facts)
    accumulator.add(top, facts.history_distribution(target.history_offsets))
    per = accumulator.result().per_impression
    return {n: per[n] if n in per else np.full(len(top), np.nan) for n in LIST_METRICS}


def candidate_values(
    scores: np.ndarray, target: Impressions, spec: RerankSpec, facts: SplitFacts
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """nDCG@10, AUC and the list values of the candidates re-ranked by `spec` (evaluate
    --rerank's `rerank_scores`: λ = 0 keeps the scores), and the top-10 lists."""
    lists = Lists(target.candidates, target.labels, target.candidate_offsets, np.arange(len(target)))
    ranked = rerank_scores(scores, lists, spec, K, facts, target.history_offsets)
    result = score_lists(ranked, lists, ["ndcg@10", "auc"])
    top = beyond.top_k(
        ranked, target.candidate_offsets, K, items=np.asarray(target.candidates, dtype=np.int64)
    )
    values = {name: np.asarray(result.per_impression[name], dtype=np.float64) for name in ("ndcg@10", "auc")}
    return values | list_values(top, target, facts), top


# ---------------------------------------------------------------- the sweep


def sweep(
    grid: Sequence[float],
    method: str,
    lists: Callable[[RerankSpec], tuple[dict[str, np.ndarray], np.ndarray]],
    target: Impressions,
    facts: SplitFacts,
    *,
    accuracy: Sequence[str],
    resamples: int = RESAMPLES,
    seed: int = 0,
    advance: Advance | None = None,
) -> list[TradeoffRow]:
    """Rows of the grid: `lists(spec)` gives the per-impression values and top-10 lists of a λ."""
    variants = []
    for weight in grid:
        values, top = lists(RerankSpec(method, weight))  # type: ignore[arg-type]
        variants.append(Variant(values, [top]))
        if advance is not None:
            advance(1)
    names = [*accuracy, *BEYOND]
    compared = compare(variants, target, facts, names, resamples=resamples, seed=seed)
    return [TradeoffRow(float(w), values, deltas) for w, (values, deltas) in zip(grid, compared, strict=True)]


def _json(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


# ---------------------------------------------------------------- one command


ListsFn = Callable[[RerankSpec], tuple[dict[str, np.ndarray], np.ndarray]]


def candidate_lists(scores: np.ndarray, target: Impressions, facts: SplitFacts) -> ListsFn:
    """Per λ: the impression's candidates re-ranked from the model's `scores`."""
    return lambda spec: candidate_values(scores, target, spec, facts)


def retrieved_lists(pool: Any, target: Impressions, facts: SplitFacts) -> ListsFn:
    """Per λ: the top 10 of each impression's retrieval pool (`retrieve.retrieve_pool`), re-ranked
    by serve's rule; accuracy is recall@10 and hit@10 of the clicked candidates."""
    from newsrec_cli.evaluate.retrieve import hit_recall, pick

    def lists(spec: RerankSpec) -> tuple[dict[str, np.ndarray], np.ndarray]:
        top = pick(pool, target, K, spec, facts)
        hit, recall = hit_recall(top, target)
        return {"recall@10": recall, "hit@10": hit} | list_values(top, target, facts), top

    return lists


def evaluate_tradeoff(
    settings: Any,
    *,
    data: Path,
    run_dir: Path,
    method: str,
    grid: Sequence[float] = GRID,
    retrieve: bool = False,
    run_embeddings: Path | None = None,
    resamples: int = RESAMPLES,
    say: Callable[[str], None] | None = None,
    advance: Advance | None = None,
) -> TradeoffReport:
    """Sweep `method`'s λ over `grid` for the run in `run_dir` on its reported split (settings:
    `EvaluateSettings`: split, protocol, seed of the bootstrap, batch size, device), print-ready,
    and write the plot into the run folder."""
    from newsrec_cli.errors import InputError
    from newsrec_cli.evaluate.model_scores import ModelScores
    from newsrec_cli.evaluate.runner import select_split
    from newsrec_cli.mind.dataset import load_dataset

    say = say or (lambda _msg: None)
    method = parse_method(method)
    grid = sorted({0.0, *grid})
    model = ModelScores.open(run_dir, device=settings.device, store=run_embeddings)
    say(f"reading {data}")
    dataset = load_dataset(data, on_bad_lines=model.data_settings.on_bad_lines)
    chosen = select_split(dataset, settings.split, model.data_settings, from_run=True)
    train, target = chosen.train, chosen.impressions
    if not target.labeled:
        raise InputError(
            f"{target.source}: the impressions have no labels, so there is no trade-off to measure"
        )
    dataset.require_rows(target)
    if method == "mmr" and model.store is None:
        raise InputError(
            "--tradeoff mmr needs the run's text vectors (ILD@10, MMR): the run names no store", path=run_dir
        )
    facts = split_facts(dataset, train, target, model.store)
    say(f"scoring {len(target):,} impressions with {run_dir} ({settings.protocol} protocol)")
    if retrieve:
        from newsrec_cli.evaluate.retrieve import model_scorer, retrieve_pool, split_catalogue
        from newsrec_cli.rerank import pool_size

        catalogue = split_catalogue(target)
        score = model_scorer(
            model.run, dataset, target, train, catalogue, settings.protocol, settings.batch_size
        )
        lists = retrieved_lists(retrieve_pool(target, catalogue, score, pool_size(K)), target, facts)
    else:
        logits = model.score(dataset, target, settings.batch_size, known=train, protocol=settings.protocol)
        lists = candidate_lists(logits, target, facts)
    accuracy = ACCURACY["retrieve" if retrieve else "impressions"]
    rows = sweep(
        grid,
        method,
        lists,
        target,
        facts,
        accuracy=accuracy,
        resamples=resamples,
        seed=settings.seed,
        advance=advance,
    )
    report = TradeoffReport(
        method=method,
        protocol=settings.protocol,
        ranking="retrieve" if retrieve else "impressions",
        data=str(data),
        selection=chosen.note,
        impressions=len(target),
        metrics=[*accuracy, *BEYOND],
        resamples=resamples,
        seed=settings.seed,
        rows=rows,
    )
    from newsrec_cli.evaluate.tradeoff_plot import write_plot

    path = write_plot(report, run_dir / plot_name(method, settings.protocol, retrieve))
    report.written.append(str(path))
    return report
