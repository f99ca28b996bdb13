"""Put each day's changes (alerts/changes.py) on the lines people read. Pure functions.

- A due alert of an event that changed since the last snapshot says so on its own line:
  `new`, `renamed (was …)`, `date changed, was …` (the line shows the new date),
  `time changed, was …`.
- A change of an event with no alert pending today (a cancellation; a rename or a move of
  an event already announced in its current bucket) becomes a *change notice*: a line of
  its own in the digest's "Changes since yesterday" section, with a ledger key of its own
  (`entity|event|date|cancelled`, `…|renamed-<hash>`, `…|moved-from-<date or time>`), so
  each notice is posted once, like any alert. Only events inside the alert window (the
  largest threshold), before or after the change, are reported: a change far ahead is
  told when the event's first alert comes.
- Timed events show their start in CALENDAR_TIMEZONE with the zone: `15:30 UTC`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import zoneinfo
from collections.abc import Collection, Iterable, Sequence

from calendar_pipeline.alerts.changes import CANCELLED, MOVED, NEW, RENAMED, Change
from calendar_pipeline.alerts.model import DueAlert


def time_text(start: str | None, timezone: str) -> str | None:
    """`15:30 UTC` for an ISO start, in ``timezone``; None for an all-day event."""
    if not start or "T" not in start:
        return None
    moment = dt.datetime.fromisoformat(start)
    if moment.tzinfo is None:  # a floating time: as written
        return moment.strftime("%H:%M")
    local = moment.astimezone(zoneinfo.ZoneInfo(timezone))
    return f"{local:%H:%M} {local.tzname()}"


def with_changes(
    alerts: Sequence[DueAlert],
    changes: Iterable[Change],
    day: dt.date,
    window_days: int,
    timezone: str,
    pending_keys: Collection[str] | None = None,
    told: Collection[tuple[str, str]] = (),
) -> list[DueAlert]:
    """``alerts`` with their change and start time, plus the change notices of the day.

    ``pending_keys``: the alerts' keys not yet delivered (the ledger's answer); an alert
    already delivered carries no change word, so its event's change becomes a notice.
    None: every alert is pending. ``told``: (entity, event) whose due line in an earlier
    run of the day already named the change (alerts/change_log.told_on_due_lines)."""
    pending = {
        (a.entity_id, a.event_id)
        for a in alerts
        if pending_keys is None or a.dedup_key in pending_keys
    }
    by_event = {(c.entity_id, c.event_id): c for c in changes}
    out = []
    for alert in alerts:
        change = by_event.get((alert.entity_id, alert.event_id))
        alert = dataclasses.replace(alert, time_text=time_text(alert.start, timezone))
        waiting = (alert.entity_id, alert.event_id) in pending and (
            pending_keys is None or alert.dedup_key in pending_keys
        )  # a line already posted is not posted again: its event's change is a notice
        if change is not None and CANCELLED not in change.kinds and waiting:
            alert = dataclasses.replace(
                alert,
                change=",".join(change.kinds),
                previous_date=change.previous_date if MOVED in change.kinds else None,
                previous_title=change.previous_title,
                previous_time_text=_previous_time(change, timezone),
            )
        out.append(alert)
    for change in by_event.values():
        key = (change.entity_id, change.event_id)
        if key in pending or key in told or change.kinds == (NEW,):
            continue  # its due line says it (a new event inside the window is due today)
        if not _in_window(change, day, window_days):
            continue
        out.append(_notice(change, day, timezone))
    return out


def _previous_time(change: Change, timezone: str) -> str | None:
    same_day = change.previous_date is not None and change.previous_date == change.event_date
    if MOVED in change.kinds and change.previous_start and same_day:
        return time_text(change.previous_start, timezone)
    return None


def _in_window(change: Change, day: dt.date, window_days: int) -> bool:
    dates = [change.event_date]
    if change.previous_date is not None:
        dates.append(change.previous_date)
    return any(0 <= (date - day).days <= window_days for date in dates)


def _notice(change: Change, day: dt.date, timezone: str) -> DueAlert:
    if CANCELLED in change.kinds:
        notice = CANCELLED
    else:
        parts = []
        if MOVED in change.kinds:
            parts.append(f"moved-from-{change.previous_start or change.previous_date}")
        if RENAMED in change.kinds:
            digest = hashlib.sha256(change.title.encode()).hexdigest()[:8]
            parts.append(f"renamed-{digest}")
        notice = "+".join(parts)
    return DueAlert(
        partition_date=day,
        entity_id=change.entity_id,
        entity_name=change.entity_name or change.entity_id,
        source=change.source,
        event_id=change.event_id,
        event_date=change.event_date,
        title=change.title,
        days_until=(change.event_date - day).days,
        threshold_days=0,
        channel=change.channel,
        previous_date=change.previous_date if MOVED in change.kinds else None,
        start=change.start,
        time_text=time_text(change.start, timezone),
        change=",".join(change.kinds),
        previous_title=change.previous_title,
        previous_time_text=_previous_time(change, timezone),
        notice=notice[:200],
    )


def change_words(alert: DueAlert) -> list[str]:
    """The words a line adds for its change: `new`, `cancelled`, `renamed (was X)`,
    `date changed, was Wed 2027-03-31`, `time changed, was 15:30 UTC`."""
    kinds = (alert.change or "").split(",")
    words = []
    if NEW in kinds:
        words.append("new")
    if CANCELLED in kinds:
        words.append("cancelled")
    if RENAMED in kinds and alert.previous_title:
        words.append(f"renamed (was {alert.previous_title})")
    return words


def count_line(alerts: Iterable[DueAlert]) -> str:
    """`Since yesterday: 2 new, 1 moved, 1 cancelled` for the lines of one digest."""
    counts = dict.fromkeys((NEW, MOVED, RENAMED, CANCELLED), 0)
    for alert in alerts:
        kinds = set((alert.change or "").split(","))
        if alert.previous_date is not None and alert.previous_date != alert.event_date:
            kinds.add(MOVED)  # moved, as the ledger knows it (alerted on another date)
        if alert.previous_time_text:
            kinds.add(MOVED)
        for kind in kinds & set(counts):
            counts[kind] += 1
    parts = [f"{n} {kind}" for kind, n in counts.items() if n]
    return "Since yesterday: " + ", ".join(parts) if parts else ""
