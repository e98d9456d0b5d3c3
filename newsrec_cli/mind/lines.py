"""Reading MIND's tab-separated files line by line: BOM, CRLF and no CSV quoting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from newsrec_cli.errors import InputError
from newsrec_cli.mind.report import BadLine, ReadReport

BOM = b"\xef\xbb\xbf"
ENCODING_FIELD = "encoding"


def iter_rows(
    path: Path, on_bad_lines: Literal["error", "skip"] = "error", report: ReadReport | None = None
) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its line ending); blank lines are skipped.

    Titles contain `"`, so no CSV quoting is applied: a row is split on tabs and nothing else.
    Lines are decoded one by one, so a line that is not UTF-8 is named by its number: an
    InputError, or with on_bad_lines="skip" a bad line in `report` (the other lines still read).
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:
        raise InputError("file not found", path=path) from None
    except IsADirectoryError:
        raise InputError("is a directory, expected a file", path=path) from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                reason = f"not UTF-8 text ({exc.reason} at byte {exc.start + 1} of the line)"
                if on_bad_lines == "error" or report is None:
                    raise InputError(reason, path=path, line=number) from None
                report.skipped.append(BadLine(str(path), number, ENCODING_FIELD, reason))
                continue
            if line.strip():
                yield number, line
