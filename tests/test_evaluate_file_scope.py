"""Scoring a prediction file needs only labelled behaviors: the whole behaviors.tsv of a single
MIND folder, or the named split folder of a parent, never training data; errors say which
impressions were scored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from evaluate_helpers import VALID, make_mind
from typer.testing import CliRunner

from newsrec_cli.cli import app

runner = CliRunner()

# A ranking for each valid impression of evaluate_helpers (10, 11, 12), clicked news first:
# a perfect file, so AUC = MRR = 1 exactly.
PERFECT = "10 [1,2,3]\n11 [2,1,3]\n12 [2,1]\n"


def evaluate(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["evaluate", *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_file_for_every_impression_of_a_single_folder_scores_against_all_of_it(tmp_path: Path) -> None:
    # A plain MIND folder (news.tsv + behaviors.tsv) whose impressions all carry one time: the
    # training split would hold some out by impression, but a file is scored against all of them.
    root = make_mind(tmp_path / "parent")
    single = tmp_path / "single"
    shutil.copytree(root / "valid", single)
    same_time = [line.split("\t") for line in VALID]
    for parts in same_time:
        parts[2] = "11/15/2019 9:00:00 AM"
    (single / "behaviors.tsv").write_text("".join("\t".join(p) + "\n" for p in same_time))
    path = tmp_path / "prediction.txt"
    path.write_text(PERFECT)
    code, out, err = evaluate(
        "--predictions", str(path), "--data", str(single), "--metrics", "auc,mrr", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["impressions"] == 3 and report["candidates"] == 8
    assert report["rows"][0]["values"] == pytest.approx({"auc": 1.0, "mrr": 1.0})
    assert report["split_note"].startswith("all 3 impressions of")


def test_a_parent_with_only_valid_needs_no_training_data(tmp_path: Path) -> None:
    root = make_mind(tmp_path / "parent")
    shutil.rmtree(root / "train")
    path = tmp_path / "prediction.txt"
    path.write_text(PERFECT)
    code, out, err = evaluate("--predictions", str(path), "--data", str(root), "--metrics", "auc", "--json")
    assert code == 0, err
    assert json.loads(out)["rows"][0]["values"]["auc"] == pytest.approx(1.0)
    # Baselines on valid/ alone: random and content need no training data, popularity says why not.
    code, out, err = evaluate("--data", str(root), "--baselines", "--json")
    assert code == 0, err
    assert [row["name"] for row in json.loads(out)["rows"]] == ["random"]


def test_errors_name_the_impressions_scored_and_the_missing_split(tmp_path: Path) -> None:
    root = make_mind(tmp_path / "parent")
    path = tmp_path / "prediction.txt"
    path.write_text(PERFECT + "77 [1]\n")
    code, _, err = evaluate("--predictions", str(path), "--data", str(root))
    assert code == 1
    assert "prediction.txt:4: impression 77 is not among the 3 impressions scored (valid: all of" in err
    path.write_text(PERFECT)
    code, _, err = evaluate("--predictions", str(path), "--data", str(root), "--split", "test")
    assert code == 1
    assert "no test/ folder with behaviors.tsv to score the file against (found: train, valid)" in err
    assert err.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in err
