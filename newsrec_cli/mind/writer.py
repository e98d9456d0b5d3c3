"""Writing MIND files: the output folder, the time format of behaviors.tsv and impressions back to lines."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from newsrec_cli import atomic
from newsrec_cli.errors import InputError
from newsrec_cli.mind.behaviors import UNLABELED, Impressions


def require_empty_folder(out: Path, force: bool) -> None:
    """Refuse to write a dataset into a folder that holds files already (another dataset, say)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not force:
        raise InputError("output folder exists and is not empty; pass --force to write into it", path=out)


def format_time(seconds: int) -> str:
    """Seconds since the Unix epoch as MIND writes them: `11/15/2019 8:55:22 AM` (no zero padding)."""
    days, rest = divmod(int(seconds), 86_400)
    date = np.datetime64(days, "D").item()
    hour, rest = divmod(rest, 3600)
    minute, second = divmod(rest, 60)
    half = "AM" if hour < 12 else "PM"
    return f"{date.month}/{date.day}/{date.year} {hour % 12 or 12}:{minute:02d}:{second:02d} {half}"


def behavior_lines(imps: Impressions) -> Iterator[str]:
    """One behaviors.tsv line (with newline) per impression, in order.

    Labelled candidates are written `ID-1`/`ID-0`, unlabeled test candidates as the bare ID.
    """
    news = imps.news_vocab.ids
    users = imps.user_vocab.ids
    seconds = imps.times.astype("datetime64[s]").astype(np.int64)
    suffix = {1: "-1", 0: "-0", UNLABELED: ""}
    cand_tokens = [
        news[n] + suffix[lab] for n, lab in zip(imps.candidates.tolist(), imps.labels.tolist(), strict=True)
    ]
    hist_tokens = [news[n] for n in imps.history.tolist()]
    h_off = imps.history_offsets.tolist()
    c_off = imps.candidate_offsets.tolist()
    for i, (imp_id, user) in enumerate(zip(imps.impression_ids.tolist(), imps.users.tolist(), strict=True)):
        history = " ".join(hist_tokens[h_off[i] : h_off[i + 1]])
        cands = " ".join(cand_tokens[c_off[i] : c_off[i + 1]])
        yield f"{imp_id}\t{users[user]}\t{format_time(seconds[i])}\t{history}\t{cands}\n"


def write_lines(path: Path, lines: Iterator[str], on_line: Callable[[], None] | None = None) -> int:
    """Write lines to `path` atomically, so an interrupted write leaves no half file."""
    count = 0
    with atomic.text_handle(path) as handle:
        for line in lines:
            handle.write(line)
            count += 1
            if on_line is not None:
                on_line()
    return count
