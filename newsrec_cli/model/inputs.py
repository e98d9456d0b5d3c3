"""Model inputs gathered from `Impressions` with numpy (no Python loop per impression)."""

from __future__ import annotations

import numpy as np

from newsrec_cli.mind import Impressions
from newsrec_cli.mind.behaviors import distinct_news


def needed_news(*parts: Impressions) -> np.ndarray:
    """Distinct news indices (> 0) that the impressions' candidates and histories use, sorted."""
    return distinct_news(*parts)


def recent_history(imps: Impressions, rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The last `length` clicks of impressions `rows`, left-aligned and zero-padded.

    Returns (history int64 [B, L], mask bool [B, L]); MIND lists clicks oldest first.
    """
    offsets = imps.history_offsets
    end = offsets[rows + 1]
    begin = np.maximum(offsets[rows], end - length)
    take = end - begin  # (B,)
    position = np.arange(length)
    mask = position[None, :] < take[:, None]  # (B, L)
    if len(imps.history) == 0:
        return np.zeros(mask.shape, dtype=np.int64), mask
    flat = np.minimum(begin[:, None] + position[None, :], len(imps.history) - 1)
    history = np.where(mask, imps.history[flat], 0).astype(np.int64)
    return history, mask
