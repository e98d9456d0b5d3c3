"""Scoring impressions with a model: every needed news encoded once, every user once, then scores.

Encoding news per impression would encode a popular news thousands of times; here the news
table of MIND-small's validation set (~2.7M candidates, ~40k distinct news) is built once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from newsrec_cli.mind import Impressions
from newsrec_cli.mind.behaviors import gather_segments
from newsrec_cli.model.inputs import needed_news, recent_history
from newsrec_cli.model.recommender import NewsRecommender

if TYPE_CHECKING:
    from newsrec_cli.mind import MindDataset
    from newsrec_cli.runs.loading import LoadedRun

NEWS_CHUNK = 8192  # distinct news encoded per forward
SCORE_CHUNK = 262_144  # candidates scored per forward
INNER_CHUNK = 1 << 24  # floats of candidate keys gathered per step (64 MB)
IMPRESSION_CHUNK = 65_536  # distinct user states held at once
HASH_CHUNK = 1 << 22  # history entries hashed per step


def autocast_for(device: torch.device, bf16: bool = True) -> AbstractContextManager:
    """bfloat16 autocast on CUDA when asked; nothing on CPU (bf16 matmuls are slow there)."""
    if device.type == "cuda" and bf16:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def no_autocast(device: torch.device) -> AbstractContextManager:
    """float32 inside an autocast region (bf16 would tie distinct scores)."""
    return torch.autocast(device_type=device.type, enabled=False)


@contextmanager
def graph_cached(model: NewsRecommender) -> Iterator[None]:
    """Run the GNN once for all news nodes while inside (inference only)."""
    graph = model.news_encoder.graph
    if graph is None:
        yield
        return
    graph.cache()
    try:
        yield
    finally:
        graph.clear_cache()


@dataclass
class StateGroups:
    """Impressions grouped by identical user-encoder input (recent history, user row).

    Group g is impressions `members[offsets[g]:offsets[g+1]]`; `representatives[g]` is one of them.
    """

    representatives: np.ndarray  # int64 [G]
    offsets: np.ndarray  # int64 [G+1]
    members: np.ndarray  # int64 [I]


def hash_multipliers(history: int) -> np.ndarray:
    """Odd 64-bit multipliers, uint64 [2, history + 1]: one per slot and hash (fixed seed)."""
    rng = np.random.default_rng(0x5EED)
    return rng.integers(1, 2**63, size=(2, history + 1), dtype=np.uint64) | np.uint64(1)


def same_user_state(imps: Impressions, history: int, user_rows: np.ndarray | None = None) -> StateGroups:
    """Group impressions whose user state is the same: equal last `history` clicks and user row.

    Two 64-bit hashes of each impression's input sort equal inputs together; every member is then
    compared with its group's representative, and one that differs (a hash collision) gets a
    group of its own, so grouping never merges different inputs.
    """
    n = len(imps)
    keys = np.empty((n, 2), dtype=np.uint64)
    mult = hash_multipliers(history)
    step = max(1, HASH_CHUNK // max(history, 1))
    with np.errstate(over="ignore"):
        for lo in range(0, n, step):
            rows = np.arange(lo, min(lo + step, n))
            hist, mask = recent_history(imps, rows, history)
            who = np.zeros(len(rows), dtype=np.int64) if user_rows is None else user_rows[rows]
            values = np.concatenate([hist, (who * 2 + 1)[:, None]], axis=1).astype(np.uint64)
            values[:, :-1] += mask.astype(np.uint64)  # an empty slot differs from news index 0
            keys[lo : lo + len(rows)] = values @ mult.T  # wraps modulo 2**64, as a hash may
    order = np.lexsort((keys[:, 1], keys[:, 0]))
    starts = np.ones(n, dtype=bool)
    starts[1:] = (keys[order[1:]] != keys[order[:-1]]).any(axis=1)
    group_of = np.cumsum(starts) - 1  # along `order`
    rep_of = order[np.flatnonzero(starts)][group_of]  # representative of each member, along order
    # exact check of every member against its representative (collisions become singletons)
    differs = np.zeros(n, dtype=bool)
    for lo in range(0, n, step):
        a, b = order[lo : lo + step], rep_of[lo : lo + step]
        ha, ma = recent_history(imps, a, history)
        hb, mb = recent_history(imps, b, history)
        same = (ha == hb).all(axis=1) & (ma == mb).all(axis=1)
        if user_rows is not None:
            same &= user_rows[a] == user_rows[b]
        differs[lo : lo + len(a)] = ~same
    if differs.any():
        # members equal to their representative stay in its group; the others, moved behind it
        # (a stable sort keeps the representative first), become groups of one
        regroup = np.lexsort((differs, group_of))
        order, differs, group_of = order[regroup], differs[regroup], group_of[regroup]
        starts = np.ones(n, dtype=bool)
        starts[1:] = (group_of[1:] != group_of[:-1]) | differs[1:]
    offsets = np.concatenate([np.flatnonzero(starts), [n]]).astype(np.int64)
    return StateGroups(representatives=order[offsets[:-1]], offsets=offsets, members=order)


class _Timer:
    """Seconds spent in each phase, added into `into` when given (benchmarks read them)."""

    def __init__(self, into: dict[str, float] | None, device: torch.device) -> None:
        self.into, self.device = into, device

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self.into is None:
            yield
            return
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.into[name] = self.into.get(name, 0.0) + time.perf_counter() - start


@torch.no_grad()
def score_with_model(
    model: NewsRecommender,
    imps: Impressions,
    *,
    history: int,
    batch_size: int = 512,
    user_rows: np.ndarray | None = None,
    bf16: bool = True,
    inner_product: bool = True,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Logits float32 [C] aligned with `imps.candidates`; the model must have features attached
    for `imps.news_vocab` (news indices refer to it). `user_rows` (int64 [I]) are rows of the
    user-ID table when the model has one.

    With `inner_product` (default) and a model whose score is an inner product of a per-user
    query and per-news keys (`NewsRecommender.inner_product_score`), each candidate's logit is
    one dot product of precomputed vectors; otherwise (or with `inner_product=False`) each
    (user, news) pair goes through `model.score`. Both give the same logits to float rounding.
    `timings`, when given, receives the seconds of each phase (news, users, scores).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    timer = _Timer(timings, device)
    fast = inner_product and model.inner_product_score
    try:
        with autocast_for(device, bf16), graph_cached(model):
            # 1. Every distinct news once, into a compact table (row 0: padding).
            with timer.phase("news"):
                news = needed_news(imps)
                compact = np.zeros(int(news.max(initial=0)) + 1, dtype=np.int64)  # news index -> table row
                compact[news] = np.arange(1, len(news) + 1)
                table = torch.zeros(len(news) + 1, model.dim, device=device)
                for start in range(0, len(news), NEWS_CHUNK):
                    chunk = torch.from_numpy(news[start : start + NEWS_CHUNK]).to(device)
                    table[1 + start : 1 + start + len(chunk)] = model.encode_news(chunk).float()
                keys = None
                if fast:
                    with no_autocast(device):  # the head scores in float32 (see ScoringHead)
                        keys = model.score_keys(table)

            # 2-3. Each distinct user state once (MIND repeats a user's history in each of their
            # impressions), a chunk of states at a time; then the candidates of every impression
            # that shares them. Memory: one chunk of states, not one per impression.
            scores = np.empty(len(imps.candidates), dtype=np.float32)
            with timer.phase("users"):
                groups = same_user_state(imps, history, user_rows)
            per_chunk = max(1, IMPRESSION_CHUNK // batch_size) * batch_size
            for lo in range(0, len(groups.representatives), per_chunk):
                reps = groups.representatives[lo : lo + per_chunk]
                with timer.phase("users"):
                    users = _user_states(model, imps, reps, table, compact, history, batch_size, user_rows)
                with timer.phase("scores"):
                    members = groups.members[groups.offsets[lo] : groups.offsets[lo + len(reps)]]
                    owner = np.repeat(np.arange(len(reps)), np.diff(groups.offsets[lo : lo + len(reps) + 1]))
                    if keys is not None:
                        with no_autocast(device):
                            queries = model.score_queries(users)
                            _score_inner(queries, keys, imps, members, owner, compact, scores)
                    else:
                        _score_pairs(model, users, table, imps, members, owner, compact, scores)
    finally:
        model.train(was_training)
    return scores


def _user_states(
    model: NewsRecommender,
    imps: Impressions,
    reps: np.ndarray,
    table: torch.Tensor,
    compact: np.ndarray,
    history: int,
    batch_size: int,
    user_rows: np.ndarray | None,
) -> torch.Tensor:
    """User states (len(reps), S) of these impressions, `batch_size` per forward."""
    device = table.device
    D = model.news_dim
    # contiguous parts: a click gathers its learned vector only (the prior sums text in place)
    learned = table[:, :D].contiguous()
    text = table[:, D:].contiguous() if model.prior is not None else None
    # Histories are left-aligned and padded on the right, and padded clicks are masked out of
    # every attention and pooling: batches of states of similar history length, cut to their
    # longest, give the same states without encoding the padding (most histories are short).
    # (A candidate-aware encoder's state holds the padded history itself: never cut there.)
    trim = model.inner_product_score
    lengths = np.minimum(np.diff(imps.history_offsets)[reps], history)
    order = np.argsort(lengths, kind="stable") if trim else np.arange(len(reps))
    users: torch.Tensor | None = None
    for start in range(0, len(reps), batch_size):
        where = order[start : start + batch_size]
        rows = reps[where]
        width = max(1, int(lengths[where].max())) if trim else history
        hist, mask = recent_history(imps, rows, history)
        hist, mask = hist[:, :width], mask[:, :width]
        clicked = torch.from_numpy(compact[hist]).to(device)  # (B, H) rows of the table
        ids = None if user_rows is None else torch.from_numpy(user_rows[rows]).to(device)
        state = model.encode_user_rows(learned, text, clicked, torch.from_numpy(mask).to(device), ids).float()
        if users is None:
            users = torch.zeros(len(reps), state.shape[1], device=device)
        users[torch.from_numpy(where).to(device)] = state
    assert users is not None  # the chunk has at least one impression
    return users


def _gather_candidates(
    imps: Impressions, members: np.ndarray, compact: np.ndarray, device: torch.device
) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """The candidates of `members` (impressions), impression by impression: each impression's
    candidate count, their positions in `imps.candidates`, and their rows of the news table."""
    counts = np.diff(imps.candidate_offsets)[members]
    _, take = gather_segments(imps.candidate_offsets, members)
    cand = torch.from_numpy(compact[np.asarray(imps.candidates[take], dtype=np.int64)]).to(device)
    return counts, take, cand


def _score_pairs(
    model: NewsRecommender,
    users: torch.Tensor,
    table: torch.Tensor,
    imps: Impressions,
    members: np.ndarray,
    owner: np.ndarray,
    compact: np.ndarray,
    scores: np.ndarray,
) -> None:
    """Every candidate of `members` (impressions; `owner`: their row of `users`) through
    `model.score`, one (user, news) pair each: any user encoder, the candidate-aware one too."""
    device = users.device
    counts, take, cand = _gather_candidates(imps, members, compact, device)
    imp_of = torch.from_numpy(np.repeat(owner, counts)).to(device)
    step = max(1, SCORE_CHUNK * model.dim // users.shape[1])  # bounded memory per step
    for start in range(0, len(take), step):
        part = slice(start, start + step)
        logits = model.score(users[imp_of[part]], table[cand[part]][:, None, :])  # (n, 1)
        scores[take[part]] = logits[:, 0].float().cpu().numpy()


def _score_inner(
    queries: torch.Tensor,
    keys: torch.Tensor,
    imps: Impressions,
    members: np.ndarray,
    owner: np.ndarray,
    compact: np.ndarray,
    scores: np.ndarray,
) -> None:
    """Every candidate of `members` as keys[news] . queries[owner]. The impressions are sorted by
    candidate count, so those with L candidates lie together and their keys form an (m, L, dim)
    block: one batched matrix-vector product with their m queries, no padding. Only the keys
    are gathered per candidate (a query once per impression) and no per-pair normalisation
    runs: the work per candidate is one row read and one dot product."""
    device = queries.device
    order = np.argsort(np.diff(imps.candidate_offsets)[members], kind="stable")
    members, owner = members[order], owner[order]
    counts, take, cand = _gather_candidates(imps, members, compact, device)
    owner_t = torch.from_numpy(owner).to(device)
    ends = np.concatenate([[0], np.cumsum(counts)])  # impression i's candidates: ends[i]:ends[i+1]
    runs = np.concatenate([[0], np.flatnonzero(counts[1:] != counts[:-1]) + 1, [len(counts)]])
    budget = max(1, INNER_CHUNK // max(1, keys.shape[1]))  # candidates gathered per step
    for a, b in zip(runs[:-1], runs[1:], strict=True):
        width = int(counts[a])
        if width == 0:
            continue
        per = max(1, budget // width)
        for s in range(a, b, per):
            e = min(b, s + per)
            lo, hi = int(ends[s]), int(ends[e])
            vectors = keys[cand[lo:hi]].view(e - s, width, keys.shape[1])  # (m, L, dim)
            logits = torch.bmm(vectors, queries[owner_t[s:e]][:, :, None])  # (m, L, 1)
            scores[take[lo:hi]] = logits.reshape(-1).cpu().numpy()


def score_impressions(
    run: LoadedRun, dataset: MindDataset, impressions: Impressions, batch_size: int = 512
) -> np.ndarray:
    """Logits float32 aligned with `impressions.candidates`, from a trained run.

    The model is pointed at the dataset's news (text from the run's store, IDs mapped to the
    run's training news, unknown ones to the unseen bucket); a scored news without a text vector
    is a MissingVectorsError unless the run was trained with `--missing learned`.
    """
    run.attach_dataset(dataset, impressions)
    return score_with_model(
        run.model,
        impressions,
        history=run.settings.history,
        batch_size=batch_size,
        user_rows=run.user_rows(impressions),
        bf16=run.settings.bf16,
    )


@torch.no_grad()
def query_key_vectors(
    model: NewsRecommender,
    imps: Impressions,
    news: np.ndarray,
    *,
    history: int,
    batch_size: int = 512,
    user_rows: np.ndarray | None = None,
    bf16: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Each impression's query, float32 [I, D'], and each news of `news`' key, float32 [N, D']:
    `queries[i] @ keys[j]` is the logit `score_with_model` gives news[j] in impression i (to
    float rounding), so a whole catalogue is scored per user by one matrix product (retrieval).
    Only for a model whose score is an inner product (`NewsRecommender.inner_product_score`)."""
    if not model.inner_product_score:
        raise RuntimeError("a candidate-aware user encoder has no per-user query")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with autocast_for(device, bf16), graph_cached(model):
            # Every news of the histories and of `news` once, as score_with_model encodes them.
            table_news = np.union1d(needed_news(imps), np.asarray(news, dtype=np.int64))
            compact = np.zeros(int(table_news.max(initial=0)) + 1, dtype=np.int64)
            compact[table_news] = np.arange(1, len(table_news) + 1)
            table = torch.zeros(len(table_news) + 1, model.dim, device=device)
            for start in range(0, len(table_news), NEWS_CHUNK):
                chunk = torch.from_numpy(table_news[start : start + NEWS_CHUNK]).to(device)
                table[1 + start : 1 + start + len(chunk)] = model.encode_news(chunk).float()
            with no_autocast(device):
                rows = torch.from_numpy(compact[np.asarray(news, dtype=np.int64)]).to(device)
                keys = model.score_keys(table[rows]).float().cpu().numpy()
            groups = same_user_state(imps, history, user_rows)
            queries = np.empty((len(imps), keys.shape[1]), dtype=np.float32)
            per_chunk = max(1, IMPRESSION_CHUNK // batch_size) * batch_size
            for lo in range(0, len(groups.representatives), per_chunk):
                reps = groups.representatives[lo : lo + per_chunk]
                users = _user_states(model, imps, reps, table, compact, history, batch_size, user_rows)
                with no_autocast(device):
                    states = model.score_queries(users).float().cpu().numpy()
                bounds = groups.offsets[lo : lo + len(reps) + 1]
                members = groups.members[bounds[0] : bounds[-1]]
                queries[members] = np.repeat(states, np.diff(bounds), axis=0)
    finally:
        model.train(was_training)
    return queries, keys


def retrieval_vectors(
    run: LoadedRun, dataset: MindDataset, impressions: Impressions, news: np.ndarray, batch_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """`query_key_vectors` of a trained run, attached to the dataset as `score_impressions` does
    (`news` must be news of `impressions`, whose text vectors are checked)."""
    run.attach_dataset(dataset, impressions)
    return query_key_vectors(
        run.model,
        impressions,
        news,
        history=run.settings.history,
        batch_size=batch_size,
        user_rows=run.user_rows(impressions),
        bf16=run.settings.bf16,
    )
