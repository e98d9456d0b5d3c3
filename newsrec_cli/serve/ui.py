"""The web page (`/ui`) and the API routes it needs beyond /v1/recommend.

- `/ui/`: static files shipped in the package (`serve/static`): no CDN, works offline.
- `GET /v1/info`: model, backend, news count, fusion, user encoder, the data loaded with --data.
- `GET /v1/users?q=`, `/v1/users/random`, `/v1/users/{id}`: users of the `--data` dataset, their
  history and their latest impressions (candidates and which were clicked).
- `GET /v1/search?q=`: servable news whose title holds every word.
- `POST /v1/news/lookup`: cards (title, category, date) of many news at once.
- `POST /v1/explain`: modality weights, contributing clicks and shared entities (explain.py).
- `GET /v1/run` and `/v1/run/charts/{name}.svg`: the run's history.jsonl, metrics.json and
  ablation.json, and charts of them drawn by matplotlib as SVG (text kept as text).
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import textwrap
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import StringConvertor, register_url_convertor

from newsrec_cli.diagnose.plots import BINS, pyplot
from newsrec_cli.diagnose.stats import SATURATION_LOGIT
from newsrec_cli.errors import NewsrecError
from newsrec_cli.mind import load_dataset
from newsrec_cli.serve.engine import MAX_HISTORY_ITEMS, Engine
from newsrec_cli.serve.errors import InvalidRequest, NotFound, NotReady, ServeError, Unsupported, cut
from newsrec_cli.serve.explain import Explainer
from newsrec_cli.serve.wire import TOO_LARGE, UNKNOWN_NEWS, NewsIdText, errors
from newsrec_cli.settings import DiagnoseSettings

log = logging.getLogger("newsrec.serve")

STATIC = Path(__file__).with_name("static")
IMPRESSIONS_SHOWN = 10  # latest impressions of a user returned to the page
# validation impressions scored for the logit histogram: diagnose saturation's default, so the
# page and the command report the same sample
SATURATION_SAMPLE: int = DiagnoseSettings.model_fields["sample"].default
# evaluate --tradeoff's plots (evaluate/tradeoff.py names them), shown in the run view
TRADEOFF_PNG = re.compile(r"tradeoff-[a-z]+-(offline|replay)(-retrieve)?\.png")
CHARTS = ("loss", "validation", "ablation", "saturation")
RESERVED_NEWS_IDS = ("lookup",)  # /v1/news/lookup is a route: no news may take its name


class NewsIdConvertor(StringConvertor):
    """`{news_id:news_id}`: any path segment but a reserved one, so /v1/news/{id} never shadows
    /v1/news/lookup (GET /v1/news/lookup is a 405, not an unknown news)."""

    regex = "".join(f"(?!{name}$)" for name in RESERVED_NEWS_IDS) + "[^/]+"


register_url_convertor("news_id", NewsIdConvertor())


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # as the schema says

    user_id: str | None = Field(None, max_length=256)
    history: list[NewsIdText] = Field(default_factory=list, max_length=MAX_HISTORY_ITEMS)
    items: list[NewsIdText] = Field(
        min_length=1, max_length=100, description="Recommended news IDs to explain."
    )
    top: int = Field(3, ge=1, le=50, description="Contributing clicks per news.")


class LookupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # as the schema says

    ids: list[NewsIdText] = Field(max_length=MAX_HISTORY_ITEMS)


# ----------------------------------------------------------------------------- the --data dataset


@dataclass
class UserData:
    """Users of a MIND dataset: impressions by user (oldest first), first-shown date of each news."""

    path: str
    dataset: Any
    by_user: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    first_shown: dict[str, str] = field(default_factory=dict)
    with_history: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str) -> UserData:
        dataset = load_dataset(path, on_bad_lines="skip", bad_entities="collect")
        data = cls(path=str(path), dataset=dataset)
        never = np.iinfo(np.int64).max
        shown = np.full(len(dataset.news_vocab), never, np.int64)  # first time shown, epoch seconds
        entries: list[tuple[np.datetime64, str, str, int]] = []
        for split, imps in dataset.splits.items():
            names = imps.user_vocab.ids
            for i in range(len(imps)):
                entries.append((imps.times[i], names[imps.users[i]], split, i))
            if len(imps.candidates):
                times = imps.times[imps.candidate_impression].astype("datetime64[s]").astype(np.int64)
                np.minimum.at(shown, imps.candidates, times)
        entries.sort(key=lambda e: (e[0], e[1]))
        for _, user, split, i in entries:
            data.by_user.setdefault(user, []).append((split, i))
        ids = dataset.news_vocab.ids
        data.first_shown = {
            ids[i]: str(np.datetime64(int(shown[i]), "s"))[:10] for i in np.flatnonzero(shown != never)
        }
        data.with_history = sorted(
            u
            for u, imps in data.by_user.items()
            if any(len(data.impressions_of(s).history_of(i)) for s, i in imps)
        )
        return data

    def impressions_of(self, split: str) -> Any:
        return self.dataset.splits[split]

    def summary(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "users": len(self.by_user),
            "users_with_history": len(self.with_history),
            "impressions": sum(len(v) for v in self.dataset.splits.values()),
            "splits": {k: len(v) for k, v in self.dataset.splits.items()},
        }

    def search(self, query: str, limit: int) -> list[dict[str, Any]]:
        q = query.strip().lower()
        hits = [u for u in self.by_user if q in u.lower()] if q else list(self.with_history)
        hits.sort(key=lambda u: (not u.lower().startswith(q), len(u), u))
        return [self._brief(u) for u in hits[:limit]]

    def random_user(self, seed: int | None) -> dict[str, Any]:
        if not self.with_history:
            raise NotFound("no user of the dataset has a history")
        return self.detail(random.Random(seed).choice(self.with_history))

    def _brief(self, user: str) -> dict[str, Any]:
        split, i = self.by_user[user][-1]
        return {
            "user_id": user,
            "impressions": len(self.by_user[user]),
            "history": int(len(self.impressions_of(split).history_of(i))),
        }

    def detail(self, user: str) -> dict[str, Any]:
        if user not in self.by_user:
            raise NotFound(f"unknown user ID {cut(user)!r} in the --data dataset")
        ids = self.dataset.news_vocab.ids
        entries = self.by_user[user]
        split, last = entries[-1]
        history = [ids[n] for n in self.impressions_of(split).history_of(last)]
        impressions = []
        for split, i in entries[-IMPRESSIONS_SHOWN:][::-1]:
            imps = self.impressions_of(split)
            cands, labels = imps.candidates_of(i), imps.labels_of(i)
            impressions.append(
                {
                    "impression_id": int(imps.impression_ids[i]),
                    "split": split,
                    "time": str(imps.times[i]).replace("T", " "),
                    "candidates": [ids[c] for c in cands],
                    "clicked": [ids[c] for c, y in zip(cands, labels, strict=True) if y == 1],
                    "labeled": bool(imps.labeled),
                }
            )
        return {**self._brief(user), "history_ids": history, "impression_list": impressions}

    def news_row(self, news_id: str) -> int | None:
        return self.dataset.news.index.get(news_id)


# ----------------------------------------------------------------------------- the run's results


class RunView:
    """history.jsonl, metrics.json and ablation.json of a run, and their charts (SVG, cached)."""

    def __init__(self, run_dir: Path | None, ablation: Path | None, store: str | None = None) -> None:
        self.run_dir = run_dir
        self.store = store  # the run's text store where it is now (serve --run-embeddings)
        self.ablation_path = ablation or self._find_ablation()
        self._charts: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def _find_ablation(self) -> Path | None:
        """ablation.json in the run or an ablate output above it (OUT/runs/<row>/seed<k>)."""
        if self.run_dir is None:
            return None
        for folder in [self.run_dir, *list(self.run_dir.resolve().parents)[:3]]:
            if (folder / "ablation.json").is_file():
                return folder / "ablation.json"
        return None

    def _mtime(self, name: str) -> float:
        path = {
            "loss": self._file("history.jsonl"),
            "validation": self._file("history.jsonl"),
            "ablation": self.ablation_path,
            "saturation": self._file("model.pt"),
        }[name]
        return path.stat().st_mtime if path is not None and path.is_file() else 0.0

    def _file(self, name: str) -> Path | None:
        return None if self.run_dir is None else self.run_dir / name

    def history(self) -> list[dict[str, Any]]:
        path = self._file("history.jsonl")
        if path is None or not path.is_file():
            return []
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by an interrupted write; the rest still plots
        return rows

    def _json(self, path: Path | None) -> Any:
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def summary(self) -> dict[str, Any]:
        if self.run_dir is None:
            raise NotFound("no run directory is known for this model (its export names none)")
        return {
            "run_dir": str(self.run_dir),
            "history": self.history(),
            "metrics": self._json(self._file("metrics.json")),
            "ablation": self._json(self.ablation_path),
            "ablation_path": str(self.ablation_path) if self.ablation_path else None,
            "charts": list(CHARTS),
            "tradeoffs": self.tradeoffs(),
        }

    def tradeoffs(self) -> list[str]:
        """The trade-off plots `evaluate --tradeoff` wrote into the run folder, by name."""
        if self.run_dir is None or not self.run_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.run_dir.iterdir() if TRADEOFF_PNG.fullmatch(p.name) and p.is_file()
        )

    def tradeoff(self, name: str) -> bytes:
        """One trade-off plot's bytes; only the names `tradeoffs` lists (no other file is served)."""
        if name not in self.tradeoffs():
            raise NotFound(
                "no such trade-off plot; newsrec evaluate RUN --data DATA --tradeoff mmr writes one"
            )
        assert self.run_dir is not None
        return (self.run_dir / name).read_bytes()

    def chart(self, name: str) -> str:
        if name not in CHARTS:
            raise NotFound(f"unknown chart {cut(name)!r}; charts: {', '.join(CHARTS)}")
        if self.run_dir is None:
            raise NotFound("no run directory is known for this model")
        with self._lock:
            mtime = self._mtime(name)
            cached = self._charts.get(name)
            if cached is not None and cached[0] == mtime:
                return cached[1]
            svg = getattr(self, f"_draw_{name}")()
            self._charts[name] = (mtime, svg)
            return svg

    def _draw_loss(self) -> str:
        rows = [r for r in self.history() if r.get("train_loss") is not None]
        if not rows:
            raise NotFound("history.jsonl has no epoch with a training loss yet")
        return _curves(
            {"train-loss": ("training loss", [(r["epoch"], r["train_loss"]) for r in rows])},
            title="Training loss per epoch",
            ylabel="loss",
        )

    def _draw_validation(self) -> str:
        rows = [r for r in self.history() if r.get("metrics")]
        if not rows:
            raise NotFound("history.jsonl has no validation metrics")
        series = {}
        for metric, label in (("auc", "AUC"), ("ndcg@10", "nDCG@10")):
            points = [(r["epoch"], r["metrics"][metric]) for r in rows if metric in r["metrics"]]
            if points:
                series[f"valid-{metric.replace('@', '')}"] = (label, points)
        return _curves(series, title="Validation per epoch (epoch 0: before training)", ylabel="metric")

    def _draw_ablation(self) -> str:
        result = self._json(self.ablation_path)
        if not result:
            raise NotFound("no ablation.json for this run (newsrec ablate writes one)")
        return _ablation_bars(result)

    def _draw_saturation(self) -> str:
        from newsrec_cli.diagnose.subject import from_run  # torch: only to draw the saturation chart

        assert self.run_dir is not None
        try:
            subject = from_run(
                self.run_dir,
                data=None,
                sample=SATURATION_SAMPLE,
                seed=0,
                device="cpu",
                store=Path(self.store) if self.store else None,
            )
        except (NewsrecError, OSError) as exc:
            raise NotFound(f"cannot score the run's validation data: {exc}") from None
        out = subject.valid_outputs()
        return _histogram(
            {"not clicked": out.logits[out.labels == 0], "clicked": out.logits[out.labels == 1]},
            title=f"Logits before the sigmoid ({len(subject.valid):,} validation impressions)",
            marks=(-SATURATION_LOGIT, SATURATION_LOGIT),
        )


