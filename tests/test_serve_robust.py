"""`newsrec serve` as clients nobody here wrote see it, against a real uvicorn server on 127.0.0.1:
10,000 seeded random bodies (non-finite numbers, lone surrogates, huge lists, wrong types, deep
nesting) with no 5xx, schemathesis with all its checks, a model that cannot load, `since` across
time zones, the schema against the service, /docs without a network, and a port in use.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("onnxruntime", reason="the serve extra is not installed")

from serve_helpers import Server, port_in_log, run_schemathesis  # noqa: E402
from train_helpers import hashing_store, invoke, synth  # noqa: E402

pytestmark = pytest.mark.slow

TRAIN = ["--dim", "16", "--heads", "2", "--history", "10", "--batch-size", "32", "--threads", "1"]
JSON_ROUTES = ("/v1/recommend", "/v1/explain", "/v1/news", "/v1/news/lookup")
RANDOM_BODIES = 10_000
SCHEMATHESIS_EXAMPLES = 8  # per operation and phase: bounded, the whole run takes ~20 s


@pytest.fixture(scope="module")
def robust_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data, run): a tiny model trained one epoch, with user IDs."""
    root = tmp_path_factory.mktemp("robust")
    data = synth(root, news=150, users=80)
    store = hashing_store(data, root / "store")
    run = root / "run"
    invoke("train", data, "-e", store, "-o", run, *TRAIN, "--epochs", "1", "--use-user-id", "--seed", "5")
    return data, run


