"""Beyond-accuracy metrics and re-rankers through `newsrec evaluate`: an independent recomputation
from the files anyone has, the controls, bad values, and metrics.json kept per protocol and merged."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from evaluate_helpers import make_mind, make_store
from train_helpers import hashing_store, synth
from typer.testing import CliRunner

from newsrec_cli.cli import app

runner = CliRunner()
KINDS = ("ild", "categories", "calibration", "novelty", "popularity", "coverage", "gini")


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, ["evaluate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _row(report: dict, name: str) -> dict:
    return next(row for row in report["rows"] if row["name"].startswith(name))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(data, store, run): synthetic MIND (train/ + valid/), hashing vectors, a one-epoch model that
    chose its epoch on valid/ (so train/ whole is its training split)."""
    from newsrec_cli.settings import DataSettings, TrainSettings
    from newsrec_cli.train import train

    root = tmp_path_factory.mktemp("beyond")
    data = synth(root, news=200, users=100)
    store = hashing_store(data, root / "store")
    settings = TrainSettings(dim=8, heads=2, epochs=1, history=10, use_graph=False, device="cpu", seed=1)
    train(data, root / "run", store=store, settings=settings, data_settings=DataSettings(select_on="valid"))
    return data, store, root / "run"


# --- an independent computation: prediction.txt, the text store, the data files -------------------


