"""The user-state cache: keyed by what a state depends on, never by table rows; the same TTL in
both layers; and the compute threads a server uses. Real `newsrec serve` processes (uvicorn) and a
real redis-server on 127.0.0.1.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from cachetools import TTLCache
from typer.testing import CliRunner

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from serve_helpers import Redis, Server  # noqa: E402
from train_helpers import hashing_store, synth  # noqa: E402

from newsrec_cli.cli import app  # noqa: E402
from newsrec_cli.serve import cache as serve_cache  # noqa: E402
from newsrec_cli.serve.cache import UserCache  # noqa: E402

pytestmark = pytest.mark.slow
runner = CliRunner()

HORSE = {"title": "Stunning horse wins the derby again", "category": "sports", "subcategory": "horseracing"}
MARKETS = {"title": "Markets fall sharply as rates rise", "category": "finance", "subcategory": "markets"}
RAIN = {"title": "Heavy rain expected all week in the north", "category": "weather", "subcategory": "weather"}
SPACE = {"title": "Probe lands on a comet after ten years", "category": "science", "subcategory": "space"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run with text, categories and user IDs, trained one epoch."""
    root = tmp_path_factory.mktemp("serve_cache")
    data = synth(root, news=200, users=150)
    store = hashing_store(data, root / "store")
    out = root / "run"
    result = runner.invoke(
        app,
        ["train", str(data), "-e", str(store), "-o", str(out), "--dim", "32", "--heads", "2"]
        + ["--history", "10", "--batch-size", "32", "--threads", "1", "--epochs", "1"]
        + ["--use-user-id", "--seed", "5"],
    )
    assert result.exit_code == 0, result.output
    return out


def _news(news_id: str, content: dict) -> dict:
    return {"news_id": news_id, "abstract": "", **content}


def _bodies(run: Path) -> list[dict]:
    """The same request shapes for every server: fresh news F1, F2 in the history, a known user,
    retrieval and ranking, and one history of run news only (whose state replicas may share)."""
    known = (run / "vocab_news_ids.txt").read_text().split()[:60]
    user = next(u for u in (run / "vocab_users.txt").read_text().split() if u.startswith("U"))
    return [
        {"user_id": user, "history": [*known[:4], "F1", "F2"], "candidates": known[10:30], "k": 20},
        {"history": ["F1", known[5]], "k": 10},
        {"history": ["F2"], "candidates": known[30:50], "k": 20},
        {"history": known[6:9], "candidates": known[40:60], "k": 20},
    ]


def _ask(server: Server, bodies: list[dict]) -> list[dict]:
    out = []
    for body in bodies:
        r = server.post("/v1/recommend", body)
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def _ingest(server: Server, news: list[dict]) -> None:
    r = server.post("/v1/news", {"news": news})
    assert r.status_code == 200, r.text


def _uncached(run: Path, state: Path, news: list[dict], bodies: list[dict]) -> list[dict]:
    """What a server without a cache answers once `news` are ingested: a fresh engine with the
    cache off (the engine behind every route; nothing it answered before can leak in)."""
    from newsrec_cli.serve.app import NewsIn
    from newsrec_cli.serve.engine import Engine, NewsRecord, ServeConfig

    engine = Engine(ServeConfig(str(run), state_dir=str(state), cache_ttl=0, ui=False))
    engine.load()
    engine.ingest([NewsRecord(**NewsIn(**n).model_dump(exclude={"entities", "published"})) for n in news])
    out = [engine.recommend(**{k: v for k, v in b.items()}).as_json() for b in bodies]
    return json.loads(json.dumps(out))  # as the HTTP answer (floats round-trip exactly)


def _same(got: list[dict], want: list[dict], who: str) -> None:
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert [x["news_id"] for x in g["items"]] == [x["news_id"] for x in w["items"]], f"{who}, request {i}"
        np.testing.assert_allclose(
            [x["score"] for x in g["items"]],
            [x["score"] for x in w["items"]],
            atol=1e-5,
            err_msg=f"{who}, {i}",
        )


