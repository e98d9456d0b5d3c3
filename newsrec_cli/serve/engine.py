"""The serving engine: a news table by ID, a backend, a user-state cache and retrieval.

`Engine.load()` reads an export folder (any backend) or a run directory (torch backend), encodes
or loads the news vectors, re-encodes the news ingested earlier (persisted under `state_dir`) and
builds the retrieval structure. `recommend` ranks given candidates or retrieves the top k;
`ingest` adds or updates fresh news; `record_events` adds impressions to the popularity counts of
a run trained with popularity (serve/popularity.py), which `recommend` scores with. Answers are
typed results (`Recommendation`, `IngestOutcome`, `EventsApplied`); client mistakes raise the
domain errors of serve/errors.py.
Used by the HTTP app (app.py, which renders the results and maps the errors to statuses) and by
`newsrec recommend`; knows nothing of HTTP or terminals.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

import numpy as np

from newsrec_cli import atomic
from newsrec_cli.embed.providers import make_provider
from newsrec_cli.embed.providers.base import EmbeddingProvider
from newsrec_cli.embed.store import EmbeddingStore, commit, is_store, new_meta
from newsrec_cli.embed.text import news_texts
from newsrec_cli.errors import InputError, NewsrecError, SettingsError
from newsrec_cli.evaluate.beyond import calibration as list_calibration
from newsrec_cli.evaluate.beyond import category_count, ild
from newsrec_cli.mind import Vocab, load_dataset
from newsrec_cli.mind.entities import Entity
from newsrec_cli.mind.news import NewsTable, read_news
from newsrec_cli.mind.running_counts import FIRST_SECOND, LAST_SECOND, MemorySums, Reading, RunningCounts
from newsrec_cli.rerank import RerankSpec, category_distribution, pool_size, rerank
from newsrec_cli.serve.backends import Backend, NewsInputs, OnnxBackend, TorchBackend, cap_threads
from newsrec_cli.serve.batch import Batcher
from newsrec_cli.serve.cache import UserCache
from newsrec_cli.serve.errors import (
    InvalidRequest,
    NotReady,
    ProviderFailed,
    TooLarge,
    UnknownNews,
    Unsupported,
)
from newsrec_cli.serve.export import (
    MANIFEST,
    NEWS_TSV,
    graph_files,
    manifest_graph_table,
    manifest_graphs,
    manifest_table,
    model_version,
    read_manifest,
    read_text_table,
    refuse_finetuned,
    run_news_inputs,
)
from newsrec_cli.serve.index import DEFAULT_ANN_THRESHOLD, SCORE_CHUNK, Retriever, top_rows
from newsrec_cli.serve.popularity import NewsTerms, freshness, frozen_counts, open_counts
from newsrec_cli.serve.times import utc_seconds
from newsrec_cli.serve.vector_table import read_table
from newsrec_cli.settings import EmbedSettings

if TYPE_CHECKING:
    from collections.abc import Callable

    from newsrec_cli.runs.loading import LoadedRun  # annotation only: its module imports torch

log = logging.getLogger("newsrec.serve")

MAX_HISTORY_ITEMS = 1000  # longer histories are refused (413); between H and this, truncated
MAX_CANDIDATES = 1000  # more candidates are refused (413)
MAX_K = 1000
MAX_EVENT_IMPRESSIONS = 1000  # impressions per POST /v1/events (more are refused: 422)
# Request bodies over this are refused (413) before they are parsed: 1,000 history and 1,000
# candidate IDs of 128 characters take ~0.27 MB; news to ingest go in batches under it.
MAX_BODY = 1 << 20
INGESTED = "ingested.json"
INGESTED_TEXT = "ingested_text"
STATE_DIR = "served"
# POST /v1/events refuses times further ahead of the server's clock than this (clock skew), unless
# --future-events: one far-future event would move the counts' clock there for good.
FUTURE_TOLERANCE = 300


class Search(NamedTuple):
    """One retrieval waiting for the batched search."""

    state: np.ndarray
    k: int
    allowed: np.ndarray | None  # bool over the `count` rows, None = all
    count: int  # news in the table when the request came
    popularity: tuple[np.ndarray, np.ndarray] | None  # (the user's weight (1,), every news' term)


class EmbeddingSignature(TypedDict, total=False):
    """The text store's signature a model was trained with: how fresh news are embedded."""

    provider: str | None
    model: str | None
    dimension: int | None
    template: str | None
    normalized: bool | None


@dataclass(frozen=True)
class RankedItem:
    news_id: str
    score: float
    rank: int


@dataclass(frozen=True)
class Recommendation:
    """The answer of `Engine.recommend`; app.RecommendResponse documents each field."""

    model_version: str
    backend: str
    mode: str  # rank (candidates given) or retrieve
    retrieval: str | None  # retrieve: exact, exact-model or usearch-hnsw
    cold_start: bool
    items: list[RankedItem]
    unknown: list[str]
    history_used: int
    history_truncated: int
    excluded: int
    cached_user: bool
    popularity: dict[str, Any] | None  # serve.popularity.freshness of the counts scored with
    rerank: RerankSpec = RerankSpec()
    diversity: ListDiversity | None = None

    def as_json(self) -> dict[str, Any]:
        """The JSON of app.RecommendResponse, by hand: `dataclasses.asdict` deep-copies each item,
        and validating through the response model costs more than ranking 50 candidates."""
        return {
            "model_version": self.model_version,
            "backend": self.backend,
            "mode": self.mode,
            "retrieval": self.retrieval,
            "cold_start": self.cold_start,
            "items": [{"news_id": i.news_id, "score": i.score, "rank": i.rank} for i in self.items],
            "unknown": self.unknown,
            "history_used": self.history_used,
            "history_truncated": self.history_truncated,
            "excluded": self.excluded,
            "cached_user": self.cached_user,
            "popularity": self.popularity,
            "rerank": self.rerank.to_dict(),
            "diversity": None if self.diversity is None else asdict(self.diversity),
        }


