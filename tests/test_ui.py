"""The web page (/ui) and its API routes, against real uvicorn servers and, for the page, a real
headless Chromium (Debian's `chromium` + `chromium-driver`, driven by Selenium).

One tiny run is trained on the built-in synthetic data for the whole session (attention fusion,
NRMS user encoder, evaluated with baselines, plus a one-seed ablation), and one server with
`--data` is shared by the browser tests. A second run (gate fusion, candidate-aware user encoder)
checks the other explanation path. Screenshots of each view are written to
$NEWSREC_TEST_ARTIFACTS (default: test-artifacts/ in the repository).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed")

from serve_helpers import Server  # noqa: E402
from train_helpers import hashing_store, invoke, synth  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--dim", "32", "--heads", "2", "--history", "10", "--batch-size", "32", "--threads", "1"]
ARTIFACTS = Path(os.environ.get("NEWSREC_TEST_ARTIFACTS", ROOT / "test-artifacts"))


@pytest.fixture(scope="session")
def ui_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ui")
    data = synth(root, news=300, users=200)
    return data, hashing_store(data, root / "store")


@pytest.fixture(scope="session")
def ui_run(ui_data: tuple[Path, Path]) -> Path:
    """Attention fusion, NRMS (the defaults); metrics.json with baselines; an ablation beside it."""
    data, store = ui_data
    run = store.parent / "run"
    invoke("train", data, "-e", store, "-o", run, *TRAIN, "--epochs", "3", "--seed", "1")
    invoke("evaluate", run, "--data", data, "--baselines")
    invoke(
        "ablate",
        data,
        "-e",
        store,
        "--out",
        store.parent / "ablation",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--threads",
        "1",
    )
    return run


@pytest.fixture(scope="session")
def server(
    ui_run: Path, ui_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    data, store = ui_data
    log = tmp_path_factory.mktemp("ui-logs") / "serve.log"
    srv = Server(
        ui_run, "--data", str(data), "--ablation", str(store.parent / "ablation" / "ablation.json"), log=log
    )
    yield srv
    srv.stop()


def _user_with_history(server: Server, min_clicks: int = 3) -> dict:
    found = server.get("/v1/users?limit=200").json()["users"]
    user = next(u for u in found if u["history"] >= min_clicks and u["impressions"] >= 1)
    return server.get(f"/v1/users/{user['user_id']}").json()


# ----------------------------------------------------------------------------- API, no browser


def test_users_come_from_the_data(server: Server, ui_data: tuple[Path, Path]) -> None:
    """A user's history is the one of their latest impression in behaviors.tsv; clicks by label."""
    data, _ = ui_data
    user = _user_with_history(server)
    lines = []
    for split in ("train", "valid"):
        for line in (data / split / "behaviors.tsv").read_text().splitlines():
            cols = line.split("\t")
            if cols[1] == user["user_id"]:
                lines.append(cols)
    from datetime import datetime

    latest = max(lines, key=lambda c: datetime.strptime(c[2], "%m/%d/%Y %I:%M:%S %p"))
    assert user["history_ids"] == latest[3].split()
    imp = user["impression_list"][0]
    assert imp["impression_id"] == int(latest[0])
    assert imp["clicked"] == [c[:-2] for c in latest[4].split() if c.endswith("-1")]
    missing = server.get("/v1/users/NOBODY")
    assert missing.status_code == 404 and "NOBODY" in missing.json()["detail"]


def test_search_finds_every_title_with_the_words(server: Server, ui_data: tuple[Path, Path]) -> None:
    data, _ = ui_data
    titles = {}
    for split in ("train", "valid"):
        for line in (data / split / "news.tsv").read_text().splitlines():
            cols = line.split("\t")
            titles[cols[0]] = cols[3]
    word = max(
        {w.lower() for t in titles.values() for w in t.split() if len(w) > 4},
        key=lambda w: sum(w in t.lower() for t in titles.values()),
    )
    body = server.get(f"/v1/search?q={word}&limit=200").json()
    expected = {i for i, t in titles.items() if word in t.lower()}
    assert body["total"] == len(expected) > 1
    assert {n["news_id"] for n in body["news"]} == expected
    assert server.get("/v1/search?q=%20").status_code == 422


