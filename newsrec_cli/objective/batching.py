"""Batches of one epoch: shuffled clicks, their negatives and their users' recent histories.

An epoch's plan (order and negatives) is a pure function of (seed, epoch), so a run resumed
mid-epoch rebuilds exactly the batches it had not seen, and DataLoader workers change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from newsrec_cli.mind import Impressions
from newsrec_cli.mind.popularity import PopularityCounts, impression_seconds
from newsrec_cli.model.inputs import recent_history
from newsrec_cli.objective.samples import ClickSamples, sample_hard_negatives, sample_negatives


@dataclass
class EpochPlan:
    """The order of the samples in an epoch and the negatives drawn for each."""

    order: np.ndarray  # int64 [S] sample indices, shuffled
    negatives: np.ndarray  # int64 [S, K] aligned with the samples (not with `order`)


def plan_epoch(
    samples: ClickSamples,
    negatives: int,
    seed: int,
    epoch: int,
    *,
    hard: int = 0,
    scores: np.ndarray | None = None,
) -> EpochPlan:
    """The epoch's order and negatives; with `hard` > 0 and `scores` (the current model's score
    of each of `samples.negatives`), that many negatives per click are the highest-scored ones."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(samples))
    if hard and scores is not None:
        return EpochPlan(order=order, negatives=sample_hard_negatives(samples, negatives, hard, scores, rng))
    return EpochPlan(order=order, negatives=sample_negatives(samples, negatives, rng))


class EpochBatches(Dataset):
    """Item `step` is the batch of that step: a dict of tensors.

    - history (B, H) int64 and history_mask (B, H) bool: the last H clicks before the impression
    - candidates (B, 1+K) int64: the clicked news first, then K unclicked news
    - users (B,) int64: rows of the user-ID table (0 = unknown), present when `user_rows` is given
    - popularity (B, 1+K, F) float32 (with `pairwise` (B, B*(1+K), F)) and history_length (B, 1):
      each candidate's popularity features at the impression's time, when `popularity` is given

    With `world` > 1 each item is rank `rank`'s share of the step's global batch.
    """

    def __init__(
        self,
        imps: Impressions,
        samples: ClickSamples,
        plan: EpochPlan,
        *,
        batch_size: int,
        history: int,
        user_rows: np.ndarray | None = None,
        popularity: PopularityCounts | None = None,
        pairwise: bool = False,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.imps = imps
        self.rank, self.world = rank, world  # distributed: this rank's share of every batch
        self.samples = samples
        self.plan = plan
        self.batch_size = batch_size
        self.history = history
        self.user_rows = user_rows  # int64 [I]: user-ID row of each impression
        self.popularity = popularity
        self.pairwise = pairwise  # in-batch scores: every row against every candidate of the batch
        self.seconds = impression_seconds(imps) if popularity is not None else None
        self.history_lengths = (
            np.asarray(imps.history_lengths, dtype=np.float32) if popularity is not None else None
        )

    def __len__(self) -> int:
        return -(-len(self.samples) // self.batch_size)

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        rows = self.plan.order[step * self.batch_size : (step + 1) * self.batch_size]  # (B,)
        if self.world > 1:
            # Contiguous shares in rank order, so gathering them gives back the global batch.
            # A rank left without rows (a last batch smaller than the world) takes the batch's
            # first row as a stand-in whose loss counts 0 (see distributed.BatchShard).
            rows = np.array_split(rows, self.world)[self.rank]
            rows = rows if len(rows) else self.plan.order[step * self.batch_size : step * self.batch_size + 1]
        impression = self.samples.impression[rows]
        history, mask = recent_history(self.imps, impression, self.history)
        candidates = np.concatenate([self.samples.positive[rows, None], self.plan.negatives[rows]], axis=1)
        batch = {
            "history": torch.from_numpy(history),
            "history_mask": torch.from_numpy(mask),
            "candidates": torch.from_numpy(candidates),
        }
        if self.user_rows is not None:
            batch["users"] = torch.from_numpy(self.user_rows[impression])
        if self.popularity is not None:
            assert self.seconds is not None and self.history_lengths is not None
            # Each row's candidates at its impression's time: only earlier impressions count.
            # In-batch scores pair row b with every candidate of the batch, all at row b's time.
            news = candidates.reshape(1, -1) if self.pairwise else candidates  # (1, B*K) or (B, K)
            when = self.seconds[impression][:, None]  # (B, 1)
            batch["popularity"] = torch.from_numpy(self.popularity.features(news, when))  # (B, B*K | K, F)
            batch["history_length"] = torch.from_numpy(self.history_lengths[impression][:, None])  # (B, 1)
        return batch
