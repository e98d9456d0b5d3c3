"""`newsrec evaluate` through the CLI on the hand-made dataset: baselines, files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from evaluate_helpers import CONTENT, POPULARITY, make_mind, make_store
from typer.testing import CliRunner

from newsrec_cli.cli import app

runner = CliRunner()


@pytest.fixture
def mind(tmp_path: Path) -> Path:
    return make_mind(tmp_path / "mind")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return make_store(tmp_path / "store")


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, ["evaluate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _row(report: dict, name: str) -> dict:
    return next(row for row in report["rows"] if row["name"].startswith(name))


def test_baselines_without_a_run(mind: Path, store: Path) -> None:
    report = _json(["--data", str(mind), "--baselines", "--embeddings", str(store), "--metrics", "auc,mrr"])
    assert [row["name"] for row in report["rows"]] == [
        "random",
        "popularity",
        "content (store)",
        "content centred (store)",
    ]
    assert _row(report, "popularity")["values"] == pytest.approx(POPULARITY)
    assert _row(report, "content")["values"] == pytest.approx(CONTENT)
    assert report["impressions"] == 3 and report["candidates"] == 8
    assert _row(report, "content")["skipped_auc"] == 0
    assert report["split_note"].startswith("reported on valid/") and report["chosen_on"] is None


def test_table_and_metrics_json_in_out(mind: Path, store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        ["evaluate", "--data", str(mind), "--baselines", "--embeddings", str(store), "--out", str(out)],
        env={"COLUMNS": "160"},
    )
    assert result.exit_code == 0, result.output
    for text in (
        "popularity",
        "content (store)",
        "auc",
        "ndcg@10",
        "AUC skip",
        "3 impressions, 8 candidates",
    ):
        assert text in result.stdout
    saved = json.loads((out / "metrics.json").read_text())
    assert _row(saved, "popularity")["values"]["auc"] == pytest.approx(POPULARITY["auc"])


def test_ndcg_alone_expands_and_breakdown_by_history(mind: Path) -> None:
    report = _json(["--data", str(mind), "--baselines", "--metrics", "auc,ndcg", "--by", "history-length"])
    assert report["metrics"] == ["auc", "ndcg@5", "ndcg@10"]
    groups = _row(report, "popularity")["groups"]
    assert set(groups) == {"history 0", "history 1-4"}
    assert groups["history 0"]["impressions"] == 1 and groups["history 1-4"]["impressions"] == 2


def test_prediction_file_scores_like_the_ranking_it_holds(mind: Path, tmp_path: Path) -> None:
    # The popularity ranking of the valid impressions, written by hand (N2 > N3 = N4 > the rest).
    path = tmp_path / "prediction.txt"
    path.write_text("10 [1,2,3]\n11 [2,3,1]\n12 [2,1]\n")
    report = _json(["--predictions", str(path), "--data", str(mind), "--metrics", "auc,mrr"])
    assert _row(report, "file prediction.txt")["values"] == pytest.approx(POPULARITY)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10 [1,2,3]\n11 [2,3,1]\n", "1 of 3 impressions"),
        (
            "10 [1,2,3]\n11 [2,3,1]\n12 [2,1]\n13 [1]\n",
            "prediction.txt:4: impression 13 is not among the 3 impressions scored (valid: all of",
        ),
        ("10 [1,2,3]\n11 [2,3]\n12 [2,1]\n", "prediction.txt:2: impression 11 has 2 ranks but 3 candidates"),
        (
            "10 [1,2,2]\n11 [2,3,1]\n12 [2,1]\n",
            "prediction.txt:1: ranks of impression 10 are not a permutation",
        ),
        (
            "10 [1,2,10000000000000000000]\n11 [2,3,1]\n12 [2,1]\n",
            "prediction.txt:1: rank 10000000000000000000 is too large (at most 9223372036854775807",
        ),
        (
            "10 [1,2,3]\n11 [2,3,1]\n12345678901234567890123 [2,1]\n",
            "prediction.txt:3: impression ID 12345678901234567890123 is too large",
        ),
    ],
    ids=["missing", "extra", "count", "not-permutation", "rank-beyond-int64", "id-beyond-int64"],
)
def test_bad_prediction_files_exit_with_one_line(mind: Path, tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prediction.txt"
    path.write_text(text)
    result = runner.invoke(app, ["evaluate", "--predictions", str(path), "--data", str(mind)])
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]  # progress notes come first, then one error line
    assert last.startswith("error: ") and message in last
    assert "Traceback" not in result.output


def test_impression_id_beyond_int64_in_behaviors_is_one_line(tmp_path: Path) -> None:
    line = "12345678901234567890123\tU1\t11/15/2019 9:00:00 AM\tN1\tN2-1 N3-0"
    mind = make_mind(tmp_path / "mind", valid=[line])
    result = runner.invoke(app, ["evaluate", "--data", str(mind), "--baselines"])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {mind / 'valid' / 'behaviors.tsv'}:1, field ImpressionID: too large: "
        "12345678901234567890123 (at most 9223372036854775807, 19 digits)"
    )
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "nothing to evaluate"),
        (["--baselines", "--metrics", "auc,precision"], 2, "unknown metric 'precision'"),
        (["--baselines", "--split", "train"], 2, "evaluate.split"),
        (["--baselines", "--by", "user"], 2, "evaluate.by"),
        (["--baselines", "--split", "test"], 1, "no test/ folder"),
        (["--baselines", "--write-predictions"], 2, "--write-predictions needs a RUN_DIR"),
    ],
)
def test_usage_errors(mind: Path, args: list[str], code: int, message: str) -> None:
    result = runner.invoke(app, ["evaluate", "--data", str(mind), *args])
    assert result.exit_code == code, result.output
    assert message in result.stderr


def test_unlabeled_test_split_has_nothing_to_score(tmp_path: Path) -> None:
    mind = make_mind(tmp_path / "mind", test=["20\tU1\t11/16/2019 9:00:00 AM\tN1\tN2 N3"])
    result = runner.invoke(app, ["evaluate", "--data", str(mind), "--split", "test", "--baselines"])
    assert result.exit_code == 1
    assert "have no labels" in result.stderr and "--write-predictions" in result.stderr


def test_missing_vectors_are_an_error_not_a_zero(mind: Path, tmp_path: Path) -> None:
    store = make_store(tmp_path / "partial", skip=("N5",))
    result = runner.invoke(app, ["evaluate", "--data", str(mind), "--baselines", "--embeddings", str(store)])
    assert result.exit_code == 1
    assert "1 of 6 IDs has no vector (first: N5)" in result.stderr


def test_single_folder_uses_the_configured_split(tmp_path: Path) -> None:
    # One folder holding train and valid days: without a run, [data] settings choose the split.
    root = make_mind(tmp_path / "mind")
    single = tmp_path / "single"
    single.mkdir()
    (single / "news.tsv").write_text((root / "train" / "news.tsv").read_text())
    behaviors = (root / "train" / "behaviors.tsv").read_text() + (
        root / "valid" / "behaviors.tsv"
    ).read_text()
    (single / "behaviors.tsv").write_text(behaviors)
    report = _json(["--data", str(single), "--baselines", "--metrics", "auc,mrr"])
    assert report["impressions"] == 3  # the last day, as a split by time
    assert _row(report, "popularity")["values"] == pytest.approx(POPULARITY)
    config = tmp_path / "n.toml"
    config.write_text('[data]\nsplit = "impression"\nvalid_fraction = 0.3\n')
    report = _json(["--data", str(single), "--baselines", "--config", str(config)])
    assert report["impressions"] == 2 and "held out at random" in report["split_note"]


# --- with a trained run ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(data, store, run): a tiny model trained for one epoch on the hand-made dataset."""
    from newsrec_cli.settings import DataSettings, TrainSettings
    from newsrec_cli.train import train

    root = tmp_path_factory.mktemp("trained")
    data, store = make_mind(root / "mind"), make_store(root / "store")
    settings = TrainSettings(dim=8, heads=2, epochs=1, use_graph=False, device="cpu", seed=1)
    # train/ is 4 impressions of one day, too few to hold any out: valid/ chooses (and is reported)
    chosen = DataSettings(select_on="valid")
    train(data, root / "run", store=store, settings=settings, data_settings=chosen)
    return data, store, root / "run"