@pytest.fixture(scope="module")
def server(robust_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data, run = robust_run
    state = tmp_path_factory.mktemp("robust-state")
    srv = Server(run, "--data", str(data), "--state-dir", str(state), log=state / "serve.log")
    yield srv
    srv.stop()


def _known(run: Path) -> list[str]:
    return (run / "vocab_news_ids.txt").read_text().split()


# ----------------------------------------------------------------------------- time zones (first:
# the fuzzers below ingest news with random dates)


def test_since_compares_time_zone_aware_times(server: Server, robust_run: tuple[Path, Path]) -> None:
    """An offset is applied, a naive time is read as UTC, a date alone is 00:00 UTC."""
    history = _known(robust_run[1])[:3]
    fresh = {
        "TZ-1900Z": "2031-05-01T19:00:00Z",  # 19:00 UTC
        "TZ-1900-0500": "2031-05-01T19:00:00-05:00",  # 00:00 UTC on May 2
        "TZ-2345-naive": "2031-05-01T23:45:00",  # read as 23:45 UTC
        "TZ-0300+0500": "2031-05-02T03:00:00+05:00",  # 22:00 UTC on May 1
    }
    news = [{"news_id": i, "title": f"story {i}", "published": t} for i, t in fresh.items()]
    assert server.post("/v1/news", {"news": news}).status_code == 200

    def since(value: str) -> set[str]:
        r = server.post("/v1/recommend", {"history": history, "k": 1000, "since": value})
        assert r.status_code == 200, r.text
        return {i["news_id"] for i in r.json()["items"]}

    assert since("2031-05-01T23:30:00Z") == {"TZ-1900-0500", "TZ-2345-naive"}
    assert since("2031-05-02T04:30:00+05:00") == {"TZ-1900-0500", "TZ-2345-naive"}  # 23:30 UTC
    assert since("2031-05-01T23:30:00") == {"TZ-1900-0500", "TZ-2345-naive"}  # naive: UTC
    assert since("2031-05-01T21:00:00Z") == {"TZ-1900-0500", "TZ-2345-naive", "TZ-0300+0500"}
    assert since("2031-05-01T18:30:00-00:30") == set(fresh)  # 19:00 UTC: on or after
    assert since("2031-05-01") == set(fresh)  # 00:00 UTC
    assert since("2031-05-02") == {"TZ-1900-0500"}
    assert server.get("/v1/news/TZ-1900-0500").json()["published"] == "2031-05-02T00:00:00+00:00"


# ----------------------------------------------------------------------------- the schema


def test_schema_matches_the_service(server: Server, robust_run: tuple[Path, Path]) -> None:
    known = _known(robust_run[1])
    schema = server.get("/openapi.json").json()
    paths = schema["paths"]
    # The app's own 422s have the documented shape: [{loc, msg, type}], unknown IDs in ctx.
    r = server.post("/v1/recommend", {"history": [known[0], "NOPE1"], "candidates": ["NOPE2"]})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["ctx"]["unknown"] == ["NOPE1", "NOPE2"] and "NOPE1" in error["msg"]
    assert set(error) >= {"loc", "msg", "type"}
    r = server.post("/v1/explain", {"history": [], "items": ["NOPE3"]})
    assert r.status_code == 422 and r.json()["detail"][0]["ctx"]["unknown"] == ["NOPE3"]
    r = server.get("/v1/search?q=%20")
    assert r.status_code == 422 and isinstance(r.json()["detail"], list)
    # /metrics is declared as text, and is text.
    assert list(paths["/metrics"]["get"]["responses"]["200"]["content"]) == ["text/plain"]
    assert server.get("/metrics").headers["content-type"].startswith("text/plain")
    # 400 and 413 are documented where they happen.
    recommend = paths["/v1/recommend"]["post"]["responses"]
    assert {"200", "400", "413", "422", "503"} <= set(recommend)
    r = httpx.post(
        f"{server.url}/v1/recommend", content=b"{\xff}", headers={"content-type": "application/json"}
    )
    assert r.status_code in (400, 422) and r.json()["detail"]
    assert server.post("/v1/recommend", {"history": [known[0]] * 1001}).status_code == 413
    # Only text is a time: 0 is not 1970.
    for bad in (0, 1.5, True):
        r = server.post("/v1/news", {"news": [{"news_id": "T0", "title": "t", "published": bad}]})
        assert r.status_code == 422 and "ISO 8601" in r.text, bad
        r = server.post("/v1/recommend", {"history": [], "since": bad})
        assert r.status_code == 422, bad
    # An offset that takes the time out of years 1-9999 in UTC: a 422 with the reason, not a 500.
    for bad in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        r = server.post("/v1/news", {"news": [{"news_id": "T0", "title": "t", "published": bad}]})
        assert r.status_code == 422 and "outside the years 1 to 9999" in r.text, (bad, r.text)
        r = server.post("/v1/recommend", {"history": [], "since": bad})
        assert r.status_code == 422 and "outside the years 1 to 9999" in r.text, (bad, r.text)
    # Strict types, as the schema says: "3" is no integer, "false" no boolean.
    assert server.post("/v1/recommend", {"history": [], "k": "3"}).status_code == 422
    assert server.post("/v1/recommend", {"history": [], "strict": "false"}).status_code == 422
    # /v1/news/lookup is not shadowed by /v1/news/{news_id}, and no news may be called "lookup".
    r = server.get("/v1/news/lookup")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert server.post("/v1/news/lookup", {"ids": [known[0]]}).json()["news"][0]["news_id"] == known[0]
    r = server.post("/v1/news", {"news": [{"news_id": "lookup", "title": "t"}]})
    assert r.status_code == 422
    assert server.get(f"/v1/news/{known[0]}").json()["news_id"] == known[0]


# ----------------------------------------------------------------------------- /docs offline


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def test_docs_load_every_asset_from_the_server(server: Server) -> None:
    """/docs and /redoc reference only the server's own files (fastapi-offline), and each loads."""
    for page in ("/docs", "/redoc"):
        r = server.get(page)
        assert r.status_code == 200
        parser = _Assets()
        parser.feed(r.text)
        urls = parser.urls + re.findall(r"url: '([^']+)'", r.text)  # the spec URL Swagger UI fetches
        assert len(parser.urls) >= (3 if page == "/docs" else 2), parser.urls
        for url in urls:
            assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
            asset = server.get(url)
            assert asset.status_code == 200 and len(asset.content) > 100, url
        assert "cdn." not in r.text


# ----------------------------------------------------------------------------- random bodies


NON_FINITE = ("NaN", "Infinity", "-Infinity", "1e999", "-1e999")
SURROGATES = ('"\\ud800"', '"\\udfff"', '"a\\ud83d"', '"\\udc00\\ud800"')


def _value(rng: random.Random, ids: list[str], depth: int = 0) -> str:
    """The JSON text of a random value, hostile more often than not."""
    kind = rng.randrange(14 if depth < 3 else 9)
    if kind == 0:
        return rng.choice(NON_FINITE)
    if kind == 1:
        return rng.choice(SURROGATES)
    if kind == 2:
        return str(rng.choice([0, -1, 1, 7, 10**6, 2**63, -(2**64), 10**400]))
    if kind == 3:
        return repr(rng.uniform(-1e6, 1e6))
    if kind == 4:
        return rng.choice(["true", "false", "null"])
    if kind == 5:
        return json.dumps(rng.choice(ids))
    if kind == 6:
        text = "".join(
            chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x80, 0xD7FF)])) for _ in range(8)
        )
        return json.dumps(text, ensure_ascii=rng.random() < 0.5)
    if kind == 7:
        return rng.choice(['""', '" "', '"\\u0000"', '"a\\nb"', '"2019-11-15T08:30:00Z"', '"lookup"'])
    if kind == 8:
        n = rng.choice([50, 500, 5000])
        return "[" * n + "]" * n  # deep nesting
    if kind == 9:
        return json.dumps([rng.choice(ids) for _ in range(rng.choice([1001, 2500]))])  # a huge list
    if kind in (10, 11):
        return "[" + ",".join(_value(rng, ids, depth + 1) for _ in range(rng.randrange(4))) + "]"
    keys = ["history", "k", "news_id", "title", "ids", "items", "x", "\\ud800"]
    pairs = [f'"{rng.choice(keys)}":{_value(rng, ids, depth + 1)}' for _ in range(rng.randrange(4))]
    return "{" + ",".join(pairs) + "}"


