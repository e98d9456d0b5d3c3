"""`evaluate --tradeoff mmr`: what a re-ranker's weight λ costs in accuracy and buys in
diversity or calibration, over a grid of λ, with paired bootstrap intervals against λ = 0.

The model scores the split once; each λ re-ranks the same scores (`newsrec_cli.rerank`): the
impression's candidates (MIND's protocol), or with `--retrieve` the pool of best-scored news of
the split's catalogue (`newsrec_cli.evaluate.retrieve`). λ = 0 is the model's own order, so its
row equals plain `evaluate` (a row with λ > 0 scores the re-ranked order, one rank per candidate).

Each metric is averaged over impressions (Coverage@10 is a share of the split's candidates);
every λ's difference to λ = 0 gets a 95% interval from one paired bootstrap: impressions are
resampled with replacement, the same resamples for every λ and metric, a chunk of resamples at a
time (bounded memory), from one seeded generator (the same command gives the same intervals).
An impression a metric skips (NaN: no click, fewer than 2 news, an empty history) is left out of
that metric's means in every resample.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from newsrec_cli.errors import SettingsError
from newsrec_cli.evaluate import beyond
from newsrec_cli.evaluate.beyond_rows import BeyondAccumulator, SplitFacts, kind_of
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
RESAMPLES = 1000
BOOTSTRAP_BUDGET = 1 << 22  # resample weights held at once (32 MB of float64)
RERANK_BUDGET = 1 << 22  # floats of candidate vectors gathered per re-ranking chunk

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


# ---------------------------------------------------------------- the sweep and its bootstrap


@dataclass
class Variant:
    """One way of ranking the split: per-impression values (averaged over seeds where there are
    several) and the top-10 lists of each seed (Coverage@10 is averaged over them)."""

    values: dict[str, np.ndarray]
    tops: list[np.ndarray]


def compare(
    variants: Sequence[Variant],
    target: Impressions,
    facts: SplitFacts,
    names: Sequence[str],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> list[tuple[dict[str, float], dict[str, tuple[float, float, float]]]]:
    """Each variant's metric values and its paired difference to the first one with a 95%
    bootstrap interval: (values, {metric: (difference, low, high)}) per variant."""
    catalogue = facts.catalogue
    column = np.full(len(facts.categories), -1, dtype=np.int64)
    column[catalogue] = np.arange(len(catalogue))
    shown = _incidence_flat(target, column, len(catalogue))
    per_impression = [m for m in names if m != "coverage@10"]
    points = []
    for v in variants:
        point = {m: _mean(v.values[m]) for m in per_impression}
        if "coverage@10" in names:
            point["coverage@10"] = float(
                np.mean(
                    [beyond.coverage(beyond.exposure(t, len(facts.categories)), catalogue) for t in v.tops]
                )
            )
        points.append(point)
    incidence = [[_incidence(t, column, len(catalogue)) for t in v.tops] for v in variants]
    draws = _bootstrap(
        [v.values for v in variants], incidence, shown, per_impression, resamples, seed, len(target)
    )
    out = []
    for j in range(len(variants)):
        deltas = {}
        for m in names:
            diff = draws[m][j] - draws[m][0]
            ok = np.isfinite(diff)
            mid = points[j][m] - points[0][m]
            low, high = np.percentile(diff[ok], [2.5, 97.5]) if ok.any() else (np.nan, np.nan)
            if m == "coverage@10" and ok.any():
                # A set statistic: a resample holds ~63% of the distinct impressions, so its
                # coverages (and their difference) shrink; the interval is moved by that bias.
                low, high = low + mid - diff[ok].mean(), high + mid - diff[ok].mean()
            deltas[m] = (mid, float(low), float(high))
        out.append((points[j], deltas))
    return out


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


def _mean(x: np.ndarray) -> float:
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else float("nan")


def resample_weights(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """How often each of n impressions is drawn in each resample, float64 (r, n), a chunk of
    resamples at a time (one generator: the chunks concatenate to the same draws whatever n)."""
    rng = np.random.default_rng(seed)
    step = max(1, BOOTSTRAP_BUDGET // max(1, n))
    for lo in range(0, resamples, step):
        r = min(step, resamples - lo)
        drawn = rng.integers(0, n, size=(r, n))
        flat = (np.arange(r)[:, None] * n + drawn).ravel()
        yield np.bincount(flat, minlength=r * n).reshape(r, n).astype(np.float64)


def _bootstrap(
    per: list[dict[str, np.ndarray]],
    incidence: list[list[sparse.csr_matrix]],
    shown: sparse.csr_matrix,
    names: list[str],
    resamples: int,
    seed: int,
    n: int,
) -> dict[str, np.ndarray]:
    """Each metric's mean in every resample, (λ, resamples): per-impression metrics as weighted
    means over the impressions where they are defined, Coverage@10 as its share recomputed."""
    out = {m: np.empty((len(per), resamples)) for m in [*names, "coverage@10"]}
    done = 0
    for w in resample_weights(n, resamples, seed):
        r = len(w)
        for j, values in enumerate(per):
            for m in names:
                x = values[m]
                ok = np.isfinite(x)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[m][j, done : done + r] = (w @ np.where(ok, x, 0.0)) / (w @ ok.astype(np.float64))
        candidates = np.asarray((shown.T @ w.T) > 0).sum(axis=0)  # distinct candidates per resample
        for j, seeds in enumerate(incidence):
            exposed = np.mean([np.asarray((inc.T @ w.T) > 0).sum(axis=0) for inc in seeds], axis=0)
            out["coverage@10"][j, done : done + r] = exposed / np.maximum(candidates, 1)
        done += r
    return out


def _incidence(top: np.ndarray, column: np.ndarray, size: int) -> sparse.csr_matrix:
    """(I, size) 0/1: impression i's list holds catalogue news j."""
    rows, slots = np.nonzero(top >= 0)
    cols = column[top[rows, slots]]
    keep = cols >= 0
    data = np.ones(int(keep.sum()))
    return sparse.csr_matrix((data, (rows[keep], cols[keep])), shape=(len(top), size))


