"""Benchmark of `newsrec serve`: req/s and p50/p95/p99 latency from N concurrent loopback clients.

Builds (once, in --work) a run on the shared `mind_recon_dev` data (51,282 news; hashing text
vectors of MiniLM's 384 dimensions, which cost the same as MiniLM's at serving time), exports it (fp32 + int8), then for
each scenario starts `newsrec serve` as a user would (the default command and its flags, no
thread variables in the environment) and drives it from each count of `--clients` concurrent
HTTP clients in turn (default 1, then 16) on 127.0.0.1 for `--seconds` (bounded: at most
--max-requests each):

- rank 50 candidates, user-state cache miss (every request a new history): torch, onnx, int8
- rank 50 candidates, cache hit (a few histories repeated): onnx
- retrieval (no candidates, k=10) over the 51k news: exact search, torch, onnx, int8; onnx with
  each request re-ranked by MMR (`"rerank": {"method": "mmr", "weight": 0.3}`); and onnx
  with `--no-batch` (threads capped, concurrent retrievals not batched), for comparison
- retrieval over 200k news (150k synthetic fresh news added to the served state): exact, and
  with a usearch HNSW index (--ann-threshold below the size)
- event ingest (POST /v1/events, 10 impressions of 20 shown news per request) into a run trained
  with --use-popularity: counts held in process (saved in the state folder after each request)
  and in a real redis-server; the table gives impressions/s (events/s) beside req/s
- retrieval (k=10) from that popularity run's export, its counts in process and in a real
  redis-server: every news' popularity term read from the live counts (`--popularity-export`
  serves another such export); and the same ("live") while one more client posts events every
  0.1 s (each a new snapshot of the counts to read)

The clients share the CPU with the server (2 cores here), so figures are conservative. Each row
also gives the CPU time the server and the clients spent per request, which other processes on
a shared machine barely move: 2 cores / (server + client CPU per request) bounds what the same
load reaches on an idle 2-core machine.

    python benchmarks/bench_serve.py                       # ~3 minutes after the one-time build
    python benchmarks/bench_serve.py --seconds 3 --clients 1,8 --only "retrieve 51k"
    python benchmarks/bench_serve.py --seconds 5 --clients 1,4 --only events
    python benchmarks/bench_serve.py --only "retrieve popularity"
    python benchmarks/bench_serve.py --only "retrieve 51k exact onnx"   # with and without MMR
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "mind_recon_dev"
NEWSREC = [sys.executable, "-m", "newsrec_cli"]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--work", type=Path, default=Path("/tmp/newsrec_bench_serve"), help="Build folder (reused)."
    )
    p.add_argument("--data", type=Path, default=SHARED, help="MIND data to train on (mind_recon_dev).")
    p.add_argument(
        "--clients", default="1,16", help="Concurrent clients, comma-separated: each scenario at each."
    )
    p.add_argument("--seconds", type=float, default=5.0, help="Load time per scenario.")
    p.add_argument("--max-requests", type=int, default=20_000, help="Cap per scenario.")
    p.add_argument("--big", type=int, default=200_000, help="News in the large retrieval scenario.")
    p.add_argument("--only", default="", help="Comma-separated scenario names to run (default all).")
    p.add_argument(
        "--popularity-export",
        type=Path,
        default=None,
        help="Export of a run trained with --use-popularity for the events and popularity retrieval "
        "scenarios (default: trained and exported once in --work).",
    )
    p.add_argument("--json", action="store_true", help="Print JSON rows instead of a table.")
    return p.parse_args()


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def build(work: Path, data: Path) -> Path:
    """Run + export on `data` (skipped when already there)."""
    export = work / "export"
    if (export / "export.json").exists():
        return export
    work.mkdir(parents=True, exist_ok=True)
    sh(*NEWSREC, "embed", "news", str(data), "--out", str(work / "store"), "--provider", "hashing",
       "--dimensions", "384")  # fmt: skip
    sh(
        *NEWSREC, "train", str(data), "-e", str(work / "store"), "-o", str(work / "run"),
        "--epochs", "1", "--threads", "1", "--dim", "64", "--heads", "4", "--device", "cpu",
    )  # fmt: skip
    sh(*NEWSREC, "export", str(work / "run"), "--out", str(export), "--quantize", "int8")
    return export


def build_popularity(work: Path, data: Path) -> Path:
    """A run trained with --use-popularity on `data`, exported (skipped when already there)."""
    export = work / "export_popularity"
    manifest = export / "export.json"
    # an export made before the popularity graphs would measure the scorer over every news
    if manifest.exists() and "popularity_keys" in (json.loads(manifest.read_text())["graphs"]["fp32"] or {}):
        return export
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "store" / "meta.json").exists():
        sh(*NEWSREC, "embed", "news", str(data), "--out", str(work / "store"), "--provider", "hashing")
    if not (work / "run_popularity" / "model.pt").exists():
        sh(
            *NEWSREC, "train", str(data), "-e", str(work / "store"), "-o", str(work / "run_popularity"),
            "--epochs", "1", "--threads", "1", "--dim", "64", "--heads", "4", "--device", "cpu",
            "--use-popularity",
        )  # fmt: skip
    sh(*NEWSREC, "export", str(work / "run_popularity"), "--out", str(export), "--quantize", "none")
    return export


def big_state(work: Path, export: Path, total: int) -> Path:
    """A served-state folder with synthetic fresh news bringing the table to `total` news."""
    from newsrec_cli.embed.store import commit, new_meta
    from newsrec_cli.serve.engine import INGESTED, INGESTED_TEXT

    state = work / f"state_{total}"
    if (state / INGESTED).exists():
        return state
    manifest = json.loads((export / "export.json").read_text())
    emb = manifest["embeddings"]
    extra = total - manifest["news"]
    rng = np.random.default_rng(0)
    ids = [f"S{i}" for i in range(extra)]
    vectors = rng.normal(size=(extra, emb["dimension"])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    state.mkdir(parents=True, exist_ok=True)
    signature = {"kind": "news", **{k: emb[k] for k in ("provider", "model", "template", "normalized")}}
    commit(state / INGESTED_TEXT, ids, vectors, new_meta({**signature, "dimension": emb["dimension"]}))
    cats = ["news", "sports", "finance", "lifestyle"]
    records = {
        i: {"news_id": i, "category": cats[n % 4], "title": f"synthetic {i}", "source": "ingested"}
        for n, i in enumerate(ids)
    }
    (state / INGESTED).write_text(json.dumps(records))
    return state


class Server:
    def __init__(self, export: Path, *args: str) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # Exactly the command a user runs: no thread variables in the environment (the server
        # caps its own compute threads), and none inherited from the shell that started this.
        env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
        cmd = [*NEWSREC, "serve", str(export), "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("server exited")
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("server not ready")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(  # type: ignore[no-untyped-def]
    url: str,
    bodies,
    clients: int,
    seconds: float,
    cap: int,
    pid: int | None = None,
    path: str = "/v1/recommend",
) -> dict:
    """Load from `clients` concurrent clients; with the server's `pid`, also the CPU time that
    server and clients spent per request: on a shared machine, a figure that other processes
    barely move (wall-clock req/s falls with every process that shares the cores).

    The bodies are encoded before the clock starts and sent by aiohttp, whose client costs a
    fraction of httpx's per request: client and server share the cores, so a costly client
    would be measured as a slow server."""
    latencies: list[float] = []
    errors = 0
    payloads = [json.dumps(next(bodies)).encode() for _ in range(min(cap, 4096))]
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        url, connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as client:
        for payload in payloads[:5]:  # warm-up, outside the measurement
            async with client.post(path, data=payload, headers=headers) as r:
                await r.read()
        deadline = time.perf_counter() + seconds

        async def worker(first: int) -> None:
            nonlocal errors
            i = first
            while time.perf_counter() < deadline and len(latencies) < cap:
                payload = payloads[i % len(payloads)]
                i += clients
                start = time.perf_counter()
                async with client.post(path, data=payload, headers=headers) as r:
                    await r.read()
                latencies.append(time.perf_counter() - start)
                errors += r.status != 200

        server_cpu = cpu_seconds(pid) if pid is not None else 0.0
        client_cpu = time.process_time()
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*(worker(j) for j in range(clients)))
        elapsed = time.perf_counter() - start
        client_cpu = time.process_time() - client_cpu
        server_cpu = cpu_seconds(pid) - server_cpu if pid is not None else float("nan")
    ms = np.asarray(latencies) * 1000
    return {
        "server_cpu_ms": 1000 * server_cpu / len(ms),
        "client_cpu_ms": 1000 * client_cpu / len(ms),
        "requests": len(ms),
        "errors": errors,
        "req_s": len(ms) / elapsed,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def bodies_rank(ids: list[str], hit: bool, seed: int = 0):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    fixed = [rng.sample(ids, 20) for _ in range(8)]
    while True:
        history = rng.choice(fixed) if hit else rng.sample(ids, 20)
        yield {"history": history, "candidates": rng.sample(ids, 50), "k": 10}


def bodies_retrieve(ids: list[str], seed: int = 0, rerank: dict | None = None):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    while True:
        body = {"history": rng.sample(ids, 20), "k": 10}
        if rerank is not None:
            body["rerank"] = rerank
        yield body


EVENT_IMPRESSIONS = 10  # impressions per POST /v1/events
EVENT_SHOWN = 20  # news shown per impression


def bodies_events(ids: list[str], seed: int = 0):  # type: ignore[no-untyped-def]
    """Impressions one second apart from 2019-11-15 on (after mind_recon_dev's days), one click each."""
    rng = random.Random(seed)
    second = 0
    start = np.datetime64("2019-11-15T00:00:00")
    while True:
        impressions = []
        for _ in range(EVENT_IMPRESSIONS):
            shown = rng.sample(ids, EVENT_SHOWN)
            second += 1
            when = str(start + np.timedelta64(second, "s")) + "Z"
            impressions.append({"time": when, "shown": shown, "clicked": [shown[0]]})
        yield {"impressions": impressions}


def main() -> None:
    args = parse()
    console = Console(stderr=True)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    event_scenarios = [*POPULARITY_SCENARIOS]
    events = [name for name in event_scenarios if not only or any(o in name for o in only)]
    rows = []
    if only and all(any(o in name for name in event_scenarios) for o in only):  # no other run needed
        rows += bench_events(args, console, events)
        return render(args, rows)
    console.print(f"building run and export in {args.work} (once)")
    export = build(args.work, args.data)
    ids = [line.split("\t", 1)[0] for line in (export / "news.tsv").read_text().splitlines()]
    n = len(ids)
    big = big_state(args.work, export, args.big)
    scenarios = [
        *(
            (f"rank50 miss {b}", ["--backend", b], lambda: bodies_rank(ids, False), n)
            for b in ("torch", "onnx", "int8")
        ),
        ("rank50 hit onnx", ["--backend", "onnx"], lambda: bodies_rank(ids, True), n),
        *(
            (f"retrieve {n // 1000}k exact {b}", ["--backend", b], lambda: bodies_retrieve(ids), n)
            for b in ("torch", "onnx", "int8")
        ),
        # re-ranked: MMR over the best pool_size(10) = 100 by the model (the same bodies otherwise)
        (
            f"retrieve {n // 1000}k exact onnx mmr:0.3",
            ["--backend", "onnx"],
            lambda: bodies_retrieve(ids, rerank={"method": "mmr", "weight": 0.3}),
            n,
        ),
        # the alternative to batching: threads capped only (--no-batch)
        (
            f"retrieve {n // 1000}k exact onnx --no-batch",
            ["--backend", "onnx", "--no-batch"],
            lambda: bodies_retrieve(ids),
            n,
        ),
        (
            f"retrieve {args.big // 1000}k exact onnx",
            ["--backend", "onnx", "--state-dir", str(big)],
            lambda: bodies_retrieve(ids),
            args.big,
        ),
        (
            f"retrieve {args.big // 1000}k hnsw onnx",
            ["--backend", "onnx", "--state-dir", str(big), "--ann-threshold", "100000"],
            lambda: bodies_retrieve(ids),
            args.big,
        ),
    ]
    chosen = [sc for sc in scenarios if not only or any(o in sc[0] for o in only)]
    clients = [int(c) for c in args.clients.split(",")]
    for name, flags, make, size in chosen:
        console.print(f"{name}: starting server")
        start = time.perf_counter()
        server = Server(export, *flags)
        ready = time.perf_counter() - start
        try:
            for count in clients:  # one server, driven at each concurrency in turn
                result = asyncio.run(
                    drive(server.url, make(), count, args.seconds, args.max_requests, server.proc.pid)
                )
                rows.append({"scenario": name, "news": size, "clients": count, "ready_s": ready, **result})
        finally:
            server.stop()
    if events:
        rows += bench_events(args, console, events)
    render(args, rows)


def render(args: argparse.Namespace, rows: list[dict]) -> None:
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"newsrec serve (default command), {args.seconds:g}s per scenario and client count")
    for col in (
        "scenario",
        "news",
        "clients",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "server CPU ms/req",
        "client CPU ms/req",
        "events/s",
        "requests",
        "errors",
        "ready s",
    ):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for r in rows:
        table.add_row(
            r["scenario"],
            f"{r['news']:,}",
            str(r["clients"]),
            f"{r['req_s']:.0f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{r['server_cpu_ms']:.2f}",
            f"{r['client_cpu_ms']:.2f}",
            f"{r['events_s']:.0f}" if "events_s" in r else "",
            f"{r['requests']:,}",
            str(r["errors"]),
            f"{r['ready_s']:.1f}",
        )
    Console().print(table)


