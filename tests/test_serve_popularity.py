"""Serving a run trained with popularity: export, every backend, POST /v1/events, live counts.

One tiny run (`data synth --preset trending`, the gate head) is trained and exported once; the
backends are checked in process against evaluate, the routes on real `newsrec serve` processes
(and a real redis-server) on loopback ports.
"""

from __future__ import annotations

import json
from datetime import UTC
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


@pytest.fixture(scope="module")
def ctr_export(pop_run: dict[str, Path]) -> Path:
    """The same data with the ctr head (one epoch, fp32 export): the other form of the term."""
    from newsrec_cli.train import train

    root = pop_run["root"]
    settings = TrainSettings(
        dim=16,
        heads=2,
        epochs=1,
        lr=1e-2,  # so that one epoch learns a CTR weight that reorders the top 10 (~0.3)
        threads=1,
        device="cpu",
        seed=0,
        use_popularity=True,
        popularity_head="ctr",
    )
    train(
        pop_run["data"],
        root / "run_ctr",
        store=root / "store",
        settings=settings,
        data_settings=DataSettings(valid_days=1),
    )
    out = root / "export_ctr"
    result = runner.invoke(app, ["export", str(root / "run_ctr"), "--out", str(out), "--quantize", "none"])
    assert result.exit_code == 0, result.output
    return out


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
    assert manifest["popularity"]["counts"] == "popularity.npz"
    assert "popularity.npz" in manifest["checksums"]
    for name in (manifest["graphs"]["fp32"]["score"], manifest["graphs"]["int8"]["score"]):
        inputs = [i.name for i in onnx.load(str(pop_run["export"] / name)).graph.input]
        assert inputs == ["user_state", "candidates", "popularity", "history_length"]
    # retrieval's form of the term: the news factor and the user's weight, each its own graph
    assert manifest["graphs"]["int8"]["popularity_keys"] == "popularity_keys.onnx"
    for name, inputs in (("popularity_keys", ["popularity"]), ("popularity_queries", ["history_length"])):
        graph = onnx.load(str(pop_run["export"] / manifest["graphs"]["fp32"][name])).graph
        assert [i.name for i in graph.input] == inputs
    assert manifest["parity"]["popularity_product_max_abs_diff"] <= 1e-4
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
    # the popularity term is there to be matched: scores without it are far from the served ones
    from newsrec_cli.model.inference import score_impressions

    content = score_impressions(_load(pop_run["run"]), dataset, valid)
    assert np.abs(served - content).max() > 0.05
    answer = engine.recommend(history=[], candidates=[ids[valid.candidates[0]]], k=1)
    assert answer["popularity"]["events"] == 0 and answer["popularity"]["training_end"] is not None


def _load(run: Path):  # type: ignore[no-untyped-def]
    from newsrec_cli.runs.loading import load_run

    return load_run(run, device="cpu")


# ----------------------------------------------------------------------------- POST /v1/events


