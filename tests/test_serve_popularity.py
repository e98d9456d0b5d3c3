"""Serving a run trained with popularity: export, every backend, POST /v1/events, live counts.

One tiny run (`data synth --preset trending`, the gate head) is trained and exported once; the
backends are checked in process against evaluate, the routes on real `newsrec serve` processes
(and a real redis-server) on loopback ports; last, POST /v1/events is fuzzed (schemathesis and
hostile bodies) with the server's raw counts read back after every request.
"""

from __future__ import annotations

import json
import time
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
    ).as_json()
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
    answer = engine.recommend(history=[], candidates=[ids[valid.candidates[0]]], k=1).as_json()
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


def test_schemathesis_all_checks_pass_with_popularity(pop_run: dict[str, Path], tmp_path: Path) -> None:
    """A --use-popularity server (its /v1/events counts, the popularity block of each answer)
    under schemathesis with every check: no failure. Its own server: schemathesis's events would
    change the counts the other tests read."""
    from serve_helpers import Server, run_schemathesis

    server = Server(pop_run["export"], "--state-dir", str(tmp_path / "state"), log=tmp_path / "serve.log")
    try:
        summary = run_schemathesis(server, tmp_path, 8)
    finally:
        server.stop()
    assert "Tested:" in summary, summary


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
        # in UTC before year 1 or after 9999: a 422, not the 500 of an OverflowError
        "before year 1 in UTC": {"impressions": [ok | {"time": "0001-01-01T00:00:00+01:00"}]},
        "after 9999 in UTC": {"impressions": [ok | {"time": "9999-12-31T23:59:59-01:00"}]},
        # before 1970 the counters lose the news (second -1 is "no event", a first event < 0 is
        # "never seen"); at 9999-12-31T23:59:59 the clock (a second later) is no time a client reads
        "before 1970": {"impressions": [ok, ok | {"time": "1969-12-31T23:59:59Z"}]},
        "long before 1970": {"impressions": [ok | {"time": "1900-01-01T00:00:00Z"}]},
        "the calendar's last second": {"impressions": [ok | {"time": "9999-12-31T23:59:59Z"}]},
        # ahead of the server's clock (without --future-events): the counts' clock would stay there
        "ahead of the clock": {"impressions": [ok, ok | {"time": "2999-01-01T00:00:00Z"}]},
    }
    clock = pop_server.post("/v1/events", {"impressions": [ok]}).json()["popularity"]
    for name, body in bad.items():
        r = pop_server.post("/v1/events", body)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
    for when in ("1969-12-31T23:59:59Z", "9999-12-31T23:59:59Z"):
        r = pop_server.post("/v1/events", {"impressions": [ok | {"time": when}]})
        assert "1970-01-01T00:00:00Z to 9999-12-31T23:59:58Z" in r.json()["detail"][0]["msg"], r.text
    r = pop_server.post("/v1/events", {"impressions": [ok | {"time": "0001-01-01T00:00:00+01:00"}]})
    assert "outside the years 1 to 9999" in r.json()["detail"][0]["msg"], r.text
    r = pop_server.post("/v1/events", {"impressions": [ok | {"time": "9999-12-31T23:59:58Z"}]})
    assert "ahead of this server's clock" in r.json()["detail"][0]["msg"], r.text
    assert (
        pop_server.post("/v1/events", {"impressions": [ok]}).json()["popularity"]["events"]
        == clock["events"] + 1
    )
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
    before = pop_server.post("/v1/events", {"impressions": [ok | {"time": "2026-01-01T00:00:00"}]}).json()
    after = pop_server.post("/v1/events", {"impressions": [ok | {"time": "2026-01-01T00:00:00Z"}]}).json()
    assert (
        before["popularity"]["latest_event"] == after["popularity"]["latest_event"] == "2026-01-01T00:00:00Z"
    )
    # the first second the counts take (the last, with --future-events: the Redis fuzzing below)
    r = pop_server.post("/v1/events", {"impressions": [ok | {"time": "1970-01-01T00:00:00Z"}]})
    assert r.status_code == 200 and r.json()["popularity"]["counted_at"] == "2026-01-01T00:00:01Z", r.text


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
    served = engine.recommend(
        history=history, candidates=cands, k=len(cands), exclude_history=False
    ).as_json()
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
    answer = engine.recommend(history=history, k=k, since=since).as_json()
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
    answer = engine.recommend(history=users[0], k=40).as_json()
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
        answer = engine.recommend(history=history, k=10).as_json()
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


# ----------------------------------------------------------------------------- fuzzing the counts

