"""Times the service compares (`published`, `since`): time-zone-aware, in UTC.

A time with an offset is converted to UTC; a naive time (no offset) is read as UTC; a date alone
is 00:00 UTC of that day. Numbers are refused: the API takes ISO 8601 text only.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import numpy as np


def iso_text(value: Any) -> Any:
    """pydantic before-validator: only strings become dates (pydantic would read 0 as 1970)."""
    if value is not None and not isinstance(value, str):
        raise ValueError("must be an ISO 8601 date or date-time string, such as 2019-11-15T08:30:00Z")
    return value


def as_utc(value: date | datetime) -> datetime:
    """`value` as an aware UTC datetime (naive: read as UTC; a date: its 00:00 UTC)."""
    if not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 in UTC: a 422, not a 500
        raise ValueError("out of range: in UTC it falls outside the years 1 to 9999") from None


def utc_seconds(value: str | date | datetime | None) -> np.datetime64:
    """ISO text (or a date/datetime) as UTC seconds for numpy comparisons; NaT when absent or unreadable."""
    if value is None or value == "":
        return np.datetime64("NaT")
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return np.datetime64("NaT")
    return np.datetime64(as_utc(value).replace(tzinfo=None), "s")
