"""The freshness rule of ``raw_snapshot``: each day's partition exists by its deadline.

The daily schedule runs today's partition at CALENDAR_SCHEDULE_HOUR; its deadline is two
hours later, the same day (capped at 23:59). Once a day's deadline has passed, that day's
partition (with ``end_offset=1``, the partition holding the deadline) must have been
materialized, whatever else was: a history backfill run today does not make today's
partition exist. This is the rule of Dagster's ``build_time_partition_freshness_checks``
with ``deadline_cron`` (the check ``raw_snapshot:freshness_check`` the UI shows, defs/
freshness.py); :func:`judge` applies it to the same records, so the Slack message and the
UI agree. A *stale period* starts when a deadline passes without its partition and ends
when the expected partition exists: one message per period.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

DEADLINE_AFTER_SCHEDULE = dt.timedelta(hours=2)  # the run, and its retries, have this long
_LAST_MINUTE = 23 * 60 + 59


def deadline_time(schedule_hour: int) -> dt.time:
    """The time of day by which the day's partition must exist: two hours after the
    schedule, but on the same day (a deadline after midnight would expect tomorrow's)."""
    minutes = schedule_hour * 60 + int(DEADLINE_AFTER_SCHEDULE.total_seconds() // 60)
    minutes = min(minutes, _LAST_MINUTE)
    return dt.time(minutes // 60, minutes % 60)


def deadline_cron(schedule_hour: int) -> str:
    """:func:`deadline_time` as the cron string Dagster's freshness check takes."""
    at = deadline_time(schedule_hour)
    return f"{at.minute} {at.hour} * * *"


def latest_deadline(now: dt.datetime, at: dt.time, timezone: str) -> dt.datetime:
    """The newest deadline at or before ``now``, in ``timezone``. Its date is the
    partition expected to exist (the newest partition at that moment, ``end_offset=1``)."""
    local = now.astimezone(ZoneInfo(timezone))
    deadline = dt.datetime.combine(local.date(), at, tzinfo=local.tzinfo)
    if deadline > local:
        deadline = dt.datetime.combine(local.date() - dt.timedelta(days=1), at, local.tzinfo)
    return deadline


@dataclass(frozen=True)
class Freshness:
    stale: bool
    alert: bool  # stale, and nobody has been told about this stale period yet
    why: str


def judge(
    expected: str,
    deadline: dt.datetime,
    now: dt.datetime,
    *,
    materialized: bool,
    ever: bool,
    alerted: bool,
) -> Freshness:
    """``expected``: the partition due by ``deadline``; ``materialized``: whether it has a
    materialization; ``ever``: whether any partition has one; ``alerted``: this stale
    period was already told."""
    if materialized:
        return Freshness(False, False, f"fresh: partition {expected} exists (due {_at(deadline)})")
    if not ever:
        # A new deployment before its first run: nothing has stopped, nothing to tell.
        return Freshness(False, False, "raw_snapshot was never materialized: nothing to judge")
    late = f"{(now - deadline).total_seconds() / 3600:.1f} h"
    if alerted:
        return Freshness(True, False, f"stale: partition {expected} {late} late, already alerted")
    why = f"stale: partition {expected} missing, due {_at(deadline)} ({late} late)"
    return Freshness(True, True, why)


def missing_since(newest: str) -> str:
    """The first missing day after the newest partition."""
    return (dt.date.fromisoformat(newest) + dt.timedelta(days=1)).isoformat()


def _at(deadline: dt.datetime) -> str:
    return deadline.strftime("%Y-%m-%d %H:%M %Z")