# Examples per generation mode (positive, negative): bounded and derandomized, ~8 s a server.
# /v1/recommend is fuzzed here for its reading of the counts (test_serve_robust fuzzes the rest).
FUZZ_EXAMPLES = {"/v1/events": 25, "/v1/recommend": 10}
# Times a client's clock or a bad parser really sends: offsets at the ends of the calendar, before
# 1970 (the counters' "no event" is second -1), the last second there is, and fractions of one.
HOSTILE_TIMES = (
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "1969-12-31T23:59:59Z",
    "1900-01-01T00:00:00Z",
    "0001-01-01",
    "9999-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "2019-11-15T08:00:00.999999+14:00",
    "9999-12-31T23:59:58Z",
)


class Counts:
    """The raw sums a server holds (its state folder's npz, or its Redis hashes) and its clock."""

    def __init__(self, export: Path, state: Path | None = None, redis_url: str | None = None) -> None:
        self.export, self.state, self.redis_url = export, state, redis_url

    def read(self) -> tuple[dict[str, tuple[float, float, int, int]], tuple[int, int]]:
        from newsrec_cli.mind.running_counts import MemorySums

        if self.redis_url is None:
            assert self.state is not None
            saved = self.state / "popularity.npz"
            sums = MemorySums.load(saved if saved.exists() else self.export / "popularity.npz")
            n = len(sums.index)
            rows = zip(sums.clicks[:n], sums.shows[:n], sums.ref[:n], sums.first[:n], strict=True)
            return dict(zip(sums.index, map(tuple, rows), strict=True)), (sums.latest, sums.impressions)
        import redis

        client = redis.Redis.from_url(self.redis_url)
        (clock,) = client.keys("newsrec:popularity:*:clock")
        prefix = clock.decode()[: -len("clock")]
        columns = [client.hgetall(prefix + name) for name in ("clicks", "shows", "ref", "first")]
        keys = sorted(k.decode() for k in columns[0])
        clock_values = client.hgetall(clock)
        sums = {
            k: (
                float(columns[0][k.encode()]),
                float(columns[1][k.encode()]),
                int(columns[2][k.encode()]),
                int(columns[3][k.encode()]),
            )
            for k in keys
        }
        return sums, (int(clock_values[b"latest"]), int(clock_values[b"impressions"]))


def _utc_second(text: str) -> int:
    """The UTC second of an event time, read as the server reads it."""
    from pydantic import TypeAdapter

    from newsrec_cli.serve.app import Published

    when = TypeAdapter(Published).validate_python(text)
    return int(np.datetime64(when.replace(tzinfo=None), "s").astype(np.int64))


class EventsModel:
    """What the counts must be after each POST /v1/events: a rejected body changes nothing; an
    accepted one adds its impressions, moves the clock to its latest time, and every news shown
    is counted (finite sums, seen from its earliest time on)."""

    def __init__(self, server, counts: Counts, known: list[str]) -> None:  # type: ignore[no-untyped-def]
        import httpx

        self.server, self.counts = server, counts
        self.client = httpx.Client(base_url=server.url, timeout=60)  # one connection: ~1 ms a request
        self.probe = {"history": known[:3], "candidates": known[3:23], "k": 20}
        self.before = self.snapshot()
        _, (self.latest, self.events) = self.before[1]
        self.training_end = self.before[0]["popularity"]["training_end"]
        self.statuses: list[int] = []

    def snapshot(self):  # type: ignore[no-untyped-def]
        r = self.client.post("/v1/recommend", json=self.probe)
        assert r.status_code == 200, r.text
        return r.json() | {"cached_user": None}, self.counts.read()

    def check(self, body: object, response) -> None:  # type: ignore[no-untyped-def]
        self.statuses.append(response.status_code)
        assert response.status_code < 500, (response.status_code, response.text[:300])
        after = self.snapshot()
        if response.status_code >= 400:
            assert after == self.before, f"a rejected body changed the counts: {str(body)[:300]}"
            return
        assert response.status_code == 200
        assert isinstance(body, dict)
        impressions = body["impressions"]
        seconds = [_utc_second(imp["time"]) for imp in impressions]
        assert min(seconds) >= 0, f"accepted a time before 1970: {impressions[seconds.index(min(seconds))]}"
        self.events += len(impressions)
        self.latest = max(self.latest, *seconds)
        sums, clock = after[1]
        assert clock == (self.latest, self.events)
        for key, (clicks, shows, ref, first) in sums.items():
            assert np.isfinite([clicks, shows]).all() and 0 <= clicks <= shows + 1e-9, key
            assert ref >= first, key
        for imp, second in zip(impressions, seconds, strict=True):
            for news in imp["shown"]:
                assert 0 <= sums[news][3] <= second, (news, imp["time"], sums[news])
        self.check_freshness(response.json()["popularity"])
        self.check_freshness(after[0]["popularity"])
        self.before = after

    def check_freshness(self, block: dict) -> None:
        from datetime import datetime

        counted = datetime.fromisoformat(block["counted_at"])  # a time a client can read
        assert block["latest_event"] == str(np.datetime64(self.latest, "s")) + "Z", block
        assert _utc_second(block["counted_at"]) == self.latest + 1 and counted.tzinfo is not None
        assert block["events"] == self.events and block["training_end"] == self.training_end


