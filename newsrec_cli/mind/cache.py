"""Parse once: a behaviors.tsv is parsed on first read into `.npy` arrays that later reads memory-map.

MIND-large's train behaviors take about a minute to parse and the arrays it gives are what every
later command needs, so the first read writes them to a cache folder and later reads map them
(`np.load(mmap_mode="r", allow_pickle=False)`: pages are read from disk as touched, shared
between processes such as DDP ranks, and never pickled).

Where: `.newsrec-cache/` beside the behaviors.tsv (it goes with the data, and a temporary
dataset takes its cache with it), or, where that folder cannot be written (a read-only data
mount), `$XDG_CACHE_HOME/newsrec` (~/.cache/newsrec). `NEWSREC_CACHE=DIR` puts every cache
under DIR; `NEWSREC_CACHE=off` turns caching off.

The key: the file's size and the xxh3-128 hash of ALL its bytes, the reader's format version,
and the identity of the news list the indices refer to (a hash of the news IDs in vocabulary
order). Not the mtime, nor a sample of the bytes: an edit that keeps the size and restores the
mtime (`touch -r`) changes nothing else a cheaper key could see, and a stale cache gives wrong
numbers with exit 0. Hashing the whole file costs one read of it per load (about 0.3 s for
MIND-large's 1.2 GB train behaviors; `benchmarks/bench_cache_hash.py`), against about a minute
of parsing; a touched file with the same bytes still hits. Users and news IDs that behaviors mention but news.tsv lacks are stored as
this file's own lists and mapped onto the caller's vocabularies on load, so one split's cache
does not depend on the splits read before it. A cache for another key (a changed file, other
news) is replaced.

Writes are atomic: arrays go to a temporary folder that is renamed into place last, so Ctrl-C
leaves no half cache, and two processes parsing at once both end with a whole one. Only what
the reader would return is cached: a file with bad lines, read with on_bad_lines="error", is
parsed again (and fails with its usual error naming file, line and field).

A cache is never trusted as it lies: meta.json keeps the size and the xxh3-128 checksum of every
file, checked on each read (about 2.5 GB/s, so well under a second for MIND-large's train arrays,
against about a minute to parse them), and the arrays are checked for shape, offsets and index
ranges. A damaged cache (a shifted, truncated or edited file) is removed and the source parsed
again, with one warning saying so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import xxhash

from newsrec_cli.atomic import TMP_PREFIX, current_umask
from newsrec_cli.mind.behaviors import Impressions, read_behaviors
from newsrec_cli.mind.report import BadLine, ReadReport
from newsrec_cli.mind.vocab import Vocab

FORMAT = (
    3  # bump when the parse or the layout changes: old caches then miss (2: checksums, 3: whole-file key)
)
FOLDER = ".newsrec-cache"
ENV = "NEWSREC_CACHE"
META = "meta.json"
STALE_SECONDS = 24 * 3600  # a temporary folder this old is no parse in progress
ARRAYS = (
    "impression_ids",
    "users",
    "times",
    "history_offsets",
    "history",
    "candidate_offsets",
    "candidates",
    "labels",
)

ID_LISTS = ("extra_news.txt", "users.txt")
DTYPES = {  # what read_behaviors returns; a cached array of another type is damage
    "impression_ids": np.dtype(np.int64),
    "users": np.dtype(np.int32),
    "times": np.dtype("datetime64[s]"),
    "history_offsets": np.dtype(np.int64),
    "history": np.dtype(np.int32),
    "candidate_offsets": np.dtype(np.int64),
    "candidates": np.dtype(np.int32),
    "labels": np.dtype(np.int8),
}
HASH_CHUNK = 1 << 24  # bytes read per checksum step
log = logging.getLogger("newsrec.data")

Progress = Callable[[int, int], None]  # (bytes parsed, file size)


class DamagedCache(Exception):
    """A cached file that is not what was written (the message says which and how)."""


@dataclass
class CacheInfo:
    """Where a split's cache is and whether this read made it."""

    source: Path
    folder: Path
    hit: bool
    bytes: int  # size of the arrays on disk
    impressions: int
    candidates: int
    damage: str = ""  # why the cache found there was removed and the source parsed again


