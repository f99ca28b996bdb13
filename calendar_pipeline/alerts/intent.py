"""Daily or history: does a Slack run post partition D, or only replay it? Pure.

The rule (docs/ARCHITECTURE.md, "Daily or history"):

- Every run that computes ``due_alerts`` has a *reference time*: when somebody or
  something asked for it. The schedule and ``calendar-pipeline run`` stamp it on the run
  (tags ``calendar/reference_day`` and ``calendar/reference``: the tick's time, the
  command's start; retries copy them). A run without them takes the launch time of the
  backfill it belongs to (tag ``dagster/backfill``), else the creation time of the first
  run of its retry chain (tag ``dagster/root_run_id``, else the run itself). The
  *reference day* is that time's date in CALENDAR_TIMEZONE.
- Partition D is **daily** when D >= the reference day: its alerts are posted, even when
  the Slack run starts after midnight, is queued for hours or is a retry.
- A reference day more than `GRACE_DAYS` (1) before today is replaced by today
  (`within_grace`): a Slack run for a materialization of days ago posts no stale digest.
- D is **history** when D < the reference day (a backfill over past days, a past day
  materialized by hand, ``calendar-pipeline run --date <past day>``): nothing is posted
  and nothing is written to the delivery ledger, so replaying a day never suppresses an
  alert of a later day.

The Slack run's config can still force a mode for every partition (``send`` to post a
past day, ``record_only`` to mark keys delivered without posting, for a migration).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DAILY = "daily"
HISTORY = "history"

# Run tags stamped by the schedule and the CLI on the daily run, and by slack_alert_sensor
# and the CLI on the Slack run: a retry, which copies its run's tags, keeps the decision.
REFERENCE_DAY_TAG = "calendar/reference_day"
REFERENCE_TAG = "calendar/reference"


@dataclass(frozen=True)
class Reference:
    """When the partitions' run was asked for, and why that time (for logs and the UI)."""

    day: dt.date
    why: str  # e.g. "schedule tick 2026-11-24T06:00:00+00:00"

    @classmethod
    def of_schedule_tick(cls, tick: dt.datetime, timezone: str) -> Reference:
        """The reference of a run a schedule tick asked for: the tick's day."""
        return cls(tick.astimezone(zoneinfo.ZoneInfo(timezone)).date(), _tick_why(tick))

    def as_tags(self) -> dict[str, str]:
        return {REFERENCE_DAY_TAG: self.day.isoformat(), REFERENCE_TAG: self.why[:200]}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Reference | None:
        """The reference a run was given in its tags; ``None`` when it has none.

        Raises ``ValueError`` naming the tag when the tag is not a date.
        """
        value = tags.get(REFERENCE_DAY_TAG)
        if not value:
            return None
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"run tag {REFERENCE_DAY_TAG}={value!r} is not a date (YYYY-MM-DD)"
            ) from None
        return cls(day, tags.get(REFERENCE_TAG) or f"run tag {REFERENCE_DAY_TAG}")


def reference_for(
    *,
    timezone: str,
    backfill_id: str | None = None,
    backfill_launched_at: dt.datetime | None = None,
    root_run_id: str,
    root_created_at: dt.datetime,
) -> Reference:
    """The reference of a run from what Dagster knows of it (see the module doc)."""
    zone = zoneinfo.ZoneInfo(timezone)
    if backfill_id and backfill_launched_at is not None:
        at = backfill_launched_at
        why = f"backfill {backfill_id} launched {backfill_launched_at.isoformat()}"
    else:
        at, why = root_created_at, f"run {root_run_id[:8]} created {root_created_at.isoformat()}"
    return Reference(at.astimezone(zone).date(), why)


def _tick_why(tick: dt.datetime) -> str:
    return f"schedule tick {tick.isoformat()}"


GRACE_DAYS = 1
"""How old a Slack run's reference day may be and still post its digest: a run late by
hours (after midnight, queued, retried) posts; a run for a materialization of three days
ago (the daemon back after days down) does not."""


def within_grace(reference: Reference, today: dt.date, grace_days: int = GRACE_DAYS) -> Reference:
    """``reference``, or today's when it is older than ``grace_days``: the run's partitions
    before today are then history (not posted); their events still inside a threshold are
    due today too (the bucket rule, alerts/due.py), so today's digest has them."""
    if (today - reference.day).days <= grace_days:
        return reference
    return Reference(
        today,
        f"{reference.why}; {reference.day} is more than {grace_days} day(s) before today "
        f"({today}): its digest is not posted, its alerts still ahead join today's digest",
    )


def intent_for(partition: dt.date, reference: Reference) -> str:
    """``daily`` (post) or ``history`` (replay only) for partition D; see the module doc."""
    return DAILY if partition >= reference.day else HISTORY


def describe(partitions: Sequence[dt.date], reference: Reference) -> str:
    """One line for the run log: which partitions are daily, which are history, and why."""
    history = [p for p in partitions if intent_for(p, reference) == HISTORY]
    daily = [p for p in partitions if intent_for(p, reference) == DAILY]
    parts = []
    if history:
        parts.append(
            f"history (not posted, not recorded): {span(history)}, before the reference "
            f"day {reference.day}"
        )
    if daily:
        parts.append(f"daily (posted): {span(daily)}")
    return "; ".join(parts) + f" [reference: {reference.why}]"


def span(days: Sequence[dt.date | str]) -> str:
    """``2026-03-07..2026-03-09 (3 days)``, or the one day, for logs and descriptions."""
    if len(days) == 1:
        return str(days[0])
    return f"{days[0]}..{days[-1]} ({len(days)} days)"