def _known_ids(export: Path) -> list[str]:
    from newsrec_cli.mind.running_counts import GLOBAL_KEY, MemorySums

    return sorted(k for k in MemorySums.load(export / "popularity.npz").index if k != GLOBAL_KEY)


def _hostile_events(known: list[str], horizon: int) -> list[tuple[bytes, bool]]:
    """(raw body, accepted?) of what clients really send to POST /v1/events, to a server that
    takes times up to the second `horizon`."""
    a, b, c = known[:3]

    def body(*impressions: dict) -> bytes:
        return json.dumps({"impressions": list(impressions)}).encode()

    ok = {"time": "2019-11-15T08:00:00Z", "shown": [a, b], "clicked": [a]}
    raw = [
        (body(ok), True),
        (body(*[ok] * 200), True),  # the same impression again and again: each counts
        (body(*[ok | {"shown": known[:100], "clicked": known[:7]}] * 50), True),
        (body(ok | {"time": "2019-11-15T08:00:00.5-05:00"}), True),
        (body(ok, ok | {"shown": [a, "N-never-seen"]}), False),  # one unknown: none is applied
        (body(ok, ok | {"shown": [a, a]}), False),  # shown twice
        (body(ok, ok | {"clicked": [c]}), False),  # clicked, never shown
        (body(*[ok] * 1001), False),
        (body(ok | {"shown": [a] * 1001}), False),
        (body(ok | {"time": 1573804800}), False),
        (body(ok | {"time": "2019-02-30T00:00:00Z"}), False),
        (body(ok | {"time": ""}), False),
        (body(), False),
        (
            b'{"impressions": [{"time": "2019-11-15T08:00:00Z", "shown": ["'
            + a.encode()
            + b'"], "clicked": NaN}]}',
            False,
        ),
        (b'{"impressions": [{"time": Infinity, "shown": ["' + a.encode() + b'"]}]}', False),
        (b'{"impressions": [{"time": "2019-11-15T08:00:00Z", "shown": [-Infinity]}]}', False),
        (b'{"impressions": [{"time": "2019-11-15T08:00:00Z", "shown": ["\\ud800"]}]}', False),
        (
            b'{"impressions": [{"time": "2019-11-15T08:00:00\\udfffZ", "shown": ["' + a.encode() + b'"]}]}',
            False,
        ),
        (b'{"impressions": [{"time": "2019-11-15T08:00:00Z", "shown": ["a\\ud83d"]}]}', False),
        (b'{"impressions": [1e999]}', False),
        (b'{"impressions": ' + b"[" * 5000 + b"]" * 5000 + b"}", False),
        (b'{"impressions": [{"time": "2019-11-15T08:00:00Z", "shown": ["\xff"]}]}', False),
        (b'{"impressions": [{"time": "2019-11-15T08:00:00Z", "shown": ["' + a.encode() + b'"]', False),
    ]
    for when in HOSTILE_TIMES:
        accepted = 0 <= _utc_second_or(when, -1) <= horizon
        raw.append((body(ok | {"time": when}), accepted))
    return raw


def _utc_second_or(text: str, default: int) -> int:
    try:
        return _utc_second(text)
    except (OverflowError, ValueError):
        return default