def _valid(route: str, rng: random.Random, ids: list[str]) -> dict:
    some = rng.sample(ids, 4)
    if route == "/v1/recommend":
        body: dict = {"history": some[:2], "k": rng.randint(1, 5), "strict": rng.random() < 0.5}
        if rng.random() < 0.5:
            body["candidates"] = some[2:]
        if rng.random() < 0.3:
            body["since"] = "2019-11-10T00:00:00Z"
        if rng.random() < 0.3:
            body["user_id"] = "U1"
        return body
    if route == "/v1/explain":
        return {"history": some[:2], "items": some[2:], "top": rng.randint(1, 3)}
    if route == "/v1/news":
        return {"news": [{"news_id": f"FZ{rng.randrange(50)}", "title": "a fresh story", "category": "news"}]}
    return {"ids": some}


def _body(route: str, rng: random.Random, ids: list[str]) -> bytes:
    """A valid body with one to three fields (or the whole body) replaced by random JSON text."""
    if rng.random() < 0.1:
        return _value(rng, ids).encode("utf-8", "surrogatepass")
    body = _valid(route, rng, ids)
    fields = list(body)
    if route == "/v1/news":
        body["news"][0] = {**body["news"][0]}
        target, fields = body["news"][0], ["news_id", "title", "published", "entities", "abstract"]
    else:
        target = body
    raw = {}
    if route == "/v1/news" and rng.random() < 0.7:
        raw["unknown_field"] = "1"  # keeps valid ingests (each embeds and persists a news) rare
    for _ in range(rng.randint(1, 3)):
        raw[rng.choice([*fields, "unknown_field"])] = _value(rng, ids)
    for key in raw:
        target[key] = f"@@{key}@@"
    text = json.dumps(body)
    for key, value in raw.items():
        text = text.replace(json.dumps(f"@@{key}@@"), value)
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.03:
        data = data[: rng.randrange(len(data))]  # cut short
    if rng.random() < 0.02:
        data = data.replace(b'"', b'"\xff', 1)  # not UTF-8
    return data


