"""Outputs respect the umask (tempfile.mkstemp alone would leave them 0600): a run folder shared
with a group is readable by it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from newsrec_cli import atomic
from newsrec_cli.cli import app
from newsrec_cli.embed.store import commit, new_meta
from newsrec_cli.runs import checkpoint

runner = CliRunner()


@pytest.fixture
def umask_027() -> Iterator[None]:
    previous = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("umask", "expected"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)]
)
def test_atomic_writes_get_0666_less_the_umask(tmp_path: Path, umask: int, expected: int) -> None:
    previous = os.umask(umask)
    try:
        assert atomic.current_umask() == umask
        atomic.write_text(tmp_path / "a.txt", "x")
        atomic.write_npy(tmp_path / "b.npy", np.zeros(3, dtype=np.float32))
        with atomic.atomic_handle(tmp_path / "c.bin") as handle:
            handle.write(b"y")
    finally:
        os.umask(previous)
    for name in ("a.txt", "b.npy", "c.bin"):
        assert mode(tmp_path / name) == expected, name


def test_a_store_and_a_run_are_group_readable(umask_027: None, tmp_path: Path) -> None:
    store = tmp_path / "store"
    commit(store, ["N1"], np.ones((1, 4), dtype=np.float32), new_meta({"kind": "news", "dimension": 4}))
    result = runner.invoke(
        app, ["data", "synth", "--out", str(tmp_path / "data"), "--news", "60", "--users", "30"]
    )
    assert result.exit_code == 0, result.output
    checkpoint.save(tmp_path / "run" / "last.pt", {"model": {"w": torch.zeros(2)}})
    files = [p for p in [*store.rglob("*"), *(tmp_path / "data").rglob("*")] if p.is_file()]
    files.append(tmp_path / "run" / "last.pt")
    assert files
    for path in files:
        assert mode(path) == 0o640, path