# ----------------------------------------------------------------------------- charts (matplotlib SVG)


LEGEND_HEADROOM = 1.8  # the y axis reaches 1.8x the tallest bar: the legend's two lines fit above it
CHART_WIDTH_IN = 4.4  # 316.8 pt; the page shows it 100% wide (at most 30rem): ~343-358 px at 390 px
CHART_FONT_PT = 11  # text is then 11 x 343/316.8 >= 11.9 px there (6.4 in with 10 pt gave 6-9 px)
CHART_LINE_CHARS = 44  # titles and x labels wrap at this many characters: none runs past the figure


def _figure(width: float = CHART_WIDTH_IN, height: float = 2.9) -> tuple[Any, Any, Any]:
    plt = pyplot()
    plt.rcParams["svg.fonttype"] = "none"  # text stays text: readable, selectable, scalable
    plt.rcParams["svg.hashsalt"] = "newsrec"  # stable element IDs between draws
    plt.rcParams["font.size"] = CHART_FONT_PT
    plt.rcParams["axes.titlesize"] = CHART_FONT_PT  # no text smaller or larger than the rest
    fig, ax = plt.subplots(figsize=(width, height))
    return plt, fig, ax


def _wrap(text: str) -> str:
    return "\n".join(textwrap.fill(line, CHART_LINE_CHARS) for line in text.splitlines())


