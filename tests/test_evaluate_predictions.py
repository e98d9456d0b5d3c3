"""Leaderboard prediction files: format, zip, round trip to the same metrics, one-line errors."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from evaluate_helpers import make_impressions

from newsrec_cli.errors import InputError
from newsrec_cli.evaluate import predictions as predictions_module
from newsrec_cli.evaluate.metrics import compute_metrics, ranks_from_scores
from newsrec_cli.evaluate.predictions import (
    align_ranks,
    format_predictions,
    read_predictions,
    scores_from_ranks,
    write_predictions,
)

METRICS = ["auc", "mrr", "ndcg@5", "ndcg@10", "hit@1"]


def _round_trip(tmp_path: Path, scores: np.ndarray, imps, name: str = "prediction.txt"):
    txt, zipped = write_predictions(tmp_path, imps, scores)
    path = txt if name == "prediction.txt" else zipped
    ranks = align_ranks(path, read_predictions(path), imps)
    return compute_metrics(scores_from_ranks(ranks), imps.labels, imps.candidate_offsets, METRICS)


def test_format_is_the_leaderboard_one(tmp_path: Path) -> None:
    imps = make_impressions([3, 2])
    write_predictions(tmp_path, imps, np.array([0.1, 0.9, 0.5, 2.0, -1.0]))
    assert (tmp_path / "prediction.txt").read_text() == "100 [3,1,2]\n101 [1,2]\n"
    with zipfile.ZipFile(tmp_path / "prediction.zip") as archive:
        assert archive.namelist() == ["prediction.txt"]
        assert archive.read("prediction.txt").decode() == "100 [3,1,2]\n101 [1,2]\n"


@pytest.mark.parametrize("which", ["prediction.txt", "prediction.zip"])
def test_round_trip_gives_the_same_metrics(tmp_path: Path, which: str) -> None:
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 40, size=300).tolist()
    imps = make_impressions(lengths, seed=3)
    scores = rng.standard_normal(sum(lengths))
    in_memory = compute_metrics(scores, imps.labels, imps.candidate_offsets, METRICS)
    from_file = _round_trip(tmp_path, scores, imps, which)
    for name in METRICS:
        assert from_file.values[name] == pytest.approx(in_memory.values[name], abs=1e-12), name
    assert from_file.counts == in_memory.counts


def test_round_trip_with_ties_keeps_the_ranking_metrics(tmp_path: Path) -> None:
    # A rank file cannot hold a tie: MRR/nDCG/hit survive exactly (same tie rule), AUC may not.
    rng = np.random.default_rng(4)
    lengths = rng.integers(2, 30, size=200).tolist()
    imps = make_impressions(lengths, seed=4)
    scores = rng.integers(0, 3, size=sum(lengths)).astype(float)
    in_memory = compute_metrics(scores, imps.labels, imps.candidate_offsets, METRICS)
    from_file = _round_trip(tmp_path, scores, imps)
    for name in ("mrr", "ndcg@5", "ndcg@10", "hit@1"):
        assert from_file.values[name] == pytest.approx(in_memory.values[name], abs=1e-12), name


def test_lines_in_any_order_and_with_spaces_are_read(tmp_path: Path) -> None:
    imps = make_impressions([3, 2])
    path = tmp_path / "p.txt"
    path.write_text("101 [2, 1]\n\n100 [1,2,3]\n")
    ranks = align_ranks(path, read_predictions(path), imps)
    assert ranks.tolist() == [1, 2, 3, 2, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("100 [1,2,3]\n", r"p\.txt: 1 of 2 impressions of behaviors\.tsv have no line \(first: 101\)"),
        ("100 [1,2,3]\n101 [1,2]\n999 [1]\n", r"p\.txt:3: impression 999 is not among behaviors\.tsv"),
        ("100 [1,2]\n101 [1,2]\n", r"p\.txt:1: impression 100 has 2 ranks but 3 candidates"),
        ("100 [1,2,3]\n101 [1,1]\n", r"p\.txt:2: ranks of impression 101 are not a permutation of 1\.\.2"),
        ("100 [1,2,4]\n101 [1,2]\n", r"p\.txt:1: ranks of impression 100 are not a permutation of 1\.\.3"),
        ("100 [0,1,2]\n101 [1,2]\n", r"p\.txt:1: ranks of impression 100 are not a permutation"),
        ("100 [1,2,3]\n100 [1,2,3]\n", r"p\.txt:2: impression 100 appears twice \(first on line 1\)"),
        ("100 1,2,3\n", r"p\.txt:1: expected 'ImpressionID \[r1,r2,\.\.\.\]'"),
        ("abc [1]\n", r"p\.txt:1: expected 'ImpressionID"),
        ("100 [1,x,3]\n", r"p\.txt:1: ranks must be integers"),
        ("\n", r"p\.txt: no predictions in the file"),
    ],
    ids=[
        "missing",
        "extra",
        "count",
        "repeat",
        "out-of-range",
        "zero",
        "duplicate",
        "brackets",
        "id",
        "int",
        "empty",
    ],
)
def test_bad_prediction_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    imps = make_impressions([3, 2])
    path = tmp_path / "p.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        align_ranks(path, read_predictions(path), imps)
    assert "\n" not in str(info.value)


def test_a_zip_must_hold_one_text_file(tmp_path: Path) -> None:
    path = tmp_path / "p.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.txt", "100 [1]\n")
        archive.writestr("b.txt", "100 [1]\n")
    with pytest.raises(InputError, match="one .txt file, found 2"):
        read_predictions(path)
    with pytest.raises(InputError, match="not found"):
        read_predictions(tmp_path / "nope.txt")


def _reference_text(ids: np.ndarray, offsets: np.ndarray, ranks: np.ndarray) -> str:
    """The file as a plain loop writes it (MIND's own code does the same)."""
    return "".join(
        f"{int(imp)} [{','.join(str(r) for r in ranks[offsets[i] : offsets[i + 1]])}]\n"
        for i, imp in enumerate(ids)
    )


def test_vectorised_writer_and_reader_match_a_plain_loop(tmp_path: Path, monkeypatch) -> None:
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 300, size=500)
    counts[:3] = (0, 1, 10)  # an empty impression, one candidate, a two-digit rank
    offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.int64)
    ranks = np.concatenate([rng.permutation(c) + 1 for c in counts]).astype(np.int64)
    ids = rng.choice(10**12, size=500, replace=False).astype(np.int64)
    ids[:2] = (0, 9)
    text = format_predictions(ids, offsets, ranks)
    assert text == _reference_text(ids, offsets, ranks)
    # read back in small chunks (lines never cut), with CRLF endings and a BOM, equal to the line reader
    monkeypatch.setattr(predictions_module, "READ_CHUNK", 4096)
    for variant in (text, "\ufeff" + text.replace("\n", "\r\n"), text + "\n\n"):
        path = tmp_path / "p.txt"
        path.write_bytes(variant.encode("utf-8"))
        fast = read_predictions(path)
        slow = predictions_module._parse_lines(path, variant.lstrip("\ufeff"))
        for field in ("impression_ids", "lines", "offsets", "ranks"):
            np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))
        np.testing.assert_array_equal(fast.ranks, ranks)
    assert predictions_module._parse_canonical(text.encode()) is not None
    assert predictions_module._parse_canonical(b"1 [1, 2]\n") is None  # lenient forms: the line reader


@pytest.mark.parametrize(
    "text",
    [
        "1 [1,,2]\n",
        "1 [,1]\n",
        "1 [1,]\n",
        " 1 [1]\n",
        "1  [1]\n",
        "1 [1] \n",
        "1 [1]]\n",
        "1,2 [1]\n",
        "1 [1\r]\n",
    ],
)
def test_the_canonical_reader_hands_odd_lines_to_the_line_reader(text: str) -> None:
    assert predictions_module._parse_canonical(text.encode()) is None


def test_large_file_streams_through_chunks(tmp_path: Path) -> None:
    """50,000 impressions: written and read back without a loop per line, same ranks."""
    imps = make_impressions(list(np.random.default_rng(0).integers(1, 60, size=50_000)))
    scores = np.random.default_rng(1).standard_normal(len(imps.candidates))
    txt, zipped = write_predictions(tmp_path, imps, scores)
    for path in (txt, zipped):
        ranks = align_ranks(path, read_predictions(path), imps)
        np.testing.assert_array_equal(ranks, ranks_from_scores(scores, imps.candidate_offsets))