def _fusion_weights_of(run: Path, ids: list[str]) -> np.ndarray:
    """Per-news fusion weights through the run's own features (not the service's inputs)."""
    from newsrec_cli.runs.loading import load_run

    loaded = load_run(run, device="cpu")
    vocab = loaded.vocabs.news
    rows = torch.tensor([vocab.get(i) for i in ids])
    with torch.no_grad():
        loaded.model.news_encoder.encode_unique(rows)
    weights = loaded.model.news_encoder.fusion.item_weights()
    assert weights is not None
    return weights.numpy()


def test_explain_values_are_the_models(server: Server, ui_run: Path) -> None:
    """Modality weights: the fusion's own per-news weights, summing to 1. Attention: the NRMS
    pooling weights the user encoder's forward uses (captured by a hook), summing to 1. Scores:
    equal to /v1/recommend's."""
    from newsrec_cli.runs.loading import load_run

    user = _user_with_history(server)
    history = user["history_ids"]
    rec = server.post("/v1/recommend", {"history": history, "k": 6}).json()
    items = [i["news_id"] for i in rec["items"]]
    why = server.post("/v1/explain", {"history": history, "items": items, "top": 50}).json()
    assert why["fusion"] == "attention" and why["ranked_by"] == "text similarity"
    assert [x["news_id"] for x in why["items"]] == items
    np.testing.assert_allclose(
        [x["score"] for x in why["items"]], [i["score"] for i in rec["items"]], rtol=1e-5, atol=1e-5
    )
    weights = np.array([[x["modality_weights"][m] for m in why["modalities"]] for x in why["items"]])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(weights, _fusion_weights_of(ui_run, items), atol=1e-5)

    used = history[-10:]  # the run's history length
    loaded = load_run(ui_run, device="cpu")
    captured = {}
    hook = loaded.model.user_encoder.pool.register_forward_hook(lambda _m, _i, out: captured.update(w=out[1]))
    with torch.no_grad():
        loaded.model.encode_user_state(
            loaded.model.encode_news(torch.tensor([[loaded.vocabs.news.get(i) for i in used]])),
            torch.ones(1, len(used), dtype=torch.bool),
        )
    hook.remove()
    expected = dict(zip(used, captured["w"][0].numpy().tolist(), strict=True))
    for x in why["items"]:
        got = {c["news_id"]: c["attention"] for c in x["contributors"]}
        assert sum(got.values()) == pytest.approx(1.0, abs=1e-5)
        for news_id, value in got.items():
            assert value == pytest.approx(expected[news_id], abs=1e-5)
        sims = [c["text_similarity"] for c in x["contributors"]]
        assert sims == sorted(sims, reverse=True)  # ranked by text similarity, as said

    bad = server.post("/v1/explain", {"history": ["NOPE1"], "items": items})
    assert bad.status_code == 422 and bad.json()["detail"][0]["ctx"]["unknown"] == ["NOPE1"]


def test_explain_candidate_attention_and_gates(ui_data: tuple[Path, Path], tmp_path: Path) -> None:
    """Gate fusion and the candidate-aware user encoder: the gates and each candidate's own
    attention over the clicks, as the model computes them."""
    from newsrec_cli.runs.loading import load_run
    from newsrec_cli.serve.engine import Engine, ServeConfig
    from newsrec_cli.serve.explain import Explainer

    data, store = ui_data
    run = tmp_path / "run"
    invoke(
        "train",
        data,
        "-e",
        store,
        "-o",
        run,
        *TRAIN,
        "--epochs",
        "2",
        "--seed",
        "2",
        "--fusion",
        "gate",
        "--user-encoder",
        "candidate",
    )
    engine = Engine(ServeConfig(source=str(run)))
    engine.load()
    ids = engine.table.ids
    history, items = ids[:6], ids[10:14]
    why = Explainer(engine).explain(history, items, top=6)
    assert why["fusion"] == "gate" and why["ranked_by"] == "candidate attention"
    weights = np.array([[x["modality_weights"][m] for m in why["modalities"]] for x in why["items"]])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(weights, _fusion_weights_of(run, items), atol=1e-5)

    loaded = load_run(run, device="cpu")
    vocab = loaded.vocabs.news
    with torch.no_grad():
        model = loaded.model
        state = model.encode_user_state(
            model.encode_news(torch.tensor([[vocab.get(i) for i in history]])),
            torch.ones(1, 6, dtype=torch.bool),
        )
        attention = model.history_attention(
            state, model.encode_news(torch.tensor([[vocab.get(i) for i in items]]))
        )
    for k, x in enumerate(why["items"]):
        got = {c["news_id"]: c["attention"] for c in x["contributors"]}
        want = dict(zip(history, attention[0, k].numpy().tolist(), strict=True))
        assert got == pytest.approx(want, abs=1e-5)
        assert [c["attention"] for c in x["contributors"]] == sorted(got.values(), reverse=True)


