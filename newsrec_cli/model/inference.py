"""Scoring impressions with a model: every needed news encoded once, every user once, then scores.

Encoding news per impression would encode a popular news thousands of times; here the news
table of MIND-small's validation set (~2.7M candidates, ~40k distinct news) is built once.
"""

from __future__ import annotations

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
    from newsrec_cli.train.run import LoadedRun

NEWS_CHUNK = 8192  # distinct news encoded per forward
SCORE_CHUNK = 262_144  # candidates scored per forward
IMPRESSION_CHUNK = 65_536  # distinct user states held at once
HASH_CHUNK = 1 << 22  # history entries hashed per step


def autocast_for(device: torch.device, bf16: bool = True) -> AbstractContextManager:
    """bfloat16 autocast on CUDA when asked; nothing on CPU (bf16 matmuls are slow there)."""
    if device.type == "cuda" and bf16:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


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


@torch.no_grad()
def score_with_model(
    model: NewsRecommender,
    imps: Impressions,
    *,
    history: int,
    batch_size: int = 512,
    user_rows: np.ndarray | None = None,
    bf16: bool = True,
) -> np.ndarray:
    """Logits float32 [C] aligned with `imps.candidates`; the model must have features attached
    for `imps.news_vocab` (news indices refer to it). `user_rows` (int64 [I]) are rows of the
    user-ID table when the model has one.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        with autocast_for(device, bf16), graph_cached(model):
            # 1. Every distinct news once, into a compact table (row 0: padding).
            news = needed_news(imps)
            compact = np.zeros(int(news.max(initial=0)) + 1, dtype=np.int64)  # news index -> table row
            compact[news] = np.arange(1, len(news) + 1)
            table = torch.zeros(len(news) + 1, model.dim, device=device)
            for start in range(0, len(news), NEWS_CHUNK):
                chunk = torch.from_numpy(news[start : start + NEWS_CHUNK]).to(device)
                table[1 + start : 1 + start + len(chunk)] = model.encode_unique(chunk).float()

            # 2-3. Each distinct user state once (MIND repeats a user's history in each of their
            # impressions), a chunk of states at a time; then one (user, news) pair per candidate
            # of every impression that shares them. Memory: one chunk of states, not one per
            # impression.
            scores = np.empty(len(imps.candidates), dtype=np.float32)
            groups = same_user_state(imps, history, user_rows)
            per_chunk = max(1, IMPRESSION_CHUNK // batch_size) * batch_size
            for lo in range(0, len(groups.representatives), per_chunk):
                reps = groups.representatives[lo : lo + per_chunk]
                users: torch.Tensor | None = None
                for start in range(0, len(reps), batch_size):
                    rows = reps[start : start + batch_size]
                    hist, mask = recent_history(imps, rows, history)
                    clicked = table[torch.from_numpy(compact[hist]).to(device)]  # (B, H, D)
                    ids = None if user_rows is None else torch.from_numpy(user_rows[rows]).to(device)
                    state = model.encode_user_vectors(clicked, torch.from_numpy(mask).to(device), ids).float()
                    if users is None:
                        users = torch.zeros(len(reps), state.shape[1], device=device)
                    users[start : start + len(rows)] = state
                assert users is not None  # the chunk has at least one impression
                members = groups.members[groups.offsets[lo] : groups.offsets[lo + len(reps)]]
                owner = np.repeat(np.arange(len(reps)), np.diff(groups.offsets[lo : lo + len(reps) + 1]))
                counts = np.diff(imps.candidate_offsets)[members]
                _, take = gather_segments(imps.candidate_offsets, members)
                imp_of = torch.from_numpy(np.repeat(owner, counts)).to(device)
                cand = torch.from_numpy(compact[np.asarray(imps.candidates[take], dtype=np.int64)]).to(device)
                step = max(1, SCORE_CHUNK * model.dim // users.shape[1])  # bounded memory per step
                for start in range(0, len(take), step):
                    part = slice(start, start + step)
                    logits = model.score(users[imp_of[part]], table[cand[part]][:, None, :])  # (n, 1)
                    scores[take[part]] = logits[:, 0].float().cpu().numpy()
    finally:
        model.train(was_training)
    return scores


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
