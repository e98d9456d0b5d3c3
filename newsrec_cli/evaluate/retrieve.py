"""`evaluate --retrieve`: each impression's top k retrieved from the reported split's catalogue,
as `serve` retrieves, instead of its own candidates re-ranked.

**The catalogue at an impression's time t** is every news shown as a candidate in the reported
split at a time <= t (its own candidates included), minus the news of the impression's history.
A news shown at t was in the service's catalogue at t (the impression is a list chosen from it),
so nothing later is used; labels are never read to build it. Strictly-before would make every
news unretrievable in the impression that first shows it, a handicap a live catalogue does not
have. The news are sorted by their first showing, so the catalogue at t is a prefix of them.

**Accuracy** (per impression with a click, averaged; impressions without one are skipped and
counted, as MIND's metrics do): hit@k is 1 when a clicked candidate is among the k retrieved,
recall@k the share of the clicked candidates that are. A clicked news in the history is not
retrievable and counts as missed.

**Scores** are the model's logits over the catalogue: one (users x news) matrix product of
query and key vectors (`model.inference.query_key_vectors`, the product serve's exact search
makes), plus a popularity run's term (user weight x news term, as serve adds it), with counts read
as the protocol says: offline frozen at the end of training, replay at each impression's time.
Impressions are scored a chunk at a time, so memory is one (chunk x catalogue) block.

**Re-ranking** (`--rerank mmr:0.3`): the best `rerank.pool_size(k)` news by score are re-ranked
and the first k kept, the rule serve follows, so both give the same lists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from newsrec_cli.errors import InputError
from newsrec_cli.evaluate.beyond import PAD
from newsrec_cli.evaluate.beyond_rows import SplitFacts
from newsrec_cli.evaluate.metrics import MetricResult
from newsrec_cli.evaluate.model_scores import popularity_view
from newsrec_cli.mind.behaviors import Impressions, gather_segments
from newsrec_cli.mind.popularity import FEATURES, impression_seconds, slot_chunks
from newsrec_cli.rerank import RerankSpec, pool_size, rerank

if TYPE_CHECKING:
    from newsrec_cli.mind.dataset import MindDataset
    from newsrec_cli.runs.loading import LoadedRun

SCORE_BUDGET = 1 << 22  # catalogue scores held per chunk of impressions (16 MB of float32)
FEATURE_BUDGET = 1 << 19  # (impression, news) popularity features per chunk in replay

ScoreFn = Callable[[np.ndarray], np.ndarray]  # impression rows (b,) -> scores (b, N) over the catalogue
Advance = Callable[[int], None]


@dataclass(frozen=True)
class Catalogue:
    """The reported split's distinct candidates, sorted by the second they were first shown."""

    news: np.ndarray  # int64 [N]
    shown: np.ndarray  # int64 [N] second of first showing, non-decreasing

    def __len__(self) -> int:
        return len(self.news)

    def available(self, seconds: np.ndarray) -> np.ndarray:
        """How many news (a prefix of `news`) were shown at or before each second, int64."""
        return np.searchsorted(self.shown, np.asarray(seconds, dtype=np.int64), side="right")

    def positions(self, size: int) -> np.ndarray:
        """Each news index's position in the catalogue, -1 where it is not in it, int64 [size]."""
        out = np.full(size, -1, dtype=np.int64)
        out[self.news] = np.arange(len(self.news))
        return out


def split_catalogue(target: Impressions) -> Catalogue:
    """The catalogue of `target`: each candidate news with its first showing."""
    seconds = impression_seconds(target)
    first = np.full(int(np.max(target.candidates, initial=0)) + 1, np.iinfo(np.int64).max)
    counts = target.candidate_counts
    for rows, slots in slot_chunks(target):  # per-slot arrays a run at a time (MIND-large: 85M slots)
        news = np.asarray(target.candidates[slots], dtype=np.int64)
        np.minimum.at(first, news, np.repeat(seconds[rows], counts[rows]))
    shown = np.flatnonzero(first < np.iinfo(np.int64).max)
    order = np.argsort(first[shown], kind="stable")  # ties: by news index
    return Catalogue(news=shown[order], shown=first[shown][order])


@dataclass(frozen=True)
class Pool:
    """Each impression's best-scored retrievable news, best first: what a re-ranker chooses from."""

    news: np.ndarray  # int64 (I, W), PAD where fewer are retrievable
    scores: np.ndarray  # float32 (I, W)

    @property
    def valid(self) -> np.ndarray:
        return self.news >= 0


