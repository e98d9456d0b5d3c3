"""Re-rankers in serving: the served lists are the shared re-ranker's on every backend, they equal
what evaluate's scores give, the list's diversity is reported, and bad values are refused.

One tiny run with text vectors, exported with fp32 and int8 graphs (module fixtures); the engine
runs in-process, the HTTP contract through the app.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("onnxruntime", reason="the serve extra is not installed")

from train_helpers import hashing_store, synth  # noqa: E402

from newsrec_cli.cli import app  # noqa: E402
from newsrec_cli.rerank import RerankSpec, pool_size, rerank  # noqa: E402

runner = CliRunner()
pytestmark = pytest.mark.slow

TRAIN = ["--dim", "32", "--heads", "2", "--history", "10", "--batch-size", "32", "--threads", "1"]
BACKENDS = ("torch", "onnx", "int8")
SPECS = (RerankSpec("mmr", 0.7), RerankSpec("calibration", 0.8))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(data, run, export): a tiny model with text vectors and categories, exported fp32 + int8."""
    root = tmp_path_factory.mktemp("serve_rerank")
    data = synth(root, news=200, users=120)
    store = hashing_store(data, root / "store")
    run = root / "run"
    args = ["train", str(data), "-e", str(store), "-o", str(run), *TRAIN, "--epochs", "1", "--seed", "5"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = root / "export"
    result = runner.invoke(app, ["export", str(run), "--out", str(out), "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    return data, run, out


@pytest.fixture(scope="module")
def engines(exported: tuple[Path, Path, Path]):  # type: ignore[no-untyped-def]
    from newsrec_cli.serve.engine import Engine, ServeConfig

    _, _, out = exported
    loaded = {}
    for backend in BACKENDS:
        engine = Engine(ServeConfig(source=str(out), backend=backend))
        engine.load()
        loaded[backend] = engine
    return loaded


def _histories(engine, count: int = 6) -> list[list[str]]:  # type: ignore[no-untyped-def]
    ids = engine.table.ids
    rng = np.random.default_rng(0)
    return [list(rng.choice(ids, size=5, replace=False)) for _ in range(count)]


def _expected(
    engine, history: list[str], candidates: list[str] | None, k: int, spec: RerankSpec
) -> list[str]:  # type: ignore[no-untyped-def]
    """The shared re-ranker applied to the backend's own model ranking of the pool."""
    from newsrec_cli.rerank import category_distribution

    pool = len(candidates) if candidates is not None else pool_size(k)
    plain = engine.recommend(history=history, candidates=candidates, k=pool, rerank=RerankSpec())
    table = engine.table
    rows = np.asarray([table.index[i.news_id] for i in plain.items])
    scores = np.asarray([i.score for i in plain.items])
    text, categories, n = table.rerank_view()
    hist = category_distribution(categories[[table.index[h] for h in history]][None], n)[0]
    order = rerank(scores, k, spec, vectors=text[rows], categories=categories[rows], history=hist)
    return [table.ids[rows[j]] for j in order[:k]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_served_lists_are_the_shared_reranker_on_every_backend(
    engines, backend: str, spec: RerankSpec
) -> None:  # type: ignore[no-untyped-def]
    engine = engines[backend]
    changed = 0
    for history in _histories(engine):
        served = engine.recommend(history=history, k=5, rerank=spec)
        assert [i.news_id for i in served.items] == _expected(engine, history, None, 5, spec)
        assert served.rerank == spec
        plain = engine.recommend(history=history, k=5)
        changed += [i.news_id for i in served.items] != [i.news_id for i in plain.items]
        candidates = [i for i in engine.table.ids[:40] if i not in history]
        ranked = engine.recommend(history=history, candidates=candidates, k=5, rerank=spec)
        assert [i.news_id for i in ranked.items] == _expected(engine, history, candidates, 5, spec)
    assert changed, "the re-ranker changed no list: the test could not tell it from none"


def test_backends_agree_on_the_reranked_lists(engines) -> None:  # type: ignore[no-untyped-def]
    """torch and onnx fp32 give the same lists; int8 may differ only where its scores do."""
    for history in _histories(engines["torch"]):
        lists = {
            b: [i.news_id for i in engines[b].recommend(history=history, k=5, rerank=SPECS[0]).items]
            for b in ("torch", "onnx")
        }
        assert lists["torch"] == lists["onnx"]


def test_serve_equals_evaluate_scores_reranked(exported, engines) -> None:  # type: ignore[no-untyped-def]
    """An impression re-ranked from evaluate's scores (score_impressions, the run's text store and
    news.tsv categories) gives the list serve returns for the same candidates and history."""
    from newsrec_cli.model.inference import score_impressions
    from newsrec_cli.rerank import category_distribution
    from newsrec_cli.runs.loading import load_run
    from newsrec_cli.serve.export import validation_impressions

    _, run, _ = exported
    loaded = load_run(run, device="cpu")
    dataset, valid = validation_impressions(loaded, 12)
    scores = score_impressions(loaded, dataset, valid)
    news = dataset.news
    store = loaded.text_store
    engine = engines["torch"]
    codes: dict[str, int] = {}
    checked = 0
    names = valid.news_vocab.ids
    for i in range(len(valid)):
        cands = [names[c] for c in valid.candidates_of(i)]
        history = [names[h] for h in valid.history_of(i)]
        if len(set(cands)) != len(cands) or set(cands) & set(history):
            continue
        vectors, _ = store.lookup(cands)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        cats = [news.category[news.index[c]] for c in cands + history]
        for c in cats:
            codes.setdefault(c, len(codes))
        cand_codes = np.asarray([codes[c] for c in cats[: len(cands)]])
        hist = category_distribution(np.asarray([[codes[c] for c in cats[len(cands) :]]]), len(codes))[0]
        s = scores[valid.candidate_offsets[i] : valid.candidate_offsets[i + 1]]
        for spec in SPECS:
            order = rerank(s, 5, spec, vectors=vectors, categories=cand_codes, history=hist)[:5]
            served = engine.recommend(history=history, candidates=cands, k=5, rerank=spec, strict=False)
            assert [i.news_id for i in served.items] == [cands[j] for j in order]
        checked += 1
    assert checked >= 6, checked


def test_the_list_reports_its_diversity_and_mmr_raises_it(engines) -> None:  # type: ignore[no-untyped-def]
    engine = engines["onnx"]
    text, categories, _ = engine.table.rerank_view()
    plain_ild, diverse_ild = [], []
    for history in _histories(engine, 10):
        plain = engine.recommend(history=history, k=5)
        rows = [engine.table.index[i.news_id] for i in plain.items]
        v = text[rows]
        sims = v @ v.T
        by_hand = float(np.mean(1 - sims[np.triu_indices(5, 1)]))
        assert plain.diversity.ild == pytest.approx(by_hand, abs=1e-6)
        assert plain.diversity.categories == len(set(categories[rows]))
        assert plain.diversity.calibration is not None
        plain_ild.append(plain.diversity.ild)
        diverse_ild.append(
            engine.recommend(history=history, k=5, rerank=RerankSpec("mmr", 1.0)).diversity.ild
        )
    # the control: MMR at full weight must raise the lists' diversity
    assert np.mean(diverse_ild) > np.mean(plain_ild)


def test_calibration_at_full_weight_lowers_the_divergence(engines) -> None:  # type: ignore[no-untyped-def]
    engine = engines["onnx"]
    plain, calibrated = [], []
    for history in _histories(engine, 10):
        plain.append(engine.recommend(history=history, k=5).diversity.calibration)
        spec = RerankSpec("calibration", 1.0)
        calibrated.append(engine.recommend(history=history, k=5, rerank=spec).diversity.calibration)
    assert np.mean(calibrated) < np.mean(plain)


def test_http_rerank_field_and_bad_values(exported) -> None:  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from newsrec_cli.serve.app import create_app
    from newsrec_cli.serve.engine import ServeConfig

    _, _, out = exported
    config = ServeConfig(source=str(out), backend="onnx", rerank="mmr:0.3")
    with TestClient(create_app(config, load_in_background=False)) as client:
        engine = client.app.state.engine
        history = _histories(engine, 1)[0]
        answer = client.post("/v1/recommend", json={"history": history, "k": 5})
        assert answer.status_code == 200, answer.text
        assert answer.json()["rerank"] == {"method": "mmr", "weight": 0.3}  # the server's default
        assert set(answer.json()["diversity"]) == {"ild", "categories", "calibration"}
        body = {"history": history, "k": 5, "rerank": {"method": "calibration", "weight": 1.0}}
        assert client.post("/v1/recommend", json=body).json()["rerank"]["method"] == "calibration"
        for bad in (
            {"method": "mmr", "weight": 1.5},
            {"method": "pop", "weight": 0.5},
            {"method": "mmr", "weight": -0.1},
        ):
            answer = client.post("/v1/recommend", json={"history": history, "rerank": bad})
            assert answer.status_code == 422, answer.text
            assert "rerank" in answer.text
            assert len(answer.content) < 4096


def test_cli_refuses_a_bad_rerank_in_one_line(exported) -> None:  # type: ignore[no-untyped-def]
    _, run, _ = exported
    for bad, reason in (("mmr:2", "outside [0, 1]"), ("popular:0.2", "unknown re-ranker")):
        result = runner.invoke(app, ["recommend", str(run), "--history", "", "--rerank", bad])
        assert result.exit_code == 2, result.output
        assert "--rerank" in result.output and reason in result.output
        assert "Traceback" not in result.output


def test_a_list_without_categories_has_no_calibration_and_stays_valid_json(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Fresh news without a category: the list's calibration is null, never NaN (a NaN made the
    JSON answer a 500)."""
    import json

    from newsrec_cli.serve.engine import Engine, NewsRecord, ServeConfig

    _, _, out = exported
    engine = Engine(ServeConfig(source=str(out), backend="onnx", state_dir=str(tmp_path / "state")))
    engine.load()
    engine.ingest([NewsRecord("FRESH-1", title="a fresh story"), NewsRecord("FRESH-2", title="another one")])
    history = engine.table.ids[:3]
    for spec in (RerankSpec(), *SPECS):
        answer = engine.recommend(history=history, candidates=["FRESH-1", "FRESH-2"], k=2, rerank=spec)
        assert answer.diversity is not None and answer.diversity.calibration is None
        assert answer.diversity.categories == 0
        json.dumps(answer.as_json(), allow_nan=False)  # what the HTTP layer sends
