"""`data validate` FAILs what the default `train` and `evaluate` refuse, and says which and why (issue 30 §6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from train_helpers import news_row, write_mind, write_store
from typer.testing import CliRunner

from newsrec_cli.cli import app

runner = CliRunner()
NEWS = [f"N{i}" for i in range(1, 9)]
TRAIN = [
    ("U1", "N1 N2", "N3-1 N4-0 N5-0"),
    ("U2", "N2", "N6-1 N7-0 N8-0"),
    ("U3", "N1 N3", "N4-1 N5-0"),
    ("U4", "N6", "N7-1 N8-0"),
]
VALID = [("U1", "N1", "N3-0 N5-1"), ("U2", "N2", "N4-1 N5-0")]


def _dataset(root: Path, train=TRAIN, valid=VALID) -> Path:
    """train/ over two days (the default protocol chooses on its last day), valid/ a day later."""
    write_mind(root / "train", [news_row(n) for n in NEWS], train)
    write_mind(root / "valid", [news_row(n) for n in NEWS], valid, time="11/16/2019 8:00:00 AM")
    behaviors = root / "train" / "behaviors.tsv"
    lines = behaviors.read_text().splitlines(keepends=True)
    behaviors.write_text("".join(lines[:2]) + "".join(lines[2:]).replace("11/15/2019", "11/14/2019"))
    return root


def _unlabel(rows):
    return [(u, h, " ".join(t.rsplit("-", 1)[0] for t in c.split())) for u, h, c in rows]


PROTOCOL = ("default protocol (train, evaluate)", "-")
CASES = {
    # the reproduction: " N999999" added to one history
    "history ID without a row": (
        lambda: {"train": [*TRAIN[:2], (TRAIN[2][0], TRAIN[2][1] + " N999999", TRAIN[2][2]), TRAIN[3]]},
        ("history IDs in news.tsv", "train"),
        [
            "1 of 7 missing from every news.tsv, 1 distinct (first: N999999); behaviors.tsv field History: "
            "1 ID on 1 line, first line 3; `train` and `evaluate` refuse impressions that use them",
        ],
        "no row in news.tsv",
    ),
    "unlabeled training impressions": (
        lambda: {"train": _unlabel(TRAIN)},
        PROTOCOL,
        ["`train` refuses it: the training impressions have no click labels (NewsID-0/1)"],
        "have no click labels",
    ),
    "no click beside a non-click": (
        lambda: {"train": [(u, h, c.replace("-0", "-1")) for u, h, c in TRAIN]},
        PROTOCOL,
        ["`train` refuses it: none of the 2 training impressions has both a click and a non-click"],
        "nothing to train on",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_validate_fails_what_train_refuses(tmp_path: Path, case: str) -> None:
    change, key, details, refusal = CASES[case]
    data = _dataset(tmp_path / "data", **change())
    result = runner.invoke(app, ["data", "validate", str(data), "--json"])
    assert result.exit_code == 1, result.output
    checks = {(c["name"], c["split"]): c for c in json.loads(result.stdout)["checks"]}
    assert checks[key]["status"] == "FAIL"
    for detail in details:
        assert detail in checks[key]["detail"]
    assert [k for k, c in checks.items() if c["status"] == "FAIL"] == [key]
    # ... and the default train does refuse it (one line, exit 1)
    store = write_store(tmp_path / "store", NEWS, np.random.default_rng(0).normal(size=(8, 8)))
    trained = runner.invoke(app, ["train", str(data), "-e", str(store), "--out", str(tmp_path / "run")])
    assert trained.exit_code == 1 and refusal in trained.stderr
    assert len(trained.stderr.strip().splitlines()) == 1


def test_clean_data_passes_and_ids_of_another_split_only_warn(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data")
    result = runner.invoke(app, ["data", "validate", str(data), "--json"])
    assert result.exit_code == 0, result.output
    checks = {(c["name"], c["split"]): c for c in json.loads(result.stdout)["checks"]}
    assert checks[PROTOCOL]["status"] == "OK" and checks[PROTOCOL]["detail"].startswith(
        "chosen on the last day"
    )
    # N9 has a row in valid/news.tsv only: train and evaluate read every news.tsv, so it is accepted
    data = _dataset(tmp_path / "other", train=[*TRAIN[:3], ("U4", "N6 N9", "N7-1 N8-0")])
    (data / "valid" / "news.tsv").write_text("".join(news_row(n) + "\n" for n in [*NEWS, "N9"]))
    result = runner.invoke(app, ["data", "validate", str(data), "--json"])
    assert result.exit_code == 0, result.output
    checks = {(c["name"], c["split"]): c for c in json.loads(result.stdout)["checks"]}
    history = checks[("history IDs in news.tsv", "train")]
    assert history["status"] == "WARN" and "in another split's" in history["detail"]


def test_unlabeled_valid_fails_and_unlabeled_test_is_fine(tmp_path: Path) -> None:
    data = _dataset(tmp_path / "data", valid=_unlabel(VALID))
    result = runner.invoke(app, ["data", "validate", str(data), "--json"])
    assert result.exit_code == 1
    checks = {(c["name"], c["split"]): c for c in json.loads(result.stdout)["checks"]}
    assert [k for k, c in checks.items() if c["status"] == "FAIL"] == [PROTOCOL]
    assert checks[PROTOCOL]["detail"].startswith("`evaluate` refuses it: valid/ (")
    assert checks[PROTOCOL]["detail"].endswith("valid) has no click labels, so no metrics")
    data = _dataset(tmp_path / "with_test")
    write_mind(data / "test", [news_row(n) for n in NEWS], _unlabel(VALID))
    assert runner.invoke(app, ["data", "validate", str(data)]).exit_code == 0