def test_two_replicas_on_one_redis_answer_as_a_server_without_cache(run: Path, tmp_path: Path) -> None:
    """Replicas A and B share a Redis and each ingest other content under the same fresh IDs; each
    answers exactly what an uncached server with the same news answers, before and after A
    updates a news in the history (the update changes A's next response)."""
    redis = Redis()
    servers: list[Server] = []
    try:
        with ThreadPoolExecutor(2) as pool:  # start both at once: loading is most of the time
            started = [
                pool.submit(
                    Server,
                    run,
                    "--redis-url",
                    redis.url,
                    "--no-ui",
                    "--state-dir",
                    str(tmp_path / name),
                    log=tmp_path / f"{name}.log",
                )  # fmt: skip
                for name in ("a", "b")
            ]
            a, b = (f.result() for f in started)
        servers = [a, b]
        bodies = _bodies(run)
        content_a = [_news("F1", HORSE), _news("F2", MARKETS)]
        content_b = [_news("F1", MARKETS), _news("F2", SPACE)]
        updated_a = [_news("F1", RAIN), _news("F2", MARKETS)]
        want_a = _uncached(run, tmp_path / "ref_a", content_a, bodies)
        want_b = _uncached(run, tmp_path / "ref_b", content_b, bodies)
        want_a2 = _uncached(run, tmp_path / "ref_a2", updated_a, bodies)
        # The fresh content matters to every request that has some, the update to those with F1.
        assert all(want_a[i]["items"] != want_b[i]["items"] for i in (0, 1, 2))
        assert all(want_a[i]["items"] != want_a2[i]["items"] for i in (0, 1))
        _ingest(a, content_a)
        _ingest(b, content_b)
        rounds = []
        for round_ in range(2):  # a miss, then a hit, on each replica
            got_a = _ask(a, bodies)
            _same(got_a, want_a, f"replica A, round {round_}")
            got_b = _ask(b, bodies)
            _same(got_b, want_b, f"replica B, round {round_}")
            rounds.append([g["cached_user"] for g in got_a + got_b])
        assert rounds[1] == [True] * 8  # the second round came from the cache
        # A history of run news only has one state everywhere: B found A's in Redis.
        assert rounds[0] == [False] * 4 + [False] * 3 + [True]
        # A updates F1: its very next answers follow, B's stay B's.
        _ingest(a, [_news("F1", RAIN)])
        _same(_ask(a, bodies), want_a2, "replica A after the update")
        _same(_ask(b, bodies), want_b, "replica B after A's update")
    finally:
        for server in servers:
            server.stop()
        redis.stop()


def test_in_process_cache_expires_with_the_redis_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    # cachetools' TTLCache on a fake timer: the entry lives 1 s of it, however busy the machine.
    now = [0.0]
    monkeypatch.setattr(serve_cache, "TTLCache", functools.partial(TTLCache, timer=lambda: now[0]))
    cache = UserCache(None, ttl=1, lru_size=10)
    state = np.arange(4, dtype=np.float32)
    cache.set("k", state)
    now[0] = 0.9
    np.testing.assert_array_equal(cache.get("k"), state)
    now[0] = 1.2
    assert cache.get("k") is None
    off = UserCache(None, ttl=0)
    off.set("k", state)
    assert off.get("k") is None and off.kind == "off"


def test_a_server_caps_the_compute_threads_of_numpy(run: Path, tmp_path: Path) -> None:
    """The engine a server loads caps numpy's BLAS (and OpenMP) to --threads, with no
    environment variable set: uncapped, concurrent requests each start a thread per core."""
    code = (
        "import json, sys\n"
        "from threadpoolctl import threadpool_info\n"
        "from newsrec_cli.serve.engine import Engine, ServeConfig\n"
        "Engine(ServeConfig(sys.argv[1], state_dir=sys.argv[2], threads=1)).load()\n"
        "print(json.dumps([(i['internal_api'], i['num_threads']) for i in threadpool_info()]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(run), str(tmp_path / "state")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    pools = json.loads(out.strip().splitlines()[-1])
    assert any(api in ("openblas", "mkl", "blis") for api, _ in pools), pools
    assert all(threads == 1 for _, threads in pools), pools


def test_batched_retrieval_equals_one_by_one(run: Path, tmp_path: Path) -> None:
    """Retrieval for several users in one product over the keys finds what each finds alone."""
    from newsrec_cli.serve.engine import Engine, ServeConfig

    engine = Engine(ServeConfig(str(run), state_dir=str(tmp_path / "state"), ui=False))
    engine.load()
    assert engine.retriever.method == "exact"
    vectors, n = engine.table.view()
    rng = np.random.default_rng(0)
    states = [engine.user_state(rng.choice(n, 5, replace=False).tolist(), 0)[0] for _ in range(6)]
    ks = [1, 10, 10, 50, 3, 10]
    allowed = [None, None, rng.random(n) > 0.5, None, np.zeros(n, bool), rng.random(n) > 0.1]
    many = engine.retriever.search_many(engine.backend, states, vectors[:n], ks, allowed)
    for got, state, k, a in zip(many, states, ks, allowed, strict=True):
        one = engine.retriever.search(engine.backend, state, vectors[:n], k, a)
        assert sorted(got.tolist()) == sorted(one.tolist())
        assert len(got) == (min(k, int(a.sum())) if a is not None else k)