def cache_root(source: Path) -> Path | None:
    """The folder caches of `source` go into; None when caching is off."""
    env = os.environ.get(ENV, "").strip()
    if env.lower() in ("off", "0", "no", "false"):
        return None
    if env:
        return Path(env).expanduser() / _path_tag(source)
    beside = source.parent / FOLDER
    if _writable(beside):
        return beside
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "newsrec"
    return base / _path_tag(source)


def _path_tag(source: Path) -> str:
    """A folder name per source file path (a shared cache root holds many datasets)."""
    resolved = str(source.resolve())
    return f"{source.parent.name or 'data'}-{hashlib.blake2b(resolved.encode(), digest_size=6).hexdigest()}"


def _writable(folder: Path) -> bool:
    if folder.is_dir():
        return os.access(folder, os.W_OK | os.X_OK)
    return os.access(folder.parent, os.W_OK | os.X_OK)


def source_key(source: Path, news_ids: list[str]) -> str:
    """The cache key of a behaviors file read against `news_ids` (see the module docstring)."""
    return _key(source.stat().st_size, file_checksum(source), news_ids)


def _key(size: int, checksum: str, news_ids: list[str]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{FORMAT}|{size}|{checksum}|{news_identity(news_ids)}".encode())
    return digest.hexdigest()


def news_identity(news_ids: list[str]) -> str:
    """A hash of the news IDs in order: news index i of a cached array means news_ids[i-1]."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{len(news_ids)}\n".encode())
    digest.update("\n".join(news_ids).encode("utf-8"))
    return digest.hexdigest()


def load_behaviors(
    path: str | Path,
    news_ids: list[str],
    news_vocab: Vocab,
    user_vocab: Vocab,
    *,
    on_bad_lines: Literal["error", "skip"] = "error",
    report: ReadReport | None = None,
    progress: Progress | None = None,
    cache: bool = True,
) -> tuple[Impressions, CacheInfo | None]:
    """`read_behaviors`, through the cache: map the arrays of an earlier parse, or parse and save.

    `news_ids` are the news.tsv IDs in vocabulary order (index i+1 is news_ids[i]); `news_vocab`
    and `user_vocab` are the caller's, extended as read_behaviors would extend them.
    """
    path = Path(path)
    report = report if report is not None else ReadReport(path=str(path))
    root = cache_root(path) if cache else None
    if root is None:
        return read_behaviors(path, news_vocab, user_vocab, on_bad_lines=on_bad_lines, report=report), None
    size, checksum = path.stat().st_size, file_checksum(path)
    key = _key(size, checksum, news_ids)
    folder = root / f"{path.stem}-{key[:20]}"
    damage = ""
    if folder.is_dir():
        try:
            meta = _verified_meta(folder)
            if meta.get("key") != key:
                raise DamagedCache(f"{META} is for another key ({meta.get('key')})")
            if not (on_bad_lines == "error" and meta["skipped"]):
                imps = _map(folder, meta, news_ids, news_vocab, user_vocab, path)
                report.lines = meta["lines"]
                report.skipped.extend(BadLine(str(path), *bad) for bad in meta["skipped"])
                return imps, _info(path, folder, True, imps)
        except DamagedCache as exc:
            damage = str(exc)
            log.warning(f"the cache {folder} is damaged ({damage}): parsing {path} again")
            shutil.rmtree(folder, ignore_errors=True)

    # Parse against this file's own vocabularies: the news of news.tsv, then its unknown IDs.
    local_news = Vocab()
    local_news.ids = [news_vocab.ids[0], *news_ids]
    local_news.index = {id_: i + 1 for i, id_ in enumerate(news_ids)}
    local_users = Vocab()
    local_report = ReadReport(path=str(path))
    parsed = read_behaviors(
        path, local_news, local_users, on_bad_lines=on_bad_lines, report=local_report, progress=progress
    )
    meta = {
        "format": FORMAT,
        "source": str(path.resolve()),
        "key": key,
        "source_bytes": size,
        "source_xxh3_128": checksum,
        "lines": local_report.lines,
        "news": len(news_ids),
        "skipped": [[b.line, b.field, b.reason] for b in local_report.skipped],
    }
    # A cache is an optimisation: a full disk or a lost race must not fail the read. A file that
    # changed while it was parsed is not cached under the key of its older bytes.
    with contextlib.suppress(OSError):
        if source_key(path, news_ids) == key:
            _write(root, folder, parsed, local_news.ids[len(news_ids) + 1 :], local_users.ids[1:], meta)
    report.lines = local_report.lines
    report.skipped.extend(local_report.skipped)
    imps = _remap(
        parsed, local_news.ids[len(news_ids) + 1 :], local_users.ids[1:], news_ids, news_vocab, user_vocab
    )
    imps.source = str(path)
    return imps, _info(path, folder, False, imps, damage)


def _info(path: Path, folder: Path, hit: bool, imps: Impressions, damage: str = "") -> CacheInfo:
    size = sum(f.stat().st_size for f in folder.glob("*.npy")) if folder.is_dir() else 0
    return CacheInfo(path, folder, hit, size, len(imps), len(imps.candidates), damage)


def _read_meta(folder: Path) -> dict | None:
    try:
        return _verified_meta(folder)
    except DamagedCache:
        return None


def _verified_meta(folder: Path) -> dict:
    """meta.json of a cache whose every file has the size and checksum meta.json records."""
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DamagedCache(f"{META} unreadable: {exc}") from None
    files = meta.get("files") if isinstance(meta, dict) else None
    if meta.get("format") != FORMAT or not isinstance(files, dict):
        raise DamagedCache(f"{META} is not a format-{FORMAT} manifest")
    for name in (*(f"{a}.npy" for a in ARRAYS), *ID_LISTS):
        expected = files.get(name)
        file = folder / name
        if not isinstance(expected, dict) or not file.is_file():
            raise DamagedCache(f"{name} missing")
        size = file.stat().st_size
        if size != expected.get("bytes"):
            raise DamagedCache(f"{name} has {size:,} bytes, {expected.get('bytes')} were written")
        if file_checksum(file) != expected.get("xxh3_128"):
            raise DamagedCache(f"{name} does not match its checksum")
    return meta


def file_checksum(path: Path) -> str:
    """xxh3-128 of a file's bytes, read in chunks into one reused buffer."""
    digest = xxhash.xxh3_128()
    buffer = bytearray(max(1, min(HASH_CHUNK, path.stat().st_size)))  # small files: a small buffer
    view = memoryview(buffer)
    with open(path, "rb") as handle:
        while n := handle.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()


def _write(
    root: Path, folder: Path, imps: Impressions, extra_news: list[str], users: list[str], meta: dict
) -> None:
    """Arrays, ID lists and meta.json into a temporary folder, then one rename into place."""
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(TMP_PREFIX + "*"):  # left by a kill -9 (Ctrl-C cleans up after itself)
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=root))
    try:
        for name in ARRAYS:
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(getattr(imps, name)), allow_pickle=False)
        (tmp / "extra_news.txt").write_text("".join(f"{i}\n" for i in extra_news), encoding="utf-8")
        (tmp / "users.txt").write_text("".join(f"{u}\n" for u in users), encoding="utf-8")
        meta = dict(
            meta,
            files={
                file.name: {"bytes": file.stat().st_size, "xxh3_128": file_checksum(file)}
                for file in sorted(tmp.iterdir())
            },
        )
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp made it 0700
        for old in root.glob(f"{folder.name.rsplit('-', 1)[0]}-*"):
            if old != folder and not old.name.startswith(TMP_PREFIX):
                shutil.rmtree(old, ignore_errors=True)  # the cache of an older version of the file
        try:
            os.rename(tmp, folder)
        except OSError:
            if _read_meta(folder) is None:  # another process won the race with a whole cache
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _ids(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return text.split("\n")[:-1] if text else []


def _map(
    folder: Path, meta: dict, news_ids: list[str], news_vocab: Vocab, user_vocab: Vocab, source: Path
) -> Impressions:
    arrays = {}
    for name in ARRAYS:
        try:
            arrays[name] = np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError) as exc:
            raise DamagedCache(f"{name}.npy unreadable: {exc}") from None
    try:
        extra_news, users = _ids(folder / "extra_news.txt"), _ids(folder / "users.txt")
    except (OSError, UnicodeDecodeError) as exc:
        raise DamagedCache(f"an ID list is unreadable: {exc}") from None
    _check_arrays(arrays, len(news_ids) + len(extra_news), len(users))
    parsed = Impressions(**arrays, news_vocab=news_vocab, user_vocab=user_vocab)
    imps = _remap(parsed, extra_news, users, news_ids, news_vocab, user_vocab)
    imps.source = str(source)
    return imps


