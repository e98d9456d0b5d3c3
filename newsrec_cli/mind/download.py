"""Download and unpack the official MIND archives: resumable, checked, extracted into split folders.

A download goes to `DEST/.downloads/NAME.part`; if it is interrupted, the next run asks the server
for the rest (HTTP Range) and appends. A finished archive is checked (its size against the server's
Content-Length, and against the published size when it comes from the official host, not from a
`--base-url` mirror; then every member's CRC with `zipfile.testzip`) before it is unpacked into
`DEST/train`, `DEST/valid` (MIND calls it dev) and `DEST/test`.

Microsoft publishes no checksums for these archives; the sizes below are the Content-Length the
official host reports (as recorded in microsoft/recommenders' tests). The zip CRCs catch a corrupt
transfer; they cannot prove the archive is the official one.
"""

from __future__ import annotations

import http.client
import json
import shutil
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from newsrec_cli.errors import NewsrecError

CHUNK = 1 << 20
MARKER = ".newsrec-download.json"


class DownloadError(NewsrecError):
    """The server could not be reached, refused, or sent something that is not the archive."""


@dataclass(frozen=True)
class Archive:
    name: str  # file name on the server, e.g. MINDsmall_train.zip
    split: str  # folder it is unpacked into: train, valid or test
    size: int | None  # bytes as published on the official host; None when unknown


OFFICIAL_BASE = {
    "demo": "https://recodatasets.z20.web.core.windows.net/newsrec",
    "small": "https://mind201910small.blob.core.windows.net/release",
    "large": "https://mind201910small.blob.core.windows.net/release",
}
DATASETS: dict[str, tuple[Archive, ...]] = {
    "demo": (
        Archive("MINDdemo_train.zip", "train", 17_372_879),
        Archive("MINDdemo_dev.zip", "valid", 10_080_022),
    ),
    "small": (
        Archive("MINDsmall_train.zip", "train", 52_952_752),
        Archive("MINDsmall_dev.zip", "valid", 30_945_572),
    ),
    "large": (
        Archive("MINDlarge_train.zip", "train", 530_196_631),
        Archive("MINDlarge_dev.zip", "valid", 103_456_245),
        Archive("MINDlarge_test.zip", "test", None),
    ),
}

Progress = Callable[[str, int, int | None], None]  # (archive name, bytes so far, total bytes or None)


@dataclass
class Downloaded:
    archive: Archive
    url: str
    folder: Path
    bytes: int
    resumed_from: int  # bytes already on disk when this run started (0: a fresh download)
    skipped: bool  # already downloaded and unpacked by an earlier run
    files: list[str]


def download_dataset(
    kind: str,
    dest: str | Path,
    *,
    base_url: str | None = None,
    force: bool = False,
    keep_archives: bool = False,
    timeout: float = 30.0,
    progress: Progress | None = None,
) -> list[Downloaded]:
    """Fetch, check and unpack every archive of `kind` (demo, small or large) into `dest`."""
    if kind not in DATASETS:
        raise DownloadError(f"unknown dataset {kind!r}; choose one of {', '.join(DATASETS)}")
    dest = Path(dest)
    base = (base_url or OFFICIAL_BASE[kind]).rstrip("/")
    official = base_url is None
    results = []
    for archive in DATASETS[kind]:
        folder = dest / archive.split
        url = f"{base}/{archive.name}"
        if not force and _already_unpacked(folder, archive):
            files = sorted(p.name for p in folder.iterdir() if p.name != MARKER)
            results.append(Downloaded(archive, url, folder, 0, 0, True, files))
            continue
        if folder.exists() and not force and not (folder / MARKER).exists() and any(folder.iterdir()):
            raise DownloadError(
                f"{folder} exists and was not written by newsrec data download; "
                "pass --force to replace it, or choose another --dest"
            )
        zip_path, size, resumed = fetch(
            url,
            dest / ".downloads" / archive.name,
            timeout=timeout,
            progress=progress,
            expected_size=archive.size if official else None,
        )
        files = unpack(zip_path, folder, archive)
        if not keep_archives:
            zip_path.unlink()
        results.append(Downloaded(archive, url, folder, size, resumed, False, files))
    downloads = dest / ".downloads"
    if not keep_archives and downloads.exists() and not any(downloads.iterdir()):
        downloads.rmdir()
    return results