def test_explain_ingested_news_as_served(ui_run: Path, tmp_path: Path) -> None:
    """A news added through the API is explained from its record and kept text vector: its
    fusion weights sum to 1 and its score equals the service's ranking score."""
    from newsrec_cli.serve.engine import Engine, NewsRecord, ServeConfig
    from newsrec_cli.serve.explain import Explainer

    engine = Engine(ServeConfig(source=str(ui_run), state_dir=str(tmp_path / "state")))
    engine.load()
    fresh = NewsRecord(
        news_id="FRESH1", category="sports", subcategory="football", title="A fresh match report"
    )
    engine.ingest([fresh])
    history = [*engine.table.ids[:4], "FRESH1"]
    items = ["FRESH1", engine.table.ids[20]]
    ranked = engine.recommend(history=history[:4], candidates=items, k=2).as_json()
    why = Explainer(engine).explain(history[:4], items)
    scores = {i["news_id"]: i["score"] for i in ranked["items"]}
    for x in why["items"]:
        assert x["score"] == pytest.approx(scores[x["news_id"]], abs=1e-5)
        assert sum(x["modality_weights"].values()) == pytest.approx(1.0, abs=1e-5)
    as_click = Explainer(engine).explain(history, [engine.table.ids[20]], top=5)
    assert "FRESH1" in {c["news_id"] for c in as_click["items"][0]["contributors"]}


def test_concat_fusion_has_no_item_weights() -> None:
    from newsrec_cli.model.fusion import build_fusion

    v = torch.randn(5, 3, 8)
    concat = build_fusion("concat", ["id", "text", "category"], 8)
    concat(v)
    assert concat.item_weights() is None
    gate = build_fusion("gate", ["id", "text", "category"], 8)
    gate(v)
    assert gate.item_weights().shape == (5, 3)


