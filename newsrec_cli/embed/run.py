"""One embedding run: plan what to embed, embed it batch by batch, fold it into the store.

    plan = plan_run(store_path, ids, texts, provider.spec, kind="news", template=..., ...)
    report = execute(plan, provider, on_progress=bar.advance)

`plan_run` reads the store and the chunks of an interrupted run and decides, per ID, whether it
is reused, resumed or still to embed. `execute` saves every finished batch as a chunk before the
next one starts (see chunks.py), then commits store + chunks as the new store. A provider error
stops the run after committing what was finished, so a rerun only does the rest.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from newsrec_cli.embed.chunks import ChunkLog
from newsrec_cli.embed.providers.base import EmbeddingProvider, ProviderSpec
from newsrec_cli.embed.store import (
    EmbeddingStore,
    check_finite,
    commit,
    finish_commit,
    is_store,
    new_meta,
    signature_mismatch,
    text_hash,
)
from newsrec_cli.errors import InputError, NewsrecError, SettingsError


@dataclass
class EmbedPlan:
    """What a run will do. `todo` indexes `ids`/`texts`; the rest is in the store or in chunks."""

    store_path: Path
    signature: dict[str, Any]
    semantic: bool
    ids: list[str]
    texts: list[str]
    fallback_ids: list[str]
    todo: list[int]
    reused: int
    resumed: int
    replace: bool  # --force over a store made with other settings: its rows are dropped
    hashes: list[str] = field(default_factory=list)  # fingerprint of each text (store.text_hash)
    changed: list[str] = field(default_factory=list)  # in the store, but made from another text
    unverified: int = 0  # reused by ID alone: the store has no fingerprint for them

    @property
    def todo_texts(self) -> list[str]:
        return [self.texts[i] for i in self.todo]


@dataclass
class EmbedReport:
    """What a run did; `failed` counts the IDs left unembedded by a provider error."""

    store_path: Path
    requested: int
    embedded: int
    reused: int
    resumed: int
    failed: int
    fallbacks: int
    count: int
    dimension: int | None
    seconds: float
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    changed: list[str] = field(default_factory=list)  # embedded again: their text had changed
    unverified: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("meta", "changed")}
        data["store_path"] = str(self.store_path)
        data["changed"] = {"count": len(self.changed), "first": self.changed[:10]}
        return data


class EmbedRunError(NewsrecError):
    """A run stopped by a provider error after saving what it had finished; carries the report."""

    def __init__(self, message: str, report: EmbedReport) -> None:
        super().__init__(message)
        self.report = report


def make_signature(spec: ProviderSpec, *, kind: str, template: str, normalize: bool) -> dict[str, Any]:
    return {
        "kind": kind,
        "provider": spec.name,
        "model": spec.model,
        "dimension": spec.dimension,
        "template": template,
        "normalized": normalize,
    }


def open_existing(store_path: Path) -> EmbeddingStore | None:
    """The committed store at `store_path`, finishing an interrupted commit first; None if absent."""
    if store_path.exists() and not store_path.is_dir():
        raise InputError("exists and is not a folder; --out needs a store folder", path=store_path)
    if store_path.is_dir():
        finish_commit(store_path)
    if is_store(store_path):
        return EmbeddingStore.open(store_path)
    if store_path.is_dir() and any(p.name != "chunks" for p in store_path.iterdir()):
        raise InputError(
            "exists, is not empty and is not an embedding store; choose another --out", path=store_path
        )
    return None


def plan_run(
    store_path: Path,
    ids: Sequence[str],
    texts: Sequence[str],
    spec: ProviderSpec,
    *,
    kind: str,
    template: str,
    normalize: bool,
    force: bool = False,
    fallback_ids: Sequence[str] = (),
) -> EmbedPlan:
    """Decide what to embed; SettingsError when store or chunks were made with other settings."""
    if not ids:
        raise InputError("nothing to embed (no news found)")
    signature = make_signature(spec, kind=kind, template=template, normalize=normalize)
    hashes = [text_hash(text) for text in texts]
    store = open_existing(store_path)
    known: set[str] = set()
    changed: list[str] = []
    unverified = 0
    replace = False
    if store is not None:
        diffs = signature_mismatch(store.meta, signature)
        if diffs and not force:
            raise SettingsError(
                f"{store_path}: store made with other settings: {'; '.join(diffs)}. "
                "Pass --force to replace it, or choose another --out"
            )
        replace = bool(diffs)
        if not replace:
            # Reuse a vector only when it was made from the same text (the fingerprints match).
            for id_, digest in zip(ids, hashes, strict=True):
                have = store.hash_of(id_) if store.has(id_) else None
                if have is None:
                    continue
                if have == "" or have == digest:
                    known.add(id_)
                    unverified += have == ""
                else:
                    changed.append(id_)
            signature["dimension"] = store.dim
    log = ChunkLog(store_path)
    resumed: set[str] = set()
    if log.exists():
        diffs = log.mismatch(signature)
        if diffs and not force:
            raise SettingsError(
                f"{store_path}: an interrupted run with other settings left chunks ({'; '.join(diffs)}). "
                "Rerun it with those settings, or pass --force to discard them"
            )
        if not diffs:
            chunk_ids, _, chunk_hashes = log.load_with_hashes()
            latest = dict(zip(chunk_ids, chunk_hashes, strict=True))  # a later chunk holds
            wanted = dict(zip(ids, hashes, strict=True))
            resumed = {
                id_
                for id_, digest in latest.items()
                if id_ not in known and (digest == "" or digest == wanted.get(id_, digest))
            }
    todo = [i for i, id_ in enumerate(ids) if id_ not in known and id_ not in resumed]
    asked = set(ids)
    return EmbedPlan(
        store_path=store_path,
        signature=signature,
        semantic=spec.semantic,
        ids=list(ids),
        texts=list(texts),
        fallback_ids=list(fallback_ids),
        todo=todo,
        reused=len(known & asked),
        resumed=len(resumed & asked),
        replace=replace,
        hashes=hashes,
        changed=changed,
        unverified=unverified,
    )


def execute(
    plan: EmbedPlan,
    provider: EmbeddingProvider,
    *,
    on_progress: Callable[[int], None] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> EmbedReport:
    """Embed `plan.todo` batch by batch, saving each batch, then commit the new store."""
    started = time.perf_counter()
    signature = dict(plan.signature)
    if signature["dimension"] is None:
        signature["dimension"] = provider.dimension
    elif provider.dimension is not None and provider.dimension != signature["dimension"]:
        raise SettingsError(
            f"{plan.store_path}: the store holds {signature['dimension']}-d vectors, "
            f"{provider.spec.model} makes {provider.dimension}-d; pass --force to replace the store"
        )
    log = ChunkLog(plan.store_path)
    log.start(signature)
    todo_ids = [plan.ids[i] for i in plan.todo]
    todo_texts = plan.todo_texts
    todo_hashes = [plan.hashes[i] for i in plan.todo] if plan.hashes else [""] * len(todo_ids)
    embedded, error = 0, None
    dimension = signature["dimension"]
    if dimension is None:  # a model that reports no size: the chunks of the interrupted run tell
        previous = log.load()[1]
        dimension = None if previous is None else int(previous.shape[1])
    try:
        for batch in provider.batches(todo_texts):
            batch_ids = [todo_ids[i] for i in batch]
            vectors = provider.embed([todo_texts[i] for i in batch])
            vectors = _checked(vectors, batch_ids, dimension, normalize=bool(signature["normalized"]))
            dimension = vectors.shape[1]
            log.append(batch_ids, vectors, [todo_hashes[i] for i in batch])
            embedded += len(batch_ids)
            if on_progress is not None:
                on_progress(len(batch_ids))
    except NewsrecError as exc:  # provider gave up, or returned bad vectors: keep what is finished
        error = str(exc)
    meta = _commit(plan, log, signature, extra_meta or {})
    report = EmbedReport(
        store_path=plan.store_path,
        requested=len(plan.ids),
        embedded=embedded,
        reused=plan.reused,
        resumed=plan.resumed,
        failed=len(plan.todo) - embedded,
        fallbacks=len(plan.fallback_ids),
        count=int(meta.get("count", 0)),
        dimension=meta.get("dimension", dimension),
        seconds=time.perf_counter() - started,
        error=error,
        meta=meta,
        changed=list(plan.changed),
        unverified=plan.unverified,
    )
    if error is not None:
        saved = f"the {embedded} vectors embedded before it are saved" if embedded else "nothing new saved"
        raise EmbedRunError(f"{error} — stopped; {saved}, rerun to continue", report)
    return report


def _checked(vectors: np.ndarray, ids: list[str], dimension: int | None, *, normalize: bool) -> np.ndarray:
    """Reject wrong shapes and NaN/Inf from a provider; L2-normalise when asked."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise InputError(f"provider returned shape {vectors.shape} for {len(ids)} texts")
    if dimension is not None and vectors.shape[1] != dimension:
        raise InputError(f"provider returned {vectors.shape[1]}-d vectors, the store holds {dimension}-d")
    check_finite(vectors, ids=ids)
    if normalize:
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return vectors