def _already_unpacked(folder: Path, archive: Archive) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("archive") == archive.name and (folder / "news.tsv").exists()


def fetch(
    url: str,
    path: Path,
    *,
    timeout: float = 30.0,
    progress: Progress | None = None,
    expected_size: int | None = None,
) -> tuple[Path, int, int]:
    """Download `url` to `path`, resuming `path.part` when there is one; returns (path, size, resumed).

    A complete file already at `path` (from --keep-archives) is reused after its size check.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    report = progress or (lambda name, done, total: None)
    if path.exists() and (expected_size is None or path.stat().st_size == expected_size):
        report(path.name, path.stat().st_size, path.stat().st_size)
        return path, path.stat().st_size, path.stat().st_size
    part = path.with_name(path.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "newsrec"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part file is already whole
            return _finish(part, path, have, have, expected_size, url)
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(
            f"cannot reach {url} ({reason}); offline? "
            "Use --base-url (or NEWSREC_DOWNLOAD_BASE_URL) for a mirror"
        ) from None
    with response:
        start, total = _range_of(response, have)
        resumed = start
        mode = "ab" if start else "wb"  # a server that ignores Range sends the whole file again
        done = start
        report(path.name, done, total)
        try:
            with open(part, mode) as handle:
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    done += len(chunk)
                    report(path.name, done, total)
        except (http.client.HTTPException, OSError) as exc:
            raise DownloadError(
                f"{url}: transfer broke off after {done:,} bytes ({exc}); rerun the same command to resume"
            ) from None
    if total is not None and done != total:
        raise DownloadError(f"{url}: got {done:,} of {total:,} bytes; rerun the same command to resume")
    return _finish(part, path, done, resumed, expected_size, url)


def _range_of(response, have: int) -> tuple[int, int | None]:
    """(first byte this response starts at, total size of the file or None)."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        content_range = response.headers.get("Content-Range", "")  # bytes 100-999/1000
        try:
            span, total = content_range.split(" ", 1)[1].split("/")
            start = int(span.split("-")[0])
        except (IndexError, ValueError):
            raise DownloadError(
                f"server sent a partial response with a bad Content-Range {content_range!r}"
            ) from None
        if start != have:
            raise DownloadError(f"server resumed at byte {start:,}, expected {have:,}")
        return start, int(total) if total.isdigit() else None
    return 0, int(length) if length and length.isdigit() else None


def _finish(
    part: Path, path: Path, size: int, resumed: int, expected: int | None, url: str
) -> tuple[Path, int, int]:
    if expected is not None and size != expected:
        part.unlink()
        raise DownloadError(
            f"{url}: {size:,} bytes, but the published archive has {expected:,}; "
            "the partial file was removed, rerun to download again"
        )
    part.replace(path)
    return path, size, resumed


def unpack(zip_path: Path, folder: Path, archive: Archive) -> list[str]:
    """Check every member's CRC, then extract into `folder` (a single top folder in the zip is dropped)."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise zipfile.BadZipFile(f"member {bad} fails its CRC check")
            members = [m for m in zf.infolist() if not m.is_dir()]
            names = [PurePosixPath(m.filename) for m in members]
            for name in names:
                if name.is_absolute() or ".." in name.parts:
                    raise zipfile.BadZipFile(f"unsafe member path {name}")
            tops = {n.parts[0] for n in names}
            strip = len(tops) == 1 and all(len(n.parts) > 1 for n in names)
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            files = []
            for member, name in zip(members, names, strict=True):
                rel = PurePosixPath(*name.parts[1:]) if strip else name
                target = tmp.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
                files.append(str(rel))
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # a damaged member fails in zlib
        shutil.rmtree(folder.with_name(folder.name + ".tmp"), ignore_errors=True)
        zip_path.unlink(missing_ok=True)
        raise DownloadError(
            f"{zip_path.name} is not a valid zip archive ({exc}); it was removed, rerun to download again"
        ) from None
    (tmp / MARKER).write_text(
        json.dumps({"archive": archive.name, "size": zip_path.stat().st_size}), encoding="utf-8"
    )
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)
    return sorted(files)
