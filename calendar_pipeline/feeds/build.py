"""Each event's record in the calendar feeds from one day to the next, and the iCalendar
text of a feed. Pure functions: plain values in, plain values out (no files, no Dagster).

A feed record (one per watched event, kept in `feeds/state.json` per day) holds what a
subscribed calendar app needs to update the event in place rather than duplicate it:

- **UID**: derived from (entity id, event id) when the event is first seen, then carried:
  an event re-issued by its feed under another id with the same title and start (UID
  churn, matched by (title, start) as alerts/changes.py matches it) keeps the UID of the
  one it replaces, so the same event never shows twice.
- **SEQUENCE**: 0 when first seen, +1 on each day its date, time or title changes, and +1
  when it is cancelled (or comes back after a cancellation).
- **cancelled_on**: the day the cancellation was reported: explicitly by the feed
  (`STATUS:CANCELLED`, seen in the snapshot) or silently (absent from
  CALENDAR_CANCEL_AFTER fresh snapshots in a row: the `cancelled` rows of the table
  `event_changes`). A cancelled event stays in the feed with `STATUS:CANCELLED` for
  `CANCELLED_KEPT_DAYS`, so subscribed calendars remove it, then leaves it.

An event absent from the day's snapshot but not (yet) reported cancelled (a one-day
glitch of its feed, a broken feed) stays in the feed as last known until its date passes;
an entity removed from the universe takes its events out of the feeds.

The records of day D are a function of D's snapshot, D's stored changes and the records
of the last day before D: re-running a day gives the same records and the same bytes
(`DTSTAMP` is the start of the publishing day, not the clock).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo

import icalendar

CANCELLED_KEPT_DAYS = 7
PRODID = "-//calendar_pipeline//calendar feed//EN"
REFRESH = dt.timedelta(hours=1)  # REFRESH-INTERVAL and X-PUBLISHED-TTL
ALL_FEED = "all"
UID_DOMAIN = "calendar-pipeline"

Key = tuple[str, str]  # (entity_id, event_id)


@dataclass(frozen=True)
class FeedRecord:
    """One event as the feeds publish it, and what carries it from day to day."""

    entity_id: str
    event_id: str
    uid: str
    sequence: int
    event_date: str  # ISO date
    start: str | None  # ISO datetime of a timed event (with its offset, or floating)
    title: str
    entity_name: str
    source: str
    channel: str | None
    thresholds: tuple[int, ...] | None  # the entity's own, else None (the defaults)
    location: str | None = None
    first_seen: str = ""  # ISO day
    changed_on: str = ""  # ISO day SEQUENCE was last raised (or first seen)
    cancelled_on: str | None = None  # ISO day the cancellation was reported

    @property
    def key(self) -> Key:
        return (self.entity_id, self.event_id)

    @property
    def fingerprint(self) -> tuple[str, str | None, str]:
        return (self.event_date, self.start, self.title)

    @property
    def shape(self) -> tuple[str, str]:
        """(title, start) as the change model matches UID churn."""
        return (self.title, self.start or self.event_date)

    def as_json(self) -> dict[str, Any]:
        row = asdict(self)
        row["thresholds"] = list(self.thresholds) if self.thresholds else None
        return row

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> FeedRecord:
        fields = {k: row.get(k) for k in cls.__dataclass_fields__ if k in row}
        fields["thresholds"] = tuple(row["thresholds"]) if row.get("thresholds") else None
        return cls(**fields)


def uid_for(entity_id: str, event_id: str) -> str:
    """A UID of (entity, event): the same on every machine and every day."""
    digest = hashlib.sha256(f"{entity_id}\x1f{event_id}".encode()).hexdigest()[:32]
    return f"{digest}@{UID_DOMAIN}"


@dataclass(frozen=True)
class CancelledRow:
    """What the feeds need of a `cancelled` row of `event_changes` (alerts/changes.py)."""

    entity_id: str
    event_id: str
    event_date: dt.date
    title: str
    start: str | None = None


def _timed_start(event: Mapping[str, Any]) -> str | None:
    details = event.get("details") or {}
    if details.get("start") and not details.get("all_day", True):
        return str(details["start"])
    return None


def _is_cancelled(event: Mapping[str, Any]) -> bool:
    return (event.get("details") or {}).get("status") == "cancelled"


def advance(
    previous: Mapping[Key, FeedRecord],
    document: Mapping[str, Any],
    cancelled: Iterable[CancelledRow],
    day: dt.date,
    *,
    kept_days: int = CANCELLED_KEPT_DAYS,
) -> dict[Key, FeedRecord]:
    """The records of ``day``: ``previous`` (those of the last day before it) carried
    forward through ``document`` (day's snapshot JSON) and ``cancelled`` (day's
    cancellation rows; only the silent ones matter, the snapshot says the explicit ones)."""
    today = day.isoformat()
    entities = {e["entity_id"]: e for e in document.get("entities", [])}
    events = {(e["entity_id"], str(e["event_id"])): e for e in document.get("events", [])}
    out: dict[Key, FeedRecord] = {}

    # UID churn: a new id of an entity whose (title, start) is that of a vanished live one
    vanished: dict[tuple[str, tuple[str, str]], Key] = {}
    for key, record in sorted(previous.items()):
        if key not in events and record.cancelled_on is None:
            vanished.setdefault((record.entity_id, record.shape), key)
    replaced: set[Key] = set()

    for key, event in sorted(events.items()):
        entity = entities.get(key[0], {})
        fresh = _record_of(event, entity, today)
        base = previous.get(key)
        if base is None and not _is_cancelled(event):
            old = vanished.pop((key[0], fresh.shape), None)
            if old is not None:
                base = previous[old]
                replaced.add(old)
        if base is None:
            out[key] = replace(fresh, cancelled_on=today if _is_cancelled(event) else None)
            continue
        bump = fresh.fingerprint != base.fingerprint
        cancelled_on = base.cancelled_on
        if _is_cancelled(event) and cancelled_on is None:
            cancelled_on, bump = today, True
        elif not _is_cancelled(event) and cancelled_on is not None:
            cancelled_on, bump = None, True  # back after a cancellation
        out[key] = replace(
            fresh,
            uid=base.uid,
            sequence=base.sequence + (1 if bump else 0),
            first_seen=base.first_seen or today,
            changed_on=today if bump else (base.changed_on or today),
            cancelled_on=cancelled_on,
        )

    silent = {(row.entity_id, row.event_id): row for row in cancelled}
    for key, row in sorted(silent.items()):
        if key in out or key in replaced:
            continue  # in the snapshot (explicit: handled above) or re-issued (churn)
        base = previous.get(key)
        if base is None:  # state lost (a new data dir): rebuilt from the change row
            entity = entities.get(key[0], {})
            start = row.start
            base = _record_of(
                {"entity_id": key[0], "event_id": key[1], "title": row.title,
                 "event_date": row.event_date.isoformat(),
                 "details": {"start": start, "all_day": start is None}},
                entity, today,
            )  # fmt: skip
        if base.cancelled_on is None:
            base = replace(base, sequence=base.sequence + 1, changed_on=today, cancelled_on=today)
        out[key] = base

    for key, record in sorted(previous.items()):
        if key in out or key in replaced:
            continue
        if record.cancelled_on is not None:
            if _days(record.cancelled_on, day) < kept_days:
                out[key] = record
        elif key[0] in entities and record.event_date >= today:
            out[key] = record  # absent, not reported cancelled: as last known
    return out


def _days(since: str, day: dt.date) -> int:
    return (day - dt.date.fromisoformat(since)).days


def _record_of(event: Mapping[str, Any], entity: Mapping[str, Any], today: str) -> FeedRecord:
    details = event.get("details") or {}
    thresholds = entity.get("thresholds")
    return FeedRecord(
        entity_id=str(event["entity_id"]),
        event_id=str(event["event_id"]),
        uid=uid_for(str(event["entity_id"]), str(event["event_id"])),
        sequence=0,
        event_date=str(event["event_date"]),
        start=_timed_start(event),
        title=str(event["title"]),
        entity_name=str(entity.get("name") or event["entity_id"]),
        source=str(entity.get("source") or event.get("source") or ""),
        channel=entity.get("channel") or None,
        thresholds=tuple(int(t) for t in thresholds) if thresholds else None,
        location=details.get("location") or None,
        first_seen=today,
        changed_on=today,
    )


def published(records: Mapping[Key, FeedRecord], day: dt.date, kept_days: int) -> list[FeedRecord]:
    """The records the feeds of ``day`` hold, sorted (date, entity, event): live ones, and
    cancelled ones for ``kept_days`` after their cancellation."""
    return sorted(
        (
            r
            for r in records.values()
            if r.cancelled_on is None or _days(r.cancelled_on, day) < kept_days
        ),
        key=lambda r: (r.event_date, r.start or "", r.entity_id, r.event_id),
    )


def feed_name(channel: str) -> str:
    """The file name (without `.ics`) of a Slack channel's feed: `#team` -> `team`;
    anything but letters, digits, `.`, `_` and `-` becomes `_`; a channel named `all`
    becomes `channel-all` (the merged feed is `all.ics`)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", channel.strip().lstrip("#")).strip(".") or "default"
    return "channel-all" if name.lower() == ALL_FEED else name


