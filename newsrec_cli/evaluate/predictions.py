"""MIND leaderboard prediction files: `ImpressionID [r1,r2,...]`, one line per impression.

`r_j` is the 1-based rank of the j-th candidate in the order behaviors.tsv lists them (rank 1 =
highest score). Ranks come from `metrics.ranks_from_scores`, so ties are broken exactly as the
metrics break them, and scoring a file read back (score = 1/rank, as the official scorer does)
gives the same MRR and nDCG as scoring in memory; AUC too, unless an impression had tied scores
(a rank file cannot express a tie).
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from newsrec_cli import atomic
from newsrec_cli.errors import InputError
from newsrec_cli.evaluate.metrics import ranks_from_scores
from newsrec_cli.mind.behaviors import Impressions

PREDICTION_FILE = "prediction.txt"
PREDICTION_ZIP = "prediction.zip"


def format_predictions(impression_ids: np.ndarray, offsets: np.ndarray, ranks: np.ndarray) -> str:
    """The text of a prediction file, impressions in the given order."""
    rank_text = ranks.astype(str)
    lines = [
        f"{int(imp)} [{','.join(rank_text[offsets[i] : offsets[i + 1]])}]\n"
        for i, imp in enumerate(impression_ids)
    ]
    return "".join(lines)


def write_predictions(out_dir: Path, impressions: Impressions, scores: np.ndarray) -> tuple[Path, Path]:
    """Write prediction.txt and prediction.zip (the file alone, as the leaderboard wants it).

    Lines follow the order of behaviors.tsv, which the official scorer requires.
    """
    if len(scores) != len(impressions.candidates):
        raise ValueError(f"{len(scores)} scores for {len(impressions.candidates)} candidates")
    ranks = ranks_from_scores(scores, impressions.candidate_offsets)
    text = format_predictions(impressions.impression_ids, impressions.candidate_offsets, ranks)
    txt_path = out_dir / PREDICTION_FILE
    zip_path = out_dir / PREDICTION_ZIP
    atomic.write_text(txt_path, text)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(PREDICTION_FILE, text)
    atomic.write_bytes(zip_path, buffer.getvalue())
    return txt_path, zip_path


@dataclass
class PredictionLine:
    line: int
    ranks: list[int]


def read_predictions(path: Path) -> dict[int, PredictionLine]:
    """Parse a prediction file (or a zip holding prediction.txt) into {impression ID: line}.

    Malformed lines and repeated impressions are InputErrors naming the file and line.
    """
    text = _read_text(path)
    out: dict[int, PredictionLine] = {}
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
            ranks = [int(tok) for tok in body.split(",")] if body else []
        except ValueError:
            raise InputError(
                f"ranks must be integers, found {_clip(rest)!r}", path=path, line=number
            ) from None
        imp = int(head)
        if imp in out:
            raise InputError(
                f"impression {imp} appears twice (first on line {out[imp].line})", path=path, line=number
            )
        out[imp] = PredictionLine(number, ranks)
    if not out:
        raise InputError("no predictions in the file", path=path)
    return out


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError("prediction file not found", path=path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".txt")]
            if len(names) != 1:
                raise InputError(f"a prediction zip holds one .txt file, found {len(names)}", path=path)
            data = archive.read(names[0])
    else:
        data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width] + "..."


def align_ranks(
    path: Path, predictions: dict[int, PredictionLine], impressions: Impressions, *, scope: str | None = None
) -> np.ndarray:
    """Flat int64 ranks aligned with `impressions.candidates`, after checking the file covers them.

    `scope` says which impressions these are (e.g. "the held-out part of ..."), for the errors.

    Errors (one line each, naming file and line): an impression the split lacks, one the file
    lacks, a wrong number of ranks, ranks that are not a permutation of 1..n.
    """
    wanted = {int(imp): i for i, imp in enumerate(impressions.impression_ids)}
    where = (
        f"the {len(impressions):,} impressions scored ({scope})"
        if scope
        else impressions.source or "the split"
    )
    for imp, pred in predictions.items():
        if imp not in wanted:
            raise InputError(f"impression {imp} is not among {where}", path=path, line=pred.line)
    missing = [int(imp) for imp in impressions.impression_ids if int(imp) not in predictions]
    if missing:
        first = ", ".join(str(m) for m in missing[:5])
        raise InputError(
            f"{len(missing)} of {len(impressions)} impressions of {scope or impressions.source or 'the split'} "
            f"have no line (first: {first})",
            path=path,
        )
    counts = impressions.candidate_counts
    parts: list[list[int]] = []
    for i, imp in enumerate(impressions.impression_ids):
        pred = predictions[int(imp)]
        if len(pred.ranks) != counts[i]:
            raise InputError(
                f"impression {int(imp)} has {len(pred.ranks)} ranks but {counts[i]} candidates",
                path=path,
                line=pred.line,
            )
        parts.append(pred.ranks)
    ranks = np.fromiter((r for part in parts for r in part), dtype=np.int64, count=int(counts.sum()))
    _check_permutations(path, predictions, impressions, ranks)
    return ranks


def _check_permutations(
    path: Path, predictions: dict[int, PredictionLine], impressions: Impressions, ranks: np.ndarray
) -> None:
    """Every impression's ranks are 1..n once each (vectorised; the first offender is named)."""
    counts = impressions.candidate_counts
    offsets = impressions.candidate_offsets
    segment = impressions.candidate_impression
    in_range = (ranks >= 1) & (ranks <= counts[segment])
    # Slot offsets[i] + r - 1 is hit once per impression exactly when ranks are a permutation.
    slot = np.where(in_range, offsets[segment] + ranks - 1, 0)
    hits = np.bincount(slot[in_range], minlength=len(ranks))
    bad = np.zeros(len(impressions), dtype=bool)
    bad[segment[~in_range]] = True
    if len(ranks):
        bad |= np.logical_or.reduceat(hits != 1, offsets[:-1].clip(max=len(ranks) - 1)) & (counts > 0)
    if bad.any():
        i = int(np.argmax(bad))
        imp = int(impressions.impression_ids[i])
        raise InputError(
            f"ranks of impression {imp} are not a permutation of 1..{counts[i]}",
            path=path,
            line=predictions[imp].line,
        )


def scores_from_ranks(ranks: np.ndarray) -> np.ndarray:
    """The official scorer's score of a rank: 1 / rank."""
    return 1.0 / ranks.astype(np.float64)
