"""Losses on logits (never on probabilities): listwise softmax, pointwise BCE, focal BCE, InfoNCE.

Every batch row holds the clicked news at column 0 and K unclicked news after it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.settings import TrainSettings


def listwise_loss(logits: Tensor) -> Tensor:
    r"""Softmax cross-entropy of the click among 1+K candidates (NRMS's loss).

    .. math:: \mathcal{L} = -\log \frac{e^{s_+}}{e^{s_+} + \sum_{k=1}^K e^{s_k^-}}
    """
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), target)


def _labels(logits: Tensor) -> Tensor:
    labels = torch.zeros_like(logits, dtype=torch.float32)
    labels[:, 0] = 1.0
    return labels


def pointwise_loss(logits: Tensor, pos_weight: float | None = None) -> Tensor:
    r"""Binary cross-entropy with logits per candidate; clicks weighted by ``pos_weight``.

    .. math:: \mathcal{L} = -\big[w\, y \log\sigma(s) + (1-y)\log(1-\sigma(s))\big]
    """
    weight = None if pos_weight is None else torch.tensor(pos_weight, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits.float(), _labels(logits), pos_weight=weight)


def focal_loss(logits: Tensor, gamma: float) -> Tensor:
    r"""Focal loss (Lin et al., 2017): BCE scaled down on candidates already well classified.

    .. math:: \mathcal{L} = -(1 - p_t)^\gamma \log p_t, \qquad p_t = \sigma(s)\ \text{if clicked, else}\ 1-\sigma(s)
    """
    bce = F.binary_cross_entropy_with_logits(logits.float(), _labels(logits), reduction="none")
    p_t = torch.exp(-bce)
    return ((1.0 - p_t) ** gamma * bce).mean()


def infonce_loss(
    logits: Tensor, per_row: int, temperature: float = 1.0, candidates: Tensor | None = None
) -> Tensor:
    r"""InfoNCE over the batch: each click against its impression's negatives and every other
    candidate of the batch (other rows' clicks and negatives), at a temperature :math:`t`.

    .. math:: \mathcal{L} = -\log \frac{e^{s_{b,+}/t}}{\sum_{j \in \text{batch}} e^{s_{b,j}/t}}

    ``logits`` is (B, B*K) with row b's own candidates at columns b*K ... b*K+K-1, the click first.
    With ``candidates`` (B, K news indices), other copies of row b's clicked news in the batch are
    left out of its softmax: the same news cannot be its own negative.
    """
    B = logits.shape[0]
    target = torch.arange(B, device=logits.device) * per_row  # column of each row's click
    scores = logits.float() / temperature
    if candidates is not None:
        flat = candidates.reshape(1, -1)  # (1, B*K)
        copies = flat == candidates[:, :1]  # (B, B*K): columns holding row b's clicked news
        copies[torch.arange(B, device=logits.device), target] = False
        scores = scores.masked_fill(copies, float("-inf"))
    return F.cross_entropy(scores, target)


def loss_fn(
    settings: TrainSettings, logits: Tensor, per_row: int | None = None, candidates: Tensor | None = None
) -> Tensor:
    """The loss chosen by the settings (InfoNCE takes in-batch logits, `per_row` = 1+K and the
    batch's candidate news)."""
    if settings.loss == "infonce":
        if per_row is None or logits.shape[1] == per_row:
            return listwise_loss(logits / settings.temperature)  # one row: nothing else in the batch
        return infonce_loss(logits, per_row, settings.temperature, candidates)
    if settings.loss == "listwise":
        return listwise_loss(logits)
    if settings.loss == "pointwise":
        return pointwise_loss(logits, settings.pos_weight)
    return focal_loss(logits, settings.gamma)


def batch_loss(settings: TrainSettings, model: NewsRecommender, batch: dict[str, Tensor]) -> Tensor:
    """The training loss of one batch: the ranking loss, plus the auxiliary category loss."""
    in_batch = settings.loss == "infonce"
    logits, user = model.forward_with_user(
        batch["history"], batch["history_mask"], batch["candidates"], batch.get("users"), in_batch=in_batch
    )
    loss = loss_fn(settings, logits, per_row=batch["candidates"].shape[1], candidates=batch["candidates"])
    if settings.aux_category > 0 and model.category_head is not None:
        clicked = model.news_encoder.category_index[batch["candidates"][:, 0]]  # (B,)
        known = clicked > 0  # category 0 is "unknown": nothing to predict
        if bool(known.any()):
            aux = F.cross_entropy(model.category_logits(user[known]), clicked[known])
            loss = loss + settings.aux_category * aux
    return loss
