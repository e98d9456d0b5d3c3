"""Reader of MIND's behaviors.tsv into flat arrays with offsets (no object per candidate).

MIND-large has behaviors files of several GB, so the file is streamed in chunks of lines; each
chunk's IDs are factorised in C (pandas) and only the distinct tokens are parsed in Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from newsrec_cli.errors import InputError
from newsrec_cli.mind.lines import iter_rows
from newsrec_cli.mind.report import BadLine, ReadReport
from newsrec_cli.mind.vocab import Vocab

BEHAVIOR_COLUMNS = ("ImpressionID", "UserID", "Time", "History", "Impressions")
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
UNLABELED = -1
INT64_MAX = int(np.iinfo(np.int64).max)  # impression IDs are int64: a longer one is refused, not wrapped


@dataclass
class Impressions:
    """Impressions as flat arrays. Impression i has history `history[history_offsets[i]:
    history_offsets[i+1]]` and candidates `candidates[candidate_offsets[i]:candidate_offsets[i+1]]`
    with `labels` alongside (1 clicked, 0 not, -1 unlabeled test). News and users are indices into
    the shared vocabularies (0 is padding, never used for a real ID).
    """

    impression_ids: np.ndarray  # int64 [I]
    users: np.ndarray  # int32 [I]
    times: np.ndarray  # datetime64[s] [I]
    history_offsets: np.ndarray  # int64 [I+1]
    history: np.ndarray  # int32 [H]
    candidate_offsets: np.ndarray  # int64 [I+1]
    candidates: np.ndarray  # int32 [C]
    labels: np.ndarray  # int8 [C]
    news_vocab: Vocab
    user_vocab: Vocab
    source: str = ""

    def __len__(self) -> int:
        return len(self.impression_ids)

    @property
    def labeled(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())

    @property
    def history_lengths(self) -> np.ndarray:
        return np.diff(self.history_offsets)

    @property
    def candidate_counts(self) -> np.ndarray:
        return np.diff(self.candidate_offsets)

    @property
    def candidate_impression(self) -> np.ndarray:
        """Impression index of each candidate, int64 [C]."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.candidate_counts)

    def history_of(self, i: int) -> np.ndarray:
        return self.history[self.history_offsets[i] : self.history_offsets[i + 1]]

    def candidates_of(self, i: int) -> np.ndarray:
        return self.candidates[self.candidate_offsets[i] : self.candidate_offsets[i + 1]]

    def labels_of(self, i: int) -> np.ndarray:
        return self.labels[self.candidate_offsets[i] : self.candidate_offsets[i + 1]]

    def subset(self, keep: np.ndarray) -> Impressions:
        """The impressions selected by a boolean mask or an index array, in that order."""
        idx = np.flatnonzero(keep) if keep.dtype == bool else np.asarray(keep, dtype=np.int64)
        h_off, h_take = gather_segments(self.history_offsets, idx)
        c_off, c_take = gather_segments(self.candidate_offsets, idx)
        return Impressions(
            impression_ids=self.impression_ids[idx],
            users=self.users[idx],
            times=self.times[idx],
            history_offsets=h_off,
            history=self.history[h_take],
            candidate_offsets=c_off,
            candidates=self.candidates[c_take],
            labels=self.labels[c_take],
            news_vocab=self.news_vocab,
            user_vocab=self.user_vocab,
            source=self.source,
        )

    @classmethod
    def concat(cls, parts: list[Impressions]) -> Impressions:
        """Impressions of several parts that share vocabularies, one after another."""
        first = parts[0]
        return Impressions(
            impression_ids=np.concatenate([p.impression_ids for p in parts]),
            users=np.concatenate([p.users for p in parts]),
            times=np.concatenate([p.times for p in parts]),
            history_offsets=_concat_offsets([p.history_offsets for p in parts]),
            history=np.concatenate([p.history for p in parts]),
            candidate_offsets=_concat_offsets([p.candidate_offsets for p in parts]),
            candidates=np.concatenate([p.candidates for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            news_vocab=first.news_vocab,
            user_vocab=first.user_vocab,
            source=first.source,
        )


DISTINCT_CHUNK = 1 << 22
TAIL = 1 << 16  # bytes read from the end of a file to see whether its last line is whole
CUT_EVIDENCE = 1000  # candidates before a cut last one that show whether the file is labelled
CUT = "the last line looks truncated (the file ends without a line ending)"


def distinct_news(*parts: Impressions) -> np.ndarray:
    """Distinct news indices (> 0) that the impressions' candidates and histories use, int64, sorted.

    Marked in a boolean table a slice at a time: no concatenated or sorted copy of the (possibly
    memory-mapped; MIND-large: ~170M entries) index arrays.
    """
    arrays = [a for imps in parts for a in (imps.candidates, imps.history) if len(a)]
    if not arrays:
        return np.zeros(0, dtype=np.int64)
    seen = np.zeros(max(int(a.max()) for a in arrays) + 1, dtype=bool)
    for a in arrays:
        for start in range(0, len(a), DISTINCT_CHUNK):
            seen[a[start : start + DISTINCT_CHUNK]] = True
    seen[0] = False
    return np.flatnonzero(seen).astype(np.int64)


def gather_segments(offsets: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New offsets and the flat positions that take segments `idx` of an offsets array."""
    starts = offsets[idx]
    lengths = offsets[idx + 1] - starts
    new_offsets = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    # position k of the output takes starts[seg] + (k - new_offsets[seg])
    take = np.arange(new_offsets[-1], dtype=np.int64) + np.repeat(starts - new_offsets[:-1], lengths)
    return new_offsets, take


def _concat_offsets(parts: list[np.ndarray]) -> np.ndarray:
    out = [np.zeros(1, dtype=np.int64)]
    base = 0
    for off in parts:
        out.append(off[1:] + base)
        base += int(off[-1])
    return np.concatenate(out)


def read_behaviors(
    path: str | Path,
    news_vocab: Vocab,
    user_vocab: Vocab,
    *,
    on_bad_lines: Literal["error", "skip"] = "error",
    chunk_lines: int = 50_000,
    report: ReadReport | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Impressions:
    """Read one behaviors.tsv, labelled (`N1-1 N2-0`) or unlabeled test (`N1 N2`).

    New news and user IDs are added to the vocabularies. A malformed line raises InputError
    naming file, line and field; with on_bad_lines="skip" it is left out and listed in `report`.
    `progress(bytes read, file size)` is called after each chunk of lines.
    """
    path = Path(path)
    report = report if report is not None else ReadReport(path=str(path))
    size = path.stat().st_size if progress is not None and path.is_file() else 0
    done = 0
    parts: list[Impressions] = []
    line_numbers: list[np.ndarray] = []
    chunk: list[tuple[int, list[str]]] = []
    labelled = False  # a labelled candidate was seen in an earlier chunk

    def parse(last: bool) -> None:
        nonlocal labelled
        cut = last and _unterminated(path)
        part, numbers = _parse_chunk(
            chunk, path, news_vocab, user_vocab, on_bad_lines, report, cut_last=cut, labelled=labelled
        )
        labelled = labelled or bool((part.labels != UNLABELED).any())
        parts.append(part)
        line_numbers.append(numbers)

    for number, line in iter_rows(path, on_bad_lines, report):
        # A full chunk is parsed when the next line comes, so the file's last line is always in
        # the last chunk (the one that may have been cut short).
        if len(chunk) >= chunk_lines:
            parse(last=False)
            if progress is not None:
                # characters, not bytes, but MIND's behaviors are ASCII: close enough for a bar
                done += sum(len(row) for _, fields in chunk for row in fields) + 5 * len(chunk)
                progress(min(done, size), size)
            chunk = []
        report.lines += 1
        chunk.append((number, line.split("\t")))
    if chunk or not parts:
        parse(last=True)
    imps = Impressions.concat(parts) if len(parts) > 1 else parts[0]
    imps.source = str(path)
    if progress is not None:
        progress(size, size)
    return _check_unique_ids(imps, np.concatenate(line_numbers), path, on_bad_lines, report)


def _unterminated(path: Path) -> bool:
    """Whether the file's last line has text but no line ending: a copy or download cut short."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(0, size - TAIL))
        tail = handle.read()
    return bool(tail) and not tail.endswith(b"\n") and bool(tail.rpartition(b"\n")[2].strip())


def _check_unique_ids(
    imps: Impressions, line_numbers: np.ndarray, path: Path, mode: str, report: ReadReport
) -> Impressions:
    """A repeated impression ID is a bad line (the first occurrence is kept in skip mode)."""
    order = np.argsort(imps.impression_ids, kind="stable")
    ids = imps.impression_ids[order]
    repeat = np.zeros(len(ids), dtype=bool)
    repeat[1:] = ids[1:] == ids[:-1]
    if not repeat.any():
        return imps
    first_pos = order[np.maximum.accumulate(np.where(~repeat, np.arange(len(ids)), 0))]
    lines, firsts = line_numbers[order[repeat]].tolist(), line_numbers[first_pos[repeat]].tolist()
    dups = sorted(zip(lines, firsts, ids[repeat].tolist(), strict=True))
    if mode == "error":
        line, first, dup = dups[0]
        raise InputError(
            f"duplicate impression ID {dup} (first on line {first})",
            path=path,
            line=line,
            field="ImpressionID",
        )
    for line, first, dup in dups:
        report.skipped.append(
            BadLine(str(path), line, "ImpressionID", f"duplicate impression ID {dup} (first on line {first})")
        )
    keep = np.ones(len(imps), dtype=bool)
    keep[order[repeat]] = False
    return imps.subset(keep)


class _Bad:
    """Collects bad lines of a chunk: raise at once (error mode) or mark them for removal."""

    def __init__(
        self, path: Path, mode: str, report: ReadReport, line_numbers: list[int], cut_row: int | None = None
    ) -> None:
        self.path, self.mode, self.report, self.numbers = path, mode, report, line_numbers
        self.cut_row = cut_row  # the file's last line, without a line ending
        self.rows: set[int] = set()

    def __call__(self, row: int, field: str, reason: str) -> None:
        if row in self.rows:
            return
        if row == self.cut_row:  # whatever is wrong with it, the likely cause is a file cut short
            reason = f"{CUT}: {reason}"
        if self.mode == "error":
            raise InputError(reason, path=self.path, line=self.numbers[row], field=field)
        self.rows.add(row)
        self.report.skipped.append(BadLine(str(self.path), self.numbers[row], field, reason))


def _parse_chunk(
    chunk: list[tuple[int, list[str]]],
    path: Path,
    news_vocab: Vocab,
    user_vocab: Vocab,
    mode: str,
    report: ReadReport,
    *,
    cut_last: bool = False,
    labelled: bool = False,
) -> tuple[Impressions, np.ndarray]:
    """The chunk's impressions and the line number of each one kept.

    `cut_last`: the chunk ends with the file's last line, which has no line ending; `labelled`:
    an earlier chunk had labelled candidates.
    """
    numbers = [n for n, _ in chunk]
    bad = _Bad(path, mode, report, numbers, len(chunk) - 1 if cut_last else None)
    imp_ids = np.zeros(len(chunk), dtype=np.int64)
    users = np.zeros(len(chunk), dtype=np.int32)
    times_raw: list[str] = []
    hist_tokens: list[str] = []
    hist_lens = np.zeros(len(chunk), dtype=np.int64)
    cand_tokens: list[str] = []
    cand_lens = np.zeros(len(chunk), dtype=np.int64)

    # Phase 1: per line, only what needs Python (column count, impression ID, token splitting).
    for r, (_, row) in enumerate(chunk):
        if len(row) != len(BEHAVIOR_COLUMNS):
            bad(r, "columns", f"expected {len(BEHAVIOR_COLUMNS)} tab-separated columns, found {len(row)}")
            row = (row + [""] * 5)[:5]
        imp, user, time, hist, cands = row
        imp = imp.strip()
        if imp.isascii() and imp.isdigit() and int(imp) <= INT64_MAX:
            imp_ids[r] = int(imp)
        elif imp.isascii() and imp.isdigit():
            bad(r, "ImpressionID", f"too large: {imp[:30]} (at most {INT64_MAX}, 19 digits)")
        else:
            bad(r, "ImpressionID", f"not an integer: {imp!r}")
        if not user.strip():
            bad(r, "UserID", "empty user ID")
        users[r] = user_vocab.add(user.strip())
        times_raw.append(time.strip())
        toks = hist.split()
        hist_lens[r] = len(toks)
        hist_tokens.extend(toks)
        toks = cands.split()
        if not toks:
            bad(r, "Impressions", "no candidates")
        cand_lens[r] = len(toks)
        cand_tokens.extend(toks)

    # Phase 2: vectorised checks over the chunk.
    times = pd.to_datetime(pd.Series(times_raw, dtype=object), format=TIME_FORMAT, errors="coerce")
    for r in np.flatnonzero(times.isna().to_numpy()):
        bad(int(r), "Time", f"not a time like 11/15/2019 8:55:22 AM: {times_raw[r]!r}")
    times_arr = times.to_numpy(dtype="datetime64[s]", na_value=np.datetime64(0, "s"))

    hist_offsets = np.concatenate([[0], np.cumsum(hist_lens)]).astype(np.int64)
    history = _news_indices(hist_tokens, news_vocab)

    cand_offsets = np.concatenate([[0], np.cumsum(cand_lens)]).astype(np.int64)
    if cut_last and len(chunk) and cand_lens[-1]:
        _check_cut(cand_tokens, labelled, lambda reason: bad(len(chunk) - 1, "Impressions", reason))
    codes, uniques = pd.factorize(np.asarray(cand_tokens, dtype=object))
    u_news = np.zeros(len(uniques), dtype=np.int32)
    u_label = np.zeros(len(uniques), dtype=np.int8)
    u_bad: dict[int, str] = {}
    for k, token in enumerate(uniques):
        news_id, sep, label = token.rpartition("-")
        if not sep:
            u_news[k], u_label[k] = news_vocab.add(token), UNLABELED
        elif label in ("0", "1") and news_id:
            u_news[k], u_label[k] = news_vocab.add(news_id), int(label)
        else:
            u_bad[k] = f"candidate {token!r}: expected NewsID-0 or NewsID-1 (or a bare NewsID in a test set)"
    candidates = u_news[codes] if len(codes) else np.zeros(0, dtype=np.int32)
    labels = u_label[codes] if len(codes) else np.zeros(0, dtype=np.int8)
    cand_row = np.repeat(np.arange(len(chunk)), cand_lens)
    if u_bad:
        bad_codes = np.fromiter(u_bad, dtype=np.int64)
        for pos in np.flatnonzero(np.isin(codes, bad_codes)):
            bad(int(cand_row[pos]), "Impressions", u_bad[int(codes[pos])])
    # A file mixes labelled and unlabeled candidates only by mistake: name the first odd line.
    if len(labels) and (labels == UNLABELED).any() and (labels != UNLABELED).any():
        unlabeled_rows = set(cand_row[labels == UNLABELED].tolist())
        labeled_rows = set(cand_row[labels != UNLABELED].tolist())
        minority = unlabeled_rows if len(unlabeled_rows) <= len(labeled_rows) else labeled_rows
        for r in sorted(minority - bad.rows):
            bad(int(r), "Impressions", "labelled and unlabeled candidates mixed in one file")

    imps = Impressions(
        impression_ids=imp_ids,
        users=users,
        times=times_arr,
        history_offsets=hist_offsets,
        history=history,
        candidate_offsets=cand_offsets,
        candidates=candidates.astype(np.int32),
        labels=labels.astype(np.int8),
        news_vocab=news_vocab,
        user_vocab=user_vocab,
    )
    kept_lines = np.asarray(numbers, dtype=np.int64)
    if bad.rows:
        keep = np.ones(len(chunk), dtype=bool)
        keep[list(bad.rows)] = False
        imps = imps.subset(keep)
        kept_lines = kept_lines[keep]
    return imps, kept_lines


def _has_label(token: str) -> bool:
    news_id, sep, label = token.rpartition("-")
    return bool(sep and news_id) and label in ("0", "1")


def _check_cut(tokens: list[str], labelled: bool, bad: Callable[[str], None]) -> None:
    """A last line without a line ending whose last candidate lacks the label the others have
    was cut short (a copy or download that stopped): say so, rather than "mixed" or "bad token".
    The candidates just before it (at most CUT_EVIDENCE) show whether the file is labelled.
    """
    last = tokens[-1]
    if _has_label(last):
        return
    if labelled or any(_has_label(t) for t in tokens[-CUT_EVIDENCE:-1]):
        bad(
            f"it ends inside the candidate {last[:40]!r} (no -0/-1 label, as the other candidates "
            "have); restore the whole file, or remove that line"
        )


def _news_indices(tokens: list[str], vocab: Vocab) -> np.ndarray:
    """Vocabulary index of each token; distinct tokens are looked up once."""
    if not tokens:
        return np.zeros(0, dtype=np.int32)
    codes, uniques = pd.factorize(np.asarray(tokens, dtype=object))
    lookup = np.fromiter((vocab.add(u) for u in uniques), dtype=np.int32, count=len(uniques))
    return lookup[codes]
