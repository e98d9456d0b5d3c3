"""MIND leaderboard prediction files: `ImpressionID [r1,r2,...]`, one line per impression.

`r_j` is the 1-based rank of the j-th candidate in the order behaviors.tsv lists them (rank 1 =
highest score). Ranks come from `metrics.ranks_from_scores`, so ties are broken exactly as the
metrics break them, and scoring a file read back (score = 1/rank, as the official scorer does)
gives the same MRR and nDCG as scoring in memory; AUC too, unless an impression had tied scores
(a rank file cannot express a tie).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from newsrec_cli import atomic
from newsrec_cli.errors import InputError
from newsrec_cli.evaluate.metrics import impression_chunks, ranks_from_scores
from newsrec_cli.mind.behaviors import INT64_MAX, Impressions, gather_segments

PREDICTION_FILE = "prediction.txt"
PREDICTION_ZIP = "prediction.zip"


CHUNK_CANDIDATES = 1 << 20  # candidates formatted per step: a few arrays of this size at once
READ_CHUNK = 1 << 24  # bytes of a prediction file parsed per step
POW10 = 10 ** np.arange(19, dtype=np.int64)  # 1 .. 10^18: every int64 digit place
_DIGIT, _SPACE, _OPEN, _CLOSE, _COMMA, _NEWLINE, _CR = 48, 32, 91, 93, 44, 10, 13


def _digits(values: np.ndarray) -> np.ndarray:
    """Decimal digits of each non-negative integer (0 has one)."""
    return np.maximum(np.searchsorted(POW10, values, side="right"), 1).astype(np.int64)


def _put_digits(buf: np.ndarray, start: np.ndarray, values: np.ndarray, lengths: np.ndarray) -> None:
    """Write each value's decimal digits into `buf` at `start` (vectorised, one pass per digit place)."""
    for place in range(int(lengths.max(initial=0))):
        has = lengths > place
        buf[start[has] + lengths[has] - 1 - place] = _DIGIT + (values[has] // POW10[place]) % 10


def prediction_bytes(impression_ids: np.ndarray, offsets: np.ndarray, ranks: np.ndarray) -> bytes:
    """The lines `ImpressionID [r1,r2,...]` of impressions whose ranks are `ranks[offsets[i]:offsets[i+1]]`.

    Built as one byte buffer with numpy (digits placed by position), not a string per line.
    """
    ids = np.asarray(impression_ids, dtype=np.int64)
    offsets = np.asarray(offsets, dtype=np.int64) - int(offsets[0])
    ranks = np.asarray(ranks, dtype=np.int64)[: int(offsets[-1])]
    n = len(ids)
    counts = np.diff(offsets)
    id_len, rank_len = _digits(ids), _digits(ranks)
    rank_cum = np.zeros(len(ranks) + 1, dtype=np.int64)
    np.cumsum(rank_len, out=rank_cum[1:])
    # "ID [" + digits + commas + "]\n"
    line_len = id_len + 2 + (rank_cum[offsets[1:]] - rank_cum[offsets[:-1]]) + np.maximum(counts - 1, 0) + 2
    line_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(line_len, out=line_start[1:])
    buf = np.full(int(line_start[-1]), _COMMA, dtype=np.uint8)  # what is left unwritten is a comma
    _put_digits(buf, line_start[:-1], ids, id_len)
    buf[line_start[:-1] + id_len] = _SPACE
    buf[line_start[:-1] + id_len + 1] = _OPEN
    # rank k of impression i starts after its line's "ID [", the digits and commas before it
    first = line_start[:-1] + id_len + 2 - rank_cum[offsets[:-1]] - offsets[:-1]
    where = np.repeat(first, counts) + rank_cum[:-1] + np.arange(len(ranks), dtype=np.int64)
    _put_digits(buf, where, ranks, rank_len)
    buf[line_start[1:] - 2] = _CLOSE
    buf[line_start[1:] - 1] = _NEWLINE
    return buf.tobytes()


def format_predictions(impression_ids: np.ndarray, offsets: np.ndarray, ranks: np.ndarray) -> str:
    """The text of a prediction file, impressions in the given order."""
    return prediction_bytes(impression_ids, offsets, ranks).decode("ascii")


def write_predictions(
    out_dir: Path, impressions: Impressions, scores: np.ndarray, name: str = "prediction"
) -> tuple[Path, Path]:
    """Write NAME.txt and NAME.zip (prediction.txt alone inside, as the leaderboard wants it);
    `name` says the protocol where it is not the offline one (prediction-replay).

    Lines follow the order of behaviors.tsv, which the official scorer requires. Ranks and text
    are made per chunk of impressions and streamed to disk, so memory stays a few chunks.
    """
    if len(scores) != len(impressions.candidates):
        raise ValueError(f"{len(scores)} scores for {len(impressions.candidates)} candidates")
    offsets = impressions.candidate_offsets
    txt_path = out_dir / f"{name}.txt"
    zip_path = out_dir / f"{name}.zip"
    with atomic.atomic_handle(txt_path) as handle:
        for lo, hi in impression_chunks(offsets, CHUNK_CANDIDATES):
            a, b = int(offsets[lo]), int(offsets[hi])
            chunk_offsets = np.asarray(offsets[lo : hi + 1]) - a
            ranks = ranks_from_scores(np.asarray(scores[a:b]), chunk_offsets)
            handle.write(prediction_bytes(impressions.impression_ids[lo:hi], chunk_offsets, ranks))
    with (
        atomic.atomic_handle(zip_path) as handle,
        zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        archive.write(txt_path, PREDICTION_FILE)
    return txt_path, zip_path


@dataclass
class Predictions:
    """A prediction file as flat arrays, lines in file order: line j is impression
    `impression_ids[j]` on line `lines[j]`, with ranks `ranks[offsets[j]:offsets[j+1]]`."""

    impression_ids: np.ndarray  # int64 [P]
    lines: np.ndarray  # int64 [P], 1-based
    offsets: np.ndarray  # int64 [P+1]
    ranks: np.ndarray  # int64 [R]

    def __len__(self) -> int:
        return len(self.impression_ids)


def read_predictions(path: Path) -> Predictions:
    """Parse a prediction file (or a zip holding prediction.txt).

    Files in the canonical form (`ID [r1,r2]`, as newsrec and MIND's own code write them) are
    parsed with numpy, a chunk of bytes at a time; anything else (spaces inside the brackets,
    lines out of the usual shape) goes through the line-by-line reader, which also words the
    errors. Malformed lines and repeated impressions are InputErrors naming the file and line.
    """
    data = _read_bytes(path)
    parsed = _parse_canonical(data)
    if parsed is None:
        parsed = _parse_lines(path, _decode(path, data))
    _check_repeats(path, parsed)
    if not len(parsed):
        raise InputError("no predictions in the file", path=path)
    return parsed


def _parse_canonical(data: bytes) -> Predictions | None:
    """The vectorised reader; None when some line is not in the canonical form."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    whole = np.frombuffer(data, dtype=np.uint8)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    lines_before = 0
    start = 0
    while start < len(whole):
        stop = min(start + READ_CHUNK, len(whole))
        if stop < len(whole):
            newline = np.flatnonzero(whole[stop - 1 :] == _NEWLINE)
            stop = stop + int(newline[0]) if len(newline) else len(whole)
        chunk = _parse_chunk(whole[start:stop])
        if chunk is None:
            return None
        ids, lines, counts, ranks = chunk
        parts.append((ids, lines + lines_before, counts, ranks))
        lines_before += int(np.count_nonzero(whole[start:stop] == _NEWLINE))
        start = stop
    if not parts:
        return Predictions(
            *(np.zeros(0, dtype=np.int64) for _ in range(2)), np.zeros(1, np.int64), np.zeros(0, np.int64)
        )
    counts = np.concatenate([p[2] for p in parts])
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Predictions(
        impression_ids=np.concatenate([p[0] for p in parts]),
        lines=np.concatenate([p[1] for p in parts]),
        offsets=offsets,
        ranks=np.concatenate([p[3] for p in parts]),
    )


def _parse_chunk(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(IDs, 1-based line numbers within the chunk, rank counts, ranks) of whole lines, or None."""
    if (b == _CR).any():
        cr = np.flatnonzero(b == _CR)
        if (cr + 1 >= len(b)).any() or (b[np.minimum(cr + 1, len(b) - 1)] != _NEWLINE).any():
            return None
        b = b[b != _CR]  # CRLF line endings
    if len(b) and b[-1] != _NEWLINE:
        b = np.append(b, np.uint8(_NEWLINE))
    is_digit = (b >= _DIGIT) & (b <= _DIGIT + 9)
    if not (is_digit | (b == _SPACE) | (b == _OPEN) | (b == _CLOSE) | (b == _COMMA) | (b == _NEWLINE)).all():
        return None
    ends = np.flatnonzero(b == _NEWLINE)
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    used = ends > starts  # blank lines are skipped, as the line reader skips them
    line_no = np.flatnonzero(used) + 1
    starts, ends = starts[used], ends[used]
    n = len(starts)

    def one_per_line(byte: int) -> np.ndarray | None:
        pos = np.flatnonzero(b == byte)
        if len(pos) != n or (np.searchsorted(ends, pos) != np.arange(n)).any():
            return None
        return pos

    space, opening, closing = one_per_line(_SPACE), one_per_line(_OPEN), one_per_line(_CLOSE)
    if space is None or opening is None or closing is None:
        return None
    if (space <= starts).any() or (opening != space + 1).any() or (closing != ends - 1).any():
        return None
    commas = np.flatnonzero(b == _COMMA)
    if len(commas):
        line = np.searchsorted(ends, commas)
        if (commas <= opening[line]).any() or not (is_digit[commas - 1] & is_digit[commas + 1]).all():
            return None
    # Every line is now ID, " [", digits and commas (no two commas together), "]": digit runs
    # are the ID and the ranks, in order.
    run_start = is_digit & ~np.concatenate(([False], is_digit[:-1]))
    digit_pos = np.flatnonzero(is_digit)
    run_first = np.flatnonzero(run_start[digit_pos])
    run_len = np.diff(np.append(run_first, len(digit_pos)))
    if (run_len > 18).any():
        return None  # beyond int64: the line reader words it
    place = np.repeat(run_first + run_len, run_len) - np.arange(len(digit_pos)) - 1
    values = (
        np.add.reduceat((b[digit_pos] - _DIGIT).astype(np.int64) * POW10[place], run_first)
        if len(run_first)
        else np.zeros(0, np.int64)
    )
    runs_per_line = np.bincount(np.searchsorted(ends, digit_pos[run_first]), minlength=n)
    first_run = np.zeros(n, dtype=np.int64)
    np.cumsum(runs_per_line[:-1], out=first_run[1:])
    is_id = np.zeros(len(values), dtype=bool)
    is_id[first_run] = True
    return values[is_id], line_no, runs_per_line - 1, values[~is_id]


def _parse_lines(path: Path, text: str) -> Predictions:
    """The line-by-line reader: lenient about spaces, and the one that words format errors."""
    ids: list[int] = []
    lines: list[int] = []
    counts: list[int] = []
    ranks: list[int] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        head, _, rest = line.partition(" ")
        rest = rest.replace(" ", "")
        if not head.isdigit() or not (rest.startswith("[") and rest.endswith("]")):
            raise InputError(
                f"expected 'ImpressionID [r1,r2,...]', found {_clip(line)!r}", path=path, line=number
            )
        body = rest[1:-1]
        try:
            line_ranks = [int(tok) for tok in body.split(",")] if body else []
        except ValueError:
            raise InputError(
                f"ranks must be integers, found {_clip(rest)!r}", path=path, line=number
            ) from None
        too_large = [value for value in (int(head), *line_ranks) if value > INT64_MAX]
        if too_large:
            what = "impression ID" if too_large[0] == int(head) and int(head) > INT64_MAX else "rank"
            raise InputError(
                f"{what} {_clip(str(too_large[0]), 30)} is too large (at most {INT64_MAX}, 19 digits)",
                path=path,
                line=number,
            )
        ids.append(int(head))
        lines.append(number)
        counts.append(len(line_ranks))
        ranks.extend(line_ranks)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Predictions(
        impression_ids=np.asarray(ids, dtype=np.int64),
        lines=np.asarray(lines, dtype=np.int64),
        offsets=offsets,
        ranks=np.asarray(ranks, dtype=np.int64),
    )


def _check_repeats(path: Path, predictions: Predictions) -> None:
    """An impression on two lines: named at its second line (the earliest such line in the file)."""
    order = np.argsort(predictions.impression_ids, kind="stable")
    ids = predictions.impression_ids[order]
    repeat = np.zeros(len(ids), dtype=bool)
    repeat[1:] = ids[1:] == ids[:-1]
    if not repeat.any():
        return
    first_of = order[np.maximum.accumulate(np.where(~repeat, np.arange(len(ids)), 0))]
    second = order[repeat]
    k = int(np.argmin(predictions.lines[second]))
    imp = int(predictions.impression_ids[second[k]])
    first_line = int(predictions.lines[first_of[repeat][k]])
    raise InputError(
        f"impression {imp} appears twice (first on line {first_line})",
        path=path,
        line=int(predictions.lines[second[k]]),
    )


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise InputError("prediction file not found", path=path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".txt")]
            if len(names) != 1:
                raise InputError(f"a prediction zip holds one .txt file, found {len(names)}", path=path)
            return archive.read(names[0])
    return path.read_bytes()


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width] + "..."