def test_random_bodies_never_answer_5xx(server: Server, robust_run: tuple[Path, Path]) -> None:
    """10,000 seeded random bodies across the JSON routes, on one keep-alive connection: no 5xx,
    every 4xx has a reason in the documented shape, and the server never closes the connection.
    (The standard library's client: it costs the test the least CPU per request.)"""
    ids = _known(robust_run[1])
    rng = random.Random(20)
    statuses: Counter[int] = Counter()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    closed = 0

    def post(route: str, data: bytes) -> tuple[int, dict]:
        nonlocal closed
        conn.request("POST", route, body=data, headers={"content-type": "application/json"})
        response = conn.getresponse()
        body = json.loads(response.read())
        closed += conn.sock is None  # the server said Connection: close
        return response.status, body

    start = time.monotonic()
    # Every route refuses each non-finite number and lone surrogate with the reason.
    for route in JSON_ROUTES:
        for token in (*NON_FINITE, *SURROGATES):
            field = "k" if route == "/v1/recommend" and token in NON_FINITE else "history"
            text = {
                "/v1/news": '{"news":[{"news_id":"A","title":TOKEN}]}',
                "/v1/news/lookup": '{"ids":[TOKEN]}',
            }.get(route, f'{{"{field}":[TOKEN],"items":["X"],"strict":false}}')
            status, body = post(route, text.replace("TOKEN", token).encode("utf-8", "surrogatepass"))
            assert status == 422 and body["detail"][0]["msg"], (route, token, status, body)
    status, body = post("/v1/recommend", b'{"history":["\\ud800"],"strict":false}')
    assert status == 422 and "lone surrogates" in json.dumps(body)
    for i in range(RANDOM_BODIES):
        route = JSON_ROUTES[i % len(JSON_ROUTES)]
        status, body = post(route, _body(route, rng, ids))
        statuses[status] += 1
        assert status < 500, (route, status, str(body)[:300])
        if status == 422:
            detail = body["detail"]
            assert isinstance(detail, list) and all({"loc", "msg", "type"} <= set(e) for e in detail)
        elif status >= 400:
            assert isinstance(body["detail"], str) and body["detail"], (status, body)
    conn.close()
    seconds = time.monotonic() - start
    print(f"{RANDOM_BODIES:,} random bodies in {seconds:.1f}s: {dict(sorted(statuses.items()))}")
    assert sum(statuses.values()) == RANDOM_BODIES and closed == 0
    assert statuses[200] >= 100 and statuses[422] >= 5000 and statuses[413] >= 10


# ----------------------------------------------------------------------------- body size

LIMIT = 1 << 20  # serve --max-body's default


