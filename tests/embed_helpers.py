"""Helpers of the embed tests: an OpenAI-compatible HTTP server and tiny MIND folders.

`FakeEmbeddingServer` answers `POST /v1/embeddings` like the OpenAI API (float or base64
encoding, `dimensions`, `index` per item). A script of actions, one per request, makes it fail
on purpose: "429" and "500" (with a short Retry-After so the SDK retries fast), "malformed"
(a 200 with too few embeddings), "garbage" (a 200 that is not JSON), "401-echo" (an error that
echoes the key it got, as a careless proxy might).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

NEWS_COLUMNS = 8
MODEL_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


def fake_vector(text: str, dim: int) -> np.ndarray:
    """The server's deterministic 'embedding' of a text (float32, unnormalised)."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class FakeEmbeddingServer:
    """An OpenAI-compatible embeddings endpoint on 127.0.0.1, in a thread.

    Vectors have the requested `dimensions`, else `dim` when given, else the model's real size
    (16 for models it does not know).
    """

    def __init__(self, *, dim: int | None = None, script: Iterable[str] = ()) -> None:
        self.dim = dim
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.auth_headers: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append(body)
                    server.auth_headers.append(self.headers.get("Authorization", ""))
                    action = server.script.pop(0) if server.script else "ok"
                if self.path.rstrip("/") != "/v1/embeddings":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                elif action == "ok":
                    self._send(200, server.answer(body))
                elif action in ("429", "500"):
                    self._send(int(action), {"error": {"message": f"fake {action}", "type": "x"}}, retry=True)
                elif action.startswith("429-after:"):  # Retry-After in seconds, the standard header
                    self._send(429, {"error": {"message": "slow down"}}, after=action.split(":", 1)[1])
                elif action == "malformed":
                    answer = server.answer(body)
                    answer["data"] = answer["data"][:-1]
                    self._send(200, answer)
                elif action == "garbage":
                    self._send_raw(200, b"<html>oops</html>", "text/html")
                elif action == "401-echo":
                    key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    self._send(401, {"error": {"message": f"Incorrect API key provided: {key}"}})
                else:
                    raise ValueError(f"unknown action {action}")

            def _send(
                self, status: int, payload: dict[str, Any], retry: bool = False, after: str | None = None
            ) -> None:
                data = json.dumps(payload).encode("utf-8")
                self._send_raw(status, data, "application/json", retry, after)

            def _send_raw(
                self, status: int, data: bytes, kind: str, retry: bool = False, after: str | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                if retry:
                    self.send_header("retry-after-ms", "10")
                if after is not None:
                    self.send_header("Retry-After", after)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        dim = body.get("dimensions") or self.dim or MODEL_DIMENSIONS.get(body.get("model"), 16)
        data = []
        # Answer in reverse order: clients must sort by `index`.
        for index in reversed(range(len(texts))):
            vector = fake_vector(texts[index], dim)
            if body.get("encoding_format") == "base64":
                embedding: Any = base64.b64encode(vector.tobytes()).decode("ascii")
            else:
                embedding = vector.tolist()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(len(t.split()) for t in texts)
        return {
            "object": "list",
            "data": data,
            "model": body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def texts_seen(self) -> list[str]:
        return [t for r in self.requests for t in r["input"]]

    def __enter__(self) -> FakeEmbeddingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def write_news(folder: Path, rows: Iterable[tuple[str, ...]]) -> Path:
    """A MIND folder with a news.tsv of `rows` (padded to 8 columns) and an empty behaviors.tsv."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for row in rows:
        cells = list(row) + [""] * (NEWS_COLUMNS - len(row))
        lines.append("\t".join(cells))
    (folder / "news.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "behaviors.tsv").write_text("", encoding="utf-8")
    return folder


def copy_news(source: Path, folder: Path, *, start: int = 0, stop: int | None = None) -> Path:
    """A MIND folder with lines [start, stop) of a real news.tsv."""
    lines = source.read_text(encoding="utf-8").splitlines()[start:stop]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "news.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "behaviors.tsv").write_text("", encoding="utf-8")
    return folder
