"""Losses on logits (never on probabilities): listwise softmax, pointwise BCE, focal BCE, InfoNCE.

Every batch row holds the clicked news at column 0 and K unclicked news after it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from newsrec_cli.model.popularity import add_to_logits
from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.settings import TrainSettings

if TYPE_CHECKING:
    from newsrec_cli.objective.shard import BatchShard


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
    logits: Tensor,
    per_row: int,
    temperature: float = 1.0,
    candidates: Tensor | None = None,
    *,
    offset: int = 0,
    own: Tensor | None = None,
) -> Tensor:
    r"""InfoNCE over the batch: each click against its impression's negatives and every other
    candidate of the batch (other rows' clicks and negatives), at a temperature :math:`t`.

    .. math:: \mathcal{L} = -\log \frac{e^{s_{b,+}/t}}{\sum_{j \in \text{batch}} e^{s_{b,j}/t}}

    ``logits`` is (B, B*K) with row b's own candidates at columns b*K ... b*K+K-1, the click first.
    With ``candidates`` (B, K news indices), other copies of row b's clicked news in the batch are
    left out of its softmax: the same news cannot be its own negative.

    In distributed training the rows are this process's share of the batch: ``logits`` is
    (B, B_all*K), ``candidates`` the whole batch's (B_all, K), ``own`` this share's (B, K) and
    ``offset`` the batch row of its first row.
    """
    B = logits.shape[0]
    # column of each row's click (a stand-in row past the batch, see BatchShard, aims at column 0)
    target = (torch.arange(B, device=logits.device) + offset) * per_row
    target = torch.where(target < logits.shape[1], target, torch.zeros_like(target))
    scores = logits.float() / temperature
    if candidates is not None:
        own = candidates if own is None else own
        flat = candidates.reshape(1, -1)  # (1, B_all*K)
        copies = flat == own[:, :1]  # (B, B_all*K): columns holding row b's clicked news
        copies[torch.arange(B, device=logits.device), target] = False
        scores = scores.masked_fill(copies, float("-inf"))
    return F.cross_entropy(scores, target)


def loss_fn(
    settings: TrainSettings,
    logits: Tensor,
    per_row: int | None = None,
    candidates: Tensor | None = None,
    *,
    offset: int = 0,
    own: Tensor | None = None,
) -> Tensor:
    """The loss chosen by the settings (InfoNCE takes in-batch logits, `per_row` = 1+K and the
    batch's candidate news; in distributed training also this share's rows, see `infonce_loss`)."""
    if settings.loss == "infonce":
        if per_row is None or logits.shape[1] == per_row:
            return listwise_loss(logits / settings.temperature)  # one row: nothing else in the batch
        return infonce_loss(logits, per_row, settings.temperature, candidates, offset=offset, own=own)
    if settings.loss == "listwise":
        return listwise_loss(logits)
    if settings.loss == "pointwise":
        return pointwise_loss(logits, settings.pos_weight)
    return focal_loss(logits, settings.gamma)


def batch_loss(
    settings: TrainSettings,
    model: NewsRecommender,
    batch: dict[str, Tensor],
    shard: BatchShard | None = None,
) -> Tensor:
    """The training loss of one batch: the ranking loss, plus the auxiliary category loss.

    With `shard` (distributed training) the batch is this process's share of the global batch
    and the loss is scaled so that DDP's average of the gradients is the gradient of the global
    batch's loss (see `BatchShard`); InfoNCE's in-batch negatives are the whole global batch.
    """
    if shard is not None:
        return _shard_loss(settings, model, batch, shard)
    in_batch = settings.loss == "infonce"
    logits, user = model.forward_with_user(
        batch["history"], batch["history_mask"], batch["candidates"], batch.get("users"), in_batch=in_batch
    )
    logits = add_to_logits(model, logits, batch)
    loss = loss_fn(settings, logits, per_row=batch["candidates"].shape[1], candidates=batch["candidates"])
    if settings.aux_category > 0 and model.category_head is not None:
        clicked = model.news_encoder.category_index[batch["candidates"][:, 0]]  # (B,)
        known = clicked > 0  # category 0 is "unknown": nothing to predict
        if bool(known.any()):
            aux = F.cross_entropy(model.category_logits(user[known]), clicked[known])
            loss = loss + settings.aux_category * aux
    return loss


def _shard_loss(
    settings: TrainSettings, model: NewsRecommender, batch: dict[str, Tensor], shard: BatchShard
) -> Tensor:
    candidates = batch["candidates"]  # (B, K) this share's rows (or one stand-in row)
    in_batch = settings.loss == "infonce"
    logits, user = model.forward_with_user(
        batch["history"],
        batch["history_mask"],
        candidates,
        batch.get("users"),
        in_batch=in_batch,
        gather=(lambda vectors: shard.gather(vectors[: shard.rows])) if in_batch else None,
    )
    logits = add_to_logits(model, logits, batch)  # (never in-batch here: see Trainer.train_epoch)
    everyone = shard.gather(candidates[: shard.rows]) if in_batch else candidates  # (B_all, K)
    loss = loss_fn(
        settings,
        logits,
        per_row=candidates.shape[1],
        candidates=everyone,
        offset=shard.offset,
        own=candidates,
    )
    loss = loss * shard.weight
    if settings.aux_category > 0 and model.category_head is not None:
        # The mean over the global batch's known categories: a sum here, divided by the count of all ranks.
        clicked = model.news_encoder.category_index[candidates[:, 0]]  # (B,)
        rows = torch.arange(len(clicked), device=clicked.device) < shard.rows
        known = (clicked > 0) & rows
        count = shard.sum_over_ranks(known.sum())
        if float(count) > 0:
            each = F.cross_entropy(model.category_logits(user), clicked, reduction="none")  # (B,)
            aux = (each * known).sum() / count.to(each.dtype) * shard.world
            loss = loss + settings.aux_category * aux
    return loss