def align_ranks(
    path: Path, predictions: Predictions, impressions: Impressions, *, scope: str | None = None
) -> np.ndarray:
    """Flat int64 ranks aligned with `impressions.candidates`, after checking the file covers them.

    `scope` says which impressions these are (e.g. "the held-out part of ..."), for the errors.

    Errors (one line each, naming file and line): an impression the split lacks, one the file
    lacks, a wrong number of ranks, ranks that are not a permutation of 1..n. All checks are
    vectorised (sorted IDs and searchsorted), so a 2.4M-line file takes seconds.
    """
    where = (
        f"the {len(impressions):,} impressions scored ({scope})"
        if scope
        else impressions.source or "the split"
    )
    target_ids = np.asarray(impressions.impression_ids, dtype=np.int64)
    target_order = np.argsort(target_ids, kind="stable")
    sorted_target = target_ids[target_order]
    pos = np.searchsorted(sorted_target, predictions.impression_ids)
    known = (
        sorted_target[np.minimum(pos, len(sorted_target) - 1)] == predictions.impression_ids
        if len(sorted_target)
        else np.zeros(len(predictions), bool)
    )
    if not known.all():
        j = int(np.argmin(known))
        raise InputError(
            f"impression {int(predictions.impression_ids[j])} is not among {where}",
            path=path,
            line=int(predictions.lines[j]),
        )
    # row of the file for each target impression (-1: none)
    pred_order = np.argsort(predictions.impression_ids, kind="stable")
    sorted_pred = predictions.impression_ids[pred_order]
    at = np.searchsorted(sorted_pred, target_ids)
    found = (at < len(sorted_pred)) & (
        sorted_pred[np.minimum(at, max(len(sorted_pred) - 1, 0))] == target_ids
    )
    if not found.all():
        missing = target_ids[~found]
        first = ", ".join(str(m) for m in missing[:5].tolist())
        raise InputError(
            f"{len(missing)} of {len(impressions)} impressions of {scope or impressions.source or 'the split'} "
            f"have no line (first: {first})",
            path=path,
        )
    row = pred_order[at]
    pred_counts = np.diff(predictions.offsets)[row]
    counts = impressions.candidate_counts
    wrong = pred_counts != counts
    if wrong.any():
        i = int(np.argmax(wrong))
        raise InputError(
            f"impression {int(target_ids[i])} has {int(pred_counts[i])} ranks but {int(counts[i])} candidates",
            path=path,
            line=int(predictions.lines[row[i]]),
        )
    _, take = gather_segments(predictions.offsets, row)
    ranks = predictions.ranks[take]
    _check_permutations(path, predictions.lines[row], impressions, ranks)
    return ranks


