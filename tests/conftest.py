"""Shared fixtures: the real MIND fixtures beside the repo, and small hand-made MIND folders."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

# pytest-xdist gives its workers COLUMNS (the controller's width), and a rich Console created
# while COLUMNS is set keeps that width for good: the tests that pass their own COLUMNS to a
# command would see 80. Without it, as in a serial run, the consoles read COLUMNS at each print.
os.environ.pop("COLUMNS", None)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real MIND rows); tests that need it skip when it is absent."""
    if not (SHARED_DATA / "mind_tiny" / "news.tsv").exists():
        pytest.skip(f"real MIND fixtures not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _behaviors_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Parse-once caches of the tests go to a temporary folder, never beside ../shared/data."""
    from newsrec_cli.mind.cache import ENV

    if ENV not in os.environ:
        os.environ[ENV] = str(tmp_path_factory.mktemp("behaviors-cache"))


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections for the whole test: bound here and never listened
    on, so no other process (another pytest-xdist worker's server) can take it meanwhile."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


# Seconds each heavy test file took, serially (`--durations`, this 2-core machine at load 10 to 16
# from other jobs; tune and ablate were measured at load 1 and scaled by 3): only the order
# matters. pytest-xdist's --dist loadfile hands out whole files in collection order, and by
# default it first sorts them by their number of tests: a file of one long test (the quick
# quality table, the train lock) then started last and ran alone while the other worker idled.
# Heaviest first, the short files fill in at the end and the workers finish together. Files not
# named here are short; they keep their order after these.
HEAVY_FILES = {
    "test_serve.py": 445,
    "test_bench_quality.py": 400,
    "test_serve_popularity.py": 297,
    "test_train_quality.py": 243,
    "test_finetune_text.py": 240,
    "test_serve_robust.py": 218,
    "test_diagnose_model.py": 206,
    "test_train_kills.py": 182,
    "test_ddp.py": 155,
    "test_learning.py": 150,
    "test_tune.py": 135,
    "test_train_lock.py": 100,
    "test_ui.py": 90,
    "test_ablate.py": 80,
    "test_serve_cache.py": 54,
    "test_embed_onnx.py": 48,
    "test_docs.py": 37,
}


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist is loaded
        config.option.loadscopereorder = False  # keep the order of pytest_collection_modifyitems


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Heaviest files first (a stable sort: within a file, the tests keep their order)."""
    items.sort(key=lambda item: -HEAVY_FILES.get(item.path.name, 0))
