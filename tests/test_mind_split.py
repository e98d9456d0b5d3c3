"""Validation splits keep impressions whole and the two sides disjoint: by time (the last days)
and by impression (a seeded random share)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from train_helpers import news_row

from newsrec_cli.errors import InputError
from newsrec_cli.mind import load_dataset
from newsrec_cli.mind.split import split_by_impression, split_by_time

NEWS = [f"N{i}" for i in range(1, 9)]


def behaviors_file(folder: Path, times: list[str]) -> Path:
    """One impression per time; impression i lists its own candidates (to check they stay whole)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text("".join(news_row(n) + "\n" for n in NEWS), encoding="utf-8")
    lines = []
    for i, time in enumerate(times, start=1):
        a, b, c = NEWS[i % 8], NEWS[(i + 1) % 8], NEWS[(i + 2) % 8]
        lines.append(f"{i}\tU{i % 3}\t{time}\t{NEWS[(i + 3) % 8]}\t{a}-1 {b}-0 {c}-0\n")
    (folder / "behaviors.tsv").write_text("".join(lines), encoding="utf-8")
    return folder


TIMES = [f"11/{day}/2019 {hour}:00:00 AM" for day in (10, 11, 12, 13) for hour in (8, 9, 10)]


def rows_of(imps) -> dict[int, list[tuple[int, int]]]:
    """Impression ID -> its (candidate, label) pairs, as read."""
    return {
        int(imp): list(zip(imps.candidates_of(i).tolist(), imps.labels_of(i).tolist(), strict=True))
        for i, imp in enumerate(imps.impression_ids)
    }


def assert_whole_and_disjoint(all_imps, train, valid) -> None:
    full, tr, va = rows_of(all_imps), rows_of(train), rows_of(valid)
    assert not set(tr) & set(va)
    assert set(tr) | set(va) == set(full)
    for imp, cands in {**tr, **va}.items():
        assert cands == full[imp]  # every candidate of the impression, in order, on one side


@pytest.mark.parametrize("days", [1, 2, 3])
def test_split_by_time_takes_the_last_days_whole(tmp_path: Path, days: int) -> None:
    imps = load_dataset(behaviors_file(tmp_path / "d", TIMES)).splits["all"]
    train, valid = split_by_time(imps, days)
    assert_whole_and_disjoint(imps, train, valid)
    assert len(valid) == 3 * days
    assert train.times.max() < valid.times.min()
    assert set(valid.times.astype("datetime64[D]").astype(str)) == {f"2019-11-{13 - d}" for d in range(days)}


def test_split_by_time_refuses_to_leave_nothing_to_train_on(tmp_path: Path) -> None:
    imps = load_dataset(behaviors_file(tmp_path / "d", TIMES)).splits["all"]
    with pytest.raises(InputError, match="span 4 day"):
        split_by_time(imps, 4)


@pytest.mark.parametrize(("fraction", "seed"), [(0.25, 0), (0.25, 1), (0.5, 42)])
def test_split_by_impression_holds_out_whole_impressions_at_random(
    tmp_path: Path, fraction: float, seed: int
) -> None:
    same_time = ["11/15/2019 8:00:00 AM"] * 12
    imps = load_dataset(behaviors_file(tmp_path / "d", same_time)).splits["all"]
    train, valid = split_by_impression(imps, fraction, seed)
    assert_whole_and_disjoint(imps, train, valid)
    assert len(valid) == round(12 * fraction)
    again = split_by_impression(imps, fraction, seed)[1]
    np.testing.assert_array_equal(valid.impression_ids, again.impression_ids)


def test_other_seeds_hold_out_other_impressions(tmp_path: Path) -> None:
    imps = load_dataset(behaviors_file(tmp_path / "d", ["11/15/2019 8:00:00 AM"] * 12)).splits["all"]
    held = {tuple(split_by_impression(imps, 0.25, seed)[1].impression_ids.tolist()) for seed in range(6)}
    assert len(held) > 1
    with pytest.raises(InputError, match="cannot hold out"):
        split_by_impression(imps, 0.01, 0)