def split_feeds(records: Sequence[FeedRecord], default_channel: str) -> dict[str, list[FeedRecord]]:
    """`{"all": every record, "<channel>": that channel's}`: an entity without a channel
    is in the feed of `default_channel` (SLACK_CHANNEL), as its Slack alerts are."""
    feeds: dict[str, list[FeedRecord]] = {ALL_FEED: list(records)}
    for record in records:
        feeds.setdefault(feed_name(record.channel or default_channel), []).append(record)
    return feeds


def day_start_utc(day: dt.date, timezone: str) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), ZoneInfo(timezone)).astimezone(dt.UTC)


def _midnight(day: str) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(0), dt.UTC)


def render(
    records: Sequence[FeedRecord],
    *,
    name: str,
    thresholds: Sequence[int],
    stamp: dt.datetime,
) -> bytes:
    """The iCalendar text (RFC 5545) of one feed. ``thresholds``: CALENDAR_THRESHOLDS, for
    entities without their own; ``stamp``: the DTSTAMP of every event (UTC)."""
    cal = icalendar.Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    cal.add("x-wr-calname", name)
    cal.add("name", name)
    cal.add("x-wr-caldesc", "Upcoming events watched by calendar_pipeline, updated daily")
    cal.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", icalendar.vDuration(REFRESH))
    for record in records:
        cal.add_component(_event(record, thresholds, stamp))
    return cal.to_ical()


