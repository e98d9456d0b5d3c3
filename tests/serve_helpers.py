"""Real processes for the serve tests: a redis-server and `newsrec serve` (uvicorn) on loopback ports.

No port is picked here and bound later (another pytest-xdist worker could take it meanwhile):
`newsrec serve --port 0` binds a free one itself and names it in its serving line, and a
redis-server is started on a free port again until the one answering there is this process.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

STARTS = 5  # redis-server on another free port after one was taken in the meantime
SERVING = re.compile(r"serving\s.*?http://127\.0\.0\.1:(\d+)", re.S)  # rich may wrap the line


def free_port() -> int:
    """A port free now, for a server that binds it later (and may find it taken then)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_log(path: Path, offset: int, pattern: re.Pattern[str]) -> int | None:
    """The port a server named in its log after `offset` (bytes), if it has yet."""
    with path.open("rb") as f:
        f.seek(offset)
        found = pattern.search(f.read().decode("utf-8", "replace"))
    return int(found.group(1)) if found else None


def redis_binary() -> str:
    """redis-server from PATH (Debian's package, installed by .ci/run); skip, saying why, without it."""
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if path is None:
        reason = "redis-server not found: install Debian's redis-server (apt-get install redis-server)"
        print(reason)
        pytest.skip(reason)
    return path


class Redis:
    def __init__(self) -> None:
        for _ in range(STARTS):
            self.port = free_port()
            self.proc = subprocess.Popen(
                [
                    redis_binary(),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._answers():
                return
            self.stop()
        raise RuntimeError(f"redis-server did not start on {STARTS} free ports")

    def _answers(self) -> bool:
        """True once this redis-server answers on its port; False when it exits (the port was
        taken after it was picked) or another process answers there for 60 s (a bound on failure
        only: a starting redis-server on a loaded machine answers as soon as it listens)."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    if client.info("server")["process_id"] == self.proc.pid:
                        return True
                except redis.RedisError:  # not listening yet
                    pass
                time.sleep(0.05)
            return False
        finally:
            client.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Server:
    """`python -m newsrec_cli serve SOURCE --port 0 ...` on loopback, waited for until ready; the
    port is the one it names (a restart may get another)."""

    def __init__(self, source: Path, *args: str, log: Path) -> None:
        self.source, self.args, self.log_path = source, args, log
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.log = self.log_path.open("a")
        cmd = [sys.executable, "-m", "newsrec_cli", "serve", str(self.source), "--port", "0", *self.args]
        # The environment as the user's: the server caps its own compute threads.
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        port = None
        deadline = time.monotonic() + 300  # bounds a hang; a loaded machine loads in well under it
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            port = port or port_in_log(self.log_path, offset, SERVING)
            if port is None:  # not bound yet
                time.sleep(0.1)
                continue
            self.port = port
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=1)
                if r.status_code == 200:
                    return
                if r.json().get("status") == "failed":
                    raise RuntimeError(f"server failed to load: {r.json()}")
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready in 120 s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def post(self, path: str, body: dict) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, timeout=30)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=30)


def _schemathesis() -> str:
    """The schemathesis CLI of this environment (a dev dependency), else the one on PATH."""
    beside = Path(sys.executable).with_name("schemathesis")
    found = str(beside) if beside.exists() else shutil.which("schemathesis")
    if found is None:
        pytest.fail("schemathesis is not installed: pip install -e '.[dev]'")
    return found


def run_schemathesis(server: Server, tmp_path: Path, examples: int) -> str:
    """`schemathesis run --checks all` against the server's live schema, with tests/schemathesis.toml;
    fails the test on any failure and gives the summary. It runs in tmp_path: its cache
    (.schemathesis/ in the working directory) starts empty each time."""
    cmd = [
        _schemathesis(),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{server.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        "--seed",
        "1",
        "--no-color",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    assert re.search(r"\d+ generated, \d+ passed", summary), summary
    return summary
