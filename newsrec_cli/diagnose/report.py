"""The diagnosis framework: checks with a status, tables of numbers, a report and its verdict.

Every check function returns a `Check`; a `Report` holds the checks of one command and the tables
of numbers they were computed from. The verdict is the worst status, with the messages of the
checks that gave it as reasons. Nothing here knows the terminal: the command layer renders a
report as rich tables or as JSON (`Report.to_dict`), from the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from newsrec_cli.plural import counted

Number = int | float
Cell = str | int | float | None


class Status(IntEnum):
    """Ordered so that the verdict is `max(statuses)`."""

    OK = 0
    WARN = 1
    FAIL = 2

    def __str__(self) -> str:
        return self.name


@dataclass
class Check:
    """One finding: what was checked, how it went, the numbers, and what to do about it."""

    name: str
    status: Status
    value: Number | dict[str, Any] | None
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.status),
            "value": clean(self.value),
            "message": self.message,
            "fix": self.fix,
        }


@dataclass
class Table:
    """Numbers for a human: a title, column names and rows (cells stay numbers until rendered)."""

    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    percent: tuple[str, ...] = ()  # columns holding shares in [0, 1], shown as percentages

    def add(self, *cells: Cell) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"table {self.title!r}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def to_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": clean(self.rows),
            "percent": list(self.percent),
        }


@dataclass
class Report:
    """The checks and tables of one `newsrec diagnose` command, plus free-form context lines."""

    command: str
    checks: list[Check] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)  # raw numbers a script may want

    @property
    def status(self) -> Status:
        return max((c.status for c in self.checks), default=Status.OK)

    @property
    def reasons(self) -> list[str]:
        """Messages of the checks at the verdict's status (all checks' names when everything is OK)."""
        worst = self.status
        if worst == Status.OK:
            return [f"{counted(len(self.checks), 'check')} passed"]
        return [f"{c.name}: {c.message}" for c in self.checks if c.status == worst]

    @property
    def fixes(self) -> list[str]:
        """The fixes of the WARN and FAIL checks, each once, named by the checks that suggest it."""
        by_fix: dict[str, list[str]] = {}
        for c in self.checks:
            if c.status > Status.OK and c.fix:
                by_fix.setdefault(c.fix, []).append(c.name)
        return [f"{', '.join(names)}: {fix}" for fix, names in by_fix.items()]

    @property
    def exit_code(self) -> int:
        """0 for OK and WARN, 1 for FAIL, so a CI job can gate on it."""
        return 1 if self.status == Status.FAIL else 0

    def extend(self, other: Report) -> None:
        self.checks += other.checks
        self.tables += other.tables
        self.notes += other.notes
        self.values.update(other.values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "verdict": str(self.status),
            "reasons": self.reasons,
            "fixes": self.fixes,
            "checks": [c.to_dict() for c in self.checks],
            "tables": [t.to_dict() for t in self.tables],
            "notes": self.notes,
            "values": clean(self.values),
        }


def clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python numbers, NaN and Inf to strings (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