@dataclass(frozen=True)
class ListDiversity:
    """The returned list's beyond-accuracy figures, as `evaluate` defines them
    (newsrec_cli.evaluate.beyond): None where a figure does not apply."""

    ild: float | None  # intra-list diversity of the text vectors; None below 2 news or without text
    categories: int  # distinct categories
    calibration: float | None  # JS divergence to the history's categories; None without history


@dataclass(frozen=True)
class IngestOutcome:
    news_id: str
    status: str  # added or updated


@dataclass(frozen=True)
class EventsApplied:
    model_version: str
    applied: int
    popularity: dict[str, Any]  # serve.popularity.freshness after the events


@dataclass(frozen=True)
class UserView:
    """A request's user: the state the model scores with, and what of the history it used."""

    state: np.ndarray
    cached: bool
    rows: list[int]  # table rows of every known history news
    used: int  # the most recent `used` of them encoded the state
    truncated: int
    history_length: np.ndarray  # (1, 1): the whole history's length, as in training


@dataclass(frozen=True)
class Picked:
    """The news a request scores: table rows, with the one reading of the counts it scores with
    (so that retrieval, scores and the freshness reported agree) and their features."""

    rows: np.ndarray
    excluded: int
    retrieval: str | None = None
    reading: Reading | None = None
    features: np.ndarray | None = None  # float32 [len(rows), F], with popularity


@dataclass
class NewsRecord:
    news_id: str
    category: str = ""
    subcategory: str = ""
    title: str = ""
    abstract: str = ""
    entities: list[dict[str, Any]] = field(default_factory=list)
    published: str | None = None  # ISO date or datetime, for `since`
    source: str = "run"  # run: known to the model's run; ingested: added through the API


@dataclass
class ServeConfig:
    source: str
    backend: str = "torch"  # torch, onnx or int8
    redis_url: str | None = None
    state_dir: str | None = None
    threads: int = 1
    search_threads: int = 0  # the batched retrieval's threads; 0: default_search_threads()
    ann_threshold: int = DEFAULT_ANN_THRESHOLD
    cache_ttl: int = 3600
    cache_size: int = 10_000
    batch: bool = True  # concurrent exact retrievals share one matrix product (batch.py)
    future_events: bool = False  # accept events dated ahead of this machine's clock (simulations)
    ui: bool = True  # the web page at /ui
    data: str | None = None  # a MIND dataset whose users the page offers
    ablation: str | None = None  # ablation.json shown in the page's run view
    run_store: str | None = None  # the run's text store where it is now (it moved since training)
    rerank: str = "none"  # the re-ranker of requests that name none: mmr:0.3, calibration:0.5, none
    max_body: int = MAX_BODY  # bytes of a request body; more is refused (413) unparsed

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        return cls(**json.loads(text))


class ServedNews:
    """News vectors in a growing matrix, looked up by ID; rows never move (updates overwrite).

    `versions[row]` is a digest of the row's vector: the version of that news' content, which
    the user-state cache keys carry (row numbers differ between replicas and say nothing of
    updates)."""

    def __init__(self, dim: int, text_dim: int | None = None) -> None:
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.records: list[NewsRecord] = []
        self.versions: list[str] = []
        self.vectors = np.zeros((0, dim), np.float32)
        self.published = np.zeros(0, "datetime64[s]")
        # The re-rankers' inputs: L2-normalised text vectors (None: the run has none) and a code
        # per category, in order of first appearance (-1: no category).
        self.text = None if text_dim is None else np.zeros((0, text_dim), np.float32)
        self.categories = np.zeros(0, np.int64)
        self.category_codes: dict[str, int] = {}
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.ids)

    def upsert(
        self, records: list[NewsRecord], vectors: np.ndarray, text: np.ndarray | None = None
    ) -> np.ndarray:
        """Add or overwrite `records` with their model vectors and (when the table holds text
        vectors) their text vectors; the rows they took."""
        with self.lock:
            rows = []
            for rec in records:
                row = self.index.get(rec.news_id)
                if row is None:
                    row = len(self.ids)
                    self.index[rec.news_id] = row
                    self.ids.append(rec.news_id)
                    self.records.append(rec)
                    self.versions.append("")
                else:
                    self.records[row] = rec
                rows.append(row)
            count = len(self.ids)
            if count > len(self.vectors):  # grow by doubling: readers keep a consistent old view
                grown = np.zeros((max(count, 2 * len(self.vectors)), self.vectors.shape[1]), np.float32)
                grown[: len(self.vectors)] = self.vectors
                dates = np.full(len(grown), np.datetime64("NaT"), "datetime64[s]")
                dates[: len(self.published)] = self.published
                self.vectors, self.published = grown, dates
                self.categories = np.concatenate(
                    [self.categories, np.full(len(grown) - len(self.categories), -1, np.int64)]
                )
                if self.text is not None:
                    more = np.zeros((len(grown) - len(self.text), self.text.shape[1]), np.float32)
                    self.text = np.concatenate([self.text, more])
            idx = np.asarray(rows, dtype=np.int64)
            self.vectors[idx] = vectors
            self.categories[idx] = [self._category_code(r.category) for r in records]
            if self.text is not None and text is not None:
                norms = np.linalg.norm(text, axis=1, keepdims=True)
                self.text[idx] = text / np.maximum(norms, 1e-12)
            self.published[idx] = [_date(r.published) for r in records]
            for row in rows:
                self.versions[row] = content_version(self.vectors[row])
            return idx

    def view(self) -> tuple[np.ndarray, int]:
        with self.lock:
            return self.vectors, len(self.ids)

    def rerank_view(self) -> tuple[np.ndarray | None, np.ndarray, int]:
        """(text vectors, category codes, number of categories), read together."""
        with self.lock:
            return self.text, self.categories, len(self.category_codes)

    def _category_code(self, category: str) -> int:
        if not category:
            return -1
        return self.category_codes.setdefault(category, len(self.category_codes))

    def snapshot(self, rows: list[int]) -> tuple[np.ndarray, list[str], list[str]]:
        """(vectors, IDs, versions) of `rows`, read together: a state and its key always agree
        even while an update is written."""
        with self.lock:
            return (
                self.vectors[np.asarray(rows, np.int64)].copy(),
                [self.ids[r] for r in rows],
                [self.versions[r] for r in rows],
            )


