"""Atomic file writes: write a temporary file beside the target, flush it to disk, rename.

A reader (or a rerun after kill -9) sees the old file or the new one, never half of one. The
file gets the mode a plain `open(path, "w")` would give (0666 less the umask): mkstemp makes
its temporary files 0600, which would hide a shared run folder from the rest of the group.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

TMP_PREFIX = ".tmp-"
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it and set it back
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode of a new regular file: 0666 less the umask."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_handle(path: Path) -> Iterator[io.BufferedWriter]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), file_mode())
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Ctrl-C included: never leave the temporary file behind.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def text_handle(path: Path) -> Iterator[io.TextIOWrapper]:
    """`atomic_handle` for text written line by line: UTF-8, "\n" line endings on every OS."""
    with atomic_handle(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
        try:
            yield text
            text.flush()
        finally:
            text.detach()  # atomic_handle closes the file, after its fsync


def write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_handle(path) as handle:
        handle.write(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_handle(path) as handle:
        np.save(handle, array, allow_pickle=False)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_handle(path) as handle:
        np.savez(handle, **arrays)


def remove_temporaries(folder: Path) -> None:
    """Delete the temporary files a killed writer may have left in `folder`."""
    if folder.is_dir():
        for leftover in folder.glob(TMP_PREFIX + "*"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
