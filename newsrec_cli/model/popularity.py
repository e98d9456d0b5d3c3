"""Popularity as a modality of the score: a per-candidate term added to the model's logit.

The counts come from `newsrec_cli.mind.popularity` (causal: only impressions before the
candidate's time); this module turns them into a logit term whose weight is learned, so the model
decides how much to trust what is being clicked now against the user's interest. The term is a
per-news input and not part of the user state: user-state caches stay valid while counts move.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from newsrec_cli.mind.behaviors import Impressions
from newsrec_cli.mind.popularity import FEATURES, PopularityCounts, impression_seconds, slot_chunks

CTR_EPS = 1e-4  # CTRs are clipped to [eps, 1-eps] before the logit


def transform(raw: Tensor) -> Tensor:
    """Raw features (..., F) in `FEATURES` order -> model inputs (..., F): log counts, the CTR's
    logit, log age in hours, the seen flag (counts span orders of magnitude: logs keep them tame)."""
    clicks, shows, ctr, age, seen = raw.float().unbind(-1)
    ctr = ctr.clamp(CTR_EPS, 1 - CTR_EPS)
    return torch.stack(
        [torch.log1p(clicks), torch.log1p(shows), torch.log(ctr / (1 - ctr)), torch.log1p(age), seen], dim=-1
    )


class PopularityHead(nn.Module):
    r"""The popularity term of a candidate's logit.

    ``ctr``: one learned weight on the smoothed CTR's logit (zero at the start),

    .. math:: s_k \mathrel{+}= w\, \mathrm{logit}(\mathrm{ctr}_k)

    ``gate``: that term plus a small MLP over all features (log clicks, log impressions, CTR
    logit, log age, seen), weighted by a gate on the user's history length (after PP-Rec's user
    gate: users with little history may lean on popularity more). The weight and the MLP's last
    layer start at zero, so training starts at the model without popularity.

    .. math:: s_k \mathrel{+}= 2\sigma(a \log(1+|h|) + b)\,
        \big(w\, \mathrm{logit}(\mathrm{ctr}_k) + \mathrm{MLP}(x_k)\big)

    ``raw_weight`` is one number that must move by about 1: it gets the scoring head's larger
    learning rate (see `objective.param_groups.param_groups`).

    Shapes:
        - features: (..., F) float32 raw features (`FEATURES` order), e.g. (B, K, F)
        - history_length: broadcastable to features' leading shape, e.g. (B, 1)
        - output: (...) float32, e.g. (B, K)
    """

    def __init__(self, mode: str, hidden: int = 16) -> None:
        super().__init__()
        if mode not in ("ctr", "gate"):
            raise ValueError(f"{self.__class__.__name__}: mode must be 'ctr' or 'gate', got {mode!r}")
        self.mode = mode
        self.raw_weight = nn.Parameter(torch.zeros(()))  # the CTR logit's weight
        if mode == "gate":
            self.mlp = nn.Sequential(nn.Linear(len(FEATURES), hidden), nn.GELU(), nn.Linear(hidden, 1))
            self.gate = nn.Linear(1, 1)
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)

    def forward(self, features: Tensor, history_length: Tensor) -> Tensor:
        if self.mode == "ctr":
            return self.news_term(features)  # (B, K)
        return self.user_weight(history_length) * self.news_term(features)  # (B, K)

    def news_term(self, features: Tensor) -> Tensor:
        """The user-independent factor of the term, (..., F) -> (...): w logit(ctr), plus the MLP
        with the gate. The term is `user_weight * news_term`, so serving retrieves with it as one
        more column of an inner product (serve/index.py)."""
        x = transform(features)  # (B, K, F)
        term = self.raw_weight * x[..., 2]  # (B, K)
        if self.mode == "ctr":
            return term
        return term + self.mlp(x)[..., 0]

    def user_weight(self, history_length: Tensor) -> Tensor:
        """The user's factor of the term, history lengths (B, 1) -> (B, 1): the gate's trust, 1
        for ``ctr``."""
        if self.mode == "ctr":
            return torch.ones_like(history_length, dtype=torch.float32)
        return 2 * torch.sigmoid(self.gate(torch.log1p(history_length.float())[..., None]))[..., 0]

    def describe(self) -> dict[str, float]:
        """The learned trust in popularity, for reports: the CTR weight, and the gate at 0 and 50 clicks."""
        out = {"ctr_weight": float(self.raw_weight.detach())}
        if self.mode == "gate":
            with torch.no_grad():
                lengths = torch.tensor([[0.0], [float(np.log1p(50))]], device=self.raw_weight.device)
                trust = 2 * torch.sigmoid(self.gate(lengths))[:, 0]
            out |= {"gate_no_history": float(trust[0]), "gate_50_clicks": float(trust[1])}
        return out

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def add_to_logits(model: nn.Module, logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """The batch's logits plus the popularity term where the model and the batch have one."""
    head = getattr(model, "popularity", None)
    if head is None or "popularity" not in batch:
        return logits
    return logits + head(batch["popularity"], batch["history_length"]).to(logits.dtype)


@torch.no_grad()
def popularity_logits(
    head: PopularityHead, counts: PopularityCounts, imps: Impressions, at: int | None = None
) -> np.ndarray:
    """The popularity term float32 [C] of every candidate slot of `imps`, aligned with
    `imps.candidates`: each at its impression's own time (`at` None: replay and training), or
    all frozen at the second `at` (offline)."""
    was_training = head.training
    head.eval()
    device = head.raw_weight.device
    out = np.empty(len(imps.candidates), dtype=np.float32)
    counts_per = imps.candidate_counts
    lengths = np.asarray(imps.history_lengths, dtype=np.float32)
    seconds = impression_seconds(imps) if at is None else None
    try:
        for rows, slots in slot_chunks(imps, 1 << 20):
            when = np.int64(at) if seconds is None else np.repeat(seconds[rows], counts_per[rows])
            raw = torch.from_numpy(counts.features(np.asarray(imps.candidates[slots]), when)).to(device)
            length = torch.from_numpy(np.repeat(lengths[rows], counts_per[rows])).to(device)
            out[slots] = head(raw, length).float().cpu().numpy()
    finally:
        head.train(was_training)
    return out
