"""Run a recommender over a sample of impressions and keep what the checks look at.

The model is run piece by piece (`encode_user`, `encode_news`, `score`), the same composition as
its `forward`, so one pass gives the logits *and* the vectors they came from: the saturation
check reads the first, the cosine check the second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from newsrec_cli.mind import Impressions
from newsrec_cli.model.inputs import recent_history
from newsrec_cli.model.recommender import NewsRecommender


@dataclass
class ModelOutputs:
    """Per candidate (flat, impression i = offsets[i]:offsets[i+1]): logit, label, news vector."""

    logits: np.ndarray  # float32 [C]
    labels: np.ndarray  # int8 [C]
    offsets: np.ndarray  # int64 [I+1]
    users: np.ndarray  # float32 [I, D] learned user vector of each impression (candidate-free)
    news: np.ndarray  # float32 [C, D] learned vector of each candidate

    @property
    def user_of_candidate(self) -> np.ndarray:
        """Impression index of each candidate, int64 [C]."""
        return np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))


def sample_impressions(imps: Impressions, size: int, seed: int) -> Impressions:
    """Up to `size` labelled impressions drawn at random without replacement, in file order."""
    labelled = np.flatnonzero(
        np.bincount(imps.candidate_impression, weights=(imps.labels >= 0), minlength=len(imps))
        == imps.candidate_counts
    )
    if len(labelled) > size:
        labelled = np.sort(np.random.default_rng(seed).choice(labelled, size=size, replace=False))
    return imps.subset(labelled)


@torch.no_grad()
def run_model(
    model: NewsRecommender,
    imps: Impressions,
    *,
    history: int,
    batch_size: int = 128,
    user_rows: np.ndarray | None = None,
) -> ModelOutputs:
    """Logits and vectors of every candidate of `imps` (news indices of the model's attached vocabulary).

    `user_rows` (int64 [I]): rows of the user-ID table, for a model that has one.
    """
    model.eval()
    device = next(model.parameters()).device
    logits, users, news = [], [], []
    counts = imps.candidate_counts
    for start in range(0, len(imps), batch_size):
        rows = np.arange(start, min(start + batch_size, len(imps)))
        hist, mask = recent_history(imps, rows, history)
        cand, valid = _padded_candidates(imps, rows, counts)
        ids = None if user_rows is None else torch.from_numpy(user_rows[rows]).to(device)
        clicked = model.encode_news(torch.from_numpy(hist).to(device))  # (B, H, dim)
        user = model.encode_user_state(clicked, torch.from_numpy(mask).to(device), ids)  # (B, S)
        vectors = model.encode_news(torch.from_numpy(cand).to(device))  # (B, K, dim)
        scores = model.score(user, vectors)  # (B, K)
        keep = torch.from_numpy(valid).to(device)
        logits.append(scores[keep].float().cpu().numpy())
        # The vectors the learned head compares (the content prior's text part is not one of them).
        news.append(vectors[..., : model.news_dim][keep].float().cpu().numpy())
        users.append(model.user_summary(user).float().cpu().numpy())
    dim = model.news_dim
    return ModelOutputs(
        logits=np.concatenate(logits) if logits else np.zeros(0, dtype=np.float32),
        labels=imps.labels.copy(),
        offsets=imps.candidate_offsets.copy(),
        users=np.concatenate(users) if users else np.zeros((0, dim), dtype=np.float32),
        news=np.concatenate(news) if news else np.zeros((0, dim), dtype=np.float32),
    )


def _padded_candidates(
    imps: Impressions, rows: np.ndarray, counts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Candidates of `rows` as (B, K_max) int64 padded with 0, and the mask of real entries."""
    k = int(counts[rows].max())
    valid = np.arange(k)[None, :] < counts[rows][:, None]  # (B, K)
    flat = imps.candidate_offsets[rows][:, None] + np.arange(k)[None, :]
    cand = np.where(valid, imps.candidates[np.minimum(flat, len(imps.candidates) - 1)], 0).astype(np.int64)
    return cand, valid
