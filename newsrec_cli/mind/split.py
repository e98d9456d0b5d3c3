"""Validation splits that keep every impression whole: by time, or by impression at random."""

from __future__ import annotations

import numpy as np

from newsrec_cli.errors import InputError
from newsrec_cli.mind.behaviors import Impressions

DAY = np.timedelta64(1, "D")


def split_by_time(imps: Impressions, valid_days: int | None = None) -> tuple[Impressions, Impressions]:
    """Train on everything before the last `valid_days` calendar days (default 1), validate on those.

    This mirrors MIND itself (train on days 1-6, validate on day 7), so validation news are
    mostly fresh, as they will be in use.
    """
    if len(imps) == 0:
        raise InputError("no impressions to split", path=imps.source or None)
    days = imps.times.astype("datetime64[D]")
    last = days.max()
    cutoff = last - (valid_days or 1) + 1
    valid = days >= cutoff
    if valid.all():
        first = days.min()
        span = int((last - first) / DAY) + 1
        raise InputError(
            f"cannot split by time: the impressions span {span} day(s) and valid_days={valid_days or 1} "
            "leaves nothing to train on; use fewer --valid-days, or --split impression for data "
            "without usable times",
            path=imps.source or None,
            field="Time",
        )
    return imps.subset(~valid), imps.subset(valid)


def split_by_impression(
    imps: Impressions, valid_fraction: float = 0.1, seed: int = 42
) -> tuple[Impressions, Impressions]:
    """Hold out a random share of whole impressions (never candidates of one impression).

    For data without usable times only: unlike a split by time, the same news and users appear
    on both sides, so its numbers are optimistic for fresh news. Say so wherever they are shown.
    """
    n = len(imps)
    n_valid = int(round(n * valid_fraction))
    if n_valid < 1 or n_valid >= n:
        raise InputError(f"cannot hold out {valid_fraction:.0%} of {n} impressions", path=imps.source or None)
    order = np.random.default_rng(seed).permutation(n)
    valid = np.zeros(n, dtype=bool)
    valid[order[:n_valid]] = True
    return imps.subset(~valid), imps.subset(valid)