def _fuzz_events(server, counts: Counts, export: Path, future: bool = False) -> None:  # type: ignore[no-untyped-def]
    """schemathesis (positive and negative bodies, every response checked against the schema) on
    /v1/events and /v1/recommend, half of the event bodies rewritten to known news so that they
    count, then hostile raw bodies; the counts follow `EventsModel` throughout, and a valid
    recommend afterwards has finite scores and the right freshness."""
    from datetime import UTC, datetime, timedelta, timezone

    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    from newsrec_cli.mind.running_counts import LAST_SECOND
    from newsrec_cli.serve.engine import FUTURE_TOLERANCE

    known = _known_ids(export)
    model = EventsModel(server, counts, known)
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]

    zones = st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=9, minutes=30))])
    # without --future-events a time ahead of the server's clock is refused: most of them count
    recent = st.datetimes(datetime(1970, 1, 2), datetime(2100 if future else 2026, 1, 1), timezones=zones)

    seen = [0]
    failures: list[Exception] = []

    def counted(case, data) -> None:  # type: ignore[no-untyped-def]
        """3 in 4 events bodies: their news replaced by known ones (each once), clicks among them;
        every other one of those with times since 1970 (schemathesis' span years 1 to 9999), so
        that a fixed share of the bodies counts: what schemathesis generates for a given seed
        still varies with what ran before in the process (an xdist worker's other files)."""
        body = case.body
        if not (isinstance(body, dict) and isinstance(body.get("impressions"), list)):
            return
        seen[0] += 1  # decides what is used of the draws below, which are the same for every case
        for imp in body["impressions"]:
            if isinstance(imp, dict) and isinstance(imp.get("shown"), list) and imp["shown"]:
                shown = data.draw(st.lists(st.sampled_from(known), min_size=1, max_size=8, unique=True))
                clicked = data.draw(st.lists(st.sampled_from(shown), max_size=3, unique=True))
                when = data.draw(recent).isoformat()
                if seen[0] % 4 == 0:
                    continue
                imp["shown"] = shown
                if isinstance(imp.get("clicked"), list):
                    imp["clicked"] = clicked
                if seen[0] % 2 == 1 and isinstance(imp.get("time"), str):
                    imp["time"] = when

    def fuzz(path: str, mode: GenerationMode) -> None:
        events = path == "/v1/events"

        @settings(
            max_examples=FUZZ_EXAMPLES[path],
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
            phases=[Phase.generate],  # the counts carry over: a failure is shown, not shrunk
            report_multiple_bugs=False,
        )
        @given(case=schema[path]["POST"].as_strategy(generation_mode=mode), data=st.data())
        def run(case, data) -> None:  # type: ignore[no-untyped-def]
            if events:
                counted(case, data)
            if failures:  # hypothesis replays a failing case: the counts moved on, show the first error
                raise failures[0]
            try:
                response = case.call(base_url=server.url, timeout=30)
                case.validate_response(response, checks=checks)
                if events:
                    model.check(case.body, response)
            except Exception as exc:
                failures.append(exc)
                raise

        run()

    for path in FUZZ_EXAMPLES:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            fuzz(path, mode)
    assert model.statuses.count(200) >= 10, model.statuses  # bodies that counted, not only refusals
    horizon = LAST_SECOND if future else int(time.time()) + FUTURE_TOLERANCE
    for raw, accepted in _hostile_events(known, horizon):
        r = model.client.post("/v1/events", content=raw, headers={"content-type": "application/json"})
        assert (r.status_code == 200) == accepted, (raw[:200], r.status_code, r.text[:300])
        model.check(json.loads(raw) if accepted else raw, r)
    assert sum(400 <= s < 500 for s in model.statuses) >= 40
    # afterwards: a valid recommend, ranked and retrieved, with finite scores and the right clock
    for body in (model.probe, {"history": known[:3], "k": 10}):
        r = server.post("/v1/recommend", body)
        assert r.status_code == 200, r.text
        scores = [item["score"] for item in r.json()["items"]]
        assert len(scores) == body["k"] and np.isfinite(scores).all()
        model.check_freshness(r.json()["popularity"])
    model.client.close()


def test_fuzzed_events_keep_the_counts_in_process(pop_run: dict[str, Path], pop_server) -> None:  # type: ignore[no-untyped-def]
    """Runs after the tests above: it leaves the server's clock wherever the fuzzing took it."""
    _fuzz_events(pop_server, Counts(pop_run["export"], state=pop_server.state), pop_run["export"])


def test_fuzzed_events_keep_the_counts_in_redis(pop_run: dict[str, Path], tmp_path: Path) -> None:
    from serve_helpers import Redis, Server

    redis = Redis()
    server = None
    try:
        args = ["--backend", "onnx", "--redis-url", redis.url, "--state-dir", str(tmp_path), "--no-ui"]
        server = Server(pop_run["export"], *args, "--future-events", log=tmp_path / "serve.log")
        _fuzz_events(server, Counts(pop_run["export"], redis_url=redis.url), pop_run["export"], future=True)
    finally:
        if server is not None:
            server.stop()
        redis.stop()