def _event(record: FeedRecord, thresholds: Sequence[int], stamp: dt.datetime) -> icalendar.Event:
    event = icalendar.Event()
    summary = f"{record.entity_name}: {record.title}"
    event.add("uid", record.uid)
    event.add("dtstamp", stamp)
    event.add("created", _midnight(record.first_seen or record.changed_on))
    event.add("last-modified", _midnight(record.changed_on))
    event.add("sequence", record.sequence)
    event.add("summary", summary)
    lines = [f"{record.title} ({record.entity_name})", f"Source: {record.source}"]
    if record.cancelled_on:
        lines.append(f"Cancelled: reported on {record.cancelled_on}")
    event.add("description", "\n".join(lines))
    event.add("categories", [record.source or "calendar"])
    if record.location:
        event.add("location", record.location)
    event.add("status", "CANCELLED" if record.cancelled_on else "CONFIRMED")
    event.add("transp", "TRANSPARENT")  # a watched date, not busy time
    if record.start:
        start = dt.datetime.fromisoformat(record.start)
        # UTC when the source gave an offset; a floating time stays floating (RFC 5545 3.3.5)
        event.add("dtstart", start.astimezone(dt.UTC) if start.tzinfo else start)
    else:
        day = dt.date.fromisoformat(record.event_date)
        event.add("dtstart", day)
        event.add("dtend", day + dt.timedelta(days=1))
    for days in sorted(record.thresholds or thresholds, reverse=True):
        alarm = icalendar.Alarm()
        alarm.add("action", "DISPLAY")
        alarm.add("description", f"{summary}: in {days} day{'s' if days != 1 else ''}")
        alarm.add("trigger", -dt.timedelta(days=days))
        event.add_component(alarm)
    return event
