"""Reading MIND's tab-separated files line by line: BOM, CRLF and no CSV quoting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from newsrec_cli.errors import InputError


def iter_rows(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its line ending); blank lines are skipped.

    Titles contain `"`, so no CSV quoting is applied: a row is split on tabs and nothing else.
    """
    try:
        handle = open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except IsADirectoryError:
        raise InputError("is a directory, expected a file", path=path) from None
    with handle:
        try:
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield number, line
        except UnicodeDecodeError as exc:
            raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=path) from None
