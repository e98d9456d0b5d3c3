"""The HTTP service (FastAPI): /v1/recommend, /v1/news, /v1/events, /healthz, /readyz, /metrics, and the
web page at /ui with the routes it uses (ui.py).

The engine loads in a background thread at start-up, so /healthz answers at once and /readyz
turns 200 when the model and index are loaded. A model that cannot load makes /healthz and
/readyz answer 503 with the reason, and calls `on_fatal` (`newsrec serve` then exits non-zero).
Every client mistake is a 4xx with the reason (wire.py: strict JSON, error bodies that always
render); an unexpected error is logged and answered 500 (the fuzzing tests check none happens).
/docs and /redoc load their scripts from the fastapi-offline package, not a CDN.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, Strict
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsrec_cli import __version__
from newsrec_cli.errors import NewsrecError
from newsrec_cli.rerank import RerankSpec
from newsrec_cli.serve.engine import (
    MAX_CANDIDATES,
    MAX_EVENT_IMPRESSIONS,
    MAX_K,
    Engine,
    NewsRecord,
    ServeConfig,
)
from newsrec_cli.serve.errors import (
    InvalidRequest,
    NotFound,
    NotReady,
    ProviderFailed,
    ServeError,
    TooLarge,
    Unavailable,
    Unsupported,
    cut,
)
from newsrec_cli.serve.times import as_utc, iso_text
from newsrec_cli.serve.ui import RESERVED_NEWS_IDS, UiState, add_ui
from newsrec_cli.serve.wire import (
    NEWS_ID_CHAR,
    NEWS_ID_MAX,
    TOO_LARGE,
    UNKNOWN_NEWS,
    BodyLimit,
    NewsIdText,
    PathScrubber,
    StrictJsonRoute,
    errors,
    serve_error_handler,
    validation_error,
)

log = logging.getLogger("newsrec.serve")
CONFIG_ENV = "NEWSREC_SERVE_CONFIG"

# FastAPI's own 422 (its validation model) with what the service adds to it.
UNKNOWN_422: dict[int | str, dict[str, Any]] = {422: {"description": UNKNOWN_NEWS}}

# The one table from the engine's domain errors to HTTP statuses (a subclass takes its nearest
# class's status: UnknownNews is an InvalidRequest).
STATUSES: dict[type[ServeError], int] = {
    NotFound: 404,
    Unsupported: 409,
    TooLarge: 413,
    InvalidRequest: 422,
    ProviderFailed: 500,  # the embedding provider answered something unusable
    NotReady: 503,
    Unavailable: 503,
}

# ISO 8601 text only, compared in UTC (times.py): an offset is applied, a naive time is UTC.
# Parsed laxly (text to datetime) inside strict models; iso_text has refused anything but text.
LaxDatetime = Annotated[datetime, Strict(False)]
LaxDate = Annotated[date, Strict(False)]
Instant = Annotated[LaxDatetime | LaxDate, BeforeValidator(iso_text), AfterValidator(as_utc)]
Published = Annotated[LaxDatetime, BeforeValidator(iso_text), AfterValidator(as_utc)]


# Request models are strict: "5" is no integer and 0 no boolean, as the schema says (pydantic's
# lax mode would coerce them).
STRICT = ConfigDict(extra="forbid", strict=True)


class RerankIn(BaseModel):
    """A re-ranker of the top k (newsrec_cli.rerank; docs/serving.md)."""

    model_config = STRICT

    method: Literal["none", "mmr", "calibration"] = Field(
        description="mmr: diversity on the news' text vectors (Carbonell and Goldstein 1998); "
        "calibration: the history's category mix (Steck 2018); none: the model's order"
    )
    weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="λ: 0 keeps the model's order, 1 is all diversity or calibration",
    )

    def spec(self) -> RerankSpec:
        return RerankSpec(self.method, self.weight)


class RecommendRequest(BaseModel):
    model_config = STRICT

    user_id: str | None = Field(None, max_length=256, description="Known users add their user vector.")
    history: list[NewsIdText] = Field(default_factory=list, description="Clicked news IDs, oldest first.")
    candidates: list[NewsIdText] | None = Field(
        None, min_length=1, description="News IDs to rank; omit to retrieve from all news."
    )
    k: int = Field(10, ge=1, le=MAX_K, description="How many to return.")
    exclude_history: bool = Field(True, description="Never return news from the history.")
    strict: bool = Field(True, description="Unknown news IDs: 422 (true) or skipped and listed (false).")
    since: Instant | None = Field(
        None,
        description="Retrieval only: news published on or after this time "
        "(an offset is applied; a naive time or a date alone is read as UTC).",
    )
    rerank: RerankIn | None = Field(
        None, description="Re-rank the top k (default: the server's --rerank, none unless set)."
    )


class RankedNews(BaseModel):
    news_id: str
    score: float
    rank: int


class Freshness(BaseModel):
    latest_event: str | None = Field(
        description="UTC time of the latest impression counted: the training period's last one "
        "until events arrive"
    )
    events: int = Field(description="Impressions applied through POST /v1/events since the training period")
    training_end: str | None = Field(description="UTC time of the training period's last impression")
    counted_at: str | None = Field(
        description="The counts' clock: one second after the latest event (decay runs on event time)"
    )


class RerankOut(BaseModel):
    method: str
    weight: float


class Diversity(BaseModel):
    ild: float | None = Field(
        description="Intra-list diversity: mean 1 - cosine of the text vectors over pairs (None below 2 news "
        "or without text vectors)"
    )
    categories: int = Field(description="Distinct categories in the list")
    calibration: float | None = Field(
        description="Jensen-Shannon divergence (base 2) between the history's categories and the list's, "
        "rank-weighted; lower is closer (None without history)"
    )


class RecommendResponse(BaseModel):
    model_version: str
    backend: str
    mode: str = Field(description="rank (candidates given) or retrieve")
    retrieval: str | None = Field(None, description="exact, exact-model or usearch-hnsw")
    cold_start: bool = Field(description="No known history: the model's empty-history user.")
    items: list[RankedNews]
    unknown: list[str] = Field(description="Unknown news IDs skipped (strict=false).")
    history_used: int
    history_truncated: int = Field(description="Oldest history news dropped beyond the model's length.")
    excluded: int
    cached_user: bool
    popularity: Freshness | None = Field(
        None, description="A model trained with popularity: how fresh the counts it scored with are."
    )
    rerank: RerankOut = Field(description="The re-ranker applied (the request's, or the server's default).")
    diversity: Diversity | None = Field(
        None, description="The returned list's diversity and calibration (None for an empty list)."
    )


class Entity(BaseModel):
    model_config = ConfigDict(strict=True)

    label: str = Field(max_length=512)
    wikidata_id: str = Field("", max_length=64)
    type: str = Field("", max_length=16)


# IDs are stored one per line (embedding store): no whitespace of any kind, no control character;
# a reserved name (a route under /v1/news/) is refused. In the pattern, so the schema says it.
NEWS_ID_PATTERN = "^" + "".join(f"(?!{name}$)" for name in RESERVED_NEWS_IDS) + NEWS_ID_CHAR + "+$"


class NewsIn(BaseModel):
    model_config = ConfigDict(**STRICT, regex_engine="python-re")  # the pattern looks ahead

    news_id: str = Field(min_length=1, max_length=NEWS_ID_MAX, pattern=NEWS_ID_PATTERN)
    title: str = Field(max_length=2000)
    abstract: str = Field("", max_length=20000)
    category: str = Field("", max_length=128)
    subcategory: str = Field("", max_length=128)
    entities: list[Entity] = Field(default_factory=list, max_length=200)
    published: Published | None = Field(
        None, description="ISO 8601 time; a naive one is read as UTC. Stored and returned in UTC."
    )


class NewsBatch(BaseModel):
    model_config = STRICT

    news: list[NewsIn] = Field(min_length=1, max_length=1000)


class NewsOut(BaseModel):
    news_id: str
    category: str
    subcategory: str
    title: str
    abstract: str
    entities: list[dict[str, Any]]
    published: str | None
    source: str


class IngestResult(BaseModel):
    news_id: str
    status: str


class IngestResponse(BaseModel):
    model_version: str
    results: list[IngestResult]
    news_count: int


class ImpressionIn(BaseModel):
    model_config = STRICT

    time: Published = Field(
        description="ISO 8601 time the impression was shown; an offset is applied, a naive time is "
        "read as UTC (as MIND's times are). From 1970-01-01T00:00:00Z to 9999-12-31T23:59:58Z."
    )
    shown: list[NewsIdText] = Field(
        min_length=1, max_length=MAX_CANDIDATES, description="News IDs shown, each once."
    )
    clicked: list[NewsIdText] = Field(
        default_factory=list, max_length=MAX_CANDIDATES, description="The news clicked, among those shown."
    )


class EventsBatch(BaseModel):
    model_config = STRICT

    impressions: list[ImpressionIn] = Field(min_length=1, max_length=MAX_EVENT_IMPRESSIONS)


class EventsResponse(BaseModel):
    model_version: str
    applied: int = Field(description="Impressions added to the counts")
    popularity: Freshness


class Health(BaseModel):
    status: str = Field(description="ok, or failed when the model cannot load")
    error: str | None = None


class Ready(BaseModel):
    status: str = Field(description="ready")
    model_version: str
    news: int


class NotReady(BaseModel):
    status: str = Field(description="loading or failed")
    error: str | None = None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "newsrec_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "newsrec_request_seconds",
            "Request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.cache = Counter("newsrec_user_cache", "User-state cache lookups", ["result"], registry=r)
        self.index_size = Gauge("newsrec_index_size", "Servable news", registry=r)
        self.model = Gauge("newsrec_model_info", "Model version served", ["version", "backend"], registry=r)
        self.ready = Gauge("newsrec_ready", "1 when the model and index are loaded", registry=r)


class MeasureMiddleware:
    """Count and time every request by route (pure ASGI: starlette's BaseHTTPMiddleware costs a
    task and a streamed copy of each response, more than a ranking request itself)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)


