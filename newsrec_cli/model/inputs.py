"""Model inputs gathered from `Impressions` with numpy (no Python loop per impression)."""

from __future__ import annotations

import numpy as np

from newsrec_cli.mind import Impressions

NEEDED_CHUNK = 1 << 22


def needed_news(*parts: Impressions) -> np.ndarray:
    """Distinct news indices (> 0) that the impressions' candidates and histories use, sorted.

    Marked in a boolean table a slice at a time: no concatenated or sorted copy of the (possibly
    memory-mapped, MIND-large: ~170M entries) index arrays.
    """
    arrays = [a for imps in parts for a in (imps.candidates, imps.history) if len(a)]
    if not arrays:
        return np.zeros(0, dtype=np.int64)
    seen = np.zeros(max(int(a.max()) for a in arrays) + 1, dtype=bool)
    for a in arrays:
        for start in range(0, len(a), NEEDED_CHUNK):
            seen[a[start : start + NEEDED_CHUNK]] = True
    seen[0] = False
    return np.flatnonzero(seen).astype(np.int64)


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
