"""Counts in messages: thousands separators and the right form of the noun ("1 row", "2,300 rows")."""

from __future__ import annotations


def counted(n: int, singular: str, plural: str | None = None) -> str:
    """`n` with separators and `singular`, or `plural` (default: singular + "s") unless n is 1."""
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


def agree(n: int, singular: str, plural: str) -> str:
    """The verb (or any word) that agrees with `n`: agree(1, "is", "are") -> "is"."""
    return singular if n == 1 else plural
