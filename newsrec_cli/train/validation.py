"""Scoring during training: the validation metrics of an epoch, and the current model's scores
of the training negatives (for hard negatives); sharded over the ranks of a distributed run."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from newsrec_cli.evaluate.metrics import compute_metrics
from newsrec_cli.mind import Impressions
from newsrec_cli.mind.popularity import PopularityView
from newsrec_cli.model.finetune import refresh
from newsrec_cli.model.inference import score_with_model
from newsrec_cli.model.popularity import popularity_logits
from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.settings import TrainSettings
from newsrec_cli.train.distributed import Ranks, combine_metrics


@torch.no_grad()
def validate(
    model: NewsRecommender,
    imps: Impressions,
    settings: TrainSettings,
    user_rows: np.ndarray | None = None,
    ranks: Ranks | None = None,
    popularity: PopularityView | None = None,
) -> Any:
    """Official MIND metrics (per impression, averaged) of the model on labelled impressions,
    with the popularity counts of `popularity` read as its protocol says.

    Distributed: each rank scores its share of the impressions and computes their metrics; the
    per-metric sums of all ranks give the means over all impressions (equal to one process's).
    """
    if ranks is None or not ranks.distributed:
        scores = _scores(model, imps, settings, user_rows, popularity)
        return compute_metrics(scores, imps.labels.astype(np.int64), imps.candidate_offsets)
    share = ranks.share(len(imps))
    part = imps.subset(share)
    scores = _scores(model, part, settings, None if user_rows is None else user_rows[share], popularity)
    result = compute_metrics(scores, part.labels.astype(np.int64), part.candidate_offsets)
    return combine_metrics(ranks.gather_objects(result.to_dict() | {"values": result.values}))


def negative_scores(
    model: NewsRecommender,
    imps: Impressions,
    settings: TrainSettings,
    user_rows: np.ndarray | None,
    ranks: Ranks | None = None,
    popularity: PopularityView | None = None,
) -> np.ndarray:
    """The current model's logit of every unclicked candidate of the training impressions, in
    the order of `click_samples(imps).negatives` (for hard negatives). Distributed: each rank
    scores its share of the impressions and every rank gets all the scores."""
    if ranks is None or not ranks.distributed:
        scores = _scores(model, imps, settings, user_rows, popularity)
        return scores[imps.labels == 0]
    share = ranks.share(len(imps))
    part = imps.subset(share)
    mine = _scores(model, part, settings, None if user_rows is None else user_rows[share], popularity)
    scores = np.concatenate(ranks.gather_objects(mine))  # shares in rank order: the listed order
    return scores[imps.labels == 0]


def _scores(
    model: NewsRecommender,
    imps: Impressions,
    settings: TrainSettings,
    user_rows: np.ndarray | None,
    popularity: PopularityView | None = None,
) -> np.ndarray:
    refresh(model)  # a fine-tuned text tower: every news vector from its current layers, once
    scores = score_with_model(
        model,
        imps,
        history=settings.history,
        batch_size=settings.eval_batch_size,
        user_rows=user_rows,
        bf16=settings.bf16,
    )
    if popularity is None or model.popularity is None:
        return scores
    return scores + popularity_logits(model.popularity, popularity.counts, imps, at=popularity.at)
