"""Typed errors of the engine.

The engine raises these with the file, line and field that went wrong; the command layer prints
the message as one line on stderr and exits with `exit_code`. Nothing here knows the terminal.
"""

from __future__ import annotations

from pathlib import Path

from newsrec_cli.plural import agree, counted


class NewsrecError(Exception):
    """Base of every error a user is meant to read. `str(err)` is the one-line message."""

    exit_code: int = 1


class InputError(NewsrecError):
    """A file (or a value in it) that cannot be used: names the file, line and field."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.reason = message
        where = ""
        if self.path is not None:
            where = self.path + (f":{line}" if line is not None else "")
        parts = [p for p in (where, f"field {field}" if field else "") if p]
        prefix = ", ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class SettingsError(NewsrecError):
    """A setting with a value that is not allowed (names field, value and what is allowed)."""

    exit_code = 2


class MissingVectorsError(NewsrecError):
    """Some news (or entities) have no vector in a store, and the settings do not allow gaps."""

    def __init__(self, missing: list[str], total: int, store: str | Path) -> None:
        self.missing = missing
        first = ", ".join(missing[:5])
        more = "" if len(missing) <= 5 else ", ..."
        super().__init__(
            f"{store}: {len(missing):,} of {counted(total, 'ID')} {agree(len(missing), 'has', 'have')} no vector (first: {first}{more}); "
            "embed them (newsrec embed) or pass --missing learned"
        )