def create_app(
    config: ServeConfig,
    *,
    load_in_background: bool = True,
    on_fatal: Callable[[str], None] | None = None,
) -> FastAPI:
    """The service. `on_fatal(reason)` is called when the model cannot load (the server stops)."""
    metrics = Metrics()
    engine = Engine(config, on_cache=lambda result: metrics.cache.labels(result).inc())
    app = FastAPIOffline(
        title="newsrec",
        version=__version__,
        description="News recommendation service of a trained newsrec run or export. Every request "
        f"body is at most {config.max_body:,} bytes (serve --max-body); a longer one is refused with "
        "413 before it is read.",
        docs_url="/docs",
        redoc_url="/redoc",
    )
    app.router.route_class = StrictJsonRoute
    app.state.engine = engine
    ui = UiState(engine, config.data, config.ablation, preload=config.ui)
    app.state.ui = ui
    loaded = threading.Event()  # the engine and the page's data (dataset, explainer) are loaded

    def load() -> None:
        try:
            start = time.perf_counter()
            engine.load()
            ui.load()
            # The loaded tables are long-lived: out of the collector's sight, so a request's
            # garbage does not make it walk ~10^5 news records again and again.
            gc.freeze()
            loaded.set()
            metrics.model.labels(engine.version, config.backend).set(1)
            metrics.ready.set(1)
            log.warning(
                "ready: %s (%s), %d news, retrieval %s, cache %s, %.1fs",
                engine.version,
                config.backend,
                len(engine.table or []),
                engine.retriever.method if engine.retriever else "?",
                engine.cache.kind,
                time.perf_counter() - start,
            )
        except Exception as exc:  # reported by /healthz and /readyz, then the server stops
            engine.error = str(exc) if isinstance(exc, NewsrecError) else f"{type(exc).__name__}: {exc}"
            if on_fatal is not None:
                on_fatal(engine.error)  # the caller says why, once
            else:
                log.error("loading failed: %s", engine.error)

    @app.on_event("startup")
    def start() -> None:
        if load_in_background:
            threading.Thread(target=load, daemon=True, name="newsrec-load").start()
        else:
            load()

    app.add_middleware(BodyLimit, limit=config.max_body)
    app.add_middleware(MeasureMiddleware, metrics=metrics)  # outermost: a refused body is counted
    scrub = PathScrubber(
        lambda: [
            config.source,
            engine.state_dir,
            engine.run_dir,
            config.data,
            config.ablation,
            config.run_store,
            os.getcwd(),
            os.path.expanduser("~"),
        ]
    )
    app.add_exception_handler(ServeError, serve_error_handler(STATUSES, scrub))  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]

    @app.get(
        "/healthz",
        response_model=Health,
        responses={503: {"model": Health, "description": "the model cannot load: never ready"}},
    )
    def healthz() -> JSONResponse:
        if engine.error:  # a server that can never be ready is not healthy
            return JSONResponse({"status": "failed", "error": scrub(engine.error)}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get(
        "/readyz",
        response_model=Ready,
        responses={503: {"model": NotReady, "description": "still loading, or loading failed"}},
    )
    def readyz() -> JSONResponse:
        if engine.ready and loaded.is_set():
            return JSONResponse(
                {"status": "ready", "model_version": engine.version, "news": len(engine.table or [])}
            )
        body = {
            "status": "failed" if engine.error else "loading",
            "error": engine.error and scrub(engine.error),
        }
        return JSONResponse(body, status_code=503)

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    def prometheus() -> Response:
        metrics.index_size.set(len(engine.table) if engine.table is not None else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/recommend",
        response_model=RecommendResponse,
        responses=errors(
            e400="the body could not be read",
            e413=f"too many candidates or too long a history; {TOO_LARGE}",
            e503="loading",
        )
        | UNKNOWN_422,
    )
    def recommend(body: RecommendRequest) -> Response:
        # Rendered by hand (tests check the shape against RecommendResponse): validating the
        # answer through the model costs more than the ranking of 50 candidates.
        answer = engine.recommend(
            history=body.history,
            candidates=body.candidates,
            k=body.k,
            user_id=body.user_id,
            exclude_history=body.exclude_history,
            strict=body.strict,
            since=body.since,
            rerank=None if body.rerank is None else body.rerank.spec(),
        )
        return JSONResponse(answer.as_json())

    @app.post(
        "/v1/news",
        response_model=IngestResponse,
        responses=errors(
            e400="the body could not be read",
            e409="fresh news cannot be embedded",
            e413=TOO_LARGE,
            e503="loading",
        ),
    )
    def add_news(body: NewsBatch) -> dict[str, Any]:
        records = [
            NewsRecord(
                news_id=n.news_id,
                category=n.category,
                subcategory=n.subcategory,
                title=n.title,
                abstract=n.abstract,
                entities=[e.model_dump() for e in n.entities],
                published=n.published.isoformat() if n.published else None,  # in UTC
            )
            for n in body.news
        ]
        results = [asdict(r) for r in engine.ingest(records)]
        return {"model_version": engine.version, "results": results, "news_count": len(engine.table or [])}

    @app.post(
        "/v1/events",
        response_model=EventsResponse,
        responses=errors(
            e400="the body could not be read",
            e409="the model was trained without popularity",
            e413=TOO_LARGE,
            e503="loading",
        )
        | UNKNOWN_422,
    )
    def add_events(body: EventsBatch) -> dict[str, Any]:
        return asdict(engine.record_events([(imp.time, imp.shown, imp.clicked) for imp in body.impressions]))

    add_ui(app, engine, ui, page=config.ui)  # before /v1/news/{news_id}: its /v1/news/lookup first

    @app.get(
        "/v1/news/{news_id:news_id}",
        response_model=NewsOut,
        responses=errors(e404="unknown news", e503="loading"),
    )
    def get_news(news_id: str) -> dict[str, Any]:
        if not engine.ready:
            raise NotReady()
        record = engine.get_news(news_id)
        if record is None:
            raise NotFound(f"unknown news ID {cut(news_id)!r}")
        return record.__dict__

    return app


def app_from_env() -> FastAPI:
    """The app factory uvicorn workers import (`--workers N`): the config travels in the env."""
    return create_app(ServeConfig.from_json(os.environ[CONFIG_ENV]))