def test_page_files_ship_in_the_package() -> None:
    """pyproject's package-data covers every file of the page, so a non-editable install serves it."""
    import fnmatch
    import tomllib

    from newsrec_cli.serve.ui import STATIC

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    files = sorted(p.relative_to(STATIC.parent).as_posix() for p in STATIC.rglob("*") if p.is_file())
    assert {"static/index.html", "static/app.js", "static/style.css"} <= set(files)
    for name in files:
        assert any(fnmatch.fnmatch(name, pat) for pat in patterns["newsrec_cli.serve"]), name
    html = (STATIC / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # no CDN: nothing leaves the server


def test_run_routes_read_the_run(server: Server, ui_run: Path) -> None:
    body = server.get("/v1/run").json()
    lines = [json.loads(x) for x in (ui_run / "history.jsonl").read_text().splitlines()]
    assert body["history"] == lines
    assert [r["name"] for r in body["metrics"]["rows"]][0].startswith("model")
    svg = server.get("/v1/run/charts/validation.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert "<text" in svg.text and "Validation per epoch" in svg.text  # titles are text
    assert server.get("/v1/run/charts/nothing.svg").status_code == 404


def test_run_view_serves_the_tradeoff_plots_and_nothing_else(server: Server, ui_run: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
    (ui_run / "tradeoff-mmr-offline.png").write_bytes(png)
    (ui_run / "tradeoff-mmr-offline.txt").write_text("not a plot")
    try:
        assert server.get("/v1/run").json()["tradeoffs"] == ["tradeoff-mmr-offline.png"]
        answer = server.get("/v1/run/tradeoff/tradeoff-mmr-offline.png")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        assert answer.content == png
        for name in (
            "tradeoff-mmr-offline.txt",
            "config.json",
            "..%2Fconfig.json",
            "tradeoff-mmr-replay.png",
        ):
            answer = server.get(f"/v1/run/tradeoff/{name}")
            assert answer.status_code == 404, name
            assert str(ui_run) not in answer.text
    finally:
        (ui_run / "tradeoff-mmr-offline.png").unlink()
        (ui_run / "tradeoff-mmr-offline.txt").unlink()


# ----------------------------------------------------------------------------- the page, in Chromium


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    reason = None
    try:
        import selenium  # noqa: F401
    except ImportError:
        reason = "selenium is not installed (the dev extra): pip install selenium"
    if reason is None and (browser is None or driver is None):
        reason = "headless Chromium not found: apt-get install chromium chromium-driver (.ci/run does)"
    if reason is not None:
        print(f"SKIP browser tests: {reason}")
        pytest.skip(reason)
    return browser, driver  # type: ignore[return-value]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1800"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.set_page_load_timeout(60)
    yield chrome
    chrome.quit()


def _open(browser, url: str):  # type: ignore[no-untyped-def]
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url)
    WebDriverWait(browser, 60).until(
        lambda b: b.execute_script("return document.body.dataset.ready === 'true'")
    )
    return WebDriverWait(browser, 60)


def _shot(browser, name: str) -> Path:  # type: ignore[no-untyped-def]
    """The whole page (beyond the window) as a PNG test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    size = browser.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1}
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    assert path.stat().st_size > 10_000
    return path


def _results(browser) -> list[dict]:  # type: ignore[no-untyped-def]
    return browser.execute_script(
        "return [...document.querySelectorAll('#results > li')].map(li => ({id: li.dataset.newsId, rank: +li.dataset.rank,"
        " clicked: li.dataset.clicked === 'true', bars: [...li.querySelectorAll('.bar')].map(b => [b.dataset.modality, +b.dataset.weight])}))"
    )


def test_choose_user_shows_history_cards_and_recommend_matches_the_api(browser, server: Server) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    user = _user_with_history(server)
    wait = _open(browser, f"{server.url}/ui/")
    browser.find_element(By.ID, "user-query").send_keys(user["user_id"])
    browser.find_element(By.CSS_SELECTOR, "#user-form button[type=submit]").click()
    wait.until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "#history-cards > li")) == len(user["history_ids"])
    )
    cards = browser.find_elements(By.CSS_SELECTOR, "#history-cards > li")
    assert [c.get_attribute("data-news-id") for c in cards] == user["history_ids"]
    first = server.post("/v1/news/lookup", {"ids": user["history_ids"][:1]}).json()["news"][0]
    assert first["title"] and first["title"] in cards[0].text

    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys("7")
    browser.find_element(By.ID, "recommend").click()
    wait.until(lambda b: b.execute_script("return !!document.body.dataset.explainedAt"))
    shown = _results(browser)
    api = server.post("/v1/recommend", {"history": user["history_ids"], "k": 7, "strict": False}).json()
    assert [r["id"] for r in shown] == [i["news_id"] for i in api["items"]]
    assert [r["rank"] for r in shown] == list(range(1, 8))
    clicked = set(user["impression_list"][0]["clicked"])
    assert [r["clicked"] for r in shown] == [r["id"] in clicked for r in shown]

    # The modality bars: one per modality of the model, weights summing to 1 (attention fusion).
    modalities = server.get("/v1/info").json()["model"]["modalities"]
    for r in shown:
        assert [m for m, _ in r["bars"]] == modalities
        assert sum(w for _, w in r["bars"]) == pytest.approx(1.0, abs=1e-5)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results .contributor")) >= 7
    _shot(browser, "ui-recommend.png")

    # The impression's candidates: ranked by the model, clicked ones marked.
    browser.find_element(By.ID, "source-impression").click()
    browser.find_element(By.ID, "recommend").click()
    wait.until(
        lambda b: b.execute_script("return !!document.body.dataset.explainedAt") and len(_results(b)) == 7
    )
    imp = user["impression_list"][0]
    api = server.post(
        "/v1/recommend",
        {"history": user["history_ids"], "candidates": imp["candidates"], "k": 7, "strict": False},
    ).json()
    wait.until(lambda b: [r["id"] for r in _results(b)] == [i["news_id"] for i in api["items"]])


def test_rerank_control_shows_the_apis_list_and_its_diversity(browser, server: Server) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    user = _user_with_history(server)
    wait = _open(browser, f"{server.url}/ui/")
    browser.find_element(By.ID, "user-query").send_keys(user["user_id"])
    browser.find_element(By.CSS_SELECTOR, "#user-form button[type=submit]").click()
    wait.until(
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "#history-cards > li")) == len(user["history_ids"])
    )
    Select(browser.find_element(By.ID, "rerank-method")).select_by_value("mmr")
    browser.execute_script(
        "const w = document.getElementById('rerank-weight'); w.value = '1';"
        " w.dispatchEvent(new Event('input'));"
    )
    assert browser.find_element(By.ID, "rerank-weight-value").text == "1"
    browser.find_element(By.ID, "recommend").click()
    wait.until(lambda b: b.execute_script("return !!document.body.dataset.explainedAt"))
    body = {
        "history": user["history_ids"],
        "k": 10,
        "strict": False,
        "rerank": {"method": "mmr", "weight": 1.0},
    }
    api = server.post("/v1/recommend", body).json()
    assert [r["id"] for r in _results(browser)] == [i["news_id"] for i in api["items"]]
    note = browser.find_element(By.ID, "diversity-note")
    assert note.get_attribute("data-method") == "mmr"
    assert float(note.get_attribute("data-ild")) == pytest.approx(api["diversity"]["ild"])
    assert "ILD" in note.text and "calibration" in note.text
    plain = server.post("/v1/recommend", {**body, "rerank": {"method": "none", "weight": 0.0}}).json()
    # the control: the model's own order is less diverse than MMR at full weight
    assert api["diversity"]["ild"] > plain["diversity"]["ild"]


def test_page_at_360_px_and_by_keyboard(browser, server: Server) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    user = _user_with_history(server)
    browser.set_window_size(360, 1800)
    try:
        wait = _open(browser, f"{server.url}/ui/?user={user['user_id']}&k=3&go=1")
        wait.until(lambda b: b.execute_script("return !!document.body.dataset.explainedAt"))
        assert len(_results(browser)) == 3
        # Nothing wider than the screen: no sideways scrolling at 360 px.
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 360
        _shot(browser, "ui-recommend-360.png")
    finally:
        browser.set_window_size(1280, 1800)
    # Keyboard only: Tab reaches the Recommend button, Enter runs it.
    _open(browser, f"{server.url}/ui/")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    for _ in range(40):
        if browser.switch_to.active_element.get_attribute("id") == "recommend":
            break
        browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "recommend"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait.until(lambda b: len(_results(b)) == 10)  # a cold-start user: the model's empty-history ranking


CONTRAST_JS = """
const lum = (c) => { const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(Number).map((v) => {
  v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
const alpha = (c) => { const p = c.match(/[\\d.]+/g); return p.length > 3 ? +p[3] : 1; };
const worst = [];
for (const node of document.querySelectorAll('body *:not(svg *):not(script):not(style)')) {
  if (!node.offsetParent && node.tagName !== 'BODY') continue;
  const text = [...node.childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent.trim()).join('');
  if (!text) continue;
  const style = getComputedStyle(node);
  let bg = node, color = 'rgb(255, 255, 255)';
  while (bg) { const c = getComputedStyle(bg).backgroundColor; if (alpha(c) > 0.5) { color = c; break; } bg = bg.parentElement; }
  const [a, b] = [lum(style.color), lum(color)].sort((x, y) => y - x);
  const ratio = (a + 0.05) / (b + 0.05);
  if (ratio < 4.5) worst.push(`${node.tagName}.${node.className} "${text.slice(0, 30)}" ${ratio.toFixed(2)}`);
}
return worst;
"""


def test_text_contrast_is_at_least_4_5(browser, server: Server) -> None:  # type: ignore[no-untyped-def]
    """WCAG AA: every visible text of both views against its own background, >= 4.5:1."""
    user = _user_with_history(server)
    wait = _open(browser, f"{server.url}/ui/?user={user['user_id']}&k=3&go=1")
    wait.until(lambda b: b.execute_script("return !!document.body.dataset.explainedAt"))
    browser.execute_script(
        "document.getElementById('error').hidden = false; document.getElementById('error').textContent = 'x';"
    )
    assert browser.execute_script(CONTRAST_JS) == []
    wait = _open(browser, f"{server.url}/ui/#run")
    wait.until(lambda b: b.execute_script("return !!document.querySelector('#metrics-table')"))
    assert browser.execute_script(CONTRAST_JS) == []


def test_unknown_id_and_bad_k_show_the_api_reason(browser, server: Server) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    wait = _open(browser, f"{server.url}/ui/")
    known = server.get("/v1/search?q=a&limit=1").json()["news"][0]["news_id"]
    browser.find_element(By.ID, "history-ids").send_keys(f"{known} N_NOT_A_NEWS")
    browser.find_element(By.CSS_SELECTOR, "#ids-form button").click()
    error = browser.find_element(By.ID, "error")
    wait.until(lambda b: error.is_displayed())
    assert "422" in error.text and "unknown news IDs" in error.text and "N_NOT_A_NEWS" in error.text
    assert _results(browser) == []

    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys("0")
    browser.find_element(By.ID, "history-ids").clear()
    browser.find_element(By.ID, "recommend").click()
    wait.until(lambda b: "k:" in error.text)
    assert "greater than or equal to 1" in error.text


def test_the_page_starts_without_empty_boxes_and_with_known_example_ids(browser, server: Server) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    wait = _open(browser, f"{server.url}/ui/")
    wait.until(lambda b: b.find_element(By.ID, "system").text)
    assert not browser.find_element(By.ID, "history-cards").is_displayed()  # no empty bordered strip
    assert not browser.find_element(By.ID, "h-results").is_displayed()  # no heading over nothing
    assert browser.find_element(By.ID, "history-empty").is_displayed()
    shown = {
        p
        for field in ("history-ids", "candidate-ids")
        for p in browser.find_element(By.ID, field).get_attribute("placeholder").split()
    }
    found = server.post("/v1/news/lookup", {"ids": sorted(shown)}).json()["news"]
    assert len(shown) >= 2 and {n["news_id"] for n in found} == shown  # examples the service knows


def test_the_saturation_legend_sits_above_the_bars_and_the_sample_is_diagnoses() -> None:
    from newsrec_cli.serve.ui import SATURATION_SAMPLE, histogram_figure
    from newsrec_cli.settings import DiagnoseSettings

    assert SATURATION_SAMPLE == DiagnoseSettings().sample == 512
    rng = np.random.default_rng(0)
    # bars across the whole range: wherever matplotlib's "best" puts a legend, it covers some
    values = {"not clicked": rng.uniform(-5, 5, 4000), "clicked": rng.uniform(-5, 5, 400)}
    plt, fig, ax = histogram_figure(values, title="Logits", marks=(-4.6, 4.6))
    fig.tight_layout()
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    bars = [p.get_window_extent() for p in ax.patches if p.get_height() > 0]
    assert bars and not any(legend.overlaps(b) for b in bars)
    plt.close(fig)


def test_run_view_draws_the_run(browser, server: Server, ui_run: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    wait = _open(browser, f"{server.url}/ui/#run")
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#chart-saturation[data-drawn]"))
    lines = [json.loads(x) for x in (ui_run / "history.jsonl").read_text().splitlines()]
    count = "return document.querySelectorAll(arguments[0]).length"
    assert browser.execute_script(count, "#chart-validation g#curve-valid-auc use") == len(lines)
    assert browser.execute_script(count, "#chart-validation g#curve-valid-ndcg10 use") == len(lines)
    trained = [x for x in lines if x["train_loss"] is not None]
    assert browser.execute_script(count, "#chart-loss g#curve-train-loss use") == len(trained) == 3
    metrics = json.loads((ui_run / "metrics.json").read_text())
    rows = browser.find_elements(By.CSS_SELECTOR, "#metrics-table tbody tr")
    assert [r.find_element(By.TAG_NAME, "td").text for r in rows] == [r["name"] for r in metrics["rows"]]
    assert {"random", "popularity"} <= {r["name"] for r in metrics["rows"]}  # baselines beside the model
    note = browser.find_element(By.ID, "protocol-note").text  # the protocol, in plain words
    assert metrics["selection"] in note and "Offline protocol" in note and "Replay figures" in note
    # the choosing and reported splits are said once, not in the caption and again in the note
    assert browser.find_element(By.ID, "metrics").text.count("chosen on") == 1
    ablation = browser.find_element(By.ID, "chart-ablation").text
    assert "without category" in ablation and "Ablation" in ablation  # bars labelled with text
    assert "Logits before the sigmoid" in browser.find_element(By.ID, "chart-saturation").text
    _shot(browser, "ui-run.png")


def test_run_view_shows_beyond_accuracy(browser, server: Server, ui_run: Path) -> None:  # type: ignore[no-untyped-def]
    """The beyond-accuracy figures of metrics.json at k = 10, a row per source, beside accuracy."""
    from selenium.webdriver.common.by import By

    wait = _open(browser, f"{server.url}/ui/#run")
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#beyond-table tbody tr"))
    metrics = json.loads((ui_run / "metrics.json").read_text())
    heads = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#beyond-table thead th")]
    assert heads == [
        "model",
        "ILD",
        "categories",
        "calibration ↓",
        "novelty",
        "popularity",
        "coverage",
        "Gini ↓",
    ]
    rows = browser.find_elements(By.CSS_SELECTOR, "#beyond-table tbody tr")
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
    assert [c[0] for c in cells] == [r["name"] for r in metrics["rows"]]
    assert cells[0][1] == f"{metrics['rows'][0]['values']['ild@10']:.3f}"
    # the accuracy table keeps the accuracy metrics only
    accuracy = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#metrics-table thead th")]
    assert "ILD" not in accuracy and "ild@10" not in accuracy and "auc" in accuracy


def test_unknown_user_in_the_link_keeps_its_message(browser, server: Server) -> None:  # type: ignore[no-untyped-def]
    """/ui/?user=UNKNOWN&go=1 says the user is unknown and shows no cold-start ranking instead."""
    from selenium.webdriver.common.by import By

    wait = _open(browser, f"{server.url}/ui/?user=NOBODY_AT_ALL&go=1")
    error = browser.find_element(By.ID, "error")
    wait.until(lambda b: error.is_displayed())
    assert "404" in error.text and "NOBODY_AT_ALL" in error.text
    assert _results(browser) == [] and not browser.execute_script("return document.body.dataset.resultsAt")


CLIPPED_JS = """
const view = document.documentElement.clientWidth;
const out = [];
for (const node of document.querySelectorAll('#metrics-table, #metrics-table caption, #metrics-table th, #metrics-table td')) {
  const r = node.getBoundingClientRect();
  if (r.left < 0 || r.right > view + 0.5) out.push(`${node.tagName} ${node.textContent.slice(0, 30)}: ${r.left}-${r.right}`);
}
const wrap = document.getElementById('metrics');
if (wrap.scrollWidth > wrap.clientWidth) out.push(`#metrics scrolls: ${wrap.scrollWidth} > ${wrap.clientWidth}`);
return out;
"""

CHART_TEXT_JS = """
const sizes = [], outside = [];
for (const svg of document.querySelectorAll('#view-run .chart svg')) {
  const box = svg.getBoundingClientRect();
  for (const t of svg.querySelectorAll('text')) {
    if (!t.textContent.trim()) continue;
    const m = t.getScreenCTM();
    sizes.push(parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b));
    const r = t.getBoundingClientRect();
    if (r.left < box.left - 1 || r.right > box.right + 1) outside.push(t.textContent.slice(0, 40));
  }
}
return [sizes, outside];
"""


def test_run_view_at_390_px_fits_and_reads(browser, server: Server) -> None:  # type: ignore[no-untyped-def]
    """At 390 px the metrics table and its caption are not clipped, and every chart text is at
    least 11 px on screen and inside its chart."""
    from selenium.webdriver.common.by import By

    browser.set_window_size(390, 1800)
    try:
        wait = _open(browser, f"{server.url}/ui/#run")
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#chart-saturation[data-drawn]"))
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#metrics-table caption"))
        assert browser.execute_script("return document.documentElement.clientWidth") <= 390
        assert browser.execute_script(CLIPPED_JS) == []
        sizes, outside = browser.execute_script(CHART_TEXT_JS)
        assert len(sizes) >= 40 and min(sizes) >= 11, sorted(sizes)[:5]
        assert outside == []
        _shot(browser, "ui-run-390.png")
    finally:
        browser.set_window_size(1280, 1800)


def test_docs_render_offline(browser, server: Server) -> None:  # type: ignore[no-untyped-def]
    """Swagger UI draws the API from the server's own files (no CDN is reachable from here)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{server.url}/docs")
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock"))
    assert "newsrec" in browser.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    paths = [
        e.get_attribute("data-path") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    ]
    assert "/v1/recommend" in paths and "/v1/news/lookup" in paths
