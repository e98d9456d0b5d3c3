"""scripts/install.sh: which wheel index torch comes from (`--torch-index` prints the choice), and
the package metadata that setuptools builds without a deprecation warning."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _choice(tmp_path: Path, *, gpu: bool | None, index: str, **env: str) -> tuple[str, str, float]:
    """Run `install.sh --torch-index` with a fake nvidia-smi (None: the machine's own PATH)."""
    path = os.environ["PATH"]
    if gpu is not None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        smi = bin_dir / "nvidia-smi"
        # without a GPU (or driver) nvidia-smi fails; with one, -L lists it
        body = (
            'echo "GPU 0: NVIDIA H200 (UUID: GPU-0)"' if gpu else 'echo "NVIDIA-SMI has failed" >&2; exit 9'
        )
        smi.write_text(f"#!/bin/sh\n{body}\n")
        smi.chmod(0o755)
        path = f"{bin_dir}:{path}"
    run_env = {**os.environ, "PATH": path, "NEWSREC_CPU_INDEX": index, "NEWSREC_PROBE_TIMEOUT": "3"}
    run_env.pop("NEWSREC_TORCH_INDEX", None)
    run_env.update(env)
    start = time.monotonic()
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install.sh"), "--torch-index"],
        capture_output=True,
        text=True,
        env=run_env,
        timeout=60,
    )
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    chosen, why = result.stdout.rstrip("\n").split("\t")
    return chosen, why, seconds


@pytest.fixture
def index_url(tmp_path: Path) -> Iterator[str]:
    """A local HTTP server standing in for the CPU wheel index (it serves a torch/ folder)."""
    root = tmp_path / "index"
    (root / "torch").mkdir(parents=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_no_gpu_and_cpu_index_reachable_uses_it(tmp_path: Path, index_url: str) -> None:
    chosen, why, _ = _choice(tmp_path, gpu=False, index=index_url)
    assert chosen == index_url
    assert "no NVIDIA GPU" in why


@pytest.mark.skipif(
    any(Path(d, "nvidia-smi").exists() for d in ("/usr/bin", "/bin")), reason="nvidia-smi is in /usr/bin"
)
def test_no_gpu_and_no_nvidia_smi_uses_the_cpu_index(tmp_path: Path, index_url: str) -> None:
    chosen, _, _ = _choice(tmp_path, gpu=None, index=index_url, PATH="/usr/bin:/bin")
    assert chosen == index_url


def test_gpu_keeps_plain_pip(tmp_path: Path, index_url: str) -> None:
    chosen, why, _ = _choice(tmp_path, gpu=True, index=index_url)
    assert chosen == "pip"
    assert "NVIDIA GPU is present" in why


def test_unreachable_index_falls_back_to_pip_fast(tmp_path: Path, refused_port: int) -> None:
    index = f"http://127.0.0.1:{refused_port}/whl/cpu"
    # A probe timeout far beyond _choice's 60 s limit: the refused probe must end at once, not
    # time out (no wall-clock budget of a few seconds, which a busy machine could overrun).
    chosen, why, _ = _choice(tmp_path, gpu=False, index=index, NEWSREC_PROBE_TIMEOUT="600")
    assert chosen == "pip"
    assert "unreachable" in why and index in why


def test_override(tmp_path: Path, index_url: str) -> None:
    assert _choice(tmp_path, gpu=False, index=index_url, NEWSREC_TORCH_INDEX="pip")[0] == "pip"
    url = "https://example.invalid/simple"
    assert _choice(tmp_path, gpu=True, index=index_url, NEWSREC_TORCH_INDEX=url)[0] == url


def test_license_is_an_spdx_string() -> None:
    """setuptools >= 77 warns that the `license = {text = ...}` table is deprecated."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "MIT"
    requires = project["build-system"]["requires"]
    assert "setuptools>=77" in requires
