"""Text helpers every layer may use (a leaf module: it imports nothing of the project)."""

from __future__ import annotations

import datetime as dt

ELLIPSIS = "…"
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # not strftime: locale-proof


def weekday_date(day: dt.date | str) -> str:
    """`Tue 2027-05-04`: how every line people read shows a day."""
    if isinstance(day, str):
        day = dt.date.fromisoformat(day)
    return f"{WEEKDAYS[day.weekday()]} {day.isoformat()}"


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters, cut at a word boundary with an
    ellipsis (never in the middle of a word, a URL or a number, unless one word alone is
    longer than half the limit)."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    cut = flat[: max(1, limit - 1)]
    space = cut.rfind(" ")
    if space >= limit // 2:  # a boundary not too far back; else keep the hard cut
        cut = cut[:space]
    return cut.rstrip(" ,;:.-(") + ELLIPSIS


def first_ids(ids: list[str], limit: int = 20) -> str | None:
    """`a, b, c and 5 more`: the first `limit` ids for a check description."""
    if not ids:
        return None
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more