def content_version(vector: np.ndarray) -> str:
    """A digest of a news vector: the same content encoded by the same model gives the same one."""
    return hashlib.blake2b(np.ascontiguousarray(vector, np.float32).tobytes(), digest_size=8).hexdigest()


def _date(text: str | None) -> np.datetime64:
    return utc_seconds(text)  # aware, in UTC: an offset is applied, a naive time is read as UTC


def default_backend(source: Path) -> str:
    """`--backend auto`: an export is served by its ONNX graphs (fp32 when it has them, else int8;
    both parity-checked against torch at export time, and cheaper per request than torch); a run
    directory by torch."""
    if not (source / MANIFEST).is_file():
        return "torch"
    return "onnx" if (source / "news_encoder.onnx").is_file() else "int8"


def default_search_threads(workers: int = 1) -> int:
    """Threads of the batched retrieval: the worker's share of the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, workers))


class Engine:
    def __init__(self, config: ServeConfig, on_cache: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.source = Path(config.source)
        self.ready = False
        self.error: str | None = None
        self.on_cache = on_cache
        self.cache = UserCache(
            config.redis_url, ttl=config.cache_ttl, lru_size=config.cache_size, on_result=on_cache
        )
        self.backend: Backend | None = None
        self.table: ServedNews | None = None
        self.retriever: Retriever | None = None
        self._retrievals = Batcher(self._search_batch) if config.batch else None
        self.version = ""
        self.history = 50
        self.embeddings: EmbeddingSignature | None = None
        self.vocabs: dict[str, Vocab | None] = {}
        self._provider: EmbeddingProvider | None = None
        self._ingest_lock = threading.Lock()
        self.state_dir = Path(config.state_dir) if config.state_dir else self.source / STATE_DIR
        self.text_inputs = False
        self.graph_dim: int | None = None  # size of the graph_vector input, None without a graph
        self.graph_vectors: dict[str, np.ndarray] = {}  # GNN vector of each run news on the graph
        self.run: LoadedRun | None = (
            None  # the loaded torch run (run directory or torch backend), for explanations
        )
        self.run_dir: Path | None = None  # the run the model comes from (export.json names it)
        self.popularity: RunningCounts | None = None  # a run trained with popularity: the live counts
        self.news_terms: NewsTerms | None = None  # with popularity: every news' counts per snapshot
        try:
            self.default_rerank = RerankSpec.parse(config.rerank)
        except ValueError as exc:
            raise SettingsError(f"--rerank {config.rerank!r}: {exc}") from None

    # ------------------------------------------------------------------ loading

    def load(self) -> None:
        backend = self.config.backend
        if backend not in ("torch", "onnx", "int8"):
            raise SettingsError(f"--backend {backend!r}: torch, onnx or int8")
        cap_threads(self.config.threads)
        if (self.source / MANIFEST).is_file():
            self._load_export(backend)
        elif (self.source / "config.json").is_file():
            if backend != "torch":
                raise SettingsError(
                    f"--backend {backend} needs an export: newsrec export {self.source} --out EXPORT_DIR"
                )
            self._load_run()
        else:
            raise InputError(
                "neither a run directory (config.json) nor an export (export.json)", path=self.source
            )
        self._build_retriever()
        if self.popularity is not None:
            assert self.backend is not None
            self.news_terms = NewsTerms(self.popularity, self.backend, self.backend.popularity_product)
        self._load_ingested()
        self.ready = True

    def _load_export(self, backend: str) -> None:
        manifest = read_manifest(self.source)
        if backend == "int8" and not manifest.get("graphs", {}).get("int8"):
            raise SettingsError(
                "--backend int8: this export has no int8 graphs (export with --quantize int8)"
            )
        if backend != "int8" and manifest.get("quantize") == "int8-only":
            raise SettingsError(
                f"--backend {backend}: this export holds the int8 graphs and table only "
                "(--quantize int8-only); serve it with --backend int8"
            )
        self.version = manifest["model_version"]
        self.run_dir = Path(manifest["run_dir"]) if manifest.get("run_dir") else None
        self.history = int(manifest["history"])
        self.embeddings = manifest.get("embeddings")
        self.text_inputs = manifest.get("shapes", {}).get("text_vector") is not None
        graph_shape = manifest.get("shapes", {}).get("graph_vector")
        self.graph_dim = int(graph_shape[1]) if graph_shape else None
        if self.graph_dim is not None:
            table = manifest_graph_table(manifest, backend == "int8")
            graph_ids, matrix, _ = read_table(self.source / table)
            self.graph_vectors = {id_: matrix[i] for i, id_ in enumerate(graph_ids)}
        self.vocabs = {
            "ids": Vocab.load(self.source / "vocab_news_ids.txt"),
            "categories": Vocab.load(self.source / "vocab_categories.txt"),
            "subcategories": Vocab.load(self.source / "vocab_subcategories.txt"),
            "users": Vocab.load(self.source / "vocab_users.txt") if manifest.get("use_user_id") else None,
        }
        if backend == "torch":
            from newsrec_cli.runs.loading import load_run  # torch: ONNX serving runs without it

            self.run = load_run(manifest["run_dir"], device="cpu", store=self.config.run_store)
            self.backend = TorchBackend(self.run.model, self.config.threads)
        else:
            names = manifest_graphs(manifest, backend == "int8")
            self.backend = OnnxBackend(graph_files(self.source, names), backend, self.config.threads)
        if manifest.get("popularity"):
            frozen = MemorySums.load(self.source / str(manifest["popularity"]["counts"]))
            self._open_popularity(frozen)
        ids, vectors, _ = read_table(self.source / manifest_table(manifest, backend == "int8"))
        news = read_news(self.source / NEWS_TSV, on_bad_lines="skip", bad_entities="collect")
        records = [_record_of(news, id_) for id_ in ids]
        text = read_text_table(self.source, manifest, ids)
        self.table = ServedNews(vectors.shape[1], None if text is None else text.shape[1])
        self.table.upsert(records, vectors, text)

    def _load_run(self) -> None:
        from newsrec_cli.runs.loading import load_run  # torch: ONNX serving runs without it

        run = load_run(self.source, device="cpu", store=self.config.run_store)
        refuse_finetuned(run, "serve")
        self.run, self.run_dir = run, self.source
        self.version = model_version(self.source)
        if run.model.popularity is not None:
            self._open_popularity(frozen_counts(run))
        self.history = run.settings.history
        self.text_inputs = run.model.news_encoder.text is not None
        self.graph_dim = run.model.dim if run.model.news_encoder.graph is not None else None
        if run.text_store is not None:
            meta = run.text_store.meta
            self.embeddings = {
                k: meta.get(k) for k in ("provider", "model", "dimension", "template", "normalized")
            }
        self.vocabs = {
            "ids": run.vocabs.ids,
            "categories": run.vocabs.categories,
            "subcategories": run.vocabs.subcategories,
            "users": run.vocabs.users if run.settings.use_user_id else None,
        }
        self.backend = TorchBackend(run.model, self.config.threads)
        ids, inputs, servable = run_news_inputs(run)
        keep = np.flatnonzero(servable)
        vectors = self.backend.encode_news(inputs.rows(keep))
        if inputs.graph_vector is not None and inputs.graph_present is not None:
            self.graph_vectors = {
                ids[i]: inputs.graph_vector[i] for i in np.flatnonzero(inputs.graph_present)
            }
        news = _run_news(run)
        text = None if inputs.text is None else inputs.text[keep]
        self.table = ServedNews(vectors.shape[1], None if text is None else text.shape[1])
        self.table.upsert([_record_of(news, ids[i]) for i in keep], vectors, text)

    def _open_popularity(self, frozen: Any) -> None:
        self.popularity = open_counts(
            frozen, state_dir=self.state_dir, redis_url=self.config.redis_url, model_version=self.version
        )

    def _build_retriever(self) -> None:
        assert self.table is not None and self.backend is not None
        vectors, n = self.table.view()
        self.retriever = Retriever(
            self.backend,
            self.config.ann_threshold,
            batch_threads=self.config.search_threads or default_search_threads(),
        )
        self.retriever.rebuild(vectors[:n])

    # ------------------------------------------------------------------ users

    def cache_key(self, user_row: int, ids: list[str], versions: list[str]) -> str:
        """The key of a user state: model version and backend, the user (as the model knows
        them: a known ID, or none), and each history news' ID with its content version."""
        users = self.vocabs.get("users")
        user = users.ids[user_row] if users is not None and user_row > 0 else ""
        history = json.dumps([user, [[i, v] for i, v in zip(ids, versions, strict=True)]])
        digest = hashlib.sha256(history.encode()).hexdigest()
        return f"newsrec:{self.version}:{self.config.backend}:{digest}"

    def _encode_user(self, clicked: np.ndarray, user_row: int) -> np.ndarray:
        assert self.backend is not None
        if len(clicked):
            mask = np.ones((1, len(clicked)), bool)
            clicked = clicked[None]
        else:  # cold start: one masked slot; the user encoder gives its "empty history" state
            dim = self.table.vectors.shape[1] if self.table is not None else 0
            clicked = np.zeros((1, 1, dim), np.float32)
            mask = np.zeros((1, 1), bool)
        return self.backend.encode_users(clicked, mask, np.asarray([user_row], np.int64))

    def user_state(self, rows: list[int], user_row: int) -> tuple[np.ndarray, bool]:
        """The state of a user with history `rows`, and whether it came from the cache."""
        assert self.table is not None
        clicked, ids, versions = self.table.snapshot(rows)
        key = self.cache_key(user_row, ids, versions)
        state = self.cache.get(key)
        if state is not None:
            return state, True
        state = self._encode_user(clicked, user_row)
        self.cache.set(key, state)
        return state, False

    # ------------------------------------------------------------------ recommend

    def recommend(
        self,
        *,
        history: list[str],
        candidates: list[str] | None = None,
        k: int = 10,
        user_id: str | None = None,
        exclude_history: bool = True,
        strict: bool = True,
        since: date | datetime | None = None,
        rerank: RerankSpec | None = None,
    ) -> Recommendation:
        """Rank `candidates` for a user with `history`, or retrieve the top `k` of all news;
        `rerank` (default: the server's) re-ranks the top k (newsrec_cli.rerank)."""
        table = self._serving_table()
        _check_sizes(history, candidates, k)
        spec = self.default_rerank if rerank is None else rerank
        if spec.method == "mmr" and table.text is None:
            raise Unsupported("rerank mmr needs the news' text vectors, and this model has none")
        unknown = list(dict.fromkeys(i for i in [*history, *(candidates or [])] if i not in table.index))
        if unknown and strict:
            raise UnknownNews("unknown news IDs (pass strict=false to skip them)", unknown)
        user = self._user(history, user_id)
        seen = set(user.rows) if exclude_history else set()
        vectors, n = table.view()
        if candidates is not None:
            picked = self._rank_candidates(candidates, seen)
        else:
            # A re-ranker chooses among the best pool_size(k), as `evaluate --retrieve` does.
            picked = self._retrieve(user, vectors[:n], pool_size(k) if spec.active else k, seen, since)
        items, diversity = self._scored(user, vectors, picked, k, spec)
        return Recommendation(
            model_version=self.version,
            backend=self.config.backend,
            mode="rank" if candidates is not None else "retrieve",
            retrieval=picked.retrieval,
            cold_start=not user.used,
            items=items,
            unknown=unknown,
            history_used=user.used,
            history_truncated=user.truncated,
            excluded=picked.excluded,
            cached_user=user.cached,
            popularity=None if self.popularity is None else self.freshness(picked.reading),
            rerank=spec,
            diversity=diversity,
        )

    def _serving_table(self) -> ServedNews:
        if not self.ready or self.table is None or self.backend is None or self.retriever is None:
            raise NotReady()
        return self.table

    def _user(self, history: list[str], user_id: str | None) -> UserView:
        """The user's state from the most recent H known clicks (as in training), cached."""
        assert self.table is not None
        index = self.table.index
        rows = [index[i] for i in history if i in index]
        truncated = max(0, len(rows) - self.history)
        used = rows[truncated:]
        users = self.vocabs.get("users")
        user_row = users.get(user_id) if users is not None and user_id else 0
        state, cached = self.user_state(used, user_row)
        history_length = np.asarray([[len(history)]], np.float32)
        return UserView(state, cached, rows, len(used), truncated, history_length)

    def _rank_candidates(self, candidates: list[str], seen: set[int]) -> Picked:
        """The known candidates, each once, less those of the history when `seen` holds them."""
        assert self.table is not None
        index = self.table.index
        wanted = [index[c] for c in dict.fromkeys(candidates) if c in index]
        rows = np.asarray([r for r in wanted if r not in seen], dtype=np.int64)
        if self.popularity is None:
            return Picked(rows, len(wanted) - len(rows))
        reading = self.popularity.read([self.table.ids[r] for r in rows])
        return Picked(rows, len(wanted) - len(rows), None, reading, reading.features)

    def _retrieve(
        self, user: UserView, vectors: np.ndarray, k: int, seen: set[int], since: date | datetime | None
    ) -> Picked:
        """The top `k` of the first len(vectors) news, less `seen` and those published before `since`."""
        assert self.table is not None and self.retriever is not None and self.backend is not None
        n = len(vectors)
        allowed = None
        if seen or since is not None:
            allowed = np.ones(n, bool)
            if seen:
                allowed[np.fromiter(seen, np.int64)] = False
            if since is not None:
                allowed &= self.table.published[:n] >= utc_seconds(since)
        if self.popularity is None or self.news_terms is None:
            rows = self._search(Search(user.state, k, allowed, n, None), vectors)
            return Picked(rows, len(seen), self.retriever.method)
        snapshot = self.news_terms.current(self.table.ids, n)  # shared by concurrent retrievals
        reading = snapshot.reading
        if snapshot.terms is None:  # no popularity graphs (an older export): the scorer
            rows = self._retrieve_with_popularity(
                user.state, vectors, k, allowed, user.history_length, reading.features
            )
            return Picked(rows, len(seen), "exact-model", reading, reading.features[rows])
        # the term as one more column: [query, weight] . [key, news term]
        weight = self.backend.popularity_queries(user.history_length)
        rows = self._search(Search(user.state, k, allowed, n, (weight, snapshot.terms)), vectors)
        return Picked(rows, len(seen), "exact", reading, reading.features[rows])

    def _search(self, search: Search, vectors: np.ndarray) -> np.ndarray:
        """One retrieval: batched with concurrent ones (serve --batch), else alone."""
        assert self.retriever is not None
        if self._retrievals is not None:
            return self._retrievals(search)
        return self.retriever.search(
            self.backend, search.state, vectors, search.k, search.allowed, search.popularity
        )

    def _scored(
        self, user: UserView, vectors: np.ndarray, picked: Picked, k: int, spec: RerankSpec
    ) -> tuple[list[RankedItem], ListDiversity | None]:
        """The picked news scored by the model (with their popularity term), the best `k` first
        (or as `spec` re-ranks them), and the list's diversity."""
        assert self.backend is not None and self.table is not None
        if not len(picked.rows):
            return [], None
        extra = (
            {}
            if picked.features is None
            else {"popularity": picked.features[None], "history_length": user.history_length}
        )
        scores = self.backend.score(user.state, vectors[picked.rows][None], **extra)[0]
        text, categories, n_categories = self.table.rerank_view()
        history = category_distribution(categories[np.asarray(user.rows, np.int64)][None], n_categories)
        if spec.active:
            rows = picked.rows
            order = rerank(
                scores,
                k,
                spec,
                vectors=None if text is None else text[rows],
                categories=categories[rows],
                history=history[0],
            )[:k]
        else:
            order = np.argsort(-scores, kind="stable")[:k]
        top = picked.rows[order]
        ids = self.table.ids
        items = [RankedItem(ids[top[r]], float(scores[j]), r + 1) for r, j in enumerate(order)]
        return items, _diversity(top, text, categories, history)

    def freshness(self, reading: Reading | None = None) -> dict[str, Any]:
        """The popularity block of a response: of `reading` (the counts it scored with), or now."""
        assert self.popularity is not None
        return freshness(self.popularity, reading)

    def _retrieve_with_popularity(
        self,
        state: np.ndarray,
        vectors: np.ndarray,
        k: int,
        allowed: np.ndarray | None,
        history_length: np.ndarray,
        features: np.ndarray,
    ) -> np.ndarray:
        """Exact retrieval with the popularity term for a backend without its factors (an export
        made before the popularity graphs): every news scored through the backend's scorer."""
        assert self.backend is not None
        n = len(vectors)
        scores = np.empty(n, np.float32)
        for s in range(0, n, SCORE_CHUNK):
            rows = slice(s, min(n, s + SCORE_CHUNK))
            extra = {"popularity": features[None, rows], "history_length": history_length}
            scores[rows] = self.backend.score(state, vectors[None, rows], **extra)[0]
        return top_rows(scores, k, allowed)

    def _search_batch(self, items: list[Search]) -> list[np.ndarray]:
        """Retrieval for concurrent requests in one pass over the news per snapshot of the counts
        (nearly always one); each request searches the news there were when it came."""
        groups: dict[int, list[int]] = {}
        for j, item in enumerate(items):  # requests share a snapshot's news terms array
            groups.setdefault(0 if item.popularity is None else id(item.popularity[1]), []).append(j)
        out: list[np.ndarray] = [np.zeros(0, np.int64)] * len(items)
        for group in groups.values():
            for j, rows in zip(group, self._search_group([items[j] for j in group]), strict=True):
                out[j] = rows
        return out

    def _search_group(self, items: list[Search]) -> list[np.ndarray]:
        """`_search_batch` for requests that share one snapshot of the counts (or have none)."""
        assert self.table is not None and self.retriever is not None
        vectors, _ = self.table.view()
        n = max(item.count for item in items)
        masks = []
        for item in items:
            allowed = item.allowed
            if item.count < n:  # news added since this request came stay out of its search
                full = np.zeros(n, bool)
                full[: item.count] = True if allowed is None else allowed
                allowed = full
            masks.append(allowed)
        first = items[0].popularity
        popularity = (
            None
            if first is None
            else (np.concatenate([item.popularity[0] for item in items if item.popularity]), first[1])
        )
        return self.retriever.search_many(
            self.backend,
            [item.state for item in items],
            vectors[:n],
            [item.k for item in items],
            masks,
            popularity,
        )

    # ------------------------------------------------------------------ events

    def record_events(self, impressions: list[tuple[datetime, list[str], list[str]]]) -> EventsApplied:
        """Add impressions (aware UTC time, news shown, news clicked among them) to the live
        popularity counts; every news must be known and every click one of the news shown."""
        if not self.ready or self.table is None:
            raise NotReady()
        if self.popularity is None:
            raise Unsupported("this model was trained without popularity: it has no counts to update")
        if len(impressions) > MAX_EVENT_IMPRESSIONS:
            raise TooLarge(f"{len(impressions)} impressions; at most {MAX_EVENT_IMPRESSIONS} per request")
        index = self.table.index
        named = (n for _, shown, clicked in impressions for n in [*shown, *clicked])
        unknown = list(dict.fromkeys(n for n in named if n not in index))
        if unknown:
            raise UnknownNews("unknown news IDs (add them through POST /v1/news first)", unknown)
        news: list[str] = []
        seconds: list[int] = []
        clicks: list[int] = []
        horizon = LAST_SECOND if self.config.future_events else int(time.time()) + FUTURE_TOLERANCE
        for i, (when, shown, clicked) in enumerate(impressions):
            second = _event_second(i, when, shown, clicked, horizon)
            picked = set(clicked)
            news += shown
            seconds += [second] * len(shown)
            clicks += [n in picked for n in shown]
        self.popularity.apply(
            news, np.asarray(seconds, np.int64), np.asarray(clicks, np.float64), len(impressions)
        )
        return EventsApplied(self.version, len(impressions), self.freshness())

    # ------------------------------------------------------------------ news

    def get_news(self, news_id: str) -> NewsRecord | None:
        if self.table is None:
            return None
        row = self.table.index.get(news_id)
        return None if row is None else self.table.records[row]

    def _provider_for(self) -> EmbeddingProvider:
        if self._provider is None:
            meta = self.embeddings or {}
            if not meta.get("provider"):
                raise Unsupported("this model's embedding provider is unknown; cannot embed fresh news")
            settings = EmbedSettings(
                provider=meta["provider"],
                model=meta.get("model"),
                template=meta.get("template") or EmbedSettings().template,
                normalize=bool(meta.get("normalized", True)),
                dimensions=meta.get("dimension") if meta["provider"] != "local" else None,
                # float vectors unless the store's model name says int8 (it then ends "(onnx int8)")
                int8=False,
            )
            self._provider = make_provider(settings)
        return self._provider

    def text_vectors(self, records: list[NewsRecord]) -> np.ndarray:
        """Text vectors of fresh news with the run's provider, template and normalisation."""
        meta = self.embeddings or {}
        table = NewsTable()
        for r in records:
            table.append((r.news_id, r.category, r.subcategory, r.title, r.abstract, ""), _entities(r), [])
        texts = news_texts(table, meta.get("template") or "{title}").texts
        vectors = np.asarray(self._provider_for().embed(texts), np.float32)
        if meta.get("dimension") and vectors.shape[1] != meta["dimension"]:
            raise ProviderFailed("the embedding provider returned vectors of another size")
        if meta.get("normalized"):
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def news_inputs(self, records: list[NewsRecord], text: np.ndarray | None) -> NewsInputs:
        ids, cats, subs = self.vocabs["ids"], self.vocabs["categories"], self.vocabs["subcategories"]
        assert ids is not None and cats is not None and subs is not None
        return NewsInputs(
            # A news the run trained on keeps its ID vector; a fresh one gets the unseen bucket.
            id_index=np.asarray([ids.get(r.news_id) for r in records], np.int64),
            category=np.asarray([cats.get(r.category) for r in records], np.int64),
            subcategory=np.asarray([subs.get(r.subcategory) for r in records], np.int64),
            text=text,
            text_present=None if text is None else np.ones(len(records), bool),
            **self._graph_inputs(records),
        )

    def _graph_inputs(self, records: list[NewsRecord]) -> dict[str, np.ndarray]:
        """Fresh news are not nodes of the run's graph: the model's learned "no graph" vector
        (graph_present False); a run news re-sent keeps its GNN vector, as in torch."""
        if self.graph_dim is None:
            return {}
        vector = np.zeros((len(records), self.graph_dim), np.float32)
        present = np.zeros(len(records), bool)
        for i, r in enumerate(records):
            known = self.graph_vectors.get(r.news_id)
            if known is not None:
                vector[i], present[i] = known, True
        return {"graph_vector": vector, "graph_present": present}

    def ingest(self, records: list[NewsRecord]) -> list[IngestOutcome]:
        """Add or update news: text vectors, model vectors, table, index, then persist."""
        if not self.ready or self.table is None or self.backend is None or self.retriever is None:
            raise NotReady()
        with self._ingest_lock:
            records = list({r.news_id: r for r in records}.values())  # the last of a duplicated ID wins
            for r in records:
                r.source = "ingested"
            text = self.text_vectors(records) if self.text_inputs else None
            status = ["updated" if r.news_id in self.table.index else "added" for r in records]
            self._persist(records, text)
            self._encode_and_add(records, text)
        return [IngestOutcome(r.news_id, s) for r, s in zip(records, status, strict=True)]

    def _encode_and_add(self, records: list[NewsRecord], text: np.ndarray | None) -> None:
        assert self.table is not None and self.backend is not None and self.retriever is not None
        vectors = self.backend.encode_news(self.news_inputs(records, text))
        rows = self.table.upsert(records, vectors, text)
        self.retriever.update(rows, vectors, len(self.table))

    def _persist(self, records: list[NewsRecord], text: np.ndarray | None) -> None:
        """ingested.json (records by ID) and the text vectors (an embedding store), both atomic."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        saved = self._read_ingested()
        for r in records:
            saved[r.news_id] = asdict(r)
        if text is not None:
            path = self.state_dir / INGESTED_TEXT
            old_ids: list[str] = []
            old = np.zeros((0, text.shape[1]), np.float32)
            if is_store(path):
                store = EmbeddingStore.open(path)
                old_ids, old = list(store.ids), np.asarray(store.vectors, np.float32)
            merged = {id_: old[i] for i, id_ in enumerate(old_ids)}
            merged.update({r.news_id: text[i] for i, r in enumerate(records)})
            ids = list(merged)
            signature = {
                "kind": "news",
                **{
                    k: (self.embeddings or {}).get(k) for k in ("provider", "model", "template", "normalized")
                },
                "dimension": int(text.shape[1]),
            }
            commit(path, ids, np.stack([merged[i] for i in ids]).astype(np.float32), new_meta(signature))
        atomic.write_text(self.state_dir / INGESTED, json.dumps(saved, indent=1) + "\n")

    def _read_ingested(self) -> dict[str, Any]:
        path = self.state_dir / INGESTED
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"not valid JSON ({exc})", path=path) from None
        if not isinstance(data, dict):
            raise InputError("expected an object of news by ID", path=path)
        return data

    def _load_ingested(self) -> None:
        """Re-encode the news ingested earlier with this model (their text vectors are kept)."""
        saved = self._read_ingested()
        if not saved:
            return
        try:
            records = [NewsRecord(**value) for value in saved.values()]
        except TypeError as exc:
            raise InputError(
                f"a saved news record is malformed ({exc})", path=self.state_dir / INGESTED
            ) from None
        text = None
        if self.text_inputs:
            path = self.state_dir / INGESTED_TEXT
            store = EmbeddingStore.open(path) if is_store(path) else None
            if store is None:
                raise InputError("ingested news without their text vectors", path=path)
            text, missing = store.lookup([r.news_id for r in records])
            if missing:
                keep = [i for i, r in enumerate(records) if r.news_id not in set(missing)]
                records, text = [records[i] for i in keep], text[keep]
        start = time.perf_counter()
        self._encode_and_add(records, text)
        log.info("re-encoded %d ingested news in %.2fs", len(records), time.perf_counter() - start)


def _event_second(i: int, when: datetime, shown: list[str], clicked: list[str], horizon: int) -> int:
    """The second of impression `i`, after checking that it can be counted."""
    if len(set(shown)) != len(shown):
        raise InvalidRequest(f"impressions[{i}].shown lists a news twice")
    stray = sorted(set(clicked) - set(shown))
    if stray:
        raise UnknownNews(f"impressions[{i}].clicked has news that were not shown", stray)
    second = int(utc_seconds(when).astype(np.int64))
    if not FIRST_SECOND <= second <= LAST_SECOND:
        raise InvalidRequest(
            f"impressions[{i}].time {when.isoformat()}: the counts take times from "
            "1970-01-01T00:00:00Z to 9999-12-31T23:59:58Z"
        )
    if second > horizon:
        raise InvalidRequest(
            f"impressions[{i}].time {when.isoformat()} is ahead of this server's clock "
            f"({np.datetime64(horizon - FUTURE_TOLERANCE, 's')}Z): the counts' clock would move "
            "there for good and every count decay to nothing (serve --future-events takes a "
            "simulated stream dated ahead)"
        )
    return second


def _diversity(
    top: np.ndarray, text: np.ndarray | None, categories: np.ndarray, history: np.ndarray
) -> ListDiversity:
    """ILD, categories and calibration of one returned list (table rows, best first)."""
    lists = top[None]
    spread = None if text is None else _finite(ild(lists, text)[0])  # NaN below 2 news
    # NaN without history or without any categorised news in the list: no figure, not NaN
    fit = _finite(list_calibration(lists, categories, history)[0])
    return ListDiversity(spread, int(category_count(lists, categories)[0]), fit)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _check_sizes(history: list[str], candidates: list[str] | None, k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise InvalidRequest(f"k must be between 1 and {MAX_K}")
    if len(history) > MAX_HISTORY_ITEMS:
        raise TooLarge(f"history has {len(history)} news; at most {MAX_HISTORY_ITEMS} are accepted")
    if candidates is not None and len(candidates) > MAX_CANDIDATES:
        raise TooLarge(
            f"{len(candidates)} candidates; at most {MAX_CANDIDATES} per request (retrieve without candidates)"
        )
    if candidates is not None and not candidates:
        raise InvalidRequest("candidates is empty: give news IDs to rank, or omit it to retrieve")


def _entities(record: NewsRecord) -> list[Any]:
    out = []
    for e in record.entities:
        label = str(e.get("label") or e.get("Label") or "")
        wikidata = str(e.get("wikidata_id") or e.get("WikidataId") or "")
        if label:
            out.append(Entity(wikidata, label, str(e.get("type") or e.get("Type") or ""), 1.0, (), ()))
    return out


def _record_of(news: Any, news_id: str) -> NewsRecord:
    row = news.index.get(news_id)
    if row is None:
        return NewsRecord(news_id=news_id)
    return NewsRecord(
        news_id=news_id,
        category=news.category[row],
        subcategory=news.subcategory[row],
        title=news.title[row],
        abstract=news.abstract[row],
        entities=[
            {"label": e.label, "wikidata_id": e.wikidata_id, "type": e.type} for e in news.entities_of(row)
        ],
    )


def _run_news(run: Any) -> Any:
    """The run's dataset news (titles etc.), or the run's own table when the data moved."""
    from newsrec_cli.runs.files import NEWS_TABLE, load_news_table  # torch: ONNX serving runs without it

    data = run.config.get("data", {}).get("path")
    try:
        return load_dataset(data, behaviors=False, on_bad_lines="skip", bad_entities="collect").news
    except (NewsrecError, OSError, TypeError):
        return load_news_table(run.run_dir / NEWS_TABLE)[1]