def retrieve_pool(
    target: Impressions, catalogue: Catalogue, score: ScoreFn, width: int, advance: Advance | None = None
) -> Pool:
    """The `width` best-scored news of each impression's catalogue (shown at or before its time,
    not in its history), best first; among equal scores the news shown first (then the lower index)."""
    N = len(catalogue)
    width = max(0, min(N, width))
    news = np.full((len(target), width), PAD, dtype=np.int64)
    scores = np.zeros((len(target), width), dtype=np.float32)
    if N == 0 or width == 0:
        return Pool(news, scores)
    available = catalogue.available(impression_seconds(target))
    where = catalogue.positions(int(max(np.max(target.history, initial=0), catalogue.news.max())) + 1)
    step = max(1, SCORE_BUDGET // N)
    for lo in range(0, len(target), step):
        rows = np.arange(lo, min(lo + step, len(target)))
        s = np.require(score(rows), dtype=np.float32, requirements=["W"])  # (b, N), ours to mask
        s[np.arange(N)[None, :] >= available[rows][:, None]] = -np.inf  # not yet shown
        _, take = gather_segments(target.history_offsets, rows)
        owner = np.repeat(np.arange(len(rows)), target.history_lengths[rows])
        pos = where[np.asarray(target.history[take], dtype=np.int64)]
        s[owner[pos >= 0], pos[pos >= 0]] = -np.inf  # already read
        best = _best(s, width)  # (b, width) catalogue positions, best first
        best_scores = np.take_along_axis(s, best, axis=1)
        ok = np.isfinite(best_scores)
        news[rows] = np.where(ok, catalogue.news[best], PAD)
        scores[rows] = np.where(ok, best_scores, 0.0)
        if advance is not None:
            advance(len(rows))
    return Pool(news, scores)


def pick(
    pool: Pool,
    target: Impressions,
    k: int,
    spec: RerankSpec | None = None,
    facts: SplitFacts | None = None,
) -> np.ndarray:
    """The top k news of each impression, (I, k) int64, best first, PAD padding: the pool's first
    k, or with an active `spec` the pool's first `rerank.pool_size(k)` re-ranked (serve's rule)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    spec = spec or RerankSpec()
    top = np.full((len(pool.news), k), PAD, dtype=np.int64)
    if not spec.active:
        top[:, : min(k, pool.news.shape[1])] = pool.news[:, :k]
        return top
    if facts is None:
        raise ValueError("re-ranking retrieved lists needs the list facts (vectors, categories)")
    if spec.method == "mmr" and facts.vectors is None:
        raise InputError(f"MMR needs {facts.missing.get('ild', 'the news text vectors')}")
    width = min(pool_size(k), pool.news.shape[1])
    step = max(1, SCORE_BUDGET // max(1, width * (1 if facts.vectors is None else facts.vectors.shape[1])))
    for lo in range(0, len(pool.news), step):
        rows = np.arange(lo, min(lo + step, len(pool.news)))
        news, ok = pool.news[rows, :width], pool.valid[rows, :width]
        safe = np.maximum(news, 0)
        order = rerank(
            pool.scores[rows, :width],
            k,
            spec,
            valid=ok,
            vectors=None if facts.vectors is None else facts.vectors[safe],
            categories=facts.categories[safe],
            history=facts.history_distribution(target.history_offsets, rows),
        )
        chosen = np.take_along_axis(np.where(ok, news, PAD), order, axis=1)
        top[rows, : min(k, width)] = chosen[:, :k]
    return top


def retrieve(
    target: Impressions,
    catalogue: Catalogue,
    score: ScoreFn,
    k: int,
    spec: RerankSpec | None = None,
    *,
    facts: SplitFacts | None = None,
    advance: Advance | None = None,
) -> np.ndarray:
    """The top k news indices of every impression, (I, k) int64 (`retrieve_pool`, then `pick`)."""
    spec = spec or RerankSpec()
    pool = retrieve_pool(target, catalogue, score, pool_size(k) if spec.active else k, advance)
    return pick(pool, target, k, spec, facts)


def _best(scores: np.ndarray, width: int) -> np.ndarray:
    """Positions of each row's `width` best scores, best first; among equal scores the lower
    position (the news shown first)."""
    N = scores.shape[1]
    if width < N:
        part = np.argpartition(-scores, width - 1, axis=1)[:, :width]
        # equal scores across the cut: argpartition keeps any of them, the rule wants the first
        kth = np.take_along_axis(scores, part, axis=1).min(axis=1)
        straddle = np.flatnonzero((scores >= kth[:, None]).sum(axis=1) > width)
        if len(straddle):
            part[straddle] = np.argsort(-scores[straddle], axis=1, kind="stable")[:, :width]
        part = np.sort(part, axis=1)  # position order, so the stable sort below breaks ties by it
    else:
        part = np.broadcast_to(np.arange(N), scores.shape).copy()
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def hit_recall(top: np.ndarray, target: Impressions) -> tuple[np.ndarray, np.ndarray]:
    """hit@k and recall@k of each impression's clicked candidates in its list `top` (I, k);
    NaN for an impression without a click."""
    clicked = np.asarray(target.labels) == 1
    owner = target.candidate_impression[clicked]
    news = np.asarray(target.candidates, dtype=np.int64)[clicked]
    found = (top[owner] == news[:, None]).any(axis=1)
    n_clicked = np.bincount(owner, minlength=len(target)).astype(np.float64)
    n_found = np.bincount(owner, weights=found, minlength=len(target))
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(n_clicked > 0, n_found / n_clicked, np.nan)
    hit = np.where(n_clicked > 0, (n_found > 0).astype(np.float64), np.nan)
    return hit, recall


def model_scorer(
    run: LoadedRun,
    dataset: MindDataset,
    target: Impressions,
    known: Impressions | None,
    catalogue: Catalogue,
    protocol: str,
    batch_size: int = 512,
) -> ScoreFn:
    """A run's logits of the whole catalogue for chunks of impressions: its query x key product,
    plus its popularity term (offline: counts frozen at the end of `known`; replay: each
    impression at its own time)."""
    from newsrec_cli.model.inference import retrieval_vectors

    if not run.model.inner_product_score:
        raise InputError(
            "--retrieve needs a run whose score is one user vector times each news vector; this run's "
            "user encoder attends to each candidate, so a whole catalogue cannot be scored per user",
            path=run.run_dir,
        )
    queries, keys = retrieval_vectors(run, dataset, target, catalogue.news, batch_size)
    head = run.model.popularity
    if head is None:
        return lambda rows: queries[rows] @ keys.T
    import torch

    view = popularity_view(run, dataset, target, known, protocol)
    device = head.raw_weight.device
    lengths = torch.from_numpy(np.asarray(target.history_lengths, dtype=np.float32)).to(device)
    with torch.no_grad():
        weight = head.user_weight(lengths).float().cpu().numpy()  # (I,)

    def term(features: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return head.news_term(torch.from_numpy(features).to(device)).float().cpu().numpy()

    if view.at is not None:  # offline: one term per news
        frozen = term(view.counts.features(catalogue.news, np.int64(view.at)))  # (N,)
        return lambda rows: queries[rows] @ keys.T + weight[rows, None] * frozen[None, :]
    seconds = impression_seconds(target)

    def replay(rows: np.ndarray) -> np.ndarray:
        out = queries[rows] @ keys.T
        step = max(1, FEATURE_BUDGET // max(1, len(catalogue)))
        for lo in range(0, len(rows), step):
            part = rows[lo : lo + step]
            features = view.counts.features(catalogue.news[None, :], seconds[part][:, None])  # (b, N, F)
            out[lo : lo + len(part)] += weight[part, None] * term(features)
        return out

    return replay


# ---------------------------------------------------------------- evaluate --retrieve's rows

ACCURACY_KS = (5, 10)


def retrieval_metrics(beyond_names: list[str]) -> list[str]:
    """The columns of a retrieval table: hit@k and recall@k (k = 5, 10), then the beyond ones."""
    return [f"{kind}@{k}" for kind in ("hit", "recall") for k in ACCURACY_KS] + list(beyond_names)


def retrieval_result(
    top: np.ndarray, target: Impressions, beyond_names: list[str], facts: SplitFacts | None
) -> MetricResult:
    """hit@k and recall@k of the lists `top` (I, >= 10) and the beyond-accuracy metrics asked for
    (`beyond_rows.BeyondAccumulator`, the same as for ranked candidates)."""
    from newsrec_cli.evaluate.beyond_rows import BeyondAccumulator

    values: dict[str, float] = {}
    counts: dict[str, int] = {}
    per: dict[str, np.ndarray] = {}
    for k in ACCURACY_KS:
        hit, recall = hit_recall(top[:, :k], target)
        for name, x in ((f"hit@{k}", hit), (f"recall@{k}", recall)):
            ok = np.isfinite(x)
            values[name] = float(x[ok].mean()) if ok.any() else float("nan")
            counts[name] = int(ok.sum())
            per[name] = x
    no_click = int(np.isnan(per[f"hit@{ACCURACY_KS[0]}"]).sum())
    result = MetricResult(values, counts, 0, len(target), no_click, per)
    if beyond_names and facts is not None:
        accumulator = BeyondAccumulator(list(beyond_names), facts)
        history = facts.history_distribution(target.history_offsets) if accumulator.needs_history() else None
        accumulator.add(top, history)
        result.absorb(accumulator.result(), with_history=accumulator.needs_history())
    return result


def popularity_scorer(
    train: Impressions, target: Impressions, catalogue: Catalogue, protocol: str, seed: int = 0
) -> tuple[str, ScoreFn]:
    """The popularity baseline over the catalogue, as evaluate ranks candidates with it: offline,
    training clicks plus seeded noise under one click (ties among fresh news at random); replay,
    the causal smoothed CTR at each impression's time (the defaults' half-life and prior)."""
    from newsrec_cli.evaluate.baselines import TIE_BREAK, causal_view, click_counts

    if protocol == "offline":
        size = int(max(len(target.news_vocab), catalogue.news.max(initial=0) + 1))
        counts = click_counts(train, size)[catalogue.news]
        rng = np.random.default_rng(seed)
        noise = rng.random(len(catalogue)) * TIE_BREAK  # one draw per news: a user-independent ranking
        return "popularity", lambda rows: np.broadcast_to(counts + noise, (len(rows), len(catalogue)))
    view = causal_view(train, target)
    seconds = impression_seconds(target)
    ctr = FEATURES.index("ctr")

    def replay(rows: np.ndarray) -> np.ndarray:
        return view.counts.features(catalogue.news[None, :], seconds[rows][:, None])[..., ctr]

    return "popularity (causal CTR)", replay


def random_scorer(catalogue: Catalogue, seed: int = 0) -> ScoreFn:
    """Seeded uniform scores, drawn chunk after chunk in impression order (the same each run)."""
    rng = np.random.default_rng(seed)
    return lambda rows: rng.random((len(rows), len(catalogue)), dtype=np.float32)


def retrieval_rows(
    *,
    model: Any,
    dataset: MindDataset,
    train: Impressions | None,
    target: Impressions,
    protocol: str,
    seed: int,
    baselines: bool,
    spec: RerankSpec,
    beyond_names: list[str],
    facts: SplitFacts | None,
    batch_size: int = 512,
    say: Callable[[str], None] = lambda _msg: None,
) -> list[tuple[str, str, MetricResult, float]]:
    """(name, kind, result, seconds) of the model (a `ModelScores`, or None) and, with
    `baselines`, random and popularity, each retrieving every impression's top 10."""
    import time

    k = max([10, *(int(n.partition("@")[2]) for n in beyond_names)])
    catalogue = split_catalogue(target)
    say(f"retrieving from {len(catalogue):,} news shown in the split ({len(target):,} impressions)")
    scorers: list[tuple[str, str, Callable[[], ScoreFn]]] = []
    if model is not None:
        name = f"model {model.run.run_dir.name}"
        scorers.append(
            (
                name,
                "model",
                lambda: model_scorer(model.run, dataset, target, train, catalogue, protocol, batch_size),
            )
        )
    if baselines:
        scorers.append(("random", "baseline", lambda: random_scorer(catalogue, seed)))
        if train is None or not train.labeled:
            say("popularity baseline skipped: no labelled training impressions to count clicks in")
        else:
            label = "popularity" if protocol == "offline" else "popularity (causal CTR)"
            scorers.append(
                (label, "baseline", lambda: popularity_scorer(train, target, catalogue, protocol, seed)[1])
            )
        say("content baselines skipped with --retrieve (they rank an impression's candidates)")
    rows = []
    for name, kind, make in scorers:
        start = time.perf_counter()
        top = retrieve(target, catalogue, make(), k, spec, facts=facts)
        result = retrieval_result(top, target, beyond_names, facts)
        rows.append((name, kind, result, time.perf_counter() - start))
    return rows
