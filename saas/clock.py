"""The one place that knows what day it is.

Everything else takes an explicit ``as_of`` so that history can be replayed and tests
never depend on the wall clock.
"""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo


def now_utc() -> dt.datetime:
    """The current instant, timezone-aware in UTC."""
    return dt.datetime.now(dt.timezone.utc)


def today(tz_name: str = "UTC") -> dt.date:
    """Today's date in the given IANA time zone (a tenant's own day)."""
    return now_utc().astimezone(ZoneInfo(tz_name)).date()