def _check_arrays(arrays: dict[str, np.ndarray], news: int, users: int) -> None:
    """Types, lengths, offsets and index ranges as read_behaviors makes them (min/max passes only)."""
    for name, dtype in DTYPES.items():
        if arrays[name].dtype != dtype or arrays[name].ndim != 1:
            raise DamagedCache(f"{name}.npy holds {arrays[name].dtype} {arrays[name].shape}, not 1-d {dtype}")
    n = len(arrays["impression_ids"])
    if len(arrays["users"]) != n or len(arrays["times"]) != n:
        raise DamagedCache(f"users.npy and times.npy must have one entry per impression ({n:,})")
    if len(arrays["labels"]) != len(arrays["candidates"]):
        raise DamagedCache("labels.npy and candidates.npy differ in length")
    for offsets, values in (("history_offsets", "history"), ("candidate_offsets", "candidates")):
        off = arrays[offsets]
        if len(off) != n + 1 or off[0] != 0 or off[-1] != len(arrays[values]) or (np.diff(off) < 0).any():
            raise DamagedCache(f"{offsets}.npy is not a run of offsets from 0 to the length of {values}.npy")
    for name, high in (("history", news), ("candidates", news), ("users", users)):
        values = arrays[name]
        if len(values) and (int(values.min()) < 1 or int(values.max()) > high):
            raise DamagedCache(f"{name}.npy has an index outside 1..{high:,}")
    labels = arrays["labels"]
    if len(labels) and (int(labels.min()) < -1 or int(labels.max()) > 1):
        raise DamagedCache("labels.npy has a label other than -1, 0 and 1")


