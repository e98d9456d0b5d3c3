"""Knobs a fresh model (`--init`) lacks in the train settings, set through the score head's public parts.

The train settings choose the score head (`scoring = "dot"` or `"cosine"`) but neither its initial
scale (inverse temperature) nor whether the cosine head L2-normalises. To check those
configurations before training, `[diagnose] scale` and `[diagnose] normalize = false` change the
freshly built model here:

- `set_scale` sets the head's scale (logit = scale x similarity) through `ScoringHead.set_scale`;
- `UnnormalisedCosineHead` is the cosine head without its L2 normalisation, logit = scale x u.n.
  With a scale of 10 it is the configuration that lost the original project days: "cosine with a
  temperature of 10" on vectors whose norms are in the tens, so every logit lands far beyond the
  sigmoid's range.
"""

from __future__ import annotations

import torch
from torch import Tensor

from newsrec_cli.errors import SettingsError
from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.model.scorer import MAX_SCALE, ScoringHead


class UnnormalisedCosineHead(ScoringHead):
    r"""The cosine head with the normalisation left out (a deliberate fault, for diagnosis only).

    .. math:: s = e^{\tau}\, u^\top n

    Shapes:
        - user: (B, D), news: (B, K, D)
        - output: (B, K) logits
    """

    normalized = False

    def __init__(self, dim: int, init_scale: float) -> None:
        super().__init__("cosine", dim, init_scale)

    def forward(self, user: Tensor, news: Tensor) -> Tensor:
        B, K, D = news.shape  # batch, candidates, dim
        user = (user if user.dim() == 3 else user[:, None, :]).float().expand(B, K, D)
        sim = torch.einsum("bkd,bkd->bk", user, news.float())  # (B, K), no L2 normalisation
        return sim * self.scale.float()

    def pairwise(self, user: Tensor, news: Tensor) -> Tensor:
        return (user.float() @ news.float().T) * self.scale.float()  # (B, N), no L2 normalisation


def head_name(head: ScoringHead) -> str:
    """The head as the reports name it: "dot", "cosine" or "cosine without L2 normalisation"."""
    if not getattr(head, "normalized", True):
        return "cosine without L2 normalisation"
    return head.kind


def set_scale(model: NewsRecommender, scale: float) -> None:
    """Set the score head's scale (logit = scale x similarity); the head bounds it below MAX_SCALE."""
    if not 0 < scale < MAX_SCALE:
        raise SettingsError(
            f"diagnose.scale = {scale!r}: must be in (0, {MAX_SCALE:g}), the score head's range"
        )
    model.scorer.set_scale(scale)


def drop_normalisation(model: NewsRecommender) -> None:
    """Replace a cosine head by the same head without L2 normalisation (same scale)."""
    head = model.scorer
    if head.kind != "cosine":
        raise SettingsError(
            'diagnose.normalize = false applies to train.scoring = "cosine" (the dot head never normalises)'
        )
    device = head.raw_scale.device
    model.scorer = UnnormalisedCosineHead(head.dim, float(head.scale.detach())).to(device)
