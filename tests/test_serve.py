"""export / serve / recommend, end to end with real components: ONNX Runtime, uvicorn, redis-server.

One tiny run is trained on synthetic data and exported once (module fixtures); servers run as
real subprocesses on free loopback ports.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("onnxruntime", reason="the serve extra is not installed")

from serve_helpers import Redis, Server  # noqa: E402
from train_helpers import graph, hashing_store, synth  # noqa: E402

from newsrec_cli.cli import app  # noqa: E402

runner = CliRunner()
pytestmark = pytest.mark.slow

TRAIN = ["--dim", "32", "--heads", "2", "--history", "10", "--batch-size", "32", "--threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data, run): a tiny model with text, IDs, categories and user IDs, trained one epoch."""
    root = tmp_path_factory.mktemp("serve")
    data = synth(root, news=300, users=300)
    store = hashing_store(data, root / "store")
    run = root / "run"
    result = runner.invoke(
        app,
        [
            "train",
            str(data),
            "-e",
            str(store),
            "-o",
            str(run),
            *TRAIN,
            "--epochs",
            "2",
            "--use-user-id",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    return data, run


@pytest.fixture(scope="module")
def exported(trained: tuple[Path, Path]) -> tuple[Path, dict]:
    _, run = trained
    out = run.parent / "export"
    result = runner.invoke(app, ["export", str(run), "--out", str(out), "--quantize", "int8", "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def _valid(run: Path, count: int = 100):  # type: ignore[no-untyped-def]
    from newsrec_cli.model.inference import score_impressions
    from newsrec_cli.runs.loading import load_run
    from newsrec_cli.serve.export import validation_impressions

    loaded = load_run(run, device="cpu")
    dataset, valid = validation_impressions(loaded, count)
    return loaded, dataset, valid, score_impressions(loaded, dataset, valid)


# ----------------------------------------------------------------------------- the model contract


def test_forward_equals_encode_then_score(trained: tuple[Path, Path]) -> None:
    """forward(h, m, c) == score(encode_user_state(encode_news(h), m, users), encode_news(c)):
    what export and serve are built on; a model change that breaks it fails here."""
    from newsrec_cli.model.inputs import recent_history

    _, run = trained
    loaded, _, valid, _ = _valid(run, 40)
    model = loaded.model
    rows = np.arange(len(valid))
    hist, mask = recent_history(valid, rows, loaded.settings.history)
    counts = valid.candidate_counts[rows]
    K = int(counts.min())
    cands = np.stack([valid.candidates_of(i)[:K] for i in rows]).astype(np.int64)
    users = torch.from_numpy(loaded.user_rows(valid))
    h, m, c = torch.from_numpy(hist), torch.from_numpy(mask), torch.from_numpy(cands)
    with torch.no_grad():
        direct = model(h, m, c, users)
        composed = model.score(model.encode_user_state(model.encode_news(h), m, users), model.encode_news(c))
    assert direct.shape == (len(rows), K)
    torch.testing.assert_close(direct, composed, rtol=1e-5, atol=1e-5)
    assert direct.std() > 0  # a constant model would pass trivially


# ----------------------------------------------------------------------------- export


def test_export_manifest_table_and_parity(trained: tuple[Path, Path], exported: tuple[Path, dict]) -> None:
    from newsrec_cli.embed.store import EmbeddingStore
    from newsrec_cli.runs.loading import load_run
    from newsrec_cli.serve.backends import OnnxBackend
    from newsrec_cli.serve.export import graph_files, manifest_graphs, run_news_inputs, sha256

    _, run = trained
    out, report = exported
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["config_sha256"] == sha256(run / "config.json")
    assert manifest["opset"] == 17 and manifest["onnxruntime"]
    # the learned 32-d vector, then the content prior's unit text vector
    assert manifest["shapes"]["news_vector"] == [None, load_run(run, "cpu").model.dim]
    for name, digest in manifest["checksums"].items():
        assert sha256(out / name) == digest, name
    rows = {r["backend"]: r for r in report["parity"]}
    assert rows["onnx fp32"]["max_abs_logit_diff"] <= 1e-4
    assert abs(rows["onnx int8"]["auc_diff_vs_fp32"]) <= 0.003
    assert rows["onnx int8"]["max_abs_logit_diff"] > 0  # int8 really is another model

    # The table is keyed by ID: look up in shuffled order against the torch model.
    loaded = load_run(run, device="cpu")
    ids, inputs, _ = run_news_inputs(loaded)
    store = EmbeddingStore.open(out / "news_vectors")
    assert sorted(store.ids) == sorted(ids)
    rng = np.random.default_rng(0)
    pick = rng.choice(len(ids), 50, replace=False)
    table, missing = store.lookup([ids[i] for i in pick])
    assert not missing
    with torch.no_grad():
        expected = loaded.model.encode_news(torch.from_numpy(pick + 1)).numpy()  # run vocab: row 0 = pad
    np.testing.assert_allclose(table, expected, atol=1e-5)
    # The ONNX news encoder from per-news inputs gives the same vectors.
    onnx = OnnxBackend(graph_files(out, manifest_graphs(manifest, False)))
    np.testing.assert_allclose(onnx.encode_news(inputs.rows(pick)), expected, atol=1e-4)


def test_export_bad_input_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert "config.json" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["serve", str(tmp_path), "--backend", "gpu"])
    assert result.exit_code != 0 and "torch, onnx or int8" in result.output


def test_int8_export_stores_the_table_in_int8_and_quantises_only_what_shrinks(
    trained: tuple[Path, Path], exported: tuple[Path, dict]
) -> None:
    """The int8 table holds int8 codes with a scale per row and part (4x smaller than float32,
    each vector within half a step of the int8 encoder's); graphs int8 cannot shrink (the scorer,
    keys, queries) are the fp32 files, and the news encoder's embedding tables are int8 too."""
    from newsrec_cli.runs.loading import load_run
    from newsrec_cli.serve.backends import OnnxBackend
    from newsrec_cli.serve.export import graph_files, manifest_graphs, run_news_inputs
    from newsrec_cli.serve.vector_table import read_table

    _, run = trained
    out, _ = exported
    manifest = json.loads((out / "export.json").read_text())
    model = load_run(run, device="cpu").model
    assert manifest["version"] == 2 and manifest["retrieval"] == "keys"
    table = manifest["tables"]["int8"]
    assert table["dtype"] == "int8" and table["parts"] == [0, model.news_dim, model.dim]
    codes = np.load(out / table["path"] / "vectors.npy")
    fp32 = np.load(out / manifest["tables"]["fp32"]["path"] / "vectors.npy")
    assert codes.dtype == np.int8 and codes.shape == fp32.shape and fp32.dtype == np.float32
    on_disk = sum(f.stat().st_size for f in (out / table["path"]).iterdir())
    assert on_disk * 3.5 < sum(f.stat().st_size for f in (out / "news_vectors").iterdir())
    int8_names = manifest_graphs(manifest, True)
    assert int8_names["news"] == "news_encoder.int8.onnx" and int8_names["user"] == "user_encoder.int8.onnx"
    assert {int8_names[p] for p in ("score", "keys", "queries")} == {
        "scorer.onnx",
        "keys.onnx",
        "queries.onnx",
    }
    assert not list(out.glob("scorer.int8.onnx"))
    assert (out / "news_encoder.int8.onnx").stat().st_size * 1.8 < (out / "news_encoder.onnx").stat().st_size
    # Dequantised rows match the int8 encoder's vectors within half a step of each part's scale.
    ids, inputs, _ = run_news_inputs(load_run(run, device="cpu"))
    int8 = OnnxBackend(graph_files(out, int8_names), "int8")
    expected = int8.encode_news(inputs)
    served_ids, vectors, _ = read_table(out / table["path"])
    assert served_ids == ids
    scales = np.load(out / table["path"] / "scales.npy")
    for p, (a, b) in enumerate(zip(table["parts"][:-1], table["parts"][1:], strict=True)):
        err = np.abs(vectors[:, a:b] - expected[:, a:b]).max(axis=1)
        assert np.all(err <= scales[:, p] * 0.5 + 1e-6)
        assert np.all(scales[:, p] > 0)


def test_int8_only_export_old_exports_and_newer_ones(
    trained: tuple[Path, Path], exported: tuple[Path, dict], tmp_path: Path
) -> None:
    """--quantize int8-only keeps the int8 set alone and
    serves as the int8 set of a full export does; another backend is refused in one line. An
    export of version 1 (float32 tables, no keys graphs) still serves; a newer one is refused."""
    import shutil

    from newsrec_cli.embed.store import commit, new_meta
    from newsrec_cli.serve.engine import Engine, ServeConfig
    from newsrec_cli.serve.vector_table import read_table

    _, run = trained
    full, _ = exported
    small = tmp_path / "int8_only"
    result = runner.invoke(
        app, ["export", str(run), "--out", str(small), "--quantize", "int8-only", "--json"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((small / "export.json").read_text())
    assert manifest["graphs"]["fp32"] is None and manifest["tables"]["fp32"] is None
    assert not (small / "news_vectors").exists() and not (small / "news_encoder.onnx").exists()
    assert set(manifest["checksums"]) == {
        str(f.relative_to(small)) for f in small.rglob("*") if f.is_file()
    } - {"export.json"}
    ids = [line.split("\t")[0] for line in (full / "news.tsv").read_text().splitlines()]
    body = {"history": ids[3:9], "k": 8}

    def answer(source: Path, backend: str) -> list[tuple[str, float]]:
        engine = Engine(ServeConfig(str(source), backend=backend, state_dir=str(tmp_path / f"s{backend}")))
        engine.load()
        return [(i["news_id"], round(i["score"], 5)) for i in engine.recommend(**body).as_json()["items"]]

    assert answer(small, "int8") == answer(full, "int8")
    refused = runner.invoke(app, ["recommend", str(small), "--backend", "onnx", "--history", ids[0]])
    assert refused.exit_code != 0 and "int8-only" in refused.output and "Traceback" not in refused.output
    assert len(refused.output.strip().splitlines()) == 1

    # Version 1: the layout before int8 tables and keys graphs.
    old = tmp_path / "v1"
    shutil.copytree(full, old)
    for name in ("keys.onnx", "queries.onnx"):
        (old / name).unlink()
    v1_ids, v1_int8, meta = read_table(full / "news_vectors_int8")
    shutil.rmtree(old / "news_vectors_int8")
    signature = {k: meta[k] for k in ("kind", "provider", "model", "dimension", "template", "normalized")}
    commit(old / "news_vectors_int8", v1_ids, v1_int8, new_meta(signature))
    v1 = json.loads((full / "export.json").read_text())
    for key in ("tables", "retrieval"):
        del v1[key]
    v1["version"] = 1
    v1["graphs"] = {
        "fp32": {"news": "news_encoder.onnx", "user": "user_encoder.onnx", "score": "scorer.onnx"},
        "int8": {"news": "news_encoder.int8.onnx", "user": "user_encoder.int8.onnx", "score": "scorer.onnx"},
    }
    (old / "export.json").write_text(json.dumps(v1))
    for backend in ("onnx", "int8"):
        engine = Engine(ServeConfig(str(old), backend=backend, state_dir=str(tmp_path / f"v1{backend}")))
        engine.load()
        assert engine.retriever.method == "exact-model"  # no keys graph: every news through the scorer
        got = [(i["news_id"], round(i["score"], 5)) for i in engine.recommend(**body).as_json()["items"]]
        assert got == answer(full, backend)
    v1["version"] = 3
    (old / "export.json").write_text(json.dumps(v1))
    newer = runner.invoke(app, ["recommend", str(old), "--backend", "onnx", "--history", ids[0]])
    assert newer.exit_code != 0 and "version 3" in newer.output and "Traceback" not in newer.output


# ----------------------------------------------------------------------------- HTTP


@pytest.fixture(scope="module")
def redis_server() -> Redis:
    server = Redis()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def torch_server(
    exported: tuple[Path, dict], redis_server: Redis, tmp_path_factory: pytest.TempPathFactory
) -> Server:
    out, _ = exported
    state = tmp_path_factory.mktemp("state")
    server = Server(
        out,
        "--backend",
        "torch",
        "--redis-url",
        redis_server.url,
        "--state-dir",
        str(state),
        log=state.parent / "torch_server.log",
    )
    yield server
    server.stop()


def _http_order(server: Server, loaded, valid, i: int) -> tuple[list[str], list[float]]:  # type: ignore[no-untyped-def]
    ids = valid.news_vocab.ids
    users = valid.user_vocab.ids
    body = {
        "user_id": users[valid.users[i]],
        "history": [ids[j] for j in valid.history_of(i)],
        "candidates": [ids[j] for j in valid.candidates_of(i)],
        "k": len(valid.candidates_of(i)),
        "exclude_history": False,
    }
    r = server.post("/v1/recommend", body)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    return [it["news_id"] for it in items], [it["score"] for it in items]


def _check_against_evaluate(server: Server, run: Path, tolerance: float, count: int = 100) -> int:
    loaded, _, valid, logits = _valid(run, count)
    assert len(valid) == count
    ids = valid.news_vocab.ids
    checked = 0
    for i in range(len(valid)):
        cands = valid.candidates_of(i)
        if len(set(cands.tolist())) != len(cands):
            continue  # a repeated candidate has one place in a ranking
        scores = logits[valid.candidate_offsets[i] : valid.candidate_offsets[i + 1]]
        expected = [ids[cands[j]] for j in np.argsort(-scores, kind="stable")]
        got, got_scores = _http_order(server, loaded, valid, i)
        np.testing.assert_allclose(sorted(got_scores, reverse=True), np.sort(scores)[::-1], atol=tolerance)
        assert got == expected, f"impression {i}"
        checked += 1
    return checked


def test_http_ranking_equals_evaluate_torch(trained: tuple[Path, Path], torch_server: Server) -> None:
    assert _check_against_evaluate(torch_server, trained[1], 1e-5) >= 95


def test_http_ranking_equals_evaluate_onnx(
    trained: tuple[Path, Path], exported: tuple[Path, dict], tmp_path: Path
) -> None:
    server = Server(
        exported[0], "--backend", "onnx", "--state-dir", str(tmp_path / "st"), log=tmp_path / "onnx.log"
    )
    try:
        assert _check_against_evaluate(server, trained[1], 1e-4) >= 95
        r = server.post("/v1/recommend", {"history": [], "k": 3})
        assert r.json()["backend"] == "onnx" and r.json()["cold_start"] is True
    finally:
        server.stop()


def test_http_bad_input_is_4xx(torch_server: Server, exported: tuple[Path, dict]) -> None:
    known = [line.split("\t")[0] for line in (exported[0] / "news.tsv").read_text().splitlines()]
    r = torch_server.post(
        "/v1/recommend", {"history": [known[0], "NOPE1"], "candidates": [known[1], "NOPE2"]}
    )
    assert r.status_code == 422 and r.json()["detail"][0]["ctx"]["unknown"] == ["NOPE1", "NOPE2"]
    r = torch_server.post(
        "/v1/recommend",
        {"history": [known[0], "NOPE1"], "candidates": [known[1], known[2], "NOPE2"], "strict": False},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["unknown"] == ["NOPE1", "NOPE2"] and [i["news_id"] for i in body["items"]] != []
    assert {i["news_id"] for i in body["items"]} == {known[1], known[2]}
    r = torch_server.post("/v1/recommend", {"history": [], "candidates": known[:5], "k": 5})
    assert r.status_code == 200 and r.json()["cold_start"] is True and len(r.json()["items"]) == 5
    r = torch_server.post("/v1/recommend", {"history": known[:3], "candidates": known[:1] * 1001})
    assert r.status_code == 413
    r = torch_server.post("/v1/recommend", {"history": known[:1] * 1001})
    assert r.status_code == 413
    r = torch_server.post("/v1/recommend", {"history": known[:25], "k": 5})
    assert r.status_code == 200 and r.json()["history_truncated"] == 15 and r.json()["history_used"] == 10
    for k in (0, 1001, -1):
        assert torch_server.post("/v1/recommend", {"history": known[:2], "k": k}).status_code == 422
    assert torch_server.post("/v1/recommend", {"history": known[:2], "candidates": []}).status_code == 422
    assert torch_server.get("/v1/news/NOPE").status_code == 404
    # exclude_history: a candidate in the history is dropped and counted.
    r = torch_server.post("/v1/recommend", {"history": known[:2], "candidates": known[:4]})
    assert {i["news_id"] for i in r.json()["items"]} == set(known[2:4]) and r.json()["excluded"] == 2


def test_ingest_retrieve_update_and_restart(torch_server: Server, exported: tuple[Path, dict]) -> None:
    known = [line.split("\t")[0] for line in (exported[0] / "news.tsv").read_text().splitlines()]
    before = torch_server.get("/readyz").json()["news"]
    fresh = {
        "news_id": "FRESH1",
        "title": "Stunning horse wins the derby again",
        "abstract": "A fresh story.",
        "category": "sports",
        "subcategory": "horseracing",
        "entities": [{"label": "Kentucky Derby", "wikidata_id": "Q1"}],
        "published": "2031-05-01T10:00:00",
    }
    r = torch_server.post("/v1/news", {"news": [fresh]})
    assert r.status_code == 200 and r.json()["results"] == [{"news_id": "FRESH1", "status": "added"}]
    assert r.json()["news_count"] == before + 1
    got = torch_server.get("/v1/news/FRESH1").json()
    assert got["title"] == fresh["title"] and got["source"] == "ingested"
    # Retrieval over every news finds it; only it is newer than 2031.
    r = torch_server.post("/v1/recommend", {"history": known[:3], "k": 1000})
    assert "FRESH1" in [i["news_id"] for i in r.json()["items"]] and r.json()["mode"] == "retrieve"
    r = torch_server.post("/v1/recommend", {"history": known[:3], "k": 5, "since": "2031-01-01"})
    assert [i["news_id"] for i in r.json()["items"]] == ["FRESH1"]
    # An update keeps one copy and changes the vector (new category and text).
    score1 = torch_server.post("/v1/recommend", {"history": known[:3], "candidates": ["FRESH1"]}).json()[
        "items"
    ][0]
    r = torch_server.post(
        "/v1/news", {"news": [{**fresh, "title": "Markets fall sharply", "category": "finance"}]}
    )
    assert r.json()["results"][0]["status"] == "updated" and r.json()["news_count"] == before + 1
    score2 = torch_server.post("/v1/recommend", {"history": known[:3], "candidates": ["FRESH1"]}).json()[
        "items"
    ][0]
    assert score1["score"] != score2["score"]
    # A restart keeps it.
    torch_server.restart()
    assert torch_server.get("/readyz").json()["news"] == before + 1
    assert torch_server.get("/v1/news/FRESH1").json()["title"] == "Markets fall sharply"
    again = torch_server.post("/v1/recommend", {"history": known[:3], "candidates": ["FRESH1"]}).json()[
        "items"
    ][0]
    assert again["score"] == pytest.approx(score2["score"], abs=1e-5)


def test_redis_cache_hits_and_outage(
    torch_server: Server, redis_server: Redis, exported: tuple[Path, dict]
) -> None:
    import redis

    known = [line.split("\t")[0] for line in (exported[0] / "news.tsv").read_text().splitlines()]
    body = {"history": known[5:9], "candidates": known[20:30], "k": 10}
    first = torch_server.post("/v1/recommend", body).json()
    second = torch_server.post("/v1/recommend", body).json()
    assert first["cached_user"] is False and second["cached_user"] is True
    assert second["items"] == first["items"]
    client = redis.Redis.from_url(redis_server.url)
    keys = client.keys("newsrec:*")
    assert any(first["model_version"].encode() in k for k in keys)
    assert 0 < client.ttl(keys[0]) <= 3600
    metrics = torch_server.get("/metrics").text
    assert 'newsrec_user_cache_total{result="hit"}' in metrics
    # Redis dies mid-run: every request still succeeds, and the outage is logged once.
    redis_server.stop()
    for i in range(12):
        r = torch_server.post("/v1/recommend", {"history": known[i : i + 3], "k": 3})
        assert r.status_code == 200, r.text
    r = torch_server.post("/v1/recommend", body)
    assert r.status_code == 200 and r.json()["items"] == first["items"]
    # The server logs it while it answers; wait for the line itself, not for a guessed time.
    deadline = time.monotonic() + 60
    while "redis unavailable" not in torch_server.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert torch_server.log_path.read_text().count("redis unavailable") == 1


def test_metrics_and_docs(torch_server: Server) -> None:
    torch_server.post("/v1/recommend", {"history": [], "k": 2})
    text = torch_server.get("/metrics").text
    for name in (
        'newsrec_requests_total{method="POST",route="/v1/recommend",status="200"}',
        'newsrec_request_seconds_bucket{le="0.05",route="/v1/recommend"}',
        "newsrec_index_size",
        "newsrec_model_info{",
    ):
        assert name in text, name
    assert torch_server.get("/healthz").json() == {"status": "ok"}
    assert torch_server.get("/docs").status_code == 200
    schema = torch_server.get("/openapi.json").json()
    assert "/v1/recommend" in schema["paths"] and "/v1/news" in schema["paths"]


def test_recommend_body_is_exactly_the_documented_model(torch_server: Server) -> None:
    """/v1/recommend renders the engine's dict itself (no response_model pass): it must have
    exactly RecommendResponse's fields, each of the documented type."""
    from newsrec_cli.serve.app import RecommendResponse

    ids = [
        it["news_id"] for it in torch_server.post("/v1/recommend", {"history": [], "k": 5}).json()["items"]
    ]
    for body in ({"history": ids[:2], "k": 3}, {"history": ids[:1], "candidates": ids[1:], "k": 2}):
        answer = torch_server.post("/v1/recommend", body).json()
        assert set(answer) == set(RecommendResponse.model_fields)
        parsed = RecommendResponse.model_validate(answer, strict=True)
        assert parsed.model_dump(mode="json") == answer


# ----------------------------------------------------------------------------- a run with a graph


@pytest.fixture(scope="module")
def graph_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """(run, export, export report): a tiny run with the graph modality, as quickstart trains."""
    root = tmp_path_factory.mktemp("serve_graph")
    data = synth(root, news=150, users=80)
    store = hashing_store(data, root / "store")
    run = root / "run"
    args = ["train", str(data), "-e", str(store), "--graph", str(graph(data, root / "graph"))]
    result = runner.invoke(app, [*args, "-o", str(run), *TRAIN, "--epochs", "1", "--seed", "3"])
    assert result.exit_code == 0, result.output
    out = root / "export"
    result = runner.invoke(app, ["export", str(run), "--out", str(out), "--quantize", "none", "--json"])
    assert result.exit_code == 0, result.output
    return run, out, json.loads(result.stdout)


def test_graph_run_export_news_vectors(graph_run: tuple[Path, Path, dict]) -> None:
    """The exported news encoder takes each news' precomputed GNN vector: on the graph it gives
    the torch model's vector, off the graph (graph_present False) the learned "no graph" one."""
    from newsrec_cli.model.features import NewsFeatures
    from newsrec_cli.model.inference import graph_cached
    from newsrec_cli.runs.loading import load_run
    from newsrec_cli.serve.backends import OnnxBackend
    from newsrec_cli.serve.engine import Engine, NewsRecord, ServeConfig
    from newsrec_cli.serve.export import graph_files, manifest_graphs, run_news_inputs

    run, out, report = graph_run
    manifest = json.loads((out / "export.json").read_text())
    assert {"graph_vector", "graph_present"} <= set(manifest["inputs"]["news"])
    rows = {r["backend"]: r for r in report["parity"]}
    assert rows["onnx fp32"]["max_abs_logit_diff"] <= 1e-4
    loaded = load_run(run, device="cpu")
    model = loaded.model
    assert model.news_encoder.graph is not None
    _, inputs, _ = run_news_inputs(loaded)
    pick = np.flatnonzero(inputs.graph_present)[:30]
    assert len(pick) == 30
    onnx = OnnxBackend(graph_files(out, manifest_graphs(manifest, False)))
    with torch.no_grad(), graph_cached(model):  # the GNN once, as evaluate runs it
        on_graph = model.encode_news(torch.from_numpy(pick + 1)).numpy()  # run vocab: row 0 = pad
        enc = model.news_encoder
        off = torch.full_like(enc.graph_node, -1)
        model.attach(
            NewsFeatures(
                enc.id_index,
                enc.category_index,
                enc.subcategory_index,
                enc.text_vectors,
                enc.text_present,
                off,
            )
        )
        off_graph = model.encode_news(torch.from_numpy(pick + 1)).numpy()
    assert np.abs(on_graph - off_graph).max() > 1e-3  # the graph vector really counts
    np.testing.assert_allclose(onnx.encode_news(inputs.rows(pick)), on_graph, atol=1e-4)
    # The serving engine gives a fresh news no graph vector, and a re-sent run news its own.
    engine = Engine(ServeConfig(str(out), backend="onnx"))
    engine.load()
    ids = engine.table.ids
    on_ids = [i for i in ids if i in engine.graph_vectors]
    assert len(on_ids) == int(inputs.graph_present.sum())
    got = engine._graph_inputs([NewsRecord(on_ids[0]), NewsRecord("FRESH")])
    assert got["graph_present"].tolist() == [True, False] and not got["graph_vector"][1].any()
    row = ids.index(on_ids[0])
    np.testing.assert_array_equal(got["graph_vector"][0], inputs.graph_vector[row])
    fresh = inputs.rows(pick)
    fresh.graph_present = np.zeros(len(pick), bool)
    fresh.graph_vector = np.zeros_like(fresh.graph_vector)
    np.testing.assert_allclose(onnx.encode_news(fresh), off_graph, atol=1e-4)


def test_graph_run_int8_only_export_quantises_the_graph_vectors(
    graph_run: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    """--quantize int8-only kept the graph vectors in float32 (26.6 MB of a 64 MB export on
    MIND-small's graph): now they are an int8 table with a scale per row, within half a step of
    the float ones, and the int8 parity row scores news encoded from them."""
    from newsrec_cli.serve.engine import Engine, ServeConfig
    from newsrec_cli.serve.vector_table import read_table

    run, full, _ = graph_run
    small = tmp_path / "int8_only"
    result = runner.invoke(
        app, ["export", str(run), "--out", str(small), "--quantize", "int8-only", "--json"]
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((small / "export.json").read_text())
    assert manifest["graph_tables"] == {"fp32": None, "int8": "graph_vectors_int8"}
    assert not (small / "graph_vectors").exists()
    ids, float_vectors, _ = read_table(full / "graph_vectors")
    int8_ids, int8_vectors, meta = read_table(small / "graph_vectors_int8")
    assert meta["dtype"] == "int8" and int8_ids == ids
    step = np.abs(float_vectors).max(axis=1, keepdims=True) / 127
    assert (np.abs(int8_vectors - float_vectors) <= step / 2 + 1e-7).all()
    fp32_bytes = sum(f.stat().st_size for f in (full / "graph_vectors").rglob("*") if f.is_file())
    int8_bytes = sum(f.stat().st_size for f in (small / "graph_vectors_int8").rglob("*") if f.is_file())
    vectors = (full / "graph_vectors" / "vectors.npy").stat().st_size
    int8_payload = (small / "graph_vectors_int8" / "vectors.npy").stat().st_size
    assert int8_payload * 3 < vectors, (int8_payload, vectors, int8_bytes, fp32_bytes)
    assert manifest["parity"]["rows"][-1]["backend"] == "onnx int8"
    engine = Engine(ServeConfig(str(small), backend="int8"))
    engine.load()
    served = np.stack([engine.graph_vectors[i] for i in ids])
    np.testing.assert_array_equal(served, int8_vectors)


def test_graph_run_http_ranking_and_fresh_news(graph_run: tuple[Path, Path, dict], tmp_path: Path) -> None:
    """Both backends serve the graph run with evaluate's ranking; a fresh news (not in the graph)
    is ingested and ranked, with the same score from torch and from ONNX."""
    run, out, _ = graph_run
    fresh = {
        "news_id": "FRESHG",
        "title": "Stunning horse wins the derby again",
        "category": "sports",
        "subcategory": "horseracing",
    }
    known = [line.split("\t")[0] for line in (out / "news.tsv").read_text().splitlines()]
    body = {"history": known[:4], "candidates": ["FRESHG", *known[10:15]], "k": 6}
    scores = []
    for source, backend in ((run, "torch"), (out, "onnx")):
        state = tmp_path / f"state_{backend}"
        server = Server(
            source, "--backend", backend, "--state-dir", str(state), log=tmp_path / f"{backend}.log"
        )
        try:
            assert _check_against_evaluate(server, run, 1e-4, count=30) >= 28
            r = server.post("/v1/news", {"news": [fresh]})
            assert r.status_code == 200 and r.json()["results"][0]["status"] == "added"
            r = server.post("/v1/recommend", body)
            assert r.status_code == 200, r.text
            items = {i["news_id"]: i["score"] for i in r.json()["items"]}
            assert set(items) == set(body["candidates"])
            scores.append(items)
        finally:
            server.stop()
    for news_id, score in scores[0].items():
        assert scores[1][news_id] == pytest.approx(score, abs=1e-4), news_id


# ----------------------------------------------------------------------------- recommend command


def test_recommend_command_matches_http(torch_server: Server, exported: tuple[Path, dict]) -> None:
    out = exported[0]
    known = [line.split("\t")[0] for line in (out / "news.tsv").read_text().splitlines()]
    body = {"history": known[40:44], "candidates": known[50:60], "k": 5}
    http = torch_server.post("/v1/recommend", body).json()
    args = [
        "recommend",
        str(out),
        "--history",
        " ".join(body["history"]),
        "--candidates",
        " ".join(body["candidates"]),
        "-k",
        "5",
    ]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert [i["news_id"] for i in json.loads(result.stdout)["items"]] == [i["news_id"] for i in http["items"]]
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and http["items"][0]["news_id"] in table.stdout and "rank" in table.stdout
    bad = runner.invoke(app, ["recommend", str(out), "--history", "NOPE"])
    assert bad.exit_code != 0 and "NOPE" in bad.output and "Traceback" not in bad.output


# ----------------------------------------------------------------------------- fuzzing (runs last)


FUZZ_EXAMPLES = 40


@pytest.fixture(scope="module")
def api_schema(torch_server: Server):  # type: ignore[no-untyped-def]
    import schemathesis

    return schemathesis.openapi.from_url(f"{torch_server.url}/openapi.json")


def test_fuzzed_requests_never_500(api_schema) -> None:  # type: ignore[no-untyped-def]
    """Property-based requests generated from the OpenAPI schema by schemathesis, bounded to
    FUZZ_EXAMPLES per operation: none may answer 5xx."""
    from hypothesis import HealthCheck, given, settings

    calls: list[int] = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy())
        def check(case) -> None:  # type: ignore[no-untyped-def]
            response = case.call(timeout=30)
            calls.append(response.status_code)
            assert response.status_code < 500, (
                f"{case.method} {case.path}: {response.status_code} {response.text[:300]}"
            )

        check()
    assert len(calls) >= 50 and any(400 <= c < 500 for c in calls) and any(c == 200 for c in calls)


@pytest.mark.parametrize("backend", ["torch", "onnx", "int8"])
def test_retrieval_top_k_equals_scoring_every_news_through_the_backend(
    trained: tuple[Path, Path], exported: tuple[Path, dict], backend: str, tmp_path: Path
) -> None:
    """The model's keys and queries (torch, or keys.onnx / queries.onnx): exact search over the
    keys and the HNSW index over them return the model's own top k, and the product of a key and
    a query is the logit."""
    from newsrec_cli.serve.engine import Engine, ServeConfig
    from newsrec_cli.serve.index import Retriever

    _, run = trained
    out, _ = exported
    source = str(run if backend == "torch" else out)
    engine = Engine(ServeConfig(source=source, backend=backend, state_dir=str(tmp_path / "state")))
    engine.load()
    assert engine.retriever.inner_product and engine.retriever.method == "exact"
    vectors, n = engine.table.view()
    history = list(engine.table.ids[:8])
    state, _ = engine.user_state([engine.table.index[i] for i in history], 0)
    model_scores = engine.backend.score(state, vectors[None, :n])[0]
    assert model_scores.std() > 0.01
    found = engine.retriever.search(engine.backend, state, vectors[:n], 10, None)
    assert set(found.tolist()) == set(np.argsort(-model_scores, kind="stable")[:10].tolist())
    keys_scores = engine.retriever.keys[:n] @ engine.backend.queries(state)[0]
    np.testing.assert_allclose(keys_scores, model_scores, rtol=1e-4, atol=1e-4)
    # the HNSW index over the same keys (threshold below the size) finds (nearly) the same top 10
    ann = Retriever(engine.backend, ann_threshold=1)
    ann.rebuild(vectors[:n])
    approx = ann.search(engine.backend, state, vectors[:n], 10, None)
    assert ann.method == "usearch-hnsw" and len(set(approx) & set(found)) >= 8