@pytest.fixture(scope="module")
def pop_server(pop_run: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from serve_helpers import Server

    state = tmp_path_factory.mktemp("pop_state")
    server = Server(
        pop_run["export"],
        "--backend",
        "onnx",
        "--state-dir",
        str(state),
        "--no-ui",
        log=state.parent / "pop.log",
    )
    server.state = state
    yield server
    server.stop()


def _events(valid, rows) -> list[dict]:  # type: ignore[no-untyped-def]
    """Impressions as POST /v1/events takes them, with MIND's naive times (read as UTC)."""
    ids = valid.news_vocab.ids
    out = []
    for i in rows:
        cands = valid.candidates_of(i)
        labels = valid.labels[valid.candidate_offsets[i] : valid.candidate_offsets[i + 1]]
        out.append(
            {
                "time": str(valid.times[i].astype("datetime64[s]")),
                "shown": [ids[c] for c in cands],
                "clicked": [ids[c] for c, y in zip(cands, labels, strict=True) if y == 1],
            }
        )
    return out


def _scores(server, body: dict) -> dict[str, float]:  # type: ignore[no-untyped-def]
    r = server.post("/v1/recommend", body)
    assert r.status_code == 200, r.text
    return {it["news_id"]: it["score"] for it in r.json()["items"]}


def test_replaying_a_split_through_events_gives_the_replay_counts(
    pop_run: dict[str, Path], pop_server
) -> None:  # type: ignore[no-untyped-def]
    """POST every validation impression, in time order: the server's counts are the replay
    protocol's (evaluate --protocol replay) after the split, and so are its scores."""
    from newsrec_cli.mind.popularity import protocol_view
    from newsrec_cli.mind.running_counts import MemorySums, RunningCounts
    from newsrec_cli.model.inference import score_impressions
    from newsrec_cli.model.popularity import popularity_logits

    dataset, valid, known, _ = _valid(pop_run["run"])
    loaded = _load(pop_run["run"])
    duplicated = [
        i
        for i in range(len(valid))
        if len(set(valid.candidates_of(i).tolist())) != len(valid.candidates_of(i))
    ]
    assert not duplicated  # the generator shows each news once per impression
    order = np.argsort(valid.times, kind="stable")
    for lo in range(0, len(order), 40):
        r = pop_server.post("/v1/events", {"impressions": _events(valid, order[lo : lo + 40])})
        assert r.status_code == 200, r.text
    assert r.json()["popularity"]["events"] == len(valid)
    settings = loaded.settings
    view = protocol_view(
        "replay", known, valid, half_life_hours=settings.popularity_half_life, prior=settings.popularity_prior
    )
    at = view.counts.end + 1
    assert r.json()["popularity"]["latest_event"] == str(np.datetime64(view.counts.end, "s")) + "Z"
    # the counts the server saved in its state folder, read as the server reads them
    saved = MemorySums.load(pop_server.state / "popularity.npz")
    news = np.unique(np.concatenate([known.candidates, valid.candidates]))
    ids = valid.news_vocab.ids
    served = RunningCounts(saved.spec, saved).features([ids[n] for n in news])
    np.testing.assert_allclose(served, view.counts.features(news, at), rtol=1e-5, atol=1e-6)
    # and the scores: the model's content logits plus its popularity term from the replay counts
    content = score_impressions(loaded, dataset, valid)
    expected = content + popularity_logits(loaded.model.popularity, view.counts, valid, at=at)
    for i in range(0, len(valid), max(1, len(valid) // 10)):
        cands = [ids[c] for c in valid.candidates_of(i)]
        got = _scores(
            pop_server,
            {
                "history": [ids[h] for h in valid.history_of(i)],
                "candidates": cands,
                "k": len(cands),
                "exclude_history": False,
            },
        )
        lo = valid.candidate_offsets[i]
        np.testing.assert_allclose([got[c] for c in cands], expected[lo : lo + len(cands)], atol=1e-4)


def test_an_event_changes_the_next_response_and_survives_a_restart(
    pop_run: dict[str, Path], pop_server
) -> None:  # type: ignore[no-untyped-def]
    _, valid, _, _ = _valid(pop_run["run"])
    ids = valid.news_vocab.ids
    cands = [ids[c] for c in valid.candidates_of(0)]
    body = {"history": [ids[h] for h in valid.history_of(0)], "candidates": cands, "k": len(cands)}
    before = pop_server.post("/v1/recommend", body).json()
    target = before["items"][-1]["news_id"]  # the lowest-ranked news is clicked by everyone
    latest = np.datetime64(before["popularity"]["latest_event"].rstrip("Z"))
    burst = [
        {"time": str(latest + np.timedelta64(60 + s, "s")) + "+00:00", "shown": [target], "clicked": [target]}
        for s in range(20)
    ]
    r = pop_server.post("/v1/events", {"impressions": burst})
    assert r.status_code == 200, r.text
    after = pop_server.post("/v1/recommend", body).json()
    assert after["popularity"]["events"] == before["popularity"]["events"] + 20
    assert after["popularity"]["latest_event"] == str(latest + np.timedelta64(79, "s")) + "Z"
    old = {it["news_id"]: it["score"] for it in before["items"]}
    new = {it["news_id"]: it["score"] for it in after["items"]}
    assert new[target] > old[target] + 0.01  # clicked 20 times in a row: more popular
    pop_server.restart()  # the counts were saved in the state folder: the same answer after
    again = pop_server.post("/v1/recommend", body).json()
    assert again["items"] == after["items"] and again["popularity"] == after["popularity"]


def test_bad_events_are_4xx(pop_run: dict[str, Path], pop_server) -> None:  # type: ignore[no-untyped-def]
    import httpx

    _, valid, _, _ = _valid(pop_run["run"])
    news = valid.news_vocab.ids[valid.candidates[0]]
    ok = {"time": "2019-11-15T08:00:00Z", "shown": [news], "clicked": []}
    bad = {
        "unknown news": {"impressions": [ok | {"shown": [news, "N-nope"]}]},
        "click not shown": {"impressions": [ok | {"clicked": ["N-other"]}]},
        "shown twice": {"impressions": [ok | {"shown": [news, news]}]},
        "number time": {"impressions": [ok | {"time": 1573804800}]},
        "no time": {"impressions": [{"shown": [news]}]},
        "not a time": {"impressions": [ok | {"time": "yesterday"}]},
        "empty": {"impressions": []},
        "nothing shown": {"impressions": [ok | {"shown": []}]},
        "too many": {"impressions": [ok] * 1001},
        "too many shown": {"impressions": [ok | {"shown": [news] * 1001}]},
        "extra field": {"impressions": [ok | {"user": "U1"}]},
    }
    for name, body in bad.items():
        r = pop_server.post("/v1/events", body)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
    for raw in (
        b'{"impressions": [{"time": "2019-11-15T08:00:00", "shown": ["x"], "clicked": NaN}]}',
        b"\xff",
    ):
        r = httpx.post(
            f"{pop_server.url}/v1/events", content=raw, headers={"content-type": "application/json"}
        )
        assert 400 <= r.status_code < 500, r.text
    unknown = pop_server.post("/v1/events", bad["unknown news"]).json()
    assert unknown["detail"][0]["ctx"]["unknown"] == ["N-nope"]
    # a naive time is read as UTC: the same second as with Z
    before = pop_server.post("/v1/events", {"impressions": [ok | {"time": "2030-01-01T00:00:00"}]}).json()
    after = pop_server.post("/v1/events", {"impressions": [ok | {"time": "2030-01-01T00:00:00Z"}]}).json()
    assert (
        before["popularity"]["latest_event"] == after["popularity"]["latest_event"] == "2030-01-01T00:00:00Z"
    )


# ----------------------------------------------------------------------------- Redis: shared counts


def test_two_replicas_share_the_counts_in_redis(pop_run: dict[str, Path], tmp_path: Path) -> None:
    """Two real `newsrec serve` processes on one real redis-server: an event posted to one
    changes the other's next response identically, and concurrent posts to both all count."""
    import threading

    from serve_helpers import Redis, Server

    _, valid, _, _ = _valid(pop_run["run"])
    ids = valid.news_vocab.ids
    cands = [ids[c] for c in valid.candidates_of(1)]
    body = {"history": [ids[h] for h in valid.history_of(1)], "candidates": cands, "k": len(cands)}
    redis = Redis()
    servers = []
    try:
        for name in ("a", "b"):
            args = [
                "--backend",
                "onnx",
                "--redis-url",
                redis.url,
                "--state-dir",
                str(tmp_path / name),
                "--no-ui",
            ]
            servers.append(Server(pop_run["export"], *args, log=tmp_path / f"{name}.log"))
        a, b = servers
        before = b.post("/v1/recommend", body).json()
        assert before["popularity"]["events"] == 0  # seeded once from the export, not twice
        assert a.post("/v1/recommend", body).json()["items"] == before["items"]
        target = before["items"][-1]["news_id"]
        latest = np.datetime64(before["popularity"]["latest_event"].rstrip("Z"))
        event = {"time": str(latest + np.timedelta64(30, "s")) + "Z", "shown": [target], "clicked": [target]}
        assert a.post("/v1/events", {"impressions": [event] * 5}).status_code == 200
        on_a, on_b = a.post("/v1/recommend", body).json(), b.post("/v1/recommend", body).json()
        assert on_b["items"] == on_a["items"] and on_b["popularity"] == on_a["popularity"]
        assert on_b["popularity"]["events"] == 5
        assert {i["news_id"]: i["score"] for i in on_b["items"]}[target] > before["items"][-1]["score"] + 0.01

        def post(server: Server, second: int) -> None:
            for s in range(10):
                t = latest + np.timedelta64(60 + second + 2 * s, "s")
                r = server.post(
                    "/v1/events", {"impressions": [event | {"time": str(t) + "Z", "clicked": []}]}
                )
                assert r.status_code == 200, r.text

        threads = [threading.Thread(target=post, args=(server, i)) for i, server in enumerate(servers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        final_a, final_b = a.post("/v1/recommend", body).json(), b.post("/v1/recommend", body).json()
        assert final_a["popularity"]["events"] == final_b["popularity"]["events"] == 25  # none lost
        assert final_a["items"] == final_b["items"]
        # retrieval reads every news' counts from Redis: the same top k on both replicas
        retrieve = {"history": body["history"], "k": 10}
        got_a, got_b = a.post("/v1/recommend", retrieve).json(), b.post("/v1/recommend", retrieve).json()
        assert got_a["retrieval"] == "exact" and len(got_a["items"]) == 10
        assert got_a["items"] == got_b["items"] and got_a["popularity"] == final_a["popularity"]
        assert not (tmp_path / "a" / "popularity.npz").exists()  # the counts live in Redis
    finally:
        for server in servers:
            server.stop()
        redis.stop()


def test_explain_shows_the_popularity_term_of_the_served_score(
    pop_run: dict[str, Path], tmp_path: Path
) -> None:
    from newsrec_cli.serve.explain import Explainer

    _, valid, _, _ = _valid(pop_run["run"])
    ids = valid.news_vocab.ids
    engine = _engine(pop_run["export"], "torch", tmp_path / "state")
    history = [ids[h] for h in valid.history_of(2)]
    cands = [ids[c] for c in valid.candidates_of(2)]
    served = engine.recommend(history=history, candidates=cands, k=len(cands), exclude_history=False)
    why = Explainer(engine).explain(history, cands)
    assert why["popularity"]["head"] == "gate" and "gate_no_history" in why["popularity"]
    by_id = {it["news_id"]: it["score"] for it in served["items"]}
    terms = []
    for item in why["items"]:
        assert item["score"] == pytest.approx(by_id[item["news_id"]], abs=1e-4)  # the served score
        assert 0 < item["popularity"]["ctr"] < 1 and item["popularity"]["trust"] > 0
        terms.append(item["popularity"]["term"])
    assert np.ptp(terms) > 0.01  # popularity moves the scores apart


def test_a_run_directory_serves_with_its_frozen_counts_too(pop_run: dict[str, Path], tmp_path: Path) -> None:
    """`newsrec serve RUN_DIR` counts the training impressions itself: the export's scores."""
    _, valid, _, _ = _valid(pop_run["run"])
    from_run = _engine(pop_run["run"], "torch", tmp_path / "run_state")
    from_export = _engine(pop_run["export"], "torch", tmp_path / "export_state")
    for i in range(3):
        assert _ranked(from_run, valid, i) == _ranked(from_export, valid, i)
    assert from_run.freshness() == from_export.freshness()


# ----------------------------------------------------------------------------- retrieval


def _brute_force(engine, history: list[str], since: str | None = None) -> tuple[np.ndarray, dict]:  # type: ignore[no-untyped-def]
    """Every news scored through the engine's backend with the counts as they are now (the
    history excluded, `since` applied): the exact-model retrieval scores, -inf where excluded."""
    from newsrec_cli.serve.times import utc_seconds

    table = engine.table
    vectors, n = table.view()
    rows = [table.index[h] for h in history]
    state, _ = engine.user_state(rows, 0)
    reading = engine.popularity.read(table.ids[:n])
    scores = engine.backend.score(
        state,
        vectors[None, :n],
        popularity=reading.features[None],
        history_length=np.asarray([[len(history)]], np.float32),
    )[0]
    scores[rows] = -np.inf
    if since is not None:
        scores[~(table.published[:n] >= utc_seconds(since))] = -np.inf
    return scores, engine.freshness(reading)


def _assert_retrieves_the_brute_force_top_k(
    engine, history: list[str], k: int, since: str | None = None
) -> dict:  # type: ignore[no-untyped-def]
    answer = engine.recommend(history=history, k=k, since=since)
    scores, fresh = _brute_force(engine, history, since)
    assert answer["retrieval"] == "exact"  # the term as one more column of the keys
    assert answer["popularity"] == fresh
    by_id = dict(zip(engine.table.ids, scores.tolist(), strict=False))
    got = [it["score"] for it in answer["items"]]
    best = np.sort(scores[np.isfinite(scores)])[::-1][:k]
    assert len(got) == len(best)
    np.testing.assert_allclose(got, best, atol=1e-5)  # the top k, ties aside
    for item in answer["items"]:  # each the scorer's score of that news
        assert item["score"] == pytest.approx(by_id[item["news_id"]], abs=1e-5)
    return answer


@pytest.mark.parametrize(
    ("head", "backend"),
    [("gate", "onnx"), ("gate", "torch"), ("gate", "int8"), ("ctr", "onnx"), ("ctr", "torch")],
)
def test_retrieval_with_popularity_is_the_brute_force_top_k(
    pop_run: dict[str, Path], ctr_export: Path, head: str, backend: str, tmp_path: Path
) -> None:
    """Retrieval searches [query, weight] . [key, news term] exactly: the same top k as scoring
    every news through the backend, before and after events, with the history excluded and with
    `since`, concurrent requests batched."""
    from concurrent.futures import ThreadPoolExecutor

    from newsrec_cli.serve.engine import NewsRecord

    export = pop_run["export"] if head == "gate" else ctr_export
    engine = _engine(export, backend, tmp_path / "state")
    assert (
        json.loads((export / "export.json").read_text())["parity"]["popularity_product_max_abs_diff"] <= 1e-4
    )
    _, valid, _, _ = _valid(pop_run["run"])
    ids = valid.news_vocab.ids
    users = [[ids[h] for h in valid.history_of(i)] for i in range(0, len(valid), max(1, len(valid) // 24))]
    moved = 0
    for history in users:
        answer = _assert_retrieves_the_brute_force_top_k(engine, history, 10)
        # control: the content term alone (the keys without the popularity column) picks others
        state, _ = engine.user_state([engine.table.index[h] for h in history], 0)
        content = engine.retriever.keys @ engine.backend.queries(state)[0]
        content[[engine.table.index[h] for h in history]] = -np.inf
        alone = {engine.table.ids[r] for r in np.argsort(-content)[:10]}
        moved += alone != {it["news_id"] for it in answer["items"]}
    assert moved >= len(users) // 5
    # events: one news clicked by everyone climbs into every top 10
    answer = engine.recommend(history=users[0], k=40)
    target = answer["items"][-1]["news_id"]
    latest = np.datetime64(answer["popularity"]["latest_event"].rstrip("Z"))
    burst = [(latest + np.timedelta64(60 + s, "s"), [target], [target]) for s in range(30)]
    engine.record_events([(t.astype(object).replace(tzinfo=UTC), n, c) for t, n, c in burst])
    with ThreadPoolExecutor(4) as pool:  # concurrent retrievals share a batch and one snapshot
        list(pool.map(lambda h: _assert_retrieves_the_brute_force_top_k(engine, h, 10), users))
    after = _assert_retrieves_the_brute_force_top_k(engine, users[0], 40)
    assert after["popularity"]["events"] == 30
    rank = {it["news_id"]: it["rank"] for it in after["items"]}
    assert rank[target] < 40  # it moved up: the retrieval read the new counts
    if backend == "onnx":  # one by one (--no-batch), and with an HNSW index there: still exact
        from newsrec_cli.serve.engine import Engine, ServeConfig

        for batch in (False, True):
            config = ServeConfig(
                str(export), backend=backend, state_dir=str(tmp_path / "state"), batch=batch, ann_threshold=10
            )
            other = Engine(config)
            other.load()
            assert other.retriever.ann is not None
            for history in users[:4]:
                _assert_retrieves_the_brute_force_top_k(other, history, 10)
    # `since` keeps only fresh news with a time: most news blocked, each request searched alone
    fresh = [
        NewsRecord(news_id=f"F{i}", category="news", title=f"fresh {i}", published="2030-01-02")
        for i in range(12)
    ]
    engine.ingest(fresh)
    _assert_retrieves_the_brute_force_top_k(engine, users[1], 5, since="2030-01-01")


def test_an_export_without_the_popularity_graphs_retrieves_through_the_scorer(
    pop_run: dict[str, Path], tmp_path: Path
) -> None:
    """An export made before the popularity graphs: every news scored through scorer.onnx
    (`exact-model`), with the same snapshot of the counts, the same top k."""
    import shutil

    older = tmp_path / "older"
    shutil.copytree(pop_run["export"], older)
    manifest = json.loads((older / "export.json").read_text())
    for names in manifest["graphs"].values():
        for part in ("popularity_keys", "popularity_queries"):
            (older / names.pop(part)).unlink(missing_ok=True)
    (older / "export.json").write_text(json.dumps(manifest))
    engine = _engine(older, "onnx", tmp_path / "state")
    assert not engine.backend.popularity_product
    _, valid, _, _ = _valid(pop_run["run"])
    ids = valid.news_vocab.ids
    for i in range(0, len(valid), max(1, len(valid) // 5)):
        history = [ids[h] for h in valid.history_of(i)]
        answer = engine.recommend(history=history, k=10)
        scores, fresh = _brute_force(engine, history)
        assert answer["retrieval"] == "exact-model" and answer["popularity"] == fresh
        np.testing.assert_allclose(
            [it["score"] for it in answer["items"]], np.sort(scores)[::-1][:10], atol=1e-5
        )


def test_a_redis_read_of_many_news_is_the_in_process_one(pop_run: dict[str, Path]) -> None:
    """Retrieval reads every news at once, from the whole hashes (HGETALL) past WHOLE_HASHES
    keys: the same sums and clock as in process, after the frozen counts and a batch of events."""
    from serve_helpers import Redis

    from newsrec_cli.mind.running_counts import MemorySums, RunningCounts
    from newsrec_cli.serve.redis_sums import WHOLE_HASHES, RedisSums

    path = pop_run["export"] / "popularity.npz"
    memory = MemorySums.load(path)
    redis = Redis()
    try:
        shared = RedisSums.open(redis.url, "test-read", MemorySums.load(path))
        news = list(memory.index)[1:40]  # news with counts (key 0 is the whole stream's)
        for store in (memory, shared):
            counts = RunningCounts(memory.spec, store)
            counts.apply(news, np.full(len(news), memory.spec.origin + 60), np.ones(len(news)), 3)
        keys = [*news, *(f"N-none-{i}" for i in range(WHOLE_HASHES))]  # unknown ones read as none
        want, got = (
            RunningCounts(memory.spec, memory).read(keys),
            RunningCounts(memory.spec, shared).read(keys),
        )
        np.testing.assert_array_equal(got.features, want.features)
        assert (got.at, got.latest, got.impressions) == (want.at, want.latest, want.impressions)
        assert want.impressions == 3 and want.features[: len(news), 0].min() > 0  # the clicks count
        few = RunningCounts(memory.spec, shared).read(news)  # HMGET below the threshold: the same
        np.testing.assert_array_equal(few.features, want.features[: len(news)])
    finally:
        redis.stop()
