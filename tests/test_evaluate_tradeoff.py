"""`evaluate --tradeoff`: λ = 0 is plain evaluate, its intervals are 0, the MMR control, the plot,
the bootstrap's chunks, and bad flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from train_helpers import hashing_store, synth
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.evaluate import paired

runner = CliRunner()
NAMES = ("ndcg@10", "auc", "ild@10", "calibration@10", "novelty@10", "coverage@10")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data, run): synthetic MIND, hashing vectors, a one-epoch model chosen on valid/."""
    from newsrec_cli.settings import DataSettings, TrainSettings
    from newsrec_cli.train import train

    root = tmp_path_factory.mktemp("tradeoff")
    data = synth(root, news=200, users=100)
    store = hashing_store(data, root / "store")
    settings = TrainSettings(dim=8, heads=2, epochs=1, history=10, use_graph=False, device="cpu", seed=1)
    train(data, root / "run", store=store, settings=settings, data_settings=DataSettings(select_on="valid"))
    return data, root / "run"


def _invoke(*args: str) -> dict:
    result = runner.invoke(app, ["evaluate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def sweep(synthetic: tuple[Path, Path]) -> dict:
    data, run = synthetic
    return _invoke(str(run), "--data", str(data), "--tradeoff", "mmr", "--grid", "0,0.5,1")


def test_lambda_zero_is_plain_evaluate_and_its_intervals_are_zero(
    synthetic: tuple[Path, Path], sweep: dict
) -> None:
    data, run = synthetic
    plain = _invoke(str(run), "--data", str(data), "--metrics", ",".join(NAMES), "--out", str(run / "plain"))
    model = next(row for row in plain["rows"] if row["kind"] == "model")
    zero = sweep["rows"][0]
    assert zero["lambda"] == 0.0
    for name in NAMES:
        assert zero["values"][name] == pytest.approx(model["values"][name], abs=1e-12), name
        delta = zero["delta_vs_0"][name]
        assert delta["low"] <= 0.0 <= delta["high"] and delta["mid"] == 0.0


def test_control_full_mmr_buys_diversity_and_costs_accuracy(sweep: dict) -> None:
    full = sweep["rows"][-1]
    assert full["lambda"] == 1.0
    ild = full["delta_vs_0"]["ild@10"]
    assert ild["mid"] > 0 and ild["low"] > 0  # more diverse, the interval above 0
    assert full["delta_vs_0"]["ndcg@10"]["mid"] < 0
    assert sweep["ranking"] == "impressions" and sweep["protocol"] == "offline"


def test_the_plot_is_written_into_the_run(synthetic: tuple[Path, Path], sweep: dict) -> None:
    _, run = synthetic
    png = run / "tradeoff-mmr-offline.png"
    assert sweep["written"] == [str(png)]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_retrieve_sweep_reports_recall(synthetic: tuple[Path, Path]) -> None:
    data, run = synthetic
    report = _invoke(
        str(run), "--data", str(data), "--tradeoff", "calibration", "--grid", "0.5", "--retrieve"
    )
    assert report["ranking"] == "retrieve"
    assert report["metrics"][:2] == ["recall@10", "hit@10"]
    assert [row["lambda"] for row in report["rows"]] == [0.0, 0.5]  # λ = 0 always added
    full = report["rows"][1]["delta_vs_0"]["calibration@10"]
    assert full["mid"] < 0 and full["high"] < 0  # the control: calibrated lists diverge less
    assert (run / "tradeoff-calibration-offline-retrieve.png").exists()
    names = "ild@10,calibration@10,novelty@10,coverage@10"  # hit@k and recall@k always come
    plain = _invoke(
        str(run), "--data", str(data), "--retrieve", "--metrics", names, "--out", str(run / "plain-r")
    )
    model = next(row for row in plain["rows"] if row["kind"] == "model")
    for name in ["hit@10", "recall@10", *names.split(",")]:  # λ = 0: what evaluate --retrieve gives
        assert report["rows"][0]["values"][name] == pytest.approx(model["values"][name], abs=1e-12), name


def test_bootstrap_chunks_do_not_change_the_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = np.concatenate(list(paired.resample_weights(7, 50, seed=3)))
    monkeypatch.setattr(paired, "BOOTSTRAP_BUDGET", 7 * 4)  # 4 resamples a chunk
    chunked = list(paired.resample_weights(7, 50, seed=3))
    assert len(chunked) == 13
    np.testing.assert_array_equal(np.concatenate(chunked), whole)
    assert (whole.sum(axis=1) == 7).all()


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--tradeoff", "popularity"], "--tradeoff"),
        (["--tradeoff", "mmr", "--grid", "0,1.5"], "--grid"),
        (["--tradeoff", "mmr", "--grid", "0,x"], "--grid"),
        (["--grid", "0,0.5"], "--grid"),
        (["--tradeoff", "mmr", "--rerank", "mmr:0.3"], "--rerank"),
    ],
)
def test_bad_flags_are_one_line(synthetic: tuple[Path, Path], args: list[str], flag: str) -> None:
    data, run = synthetic
    result = runner.invoke(app, ["evaluate", str(run), "--data", str(data), *args])
    assert result.exit_code != 0
    assert flag in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