def _remap(
    parsed: Impressions,
    extra_news: list[str],
    users: list[str],
    news_ids: list[str],
    news_vocab: Vocab,
    user_vocab: Vocab,
) -> Impressions:
    """Point the file's own user indices and unknown-news indices at the caller's vocabularies.

    Where they already agree (the first split read, full news coverage) the arrays are returned
    as they are, memory-mapped; otherwise the index arrays are mapped through a lookup table.
    """
    n = len(news_ids)
    news_map = None
    if extra_news:
        table = np.arange(n + 1 + len(extra_news), dtype=np.int32)
        table[n + 1 :] = [news_vocab.add(id_) for id_ in extra_news]
        if not np.array_equal(table[n + 1 :], np.arange(n + 1, n + 1 + len(extra_news))):
            news_map = table
    if len(user_vocab) == 1:
        # An empty vocabulary takes the file's users as they are (no dict built twice).
        user_vocab.ids.extend(users)
        user_vocab.index.update(zip(users, range(1, len(users) + 1), strict=True))
        user_map = None
    else:
        table = np.zeros(len(users) + 1, dtype=np.int32)
        table[1:] = [user_vocab.add(u) for u in users]
        user_map = None if np.array_equal(table, np.arange(len(users) + 1)) else table
    return Impressions(
        impression_ids=parsed.impression_ids,
        users=parsed.users if user_map is None else user_map[parsed.users],
        times=parsed.times,
        history_offsets=parsed.history_offsets,
        history=parsed.history if news_map is None else news_map[parsed.history],
        candidate_offsets=parsed.candidate_offsets,
        candidates=parsed.candidates if news_map is None else news_map[parsed.candidates],
        labels=parsed.labels,
        news_vocab=news_vocab,
        user_vocab=user_vocab,
        source=parsed.source,
    )