def test_model_and_baselines_in_one_table(trained: tuple[Path, Path, Path]) -> None:
    data, _, run = trained
    result = runner.invoke(
        app, ["evaluate", str(run), "--data", str(data), "--metrics", "auc,ndcg", "--baselines"],
        env={"COLUMNS": "160"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "source" in line)
    assert all(name in header for name in ("auc", "ndcg@5", "ndcg@10", "counted", "AUC skip"))
    rows = [line.split("│")[1].strip() for line in lines if line.startswith("│")]
    # The content row uses the store the run names, with no --embeddings.
    assert rows == ["model run", "random", "popularity", "content (store)", "content centred (store)"]
    assert (run / "metrics.json").is_file()


def test_model_row_equals_the_metrics_of_its_logits(trained: tuple[Path, Path, Path]) -> None:
    from newsrec_cli.evaluate.metrics import compute_metrics
    from newsrec_cli.mind.dataset import load_dataset
    from newsrec_cli.model.inference import score_impressions
    from newsrec_cli.runs.loading import load_run

    data, _, run = trained
    report = _json([str(run), "--data", str(data), "--metrics", "auc,mrr,logloss"])
    dataset = load_dataset(data)
    valid = dataset.splits["valid"]
    logits = score_impressions(load_run(run, device="cpu"), dataset, valid)
    expected = compute_metrics(logits, valid.labels, valid.candidate_offsets, ["auc", "mrr", "logloss"])
    assert _row(report, "model")["values"] == pytest.approx(expected.values, abs=1e-6)


def test_written_predictions_score_the_same(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, store, run = trained
    out = tmp_path / "out"
    report = _json([str(run), "--data", str(data), "--write-predictions", "--out", str(out)])
    assert sorted(Path(p).name for p in report["written"]) == [
        "metrics.json",
        "prediction.txt",
        "prediction.zip",
    ]
    assert [line.split()[0] for line in (out / "prediction.txt").read_text().splitlines()] == [
        "10",
        "11",
        "12",
    ]
    for name in ("prediction.txt", "prediction.zip"):
        # the run's store gives the file row its text vectors (ILD): every metric is the model's
        again = _json(["--predictions", str(out / name), "--data", str(data), "--embeddings", str(store)])
        assert _row(again, "file")["values"] == pytest.approx(_row(report, "model")["values"], abs=1e-9)


def test_unlabeled_test_split_writes_a_leaderboard_file(
    trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, store, run = trained
    data = make_mind(
        tmp_path / "mind",
        test=["20\tU1\t11/16/2019 9:00:00 AM\tN1\tN2 N3 N6", "21\tU9\t11/16/2019 9:10:00 AM\t\tN4 N5"],
    )
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(run),
            "--data",
            str(data),
            "--split",
            "test",
            "--write-predictions",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "unlabeled" in result.stdout and "no metrics" in result.stdout
    lines = (out / "prediction.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["20", "21"]
    assert sorted(lines[0].split()[1].strip("[]").split(",")) == ["1", "2", "3"]
    assert not (out / "metrics.json").exists()


def test_as_a_subprocess(mind: Path, store: Path) -> None:
    import subprocess
    import sys

    args = ["--data", str(mind), "--baselines", "--embeddings", str(store), "--metrics", "mrr", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "newsrec_cli", "evaluate", *args], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert _row(json.loads(done.stdout), "content")["values"]["mrr"] == pytest.approx(CONTENT["mrr"])


def test_rerank_on_an_unlabeled_split_writes_its_own_leaderboard_file(
    trained: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, _, run = trained
    data = make_mind(tmp_path / "mind", test=["20\tU1\t11/16/2019 9:00:00 AM\tN1\tN2 N1 N3 N6"])
    out = tmp_path / "out"
    args = [
        "evaluate",
        str(run),
        "--data",
        str(data),
        "--split",
        "test",
        "--write-predictions",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, [*args, "--rerank", "mmr:1"])
    assert result.exit_code == 0, result.output
    line = (out / "prediction-mmr-1.txt").read_text().strip()
    # the MIND format, nothing more: N1 and N2 (vectors 0.995 alike) are never both in the top 2
    ranks = [int(r) for r in line.removeprefix("20 [").removesuffix("]").split(",")]
    assert sorted(ranks) == [1, 2, 3, 4] and {ranks[0], ranks[1]} != {1, 2}
    assert not (out / "prediction.txt").exists()
