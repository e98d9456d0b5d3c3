"""Losses on logits (never on probabilities): listwise softmax, pointwise BCE, focal BCE.

Every batch row holds the clicked news at column 0 and K unclicked news after it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

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


def loss_fn(settings: TrainSettings, logits: Tensor) -> Tensor:
    """The loss chosen by the settings."""
    if settings.loss == "listwise":
        return listwise_loss(logits)
    if settings.loss == "pointwise":
        return pointwise_loss(logits, settings.pos_weight)
    return focal_loss(logits, settings.gamma)