# a popularity run's scenarios and the path each posts to; the last word of a name is the backend,
# "redis" in it keeps the counts in Redis
POPULARITY_SCENARIOS = {
    "events memory onnx": "/v1/events",
    "events redis onnx": "/v1/events",
    "retrieve popularity memory onnx": "/v1/recommend",
    "retrieve popularity memory torch": "/v1/recommend",
    "retrieve popularity redis onnx": "/v1/recommend",
    # while one more client posts events (every 0.1 s): each moves the counts' clock, a new snapshot
    "retrieve popularity live memory onnx": "/v1/recommend",
    "retrieve popularity live redis onnx": "/v1/recommend",
}
EVENT_INTERVAL = 0.1  # seconds between the event posts of the "live" scenarios


async def under_events(url: str, ids: list[str], seconds: float, load):  # type: ignore[no-untyped-def]
    """Run `load` (a drive() coroutine) while posting events every EVENT_INTERVAL for `seconds`;
    its result with the impressions applied per second."""
    bodies = bodies_events(ids, seed=99)
    headers = {"content-type": "application/json"}

    async def feed() -> int:
        posted = 0
        stop = time.perf_counter() + seconds
        async with aiohttp.ClientSession(url) as client:
            while time.perf_counter() < stop:
                async with client.post("/v1/events", data=json.dumps(next(bodies)), headers=headers) as r:
                    await r.read()
                    posted += r.status == 200
                await asyncio.sleep(EVENT_INTERVAL)
        return posted

    result, posted = await asyncio.gather(load, feed())
    return result | {"events_s": posted * EVENT_IMPRESSIONS / seconds}