def _check_permutations(path: Path, lines: np.ndarray, impressions: Impressions, ranks: np.ndarray) -> None:
    """Every impression's ranks are 1..n once each (vectorised; the first offender is named).

    `lines` holds the file line of each of `impressions`.
    """
    counts = impressions.candidate_counts
    offsets = np.asarray(impressions.candidate_offsets)
    bad = np.zeros(len(impressions), dtype=bool)
    for lo, hi in impression_chunks(offsets, CHUNK_CANDIDATES):
        a, b = int(offsets[lo]), int(offsets[hi])
        part, local = ranks[a:b], offsets[lo : hi + 1] - a
        segment = np.repeat(np.arange(hi - lo), counts[lo:hi])
        in_range = (part >= 1) & (part <= counts[lo:hi][segment])
        # Slot local[i] + r - 1 is hit once per impression exactly when ranks are a permutation.
        slot = np.where(in_range, local[segment] + part - 1, 0)
        hits = np.bincount(slot[in_range], minlength=len(part))
        chunk_bad = np.zeros(hi - lo, dtype=bool)
        chunk_bad[segment[~in_range]] = True
        if len(part):
            starts = local[:-1].clip(max=len(part) - 1)
            chunk_bad |= np.logical_or.reduceat(hits != 1, starts) & (counts[lo:hi] > 0)
        bad[lo:hi] = chunk_bad
    if bad.any():
        i = int(np.argmax(bad))
        imp = int(impressions.impression_ids[i])
        raise InputError(
            f"ranks of impression {imp} are not a permutation of 1..{counts[i]}",
            path=path,
            line=int(lines[i]),
        )


def scores_from_ranks(ranks: np.ndarray) -> np.ndarray:
    """The official scorer's score of a rank: 1 / rank."""
    return 1.0 / ranks.astype(np.float64)
