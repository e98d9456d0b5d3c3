"""`newsrec data download` against an HTTP server on 127.0.0.1 serving small MIND zips."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from newsrec_cli.cli import app
from newsrec_cli.mind import load_dataset
from newsrec_cli.mind.synth import synthesize
from newsrec_cli.settings import SynthSettings

runner = CliRunner()


class MirrorServer(ThreadingHTTPServer):
    """Serves `files` by name; optionally honours Range, and cuts chosen first responses short."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.range_support = True
        self.cut_first: dict[str, int] = {}
        self.requests: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: MirrorServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        name = self.path.lstrip("/")
        asked = self.headers.get("Range")
        self.server.requests.append((name, asked))
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if asked and self.server.range_support:
            start = int(asked.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.server.cut_first.pop(name, None)
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True  # the client sees a transfer that broke off

    def log_message(self, *args: object) -> None:
        pass


def _zip_of(folder: Path, top: str | None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("news.tsv", "behaviors.tsv", "entity_embedding.vec"):
            zf.write(folder / name, f"{top}/{name}" if top else name)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    src = tmp_path_factory.mktemp("mirror")
    synthesize(src, SynthSettings(news=300, users=200, days=3, seed=5))
    # one archive with files at the root (as MIND's), one inside a single top folder
    return src, {
        "MINDdemo_train.zip": _zip_of(src / "train", None),
        "MINDdemo_dev.zip": _zip_of(src / "valid", "MINDdemo_dev"),
    }


@pytest.fixture()
def server(archives: tuple[Path, dict[str, bytes]]) -> Iterator[MirrorServer]:
    srv = MirrorServer(dict(archives[1]))
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def download(dest: Path, base_url: str, *extra: str):
    return runner.invoke(
        app, ["data", "download", "demo", "--dest", str(dest), "--base-url", base_url, "--json", *extra]
    )


def test_download_check_unpack(server: MirrorServer, archives, tmp_path: Path) -> None:
    src, _ = archives
    result = download(tmp_path / "mind", server.url)
    assert result.exit_code == 0, result.output
    rows = {r["archive"]: r for r in json.loads(result.stdout)}
    assert rows["MINDdemo_train.zip"]["folder"] == str(tmp_path / "mind" / "train")
    assert rows["MINDdemo_dev.zip"]["files"] == ["behaviors.tsv", "entity_embedding.vec", "news.tsv"]
    for split in ("train", "valid"):  # the single top folder of the dev zip is dropped
        for name in ("news.tsv", "behaviors.tsv"):
            assert (tmp_path / "mind" / split / name).read_bytes() == (src / split / name).read_bytes()
    assert not (tmp_path / "mind" / ".downloads").exists()
    assert set(load_dataset(tmp_path / "mind").splits) == {"train", "valid"}
    # a second run finds everything done and asks the server nothing
    served = len(server.requests)
    again = download(tmp_path / "mind", server.url)
    assert again.exit_code == 0 and all(r["skipped"] for r in json.loads(again.stdout))
    assert len(server.requests) == served


def test_resume_after_a_broken_transfer(server: MirrorServer, archives, tmp_path: Path) -> None:
    server.cut_first["MINDdemo_train.zip"] = 1000
    first = download(tmp_path / "mind", server.url)
    assert first.exit_code == 1
    assert "rerun the same command to resume" in first.stderr and first.stderr.strip().count("\n") == 0
    part = tmp_path / "mind" / ".downloads" / "MINDdemo_train.zip.part"
    assert part.stat().st_size == 1000
    second = download(tmp_path / "mind", server.url)
    assert second.exit_code == 0, second.output
    assert ("MINDdemo_train.zip", "bytes=1000-") in server.requests
    rows = {r["archive"]: r for r in json.loads(second.stdout)}
    assert rows["MINDdemo_train.zip"]["resumed_from"] == 1000
    assert rows["MINDdemo_train.zip"]["bytes"] == len(archives[1]["MINDdemo_train.zip"])
    assert (tmp_path / "mind" / "train" / "news.tsv").read_bytes() == (
        archives[0] / "train" / "news.tsv"
    ).read_bytes()


def test_server_without_range_restarts(server: MirrorServer, tmp_path: Path) -> None:
    server.range_support = False
    downloads = tmp_path / "mind" / ".downloads"
    downloads.mkdir(parents=True)
    (downloads / "MINDdemo_train.zip.part").write_bytes(b"garbage" * 100)
    result = download(tmp_path / "mind", server.url)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mind" / "train" / "news.tsv").exists()


def test_whole_part_file_is_finished(server: MirrorServer, archives, tmp_path: Path) -> None:
    downloads = tmp_path / "mind" / ".downloads"
    downloads.mkdir(parents=True)
    (downloads / "MINDdemo_train.zip.part").write_bytes(archives[1]["MINDdemo_train.zip"])
    result = download(tmp_path / "mind", server.url)  # the server answers 416: nothing left
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mind" / "train" / "behaviors.tsv").exists()


def test_corrupt_archive(server: MirrorServer, archives, tmp_path: Path) -> None:
    data = bytearray(archives[1]["MINDdemo_train.zip"])
    data[200:210] = b"\x00" * 10  # inside the first member's compressed data
    server.files["MINDdemo_train.zip"] = bytes(data)
    result = download(tmp_path / "mind", server.url)
    assert result.exit_code == 1
    assert "MINDdemo_train.zip is not a valid zip archive" in result.stderr
    assert not (tmp_path / "mind" / ".downloads" / "MINDdemo_train.zip").exists()
    assert not (tmp_path / "mind" / "train").exists()


def test_offline_and_missing(server: MirrorServer, tmp_path: Path, refused_port: int) -> None:
    offline = download(tmp_path / "a", f"http://127.0.0.1:{refused_port}")
    assert offline.exit_code == 1
    assert offline.stderr.strip().startswith("error: cannot reach http://127.0.0.1:")
    assert "offline?" in offline.stderr and offline.stderr.strip().count("\n") == 0
    del server.files["MINDdemo_dev.zip"]
    missing = download(tmp_path / "b", server.url)
    assert missing.exit_code == 1 and "MINDdemo_dev.zip: HTTP 404" in missing.stderr


def test_foreign_folder_needs_force(server: MirrorServer, tmp_path: Path) -> None:
    (tmp_path / "mind" / "train").mkdir(parents=True)
    (tmp_path / "mind" / "train" / "mine.txt").write_text("keep me")
    refused = download(tmp_path / "mind", server.url)
    assert refused.exit_code == 1 and "pass --force" in refused.stderr
    assert (tmp_path / "mind" / "train" / "mine.txt").exists()
    forced = download(tmp_path / "mind", server.url, "--force")
    assert forced.exit_code == 0 and not (tmp_path / "mind" / "train" / "mine.txt").exists()


def test_base_url_from_environment(server: MirrorServer, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["data", "download", "demo", "--dest", str(tmp_path / "m")],
        env={"NEWSREC_DOWNLOAD_BASE_URL": server.url},
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "valid" / "news.tsv").exists()