def _svg(plt: Any, fig: Any) -> str:
    for ax in fig.axes:
        ax.set_title(_wrap(ax.get_title()))
        ax.set_xlabel(_wrap(ax.get_xlabel()))
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prologue: the page inlines it


def _curves(series: dict[str, tuple[str, list[tuple[int, float]]]], *, title: str, ylabel: str) -> str:
    """One line with a marker per point for each series; each line's SVG group is id'd curve-<key>."""
    plt, fig, ax = _figure()
    for key, (label, points) in series.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=label, gid=f"curve-{key}")
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    return _svg(plt, fig)


def _ablation_bars(result: dict[str, Any], metric: str = "auc") -> str:
    """Difference of each row from the full model with its paired bootstrap 95% interval."""
    rows = [r for r in result.get("rows", []) if metric in r.get("vs_full", {})]
    if not rows:
        raise NotFound("ablation.json has no differences from the full model")
    plt, fig, ax = _figure(height=0.42 * len(rows) + 1.4)
    diffs = [r["vs_full"][metric]["diff"] for r in rows]
    low = [d - r["vs_full"][metric]["low"] for d, r in zip(diffs, rows, strict=True)]
    high = [r["vs_full"][metric]["high"] - d for d, r in zip(diffs, rows, strict=True)]
    y = list(range(len(rows)))[::-1]
    colors = ["#1f6fb4" if r.get("kind") == "model" else "#8a8a8a" for r in rows]
    ax.barh(y, diffs, xerr=[low, high], color=colors, capsize=3, gid="ablation-bars")
    ax.set_yticks(y, [r["name"] for r in rows])
    ax.axvline(0, color="black", linewidth=0.8)
    # two lines: the bars' axes are narrower than the figure (the row names take the left)
    ax.set_xlabel(f"Δ{metric.upper()} vs the full model\n(paired bootstrap 95% interval)")
    ax.set_title(f"Ablation on {result.get('split', '?')} ({result.get('impressions', 0):,} impressions)")
    return _svg(plt, fig)


