"""Scoring during training: the validation metrics of an epoch, and the current model's scores
of the training negatives (for hard negatives)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from newsrec_cli.evaluate.metrics import compute_metrics
from newsrec_cli.mind import Impressions
from newsrec_cli.model.inference import score_with_model
from newsrec_cli.model.recommender import NewsRecommender
from newsrec_cli.settings import TrainSettings


@torch.no_grad()
def validate(
    model: NewsRecommender,
    imps: Impressions,
    settings: TrainSettings,
    user_rows: np.ndarray | None = None,
) -> Any:
    """Official MIND metrics (per impression, averaged) of the model on labelled impressions."""
    scores = score_with_model(
        model,
        imps,
        history=settings.history,
        batch_size=settings.eval_batch_size,
        user_rows=user_rows,
        bf16=settings.bf16,
    )
    return compute_metrics(scores, imps.labels.astype(np.int64), imps.candidate_offsets)


def negative_scores(
    model: NewsRecommender, imps: Impressions, settings: TrainSettings, user_rows: np.ndarray | None
) -> np.ndarray:
    """The current model's logit of every unclicked candidate of the training impressions, in
    the order of `click_samples(imps).negatives` (for hard negatives)."""
    scores = score_with_model(
        model,
        imps,
        history=settings.history,
        batch_size=settings.eval_batch_size,
        user_rows=user_rows,
        bf16=settings.bf16,
    )
    return scores[imps.labels == 0]
