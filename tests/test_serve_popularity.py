"""Serving a run trained with popularity: export, every backend, POST /v1/events, live counts.

One tiny run (`data synth --preset trending`, the gate head) is trained and exported once; the
backends are checked in process against evaluate, the routes on real `newsrec serve` processes
(and a real redis-server) on loopback ports.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("onnxruntime", reason="the serve extra is not installed")

from train_helpers import hashing_store, invoke, runner  # noqa: E402

from newsrec_cli.cli import app  # noqa: E402
from newsrec_cli.settings import DataSettings, TrainSettings  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pop_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from newsrec_cli.train import train

    root = tmp_path_factory.mktemp("serve_popularity")
    data = root / "data"
    invoke(
        "data",
        "synth",
        "--out",
        data,
        "--preset",
        "trending",
        "--news",
        "300",
        "--users",
        "300",
        "--days",
        "3",
    )
    store = hashing_store(data, root / "store")
    settings = TrainSettings(
        dim=16,
        heads=2,
        epochs=2,
        threads=1,
        device="cpu",
        seed=0,
        use_popularity=True,
        popularity_head="gate",
    )
    train(data, root / "run", store=store, settings=settings, data_settings=DataSettings(valid_days=1))
    out = root / "export"
    result = runner.invoke(
        app, ["export", str(root / "run"), "--out", str(out), "--quantize", "int8", "--json"]
    )
    assert result.exit_code == 0, result.output
    return {"data": data, "run": root / "run", "export": out, "root": root}


def _valid(run: Path):  # type: ignore[no-untyped-def]
    """(dataset, the run's validation impressions, evaluate's offline logits of them)."""
    from newsrec_cli.evaluate.model_scores import run_scores
    from newsrec_cli.evaluate.runner import select_split
    from newsrec_cli.runs.loading import load_run
    from newsrec_cli.serve.export import validation_impressions

    loaded = load_run(run, device="cpu")
    dataset, valid = validation_impressions(loaded, 10_000)
    known = select_split(dataset, "valid", loaded.data_settings).train
    return dataset, valid, known, run_scores(loaded, dataset, valid, known, "offline")


def _engine(source: Path, backend: str, state: Path, redis_url: str | None = None):  # type: ignore[no-untyped-def]
    from newsrec_cli.serve.engine import Engine, ServeConfig

    engine = Engine(ServeConfig(str(source), backend=backend, state_dir=str(state), redis_url=redis_url))
    engine.load()
    return engine


def _ranked(engine, valid, i: int) -> tuple[list[str], list[float]]:  # type: ignore[no-untyped-def]
    ids = valid.news_vocab.ids
    answer = engine.recommend(
        history=[ids[j] for j in valid.history_of(i)],
        candidates=[ids[j] for j in valid.candidates_of(i)],
        k=len(valid.candidates_of(i)),
        exclude_history=False,
    )
    return [it["news_id"] for it in answer["items"]], [it["score"] for it in answer["items"]]


def test_export_takes_the_popularity_features_as_scorer_inputs(pop_run: dict[str, Path]) -> None:
    import onnx

    manifest = json.loads((pop_run["export"] / "export.json").read_text())
    assert manifest["popularity"]["head"] == "gate"
    assert manifest["popularity"]["counts"] == "popularity.json"
    assert "popularity.json" in manifest["checksums"]
    for name in (manifest["graphs"]["fp32"]["score"], manifest["graphs"]["int8"]["score"]):
        inputs = [i.name for i in onnx.load(str(pop_run["export"] / name)).graph.input]
        assert inputs == ["user_state", "candidates", "popularity", "history_length"]
    rows = {r["backend"]: r for r in manifest["parity"]["rows"]}
    assert rows["onnx fp32"]["max_abs_logit_diff"] <= 1e-4
    assert abs(rows["onnx int8"]["auc_diff_vs_fp32"]) <= 0.003


@pytest.mark.parametrize("backend", ["torch", "onnx", "int8"])
def test_every_backend_ranks_as_evaluate_offline(
    pop_run: dict[str, Path], backend: str, tmp_path: Path
) -> None:
    """With no events, the server scores with the counts frozen at the training end: evaluate's
    offline protocol. torch and onnx rank as evaluate does; int8 within the export's AUC bar."""
    from newsrec_cli.evaluate.metrics import compute_metrics

    dataset, valid, _, logits = _valid(pop_run["run"])
    engine = _engine(pop_run["export"], backend, tmp_path / "state")
    ids = valid.news_vocab.ids
    served = np.empty(len(valid.candidates), np.float64)
    agree = checked = 0
    for i in range(len(valid)):
        cands = valid.candidates_of(i)
        if len(set(cands.tolist())) != len(cands):
            continue
        got, scores = _ranked(engine, valid, i)
        lo, hi = valid.candidate_offsets[i], valid.candidate_offsets[i + 1]
        by_id = dict(zip(got, scores, strict=True))
        served[lo:hi] = [by_id[ids[c]] for c in cands]
        expected = [ids[cands[j]] for j in np.argsort(-logits[lo:hi], kind="stable")]
        agree += got == expected
        checked += 1
    assert checked >= 0.9 * len(valid)
    if backend == "int8":
        auc = compute_metrics(served, valid.labels, valid.candidate_offsets, ["auc"]).values["auc"]
        reference = compute_metrics(logits, valid.labels, valid.candidate_offsets, ["auc"]).values["auc"]
        assert abs(auc - reference) <= 0.003
    else:
        assert agree == checked
        np.testing.assert_allclose(served, logits, atol=1e-4)
    # the popularity term matters: without it the served scores would be evaluate's content logits
    assert (
        engine.recommend(history=[], candidates=[ids[valid.candidates[0]]], k=1)["popularity"]["events"] == 0
    )