def _histogram(values: dict[str, np.ndarray], *, title: str, marks: tuple[float, ...]) -> str:
    plt, fig, _ = histogram_figure(values, title=title, marks=marks)
    return _svg(plt, fig)


def histogram_figure(
    values: dict[str, np.ndarray], *, title: str, marks: tuple[float, ...]
) -> tuple[Any, Any, Any]:
    """Overlaid density histograms; the legend sits in headroom above the tallest bar, never on it."""
    plt, fig, ax = _figure()
    finite = {k: v[np.isfinite(v)] for k, v in values.items() if np.isfinite(v).any()}
    edges = np.histogram_bin_edges(np.concatenate(list(finite.values())), bins=BINS)
    for label, data in finite.items():
        ax.hist(data, bins=edges, alpha=0.55, density=True, label=f"{label} (n={data.size:,})")
    for x in marks:
        ax.axvline(x, color="grey", linestyle="--", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel("logit (dashed: sigmoid 0.01 and 0.99)")
    ax.set_ylabel("density")
    tallest = max((p.get_height() for p in ax.patches), default=1.0)
    ax.set_ylim(0, tallest * LEGEND_HEADROOM)
    ax.legend(loc="upper left", frameon=False, borderaxespad=0.2)
    return plt, fig, ax


# ----------------------------------------------------------------------------- routes


class UiState:
    """What the page's routes need, filled in by the app's background load."""

    def __init__(self, engine: Engine, data: str | None, ablation: str | None, preload: bool = True) -> None:
        self.engine = engine
        self.preload = preload  # load the explainer's torch run at start (else at the first /v1/explain)
        self.data_path = data
        self.data: UserData | None = None
        self.data_error: str | None = None
        self.explainer = Explainer(engine)
        self.ablation = Path(ablation) if ablation else None
        self.run: RunView | None = None
        self._titles: list[str] | None = None
        self._titles_size = 0

    def load(self) -> None:
        """After the engine: the dataset (--data), the explainer's torch run, the run view."""
        self.run = RunView(self.engine.run_dir, self.ablation, self.engine.config.run_store)
        if self.data_path:
            try:
                self.data = UserData.load(self.data_path)
            except Exception as exc:  # the page says why; recommendations still work
                self.data_error = f"{type(exc).__name__}: {exc}"
                log.error("--data %s: %s", self.data_path, self.data_error)
        try:
            if self.preload:
                self.explainer.load()
        except Exception as exc:
            self.explainer.error = f"{type(exc).__name__}: {exc}"
            log.error("explanations unavailable: %s", self.explainer.error)

    def need_data(self) -> UserData:
        if self.data is None:
            reason = self.data_error or "start the server with --data MIND_FOLDER to choose users"
            raise NotFound(f"no dataset loaded: {reason}")
        return self.data

    def titles(self) -> tuple[list[str], list[str]]:
        """Lower-cased titles of the servable news (rebuilt when news were ingested)."""
        table = self.engine.table
        assert table is not None
        if self._titles is None or self._titles_size != len(table):
            self._titles = [r.title.lower() for r in table.records]
            self._titles_size = len(self._titles)
        return list(table.ids[: len(self._titles)]), self._titles

    def card(self, news_id: str) -> dict[str, Any] | None:
        record = self.engine.get_news(news_id)
        data = self.data
        row = data.news_row(news_id) if data is not None else None
        if record is None and row is None:
            return None
        if record is not None:
            out = {
                "news_id": news_id,
                "title": record.title,
                "category": record.category,
                "subcategory": record.subcategory,
                "servable": True,
            }
        else:
            news = data.dataset.news  # type: ignore[union-attr]
            out = {
                "news_id": news_id,
                "title": news.title[row],
                "category": news.category[row],
                "subcategory": news.subcategory[row],
                "servable": False,
            }
        if record is not None and record.published:
            out["date"], out["date_kind"] = record.published[:10], "published"
        elif data is not None and news_id in data.first_shown:
            out["date"], out["date_kind"] = data.first_shown[news_id], "first shown"
        else:
            out["date"], out["date_kind"] = None, None
        return out


def add_ui(app: FastAPI, engine: Engine, state: UiState, *, page: bool) -> None:
    """The page's API routes, and the page itself at /ui when `page`."""

    def ready() -> None:
        if not engine.ready:
            raise NotReady()

    @app.get("/v1/info", responses=errors(e503="loading"))
    def info() -> dict[str, Any]:
        ready()
        explainer = state.explainer
        return {
            "model_version": engine.version,
            "backend": engine.config.backend,
            "news": len(engine.table or []),
            # IDs the page offers as examples in its empty fields: news this service knows
            "example_ids": list(engine.table.ids[:3]) if engine.table is not None else [],
            "history": engine.history,
            "retrieval": engine.retriever.method if engine.retriever else None,
            "run_dir": str(engine.run_dir) if engine.run_dir else None,
            "model": explainer.info() if explainer.ready else None,
            "explain_error": explainer.error,
            "data": state.data.summary() if state.data is not None else None,
            "data_error": state.data_error,
            "user_ids": engine.vocabs.get("users") is not None,
        }

    @app.get("/v1/users", responses=errors(e404="no dataset loaded (--data)"))
    def users(q: str = Query("", max_length=256), limit: int = Query(20, ge=1, le=200)) -> dict[str, Any]:
        return {"users": state.need_data().search(q, limit)}

    @app.get("/v1/users/random", responses=errors(e404="no dataset loaded, or no user with a history"))
    def random_user(seed: int | None = None) -> dict[str, Any]:
        return state.need_data().random_user(seed)

    @app.get("/v1/users/{user_id}", responses=errors(e404="unknown user, or no dataset loaded"))
    def user(user_id: str) -> dict[str, Any]:
        return state.need_data().detail(user_id)

    @app.get("/v1/search", responses=errors(e503="loading"))
    def search(
        q: str = Query(..., min_length=1, max_length=256), limit: int = Query(20, ge=1, le=200)
    ) -> dict[str, Any]:
        ready()
        words = q.lower().split()
        if not words:
            raise InvalidRequest("give at least one word to search titles for")
        ids, titles = state.titles()
        hits = [ids[i] for i, t in enumerate(titles) if all(w in t for w in words)]
        return {"query": q, "total": len(hits), "news": [state.card(i) for i in hits[:limit]]}

    @app.post(
        "/v1/news/lookup",
        responses=errors(e400="the body could not be read", e413=TOO_LARGE, e503="loading"),
    )
    def lookup(body: LookupRequest) -> dict[str, Any]:
        ready()
        cards = {i: state.card(i) for i in dict.fromkeys(body.ids)}
        return {
            "news": [c for c in cards.values() if c is not None],
            "unknown": [i for i, c in cards.items() if c is None],
        }

    @app.post(
        "/v1/explain",
        responses=errors(
            e400="the body could not be read",
            e409="no torch run to explain with",
            e413=TOO_LARGE,
            e503="loading",
        )
        | {422: {"description": UNKNOWN_NEWS}},
    )
    def explain(body: ExplainRequest) -> dict[str, Any]:
        ready()
        if state.explainer.error:
            raise Unsupported(f"explanations unavailable: {state.explainer.error}")
        if not state.explainer.ready:
            try:
                state.explainer.load()
            except ServeError:
                raise
            except Exception as exc:
                state.explainer.error = f"{type(exc).__name__}: {exc}"
                raise Unsupported(f"explanations unavailable: {state.explainer.error}") from None
        return state.explainer.explain(body.history, body.items, body.user_id, body.top)

    @app.get("/v1/run", responses=errors(e404="no run directory known", e503="loading"))
    def run() -> dict[str, Any]:
        ready()
        assert state.run is not None
        return state.run.summary()

    @app.get(
        "/v1/run/charts/{name}.svg",
        response_class=Response,
        responses={
            200: {"content": {"image/svg+xml": {"schema": {"type": "string"}}}},
            **errors(e404="no such chart or no data", e503="loading"),
        },
    )
    def chart(name: str) -> Response:
        ready()
        assert state.run is not None
        return Response(state.run.chart(name), media_type="image/svg+xml")

    @app.get(
        "/v1/run/tradeoff/{name}",
        response_class=Response,
        responses={
            200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
            **errors(e404="no such trade-off plot", e503="loading"),
        },
    )
    def tradeoff(name: str) -> Response:
        ready()
        assert state.run is not None
        return Response(state.run.tradeoff(name), media_type="image/png")

    if page:
        app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")

        @app.get("/", include_in_schema=False)
        def root() -> RedirectResponse:
            return RedirectResponse("/ui/")