def _incidence_flat(target: Impressions, column: np.ndarray, size: int) -> sparse.csr_matrix:
    """(I, size) 0/1: impression i shows catalogue news j among its candidates."""
    cols = column[np.asarray(target.candidates, dtype=np.int64)]
    data = np.ones(len(cols))
    m = sparse.csr_matrix((data, (target.candidate_impression, cols)), shape=(len(target), size))
    m.data[:] = 1.0  # a news listed twice in one impression counts once
    return m


# ---------------------------------------------------------------- the plot


def write_plot(report: TradeoffReport, path: Path) -> Path:
    """Accuracy (y) against diversity or calibration (x), one labelled point per λ with its 95%
    intervals as bars, PNG (Agg backend)."""
    from newsrec_cli.diagnose.plots import pyplot

    plt = pyplot()
    accuracy = report.metrics[0]
    x_name = "calibration@10" if report.method == "calibration" else "ild@10"
    xs = [row.values[x_name] for row in report.rows]
    ys = [row.values[accuracy] for row in report.rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    try:
        # bars: each λ's 95% interval of the difference to λ = 0, drawn around λ = 0's value
        yerr = [_bar(row, accuracy, ys[0], y) for row, y in zip(report.rows, ys, strict=True)]
        xerr = [_bar(row, x_name, xs[0], x) for row, x in zip(report.rows, xs, strict=True)]
        ax.errorbar(
            xs, ys, yerr=np.array(yerr).T, xerr=np.array(xerr).T, fmt="-o", color="#2a6fdb", capsize=3
        )
        for row, x, y in zip(report.rows, xs, ys, strict=True):
            ax.annotate(f"λ={row.weight:g}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel(
            f"{x_name} ({'lower: better calibrated' if x_name in LOWER_IS_BETTER else 'higher: more diverse'})"
        )
        ax.set_ylabel(accuracy)
        how = "retrieved" if report.ranking == "retrieve" else "candidates re-ranked"
        ax.set_title(
            f"{report.method}: {accuracy} against {x_name}\n{report.protocol} protocol, {how}", fontsize=10
        )
        ax.grid(alpha=0.3)
        fig.tight_layout()
        from newsrec_cli import atomic

        atomic.write_bytes(path, _png(fig))
    finally:
        plt.close(fig)
    return path


def _bar(row: TradeoffRow, name: str, reference: float, value: float) -> tuple[float, float]:
    """Distances below and above `value` to the ends of its interval (0 where there is none)."""
    _, low, high = row.deltas[name]
    if not (np.isfinite(low) and np.isfinite(high)):
        return 0.0, 0.0
    return max(0.0, value - (reference + low)), max(0.0, reference + high - value)


def _png(fig: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})  # no version stamp: same bytes each run
    return buffer.getvalue()


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
    path = write_plot(report, run_dir / plot_name(method, settings.protocol, retrieve))
    report.written.append(str(path))
    return report
