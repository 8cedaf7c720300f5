"""The one clock of the records: UTC, ISO 8601, to the second (``2026-11-30T08:34:00+00:00``)."""

from __future__ import annotations

import datetime as _dt

__all__ = ["utc_stamp"]


def utc_stamp() -> str:
    """Now, in UTC, as ISO 8601 with the offset written out: sortable, and the same on every host."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