def _rss_kb(pid: int) -> int:
    """The resident memory of process `pid` (VmRSS of /proc/PID/status), in kB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))  # type: ignore[union-attr]


def _chunks(data: bytes, size: int = 1 << 16) -> Iterator[bytes]:
    """`data` as a stream: httpx sends a generator chunked, with no Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_body_over_the_limit_is_refused_unread(server: Server) -> None:
    """A body of 10x the limit is refused with 413, by its Content-Length and sent chunked alike,
    and the server's resident memory does not grow with it (parsed whole, 10 MB of IDs took
    ~50 MB); a body under the limit, padded with JSON whitespace, is still served."""
    url = f"{server.url}/v1/recommend"
    headers = {"content-type": "application/json"}
    ids = b",".join([b'"N%07d"' % i for i in range(10 * LIMIT // 11)])
    huge = b'{"strict": false, "history": [' + ids + b"]}"
    assert len(huge) >= 10 * LIMIT
    for _ in range(2):  # the refusal's own first-use allocations before the measure
        assert httpx.post(url, content=huge[: 2 * LIMIT], headers=headers, timeout=60).status_code == 413
    before = _rss_kb(server.proc.pid)
    for attempt in range(3):
        declared = httpx.post(url, content=huge, headers=headers, timeout=60)
        streamed = httpx.post(url, content=_chunks(huge), headers=headers, timeout=60)
        for answer in (declared, streamed):
            assert answer.status_code == 413, (attempt, answer.status_code, answer.text[:200])
            assert answer.json() == {
                "detail": f"the request body is over the {LIMIT:,}-byte limit (serve --max-body)"
            }
    grown = _rss_kb(server.proc.pid) - before
    assert grown < 4 * 1024, f"the server's memory grew by {grown} kB over six 10 MB bodies"
    padded = b'{"history": []' + b" " * (LIMIT - 100) + b', "k": 3}'
    for body in (padded, _chunks(padded)):
        answer = httpx.post(url, content=body, headers=headers, timeout=60)
        assert answer.status_code == 200 and len(answer.json()["items"]) == 3


def test_the_body_limit_is_in_the_schema(server: Server) -> None:
    schema = server.get("/openapi.json").json()
    assert f"{LIMIT:,} bytes" in schema["info"]["description"]
    for path in ("/v1/recommend", "/v1/news", "/v1/events", "/v1/explain", "/v1/news/lookup"):
        assert "--max-body" in schema["paths"][path]["post"]["responses"]["413"]["description"], path


def test_news_ids_carry_their_constraints_in_the_schema(server: Server) -> None:
    """`{"candidates": [""]}` was schema-valid and refused (schemathesis ST202): every news ID a
    request takes now says non-empty, at most 128 characters and no whitespace in the schema,
    and the service refuses exactly what the schema does."""
    schema = server.get("/openapi.json").json()
    models = schema["components"]["schemas"]
    fields = {
        ("RecommendRequest", "history"),
        ("RecommendRequest", "candidates"),
        ("ExplainRequest", "history"),
        ("ExplainRequest", "items"),
        ("LookupRequest", "ids"),
        ("ImpressionIn", "shown"),
        ("ImpressionIn", "clicked"),
    }
    for model, name in fields:
        prop = models[model]["properties"][name]
        array = next((p for p in prop.get("anyOf", [prop]) if p.get("type") == "array"), prop)
        item = array["items"]
        assert item["minLength"] == 1 and item["maxLength"] == 128 and item["pattern"], (model, name)
    for bad, kind in (
        ("", "string_too_short"),
        ("N 1", "string_pattern_mismatch"),
        ("N" * 129, "string_too_long"),
    ):
        r = server.post("/v1/recommend", {"candidates": [bad]})
        assert r.status_code == 422 and r.json()["detail"][0]["type"] == kind, (bad, r.text)
    r = server.post("/v1/recommend", {"candidates": ["N-well-formed-unknown"]})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "unknown_news_ids"
    described = schema["paths"]["/v1/recommend"]["post"]["responses"]["422"]["description"]
    assert "unknown_news_ids" in described


# ----------------------------------------------------------------------------- echoed input

ERROR_BYTES = 8192  # wire.MAX_ERROR_BYTES: no 422 is longer


def _amplifying_bodies(known: str) -> Iterator[tuple[str, dict]]:
    """(route, body) pairs of about 1 MB whose every ID is refused: one ID of 1,000,000
    characters, 2,000 IDs of 500, and 2,000 well-formed unknown IDs of 100."""
    huge = "Q" * 1_000_000
    long = [f"L{i:04d}" + "x" * 495 for i in range(2000)]
    unknown = [f"U{i:04d}" + "y" * 95 for i in range(2000)]
    for ids in ([huge], long, unknown):
        half = ids[: len(ids) // 2] or ids
        yield "/v1/recommend", {"history": half, "candidates": ids[len(half) :] or [known]}
        yield "/v1/recommend", {"history": [], "candidates": half}
        yield "/v1/explain", {"history": half, "items": [known]}
        yield "/v1/events", {"impressions": [{"time": "2020-01-01T00:00:00Z", "shown": half}]}
        if ids is not unknown:  # well-formed: lookup lists them once (200), /v1/news adds them
            yield "/v1/news/lookup", {"ids": half}
            yield "/v1/news", {"news": [{"news_id": i, "title": "t"} for i in half[:1000]]}


def test_a_422_never_echoes_the_input_amplified(server: Server, robust_run: tuple[Path, Path]) -> None:
    """A 1 MB unknown ID came back three times (3 MB) and 2,000 long unknown IDs 3 MB: now any
    422 names at most a few IDs, each cut short, with a count, in under 8 KB."""
    known = _known(robust_run[1])[0]
    for route, body in _amplifying_bodies(known):
        r = server.post(route, body)
        assert r.status_code in (409, 422), (route, r.status_code, r.text[:300])
        assert len(r.content) <= ERROR_BYTES, (route, len(r.content), r.text[:300])
        assert "Q" * 100 not in r.text and "x" * 100 not in r.text, route
    r = server.post("/v1/recommend", {"history": [f"NOPE{i}" for i in range(900)]})
    error = r.json()["detail"][0]
    assert r.status_code == 422 and error["ctx"] == {"unknown": [f"NOPE{i}" for i in range(5)], "count": 900}
    assert error["msg"].endswith("NOPE0, NOPE1, NOPE2, NOPE3, NOPE4 and 895 more (900 news)")


# ----------------------------------------------------------------------------- server paths


def _four_hundreds(server: Server) -> Iterator[tuple[str, httpx.Response]]:
    """A 4xx from every route of the schema (bad bodies, parameters and IDs), and unknown routes."""
    schema = server.get("/openapi.json").json()
    bodies = ({}, {"history": ["NOPE"], "items": ["NOPE"], "ids": ["NOPE"]}, [1], {"x": 1})
    for path, methods in schema["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "NOPE", path)
        for method in methods:
            if method == "post":
                answers = [httpx.post(f"{server.url}{concrete}", json=b, timeout=30) for b in bodies]
            else:
                answers = [
                    httpx.request(method, f"{server.url}{concrete}", params=p, timeout=30)
                    for p in ({}, {"seed": "x", "q": " ", "limit": "0"})
                ]
            answers.append(httpx.request("PUT", f"{server.url}{concrete}", timeout=30))
            yield from ((f"{method} {path}", a) for a in answers if 400 <= a.status_code < 500)
    yield "unknown route", server.get("/v1/nope")
    yield "unknown user", server.get("/v1/users/NOPE")
    yield "unknown chart", server.get("/v1/run/charts/nope.svg")


def test_no_4xx_names_a_server_path(server: Server, robust_run: tuple[Path, Path]) -> None:
    """GET /v1/users/NOPE named the --data folder; no 4xx of any route names a server path."""
    data, run = robust_run
    paths = {str(p) for p in (data, run, data.resolve(), run.resolve(), server.log_path.parent)}
    routes = set()
    for route, answer in _four_hundreds(server):
        routes.add(route.split()[-1])
        for path in paths:
            assert path not in answer.text, (route, answer.status_code, answer.text[:300])
    assert len(routes) >= 12, routes
    assert server.get("/v1/users/NOPE").json() == {"detail": "unknown user ID 'NOPE' in the --data dataset"}


# ----------------------------------------------------------------------------- schemathesis


def test_schemathesis_all_checks_pass(server: Server, tmp_path: Path) -> None:
    """schemathesis (examples, coverage, fuzzing and stateful phases) with every check, including
    status-code, content-type and response-schema conformance, against the live schema."""
    summary = run_schemathesis(server, tmp_path, SCHEMATHESIS_EXAMPLES)
    assert "Tested: 15" in summary or re.search(r"Tested: 1\d", summary), summary


# ----------------------------------------------------------------------------- start-up failures


def _serve(source: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "newsrec_cli", "serve", str(source), *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_model_that_cannot_load_exits_with_the_reason(
    robust_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """A tampered checkpoint (a pickle that would run code): `newsrec serve` says so in one line
    naming the file and exits non-zero; the app under uvicorn alone (no `newsrec serve` to exit)
    answers /healthz 503 "failed", never ok, once it knows."""
    from newsrec_cli.serve.app import CONFIG_ENV
    from newsrec_cli.serve.engine import ServeConfig

    _, run = robust_run
    tampered = tmp_path / "tampered"
    shutil.copytree(run, tampered)

    class Evil:
        def __reduce__(self) -> tuple:
            return (print, ("this checkpoint ran code",))

    torch.save({"model": Evil()}, tampered / "model.pt")
    proc = _serve(tampered, "--port", "0", "--state-dir", str(tmp_path / "state"))
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode not in (None, 0), "the server stayed up with a model it cannot load"
    assert "Traceback" not in err and "this checkpoint ran code" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "model.pt" in lines[-1] and "refused" in lines[-1], err

    config = ServeConfig(source=str(tampered), state_dir=str(tmp_path / "state2"), ui=False)
    env = {**os.environ, CONFIG_ENV: config.to_json(), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "uvicorn", "newsrec_cli.serve.app:app_from_env", "--factory"]
    log = tmp_path / "uvicorn.log"
    with log.open("w") as out:  # uvicorn binds a free port (--port 0) and names it at level info
        uvicorn = subprocess.Popen(
            [*cmd, "--port", "0", "--log-level", "info"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        ready = port = None
        while time.monotonic() < deadline:
            port = port or port_in_log(log, 0, re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)"))
            with contextlib.suppress(httpx.HTTPError):  # not listening yet
                if port is not None:
                    ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()
                    if ready["status"] != "loading":
                        break
            time.sleep(0.2)
        assert ready is not None and ready["status"] == "failed" and "model.pt" in ready["error"]
        for _ in range(3):
            health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            assert health.status_code == 503 and health.json()["status"] == "failed"
            assert "refused" in health.json()["error"]
    finally:
        uvicorn.terminate()
        uvicorn.wait(15)


def test_a_port_in_use_is_one_line_before_serving(robust_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = robust_run
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = _serve(run, "--port", str(port), "--state-dir", str(tmp_path / "state"))
        try:
            out, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode not in (None, 0)
    assert "serving" not in out + err and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"--port {port}" in lines[0] and "in use" in lines[0], err


def test_ctrl_c_stops_serving_in_one_line_and_the_url_never_wraps(
    robust_run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Piped at 80 columns, the serving line is one line with whole URLs (rich broke it inside
    the URL); Ctrl-C (SIGINT) stops the server with its own line, not embed's and train's
    "what was finished is saved; rerun the same command to resume"."""
    import signal

    _, run = robust_run
    monkeypatch.setenv("COLUMNS", "80")
    state = tmp_path / "state"  # the run path makes the serving line longer than 80 columns
    server = Server(run, "--state-dir", str(state), "--no-ui", log=tmp_path / "serve.log")
    try:
        server.proc.send_signal(signal.SIGINT)
        code = server.proc.wait(60)
    finally:
        server.stop()
    log = (tmp_path / "serve.log").read_text()
    serving = [line for line in log.splitlines() if line.startswith("serving ")]
    assert len(serving) == 1 and len(serving[0]) > 80, log
    assert serving[0].endswith(f" on http://127.0.0.1:{server.port} (docs at /docs)"), log
    assert "rerun the same command" not in log and "Traceback" not in log, log
    assert log.rstrip().endswith("stopped serving (interrupted)") and code == 130, (code, log)
