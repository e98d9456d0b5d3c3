"""The HTTP service (FastAPI): /v1/recommend, /v1/news, /healthz, /readyz, /metrics, and the
web page at /ui with the routes it uses (ui.py).

The engine loads in a background thread at start-up, so /healthz answers at once and /readyz
turns 200 when the model and index are loaded. Every client mistake is a 4xx with the reason;
an unexpected error is logged and answered 500 (the fuzzing test checks none happens).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import date, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel, ConfigDict, Field, field_validator

from newsrec_cli import __version__
from newsrec_cli.serve.engine import MAX_K, Engine, NewsRecord, RequestError, ServeConfig
from newsrec_cli.serve.ui import UiState, add_ui

log = logging.getLogger("newsrec.serve")
CONFIG_ENV = "NEWSREC_SERVE_CONFIG"

NewsId = Field(min_length=1, max_length=128)


class RecommendRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(None, max_length=256, description="Known users add their user vector.")
    history: list[str] = Field(default_factory=list, description="Clicked news IDs, oldest first.")
    candidates: list[str] | None = Field(
        None, description="News IDs to rank; omit to retrieve from all news."
    )
    k: int = Field(10, ge=1, le=MAX_K, description="How many to return.")
    exclude_history: bool = Field(True, description="Never return news from the history.")
    strict: bool = Field(True, description="Unknown news IDs: 422 (true) or skipped and listed (false).")
    since: date | datetime | None = Field(None, description="Retrieval only: news published on or after.")


class RankedNews(BaseModel):
    news_id: str
    score: float
    rank: int


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


class Entity(BaseModel):
    label: str = Field(max_length=512)
    wikidata_id: str = Field("", max_length=64)
    type: str = Field("", max_length=16)


class NewsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    news_id: str = Field(min_length=1, max_length=128, pattern=r"^[^\s]+$")
    title: str = Field(max_length=2000)
    abstract: str = Field("", max_length=20000)
    category: str = Field("", max_length=128)
    subcategory: str = Field("", max_length=128)
    entities: list[Entity] = Field(default_factory=list, max_length=200)
    published: datetime | None = None

    @field_validator("news_id")
    @classmethod
    def printable_id(cls, value: str) -> str:
        # IDs are stored one per line (embedding store): no whitespace of any kind, no controls.
        if not value.isprintable() or any(c.isspace() for c in value):
            raise ValueError("news_id must be printable and contain no whitespace")
        return value


class NewsBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

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


def create_app(config: ServeConfig, *, load_in_background: bool = True) -> FastAPI:
    metrics = Metrics()
    engine = Engine(config, on_cache=lambda result: metrics.cache.labels(result).inc())
    app = FastAPI(
        title="newsrec",
        version=__version__,
        description="News recommendation service of a trained newsrec run or export.",
        docs_url="/docs",
    )
    app.state.engine = engine
    ui = UiState(engine, config.data, config.ablation, preload=config.ui)
    app.state.ui = ui
    loaded = threading.Event()  # the engine and the page's data (dataset, explainer) are loaded

    def load() -> None:
        try:
            start = time.perf_counter()
            engine.load()
            ui.load()
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
        except Exception as exc:  # reported by /readyz; the process stays up to say why
            engine.error = f"{type(exc).__name__}: {exc}"
            log.error("loading failed: %s", engine.error)

    @app.on_event("startup")
    def start() -> None:
        if load_in_background:
            threading.Thread(target=load, daemon=True, name="newsrec-load").start()
        else:
            load()

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            metrics.requests.labels(path, request.method, str(status)).inc()
            metrics.latency.labels(path).observe(time.perf_counter() - start)

    @app.exception_handler(RequestError)
    async def request_error(_request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"detail": exc.detail})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "still loading, or loading failed"}})
    def readyz() -> JSONResponse:
        if engine.ready and loaded.is_set():
            return JSONResponse(
                {"status": "ready", "model_version": engine.version, "news": len(engine.table or [])}
            )
        body = {"status": "failed" if engine.error else "loading", "error": engine.error}
        return JSONResponse(body, status_code=503)

    @app.get("/metrics")
    def prometheus() -> Response:
        metrics.index_size.set(len(engine.table) if engine.table is not None else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/recommend",
        response_model=RecommendResponse,
        responses={
            413: {"description": "too many candidates or too long a history"},
            503: {"description": "loading"},
        },
    )
    def recommend(body: RecommendRequest) -> dict[str, Any]:
        return engine.recommend(
            history=body.history,
            candidates=body.candidates,
            k=body.k,
            user_id=body.user_id,
            exclude_history=body.exclude_history,
            strict=body.strict,
            since=body.since,
        )

    @app.post("/v1/news", response_model=IngestResponse, responses={503: {"description": "loading"}})
    def add_news(body: NewsBatch) -> dict[str, Any]:
        records = [
            NewsRecord(
                news_id=n.news_id,
                category=n.category,
                subcategory=n.subcategory,
                title=n.title,
                abstract=n.abstract,
                entities=[e.model_dump() for e in n.entities],
                published=n.published.isoformat() if n.published else None,
            )
            for n in body.news
        ]
        results = engine.ingest(records)
        return {"model_version": engine.version, "results": results, "news_count": len(engine.table or [])}

    @app.get("/v1/news/{news_id}", response_model=NewsOut, responses={404: {"description": "unknown news"}})
    def get_news(news_id: str) -> dict[str, Any]:
        if not engine.ready:
            raise RequestError(503, "not ready: the model and index are still loading")
        record = engine.get_news(news_id)
        if record is None:
            raise RequestError(404, f"unknown news ID {news_id!r}")
        return record.__dict__

    add_ui(app, engine, ui, page=config.ui)
    return app


def app_from_env() -> FastAPI:
    """The app factory uvicorn workers import (`--workers N`): the config travels in the env."""
    return create_app(ServeConfig.from_json(os.environ[CONFIG_ENV]))