def _commit(
    plan: EmbedPlan, log: ChunkLog, signature: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    """Fold the chunks into the store: old rows first (re-embedded ones replaced in place), then
    new rows in the order embedded; each row keeps the fingerprint of the text it was made from."""
    store = None if plan.replace else open_existing(plan.store_path)
    chunk_ids, chunk_vectors, chunk_hashes = log.load_with_hashes()
    if chunk_vectors is None:
        log.clear()
        if store is None:
            # nothing was embedded (e.g. the first request failed): leave no empty chunks/ or store folder
            with contextlib.suppress(OSError):
                plan.store_path.rmdir()  # only when empty: never a folder that holds anything else
            return {}
        return store.meta  # nothing new: the store stays as it is
    latest = {id_: i for i, id_ in enumerate(chunk_ids)}  # an ID embedded twice: the later holds
    if store is not None:
        ids = list(store.ids)
        vectors = np.array(store.vectors, dtype=np.float32)  # a copy: rows may be replaced
        hashes = list(store.hashes) if store.hashes is not None else [""] * len(ids)
        new = []
        for id_, i in latest.items():
            row = store.row_of(id_)
            if row is None:
                new.append(i)
            else:
                vectors[row], hashes[row] = chunk_vectors[i], chunk_hashes[i]
        ids += [chunk_ids[i] for i in new]
        vectors = np.concatenate([vectors, chunk_vectors[np.asarray(new, dtype=np.int64)]])
        hashes += [chunk_hashes[i] for i in new]
        meta = {**store.meta}
    else:
        rows = np.asarray(list(latest.values()), dtype=np.int64)
        ids = list(latest)
        vectors, hashes = chunk_vectors[rows], [chunk_hashes[i] for i in rows]
        meta = new_meta(signature, semantic=plan.semantic)
    embedded = set(chunk_ids)
    meta["fallback_texts"] = int(meta.get("fallback_texts", 0)) + sum(
        1 for i in plan.fallback_ids if i in embedded
    )
    meta.update(extra)
    commit(plan.store_path, ids, vectors, meta, hashes)
    log.clear()
    return {**meta, "count": len(ids), "dimension": int(vectors.shape[1])}
