"""Scoring computes each distinct user state once: impressions grouped by equal model input."""

from __future__ import annotations

import numpy as np
import pytest

from newsrec_cli.mind.behaviors import Impressions
from newsrec_cli.mind.vocab import Vocab
from newsrec_cli.model import inference
from newsrec_cli.model.inputs import recent_history


def _impressions(histories: list[list[int]]) -> Impressions:
    n = len(histories)
    h_off = np.concatenate(([0], np.cumsum([len(h) for h in histories]))).astype(np.int64)
    return Impressions(
        impression_ids=np.arange(n, dtype=np.int64),
        users=np.ones(n, dtype=np.int32),
        times=np.full(n, np.datetime64("2019-11-15T09:00:00", "s")),
        history_offsets=h_off,
        history=np.asarray([x for h in histories for x in h], dtype=np.int32),
        candidate_offsets=np.arange(n + 1, dtype=np.int64) * 2,
        candidates=np.ones(2 * n, dtype=np.int32),
        labels=np.tile(np.array([1, 0], dtype=np.int8), n),
        news_vocab=Vocab(f"N{k}" for k in range(10)),
        user_vocab=Vocab(["U1"]),
    )


HISTORIES = [[1, 2], [2, 1], [1, 2], [], [3, 1, 2], [9, 3, 1, 2], [1, 2], []]


def _check(groups: inference.StateGroups, imps: Impressions, history: int, user_rows=None) -> list[set[int]]:
    assert sorted(groups.members.tolist()) == list(range(len(imps)))
    found = []
    for g, rep in enumerate(groups.representatives.tolist()):
        members = groups.members[groups.offsets[g] : groups.offsets[g + 1]]
        assert rep in members.tolist()
        hist, mask = recent_history(imps, members, history)
        assert (hist == hist[0]).all() and (mask == mask[0]).all()
        if user_rows is not None:
            assert (user_rows[members] == user_rows[rep]).all()
        found.append(set(members.tolist()))
    return found


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        (2, [{0, 2, 4, 5, 6}, {1}, {3, 7}]),  # the last two clicks decide: [3,1,2] and [9,3,1,2] end in 1,2
        (3, [{0, 2, 6}, {1}, {3, 7}, {4, 5}]),
        (50, [{0, 2, 6}, {1}, {3, 7}, {4}, {5}]),
    ],
)
def test_groups_are_equal_inputs(history: int, expected: list[set[int]]) -> None:
    imps = _impressions(HISTORIES)
    groups = inference.same_user_state(imps, history)
    assert sorted(map(sorted, _check(groups, imps, history))) == sorted(map(sorted, expected))


def test_user_rows_split_groups() -> None:
    imps = _impressions(HISTORIES)
    rows = np.array([1, 1, 2, 0, 0, 0, 1, 0], dtype=np.int64)
    groups = inference.same_user_state(imps, 50, rows)
    found = _check(groups, imps, 50, rows)
    assert {0, 6} in found and {2} in found


def test_hash_collisions_never_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every multiplier 1 the hash is a plain sum: [1,2] and [2,1] collide; the exact check splits them."""
    monkeypatch.setattr(inference, "hash_multipliers", lambda h: np.ones((2, h + 1), dtype=np.uint64))
    imps = _impressions(HISTORIES)
    groups = inference.same_user_state(imps, 50)
    found = _check(groups, imps, 50)
    assert {1} in found and {0, 2, 6} in found
