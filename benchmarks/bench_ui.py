"""Benchmark of the web page: page load + recommend, timed in a real browser (headless Chromium).

Builds (once, in --work) a run on the shared `mind_recon_dev` data (51,282 news) with a text
store (--store; default the MiniLM store of every news, if present), evaluates it with baselines,
starts `newsrec serve RUN --data DATA` (uvicorn on loopback, torch backend, one thread), then for
each of --users random users with a history opens a fresh page at `/ui/?user=U&k=10&go=1`: the
page loads, fetches the user's history and its cards, retrieves the top 10 from every servable
news, renders them, then asks /v1/explain for the reasons and renders those.

The figures are the page's own `performance.now()` (milliseconds since the navigation started)
when the results were in the DOM (`resultsAt`) and when the reasons were (`explainedAt`). Each
user is new to the server, so every request misses the user-state cache. Browser, server and
this script share the machine's CPU.

    python benchmarks/bench_ui.py                  # ~1 minute after the one-time build
    python benchmarks/bench_ui.py --users 20 --screenshots docs/
    python benchmarks/bench_ui.py --backend onnx   # ranking by ONNX Runtime, reasons by torch
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "mind_recon_dev"
MINILM = Path("/work/stores/mind_recon_dev_minilm")
NEWSREC = [sys.executable, "-m", "newsrec_cli"]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/newsrec_bench_ui"), help="Build folder (reused).")
    p.add_argument("--data", type=Path, default=SHARED, help="MIND data (mind_recon_dev).")
    p.add_argument(
        "--store",
        type=Path,
        default=MINILM,
        help="Text vectors of every news (built with hashing if absent).",
    )
    p.add_argument("--run", type=Path, default=None, help="An existing run to serve instead of building one.")
    p.add_argument(
        "--backend", default="torch", help="torch (the run) or onnx (an export of it, built once)."
    )
    p.add_argument("--users", type=int, default=10, help="Page loads, one new user each.")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--screenshots", type=Path, default=None, help="Save the two views' screenshots here.")
    p.add_argument("--json", action="store_true", help="Print JSON rows instead of a table.")
    return p.parse_args()


def sh(*cmd: str) -> None:
    # the command as a user runs it: no thread variables (newsrec caps its own threads)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=user_env())


def user_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}


def build(args: argparse.Namespace) -> Path:
    if args.run is not None:
        return args.run
    work = args.work
    run = work / "run"
    store = args.store
    if not (store / "meta.json").is_file():
        store = work / "store"
        if not (store / "meta.json").is_file():
            sh(*NEWSREC, "embed", "news", str(args.data), "--out", str(store), "--provider", "hashing")
    if not (run / "model.pt").is_file():
        shutil.rmtree(run, ignore_errors=True)
        sh(*NEWSREC, "train", str(args.data), "-e", str(store), "-o", str(run), "--epochs", "2",
           "--threads", "1", "--dim", "64", "--heads", "4", "--device", "cpu")  # fmt: skip
        sh(*NEWSREC, "evaluate", str(run), "--data", str(args.data), "--baselines")
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(source: Path, backend: str, data: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [*NEWSREC, "serve", str(source), "--backend", backend, "--data", str(data), "--port", str(port)],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=user_env(),
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("server not ready in 300 s")


def chromium():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not browser or not driver:
        raise SystemExit(
            "needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1800"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def wait_for(browser, script: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, timeout).until(lambda b: b.execute_script(script))


def screenshot(browser, path: Path) -> None:  # type: ignore[no-untyped-def]
    import base64

    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 2600), "scale": 1}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def main() -> None:
    args = parse()
    args.work.mkdir(parents=True, exist_ok=True)
    source = build(args)
    if args.backend != "torch":
        export = args.work / "export"
        if not (export / "export.json").is_file():
            sh(*NEWSREC, "export", str(source), "--out", str(export), "--quantize", "int8")
        source = export
    proc, url = start_server(source, args.backend, args.data, args.work / "serve.log")
    browser = chromium()
    rows = []
    try:
        info = httpx.get(f"{url}/v1/info", timeout=30).json()
        users = []
        seed = 0
        while len(users) < args.users:
            user = httpx.get(f"{url}/v1/users/random?seed={seed}", timeout=30).json()["user_id"]
            seed += 1
            if user not in users:
                users.append(user)
        for user in users:
            browser.get("about:blank")
            browser.get(f"{url}/ui/?user={user}&k={args.k}&go=1")
            wait_for(browser, "return document.body.dataset.ready === 'true'")
            error = browser.execute_script("return document.getElementById('error').textContent")
            if error:
                raise SystemExit(f"the page shows an error for {user}: {error}")
            timing = browser.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "return {dom: n.domContentLoadedEventEnd, results: +document.body.dataset.resultsAt,"
                " explained: +document.body.dataset.explainedAt,"
                " history: document.querySelectorAll('#history-cards > li').length,"
                " shown: document.querySelectorAll('#results > li').length}"
            )
            rows.append({"user": user, **timing})
        if args.screenshots is not None:
            browser.get(f"{url}/ui/?user={users[0]}&k=5&go=1")
            wait_for(browser, "return document.body.dataset.ready === 'true'")
            screenshot(browser, args.screenshots / "ui-recommend.png")
            browser.get(f"{url}/ui/#run")
            wait_for(browser, "return !!document.querySelector('#chart-saturation[data-drawn]')", 300)
            screenshot(browser, args.screenshots / "ui-run.png")
    finally:
        browser.quit()
        proc.terminate()
        proc.wait(15)
    if args.json:
        print(json.dumps({"news": info["news"], "rows": rows}, indent=2))
        return
    table = Table(
        title=f"page load + recommend (k={args.k}) over {info['news']:,} news, {len(rows)} new users, "
        f"{info['backend']} backend; ms since navigation start, in the browser",
    )
    for col in ("stage", "median ms", "p90 ms", "max ms"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    for key, label in (
        ("dom", "page parsed (DOMContentLoaded)"),
        ("results", "results rendered"),
        ("explained", "reasons rendered"),
    ):
        values = sorted(r[key] for r in rows)
        p90 = values[min(len(values) - 1, int(round(0.9 * (len(values) - 1))))]
        table.add_row(label, f"{statistics.median(values):.0f}", f"{p90:.0f}", f"{values[-1]:.0f}")
    Console().print(table)
    mean_history = statistics.mean(r["history"] for r in rows)
    Console().print(
        f"history cards per user: {mean_history:.1f} on average; results shown: {rows[0]['shown']}"
    )


if __name__ == "__main__":
    main()
