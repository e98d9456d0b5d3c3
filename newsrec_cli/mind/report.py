"""What a reader skipped, so nothing is dropped silently."""

from __future__ import annotations

from dataclasses import dataclass, field

from newsrec_cli.plural import counted

FIRST_FEW = 5


@dataclass(frozen=True)
class BadLine:
    path: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}, field {self.field}: {self.reason}"


@dataclass
class ReadReport:
    """Lines skipped (on_bad_lines=skip) and entity JSON that did not parse, by column."""

    path: str
    lines: int = 0
    skipped: list[BadLine] = field(default_factory=list)
    bad_entities: dict[str, list[BadLine]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.skipped and not any(self.bad_entities.values())

    def summary(self) -> str:
        """One line: how many skipped and which first."""
        parts = []
        if self.skipped:
            first = "; ".join(str(b) for b in self.skipped[:FIRST_FEW])
            parts.append(f"{counted(len(self.skipped), 'bad line')} skipped in {self.path} (first: {first})")
        for column, bad in self.bad_entities.items():
            if bad:
                lines = ", ".join(str(b.line) for b in bad[:FIRST_FEW])
                parts.append(f"{len(bad):,} unparsable {column} in {self.path} (lines {lines})")
        return "; ".join(parts)