def _behaviors(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(
        path,
        sep="\t",
        header=None,
        names=["id", "user", "time", "history", "impressions"],
        quoting=csv.QUOTE_NONE,
        keep_default_na=False,
        dtype=str,
    )
    frame["history"] = frame["history"].str.split()
    frame["impressions"] = frame["impressions"].str.split()
    return frame


def _js2(p: dict[str, float], q: dict[str, float]) -> float:
    total = 0.0
    for c in set(p) | set(q):
        a, b = p.get(c, 0.0), q.get(c, 0.0)
        m = (a + b) / 2
        total += (0.5 * a * math.log2(a / m) if a > 0 else 0.0) + (
            0.5 * b * math.log2(b / m) if b > 0 else 0.0
        )
    return total


def recompute(data: Path, store: Path, prediction: Path, k: int) -> dict[str, float]:
    """Every beyond-accuracy metric at k from the files alone, as docs/evaluation.md defines them."""
    category: dict[str, str] = {}
    for folder in ("train", "valid"):
        news = pd.read_csv(
            data / folder / "news.tsv", sep="\t", header=None, quoting=csv.QUOTE_NONE, dtype=str
        )
        category.update(zip(news[0], news[1], strict=True))
    ids = (store / "ids.txt").read_text().split("\n")
    matrix = np.load(store / "vectors.npy")
    vector = {i: matrix[r] / np.linalg.norm(matrix[r]) for r, i in enumerate(ids) if i}

    train, valid = _behaviors(data / "train" / "behaviors.tsv"), _behaviors(data / "valid" / "behaviors.tsv")
    users_of: dict[str, set[str]] = defaultdict(set)
    for user, history, shown in zip(train["user"], train["history"], train["impressions"], strict=True):
        for news_id in history + [c[:-2] for c in shown if c.endswith("-1")]:
            users_of[news_id].add(user)
    n_users = train["user"].nunique()
    clicks = Counter(c[:-2] for shown in valid["impressions"] for c in shown if c.endswith("-1"))

    ranks = {}
    for line in prediction.read_text().splitlines():
        imp, _, body = line.partition(" ")
        ranks[imp] = [int(r) for r in body.strip("[]").split(",")]
    per: dict[str, list[float]] = defaultdict(list)
    shown_in_top: Counter[str] = Counter()
    catalogue: set[str] = set()
    for imp, history, shown in zip(valid["id"], valid["history"], valid["impressions"], strict=True):
        cands = [c[:-2] for c in shown]
        catalogue |= set(cands)
        top = [news_id for _, news_id in sorted(zip(ranks[imp], cands, strict=True))][:k]
        shown_in_top.update(top)
        n = len(top)
        if n >= 2:
            pairs = [(a, b) for i, a in enumerate(top) for b in top[i + 1 :]]
            per["ild"].append(sum(1 - float(vector[a] @ vector[b]) for a, b in pairs) / len(pairs))
        per["categories"].append(len({category[n_id] for n_id in top}))
        if history:
            p = {c: v / len(history) for c, v in Counter(category[h] for h in history).items()}
            weights = [1 / math.log2(r + 1) for r in range(1, n + 1)]
            q: dict[str, float] = defaultdict(float)
            for w, news_id in zip(weights, top, strict=True):
                q[category[news_id]] += w / sum(weights)
            per["calibration"].append(_js2(p, q))
        per["novelty"].append(sum(-math.log2((len(users_of[n_id]) + 1) / (n_users + 1)) for n_id in top) / n)
        per["popularity"].append(sum(clicks[n_id] for n_id in top) / n)
    out = {kind: sum(values) / len(values) for kind, values in per.items()}
    out["coverage"] = len(shown_in_top) / len(catalogue)
    x = sorted(shown_in_top[c] for c in catalogue)
    out["gini"] = sum((2 * i - len(x) - 1) * v for i, v in enumerate(x, start=1)) / (len(x) * sum(x))
    return out


def test_metrics_equal_an_independent_computation_from_the_files(
    synthetic: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, store, run = synthetic
    report = _json([str(run), "--data", str(data), "--write-predictions", "--out", str(tmp_path)])
    assert report["reported_on"].startswith("valid/")
    values = _row(report, "model")["values"]
    for k in (5, 10):
        expected = recompute(data, store, tmp_path / "prediction.txt", k)
        for kind in KINDS:
            assert values[f"{kind}@{k}"] == pytest.approx(expected[kind], abs=1e-6), f"{kind}@{k}"
    # the lists are longer than 5: the two k differ
    assert values["ild@5"] != values["ild@10"]


# --- controls ---------------------------------------------------------------------------------------


def test_control_a_ranking_by_popularity_scores_the_highest_popularity(
    synthetic: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, store, run = synthetic
    # A prediction file ranking each impression's candidates by their clicks in the split: the
    # list that maximises Popularity@k, whatever the data.
    valid = _behaviors(data / "valid" / "behaviors.tsv")
    clicks = Counter(c[:-2] for shown in valid["impressions"] for c in shown if c.endswith("-1"))
    lines = []
    for imp, shown in zip(valid["id"], valid["impressions"], strict=True):
        order = sorted(range(len(shown)), key=lambda j: -clicks[shown[j][:-2]])
        ranks = [0] * len(shown)
        for rank, j in enumerate(order, start=1):
            ranks[j] = rank
        lines.append(f"{imp} [{','.join(map(str, ranks))}]")
    file = tmp_path / "by-popularity.txt"
    file.write_text("\n".join(lines) + "\n")
    report = _json([str(run), "--data", str(data), "--baselines", "--predictions", str(file)])
    for k in (5, 10):
        values = {row["name"]: row["values"][f"popularity@{k}"] for row in report["rows"]}
        best = values.pop("file by-popularity.txt")
        assert best > max(values.values()), values


def test_control_mmr_at_full_weight_raises_ild_and_calibration_lowers_miscalibration(
    synthetic: tuple[Path, Path, Path],
) -> None:
    data, store, _ = synthetic
    base = [
        "--data",
        str(data),
        "--baselines",
        "--embeddings",
        str(store),
        "--metrics",
        "ndcg,ild,calibration",
    ]
    plain, mmr, calibrated = (_json([*base, "--rerank", r]) for r in ("none", "mmr:1", "calibration:1"))
    assert mmr["rerank"] == "mmr:1" and plain["rerank"] == "none"
    for name in ("random", "popularity", "content (store)"):
        for k in (5, 10):
            assert _row(mmr, name)["values"][f"ild@{k}"] > _row(plain, name)["values"][f"ild@{k}"]
            assert (
                _row(calibrated, name)["values"][f"calibration@{k}"]
                < _row(plain, name)["values"][f"calibration@{k}"]
            )
    # MMR costs accuracy on the content row, whose order carries information
    assert (
        _row(mmr, "content (store)")["values"]["ndcg@10"]
        < _row(plain, "content (store)")["values"]["ndcg@10"]
    )


def test_rerank_names_itself_and_writes_a_mind_prediction_file(
    synthetic: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    data, store, run = synthetic
    result = runner.invoke(
        app,
        [
            "evaluate",
            str(run),
            "--data",
            str(data),
            "--rerank",
            "mmr:0.5",
            "--write-predictions",
            "--out",
            str(tmp_path),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "re-ranked by mmr:0.5" in result.stdout and "Beyond accuracy, top 10" in result.stdout
    saved = json.loads((tmp_path / "metrics-mmr-0.5.json").read_text())
    assert saved["rerank"] == "mmr:0.5" and not (tmp_path / "metrics.json").exists()
    lines = (tmp_path / "prediction-mmr-0.5.txt").read_text().splitlines()
    assert all(line.split(" ")[1].startswith("[") and len(line.split(" ")) == 2 for line in lines)
    # the file holds the re-ranked order: scored again (plain), it gives the re-ranked row's metrics
    again = _json(
        [
            "--predictions",
            str(tmp_path / "prediction-mmr-0.5.txt"),
            "--data",
            str(data),
            "--embeddings",
            str(store),
        ]
    )
    model = _row(saved, "model")["values"]
    file = _row(again, "file")["values"]
    for name in ("mrr", "ndcg@10", "ild@10", "calibration@5", "coverage@10"):
        assert file[name] == pytest.approx(model[name], abs=1e-9), name


def test_breakdowns_hold_the_beyond_metrics(synthetic: tuple[Path, Path, Path]) -> None:
    data, store, _ = synthetic
    base = ["--data", str(data), "--baselines", "--embeddings", str(store)]
    report = _json([*base, "--by", "history-length"])
    row = _row(report, "popularity")
    groups = row["groups"]
    # per-impression means recombine: the groups' novelty, weighted by their counts, is the whole's
    total = sum(g["counts"]["novelty@10"] for g in groups.values())
    mean = sum(g["values"]["novelty@10"] * g["counts"]["novelty@10"] for g in groups.values()) / total
    assert total == row["counts"]["novelty@10"] and mean == pytest.approx(row["values"]["novelty@10"])
    assert all("coverage@5" in g["values"] for g in groups.values())
    # a group's coverage is over its own candidates: lists longer than any impression cover them all
    whole = _json([*base, "--by", "history-length", "--metrics", "auc,coverage@1000"])
    assert all(g["values"]["coverage@1000"] == 1.0 for g in _row(whole, "random")["groups"].values())
    by_category = _row(_json([*base, "--by", "category"]), "popularity")["groups"]
    first = next(iter(by_category.values()))["values"]
    assert "ild@10" in first and "categories@10" not in first and "calibration@10" not in first


# --- bad values -----------------------------------------------------------------------------------


@pytest.fixture
def mind(tmp_path: Path) -> Path:
    return make_mind(tmp_path / "mind")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rerank", "pop:0.3"], "--rerank (evaluate.rerank): unknown re-ranker 'pop'"),
        (["--rerank", "mmr:1.5"], "--rerank (evaluate.rerank): re-ranker weight 1.5 is outside [0, 1]"),
        (["--rerank", "calibration:x"], "--rerank (evaluate.rerank): re-ranker weight 'x' is not a number"),
        (["--metrics", "auc,ild@0"], "--metrics (evaluate.metrics): k must be at least 1, got 'ild@0'"),
        (["--metrics", "diversity"], "--metrics (evaluate.metrics): unknown metric 'diversity'"),
        (["--metrics", "auc,ild"], "--metrics: ild@5, ild@10 need the news' text vectors"),
        (["--rerank", "mmr:0.3"], "--rerank mmr:0.3: MMR needs the news' text vectors"),
        (
            ["--rerank", "mmr:0.3", "--metrics", "ece"],
            "--metrics: logloss and ece read the model's probabilities",
        ),
    ],
)
def test_bad_values_are_one_line_naming_the_flag(mind: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["evaluate", "--data", str(mind), "--baselines", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert message in lines[-1] and "Traceback" not in result.output


def test_beyond_leaves_out_what_the_inputs_lack_and_says_so(mind: Path) -> None:
    result = runner.invoke(app, ["evaluate", "--data", str(mind), "--baselines", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["left_out"]) == {"ild@5", "ild@10"} and "ild@5" not in report["metrics"]
    assert "calibration@10" in report["beyond"]
    # said on stderr too, unless --json keeps the terminal quiet
    said = runner.invoke(app, ["evaluate", "--data", str(mind), "--baselines"])
    assert "ild@5, ild@10 left out: they need the news' text vectors" in " ".join(said.stderr.split())


# --- metrics.json -----------------------------------------------------------------------------------


def test_metrics_json_merges_rows_instead_of_dropping_them(mind: Path, tmp_path: Path) -> None:
    store = make_store(tmp_path / "store")
    out = tmp_path / "out"
    first = runner.invoke(
        app, ["evaluate", "--data", str(mind), "--baselines", "--embeddings", str(store), "--out", str(out)]
    )
    assert first.exit_code == 0, first.output
    # again, without the store and with fewer metrics: the content rows and MRR are not lost
    second = runner.invoke(
        app, ["evaluate", "--data", str(mind), "--baselines", "--metrics", "auc,ndcg", "--out", str(out)]
    )
    assert second.exit_code == 0, second.output
    said = " ".join(second.stderr.split())  # the terminal wraps it
    assert "kept 2 earlier row(s) not scored this time (content (store), content centred (store))" in said
    saved = json.loads((out / "metrics.json").read_text())
    names = [row["name"] for row in saved["rows"]]
    assert names == ["random", "popularity", "content (store)", "content centred (store)"]
    assert (
        _row(saved, "content (store)")["kept"] is True and "mrr" in _row(saved, "content (store)")["values"]
    )
    # the same baseline and seed: the metrics not asked for now stay with it
    assert "mrr" in _row(saved, "popularity")["values"] and "mrr" in saved["metrics"]
    # another protocol has a file of its own
    replay = runner.invoke(
        app, ["evaluate", "--data", str(mind), "--baselines", "--protocol", "replay", "--out", str(out)]
    )
    assert replay.exit_code == 0, replay.output
    assert (out / "metrics-replay.json").is_file()
    assert [row["name"] for row in json.loads((out / "metrics.json").read_text())["rows"]] == names


def test_metrics_json_of_other_figures_is_replaced_with_a_note(mind: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    other = {
        "data": "elsewhere",
        "reported_on": "test/",
        "metrics": ["auc"],
        "rows": [{"name": "old", "values": {}}],
    }
    (out / "metrics.json").write_text(json.dumps(other))
    result = runner.invoke(app, ["evaluate", "--data", str(mind), "--baselines", "--out", str(out)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "note: metrics.json held figures of another data (elsewhere); replaced" in said
    assert "old" not in [row["name"] for row in json.loads((out / "metrics.json").read_text())["rows"]]


def test_beyond_tables_read_at_80_columns(synthetic: tuple[Path, Path, Path]) -> None:
    """No heading of the beyond-accuracy tables is cut at 80 columns (they were: 'catego…')."""
    data, store, run = synthetic
    args = ["evaluate", str(run), "--data", str(data), "--baselines", "--embeddings", str(store)]
    result = runner.invoke(app, args, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    headings = [line for line in lines if "ILD" in line and "Gini" in line]
    assert len(headings) == 2 and all("…" not in line for line in headings), headings
    for short in ("cats", "calib↓", "pop", "cover"):
        assert short in headings[0]
    assert "cats: distinct categories, calib: calibration" in result.stdout
