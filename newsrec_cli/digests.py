"""SHA-256 of a file, the one helper for it (pinned model files, exported files, a run's weights)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of the file's bytes, read in blocks by `hashlib.file_digest` (no whole-file copy)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