def bench_events(args: argparse.Namespace, console: Console, names: list[str]) -> list[dict]:
    """A popularity run's export: POST /v1/events, and retrieval (k=10) reading the live counts;
    the counts in process (a fresh state folder), or in a redis-server started here (Debian's
    redis-server on PATH)."""
    import shutil
    import socket
    import tempfile

    export = args.popularity_export or build_popularity(args.work, args.data)
    ids = [line.split("\t", 1)[0] for line in (export / "news.tsv").read_text().splitlines()]
    rows = []
    for name in names:
        state = Path(tempfile.mkdtemp(prefix="events_", dir=args.work))
        path = POPULARITY_SCENARIOS[name]
        flags = ["--backend", name.rsplit(" ", 1)[1], "--state-dir", str(state)]
        redis = None
        if "redis" in name:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            binary = shutil.which("redis-server") or "/usr/bin/redis-server"
            redis = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(0.5)
            flags += ["--redis-url", f"redis://127.0.0.1:{port}/0"]
        console.print(f"{name}: starting server")
        start = time.perf_counter()
        server = Server(export, *flags)
        ready = time.perf_counter() - start
        try:
            for count in [int(c) for c in args.clients.split(",")]:
                ingest = path == "/v1/events"
                bodies = bodies_events(ids, seed=count) if ingest else bodies_retrieve(ids)
                load = drive(
                    server.url, bodies, count, args.seconds, args.max_requests, server.proc.pid, path
                )
                if " live " in name:
                    load = under_events(server.url, ids, args.seconds, load)
                result = asyncio.run(load)
                if ingest:
                    result["events_s"] = result["req_s"] * EVENT_IMPRESSIONS
                rows.append(
                    {"scenario": name, "news": len(ids), "clients": count, "ready_s": ready, **result}
                )
        finally:
            server.stop()
            if redis is not None:
                redis.terminate()
                redis.wait(10)
            shutil.rmtree(state, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
