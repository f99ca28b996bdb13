"""What changed in each entity's calendar since its last good snapshot. Pure functions.

For day D, each entity whose data is fresh on D (quality/carry.py: a broken entity's
carried data never shows a change) is compared with its newest earlier snapshot in which
it was fresh, and every event is classified:

- **new**: not in the earlier snapshot, not in any of the ones the cancellation rule still
  looks at (an event that comes back after a glitch is not new), and dated inside the
  earlier snapshot's window (an event that simply came into view is not new). An entity's
  first snapshot has no changes.
- **moved**: same event id, another date or start time.
- **renamed**: same event id, another title (an event can be moved and renamed).
- **cancelled**: the feed marks it cancelled (`STATUS:CANCELLED`) and it was not marked
  so before: reported that day; or it is absent from `cancel_after` consecutive fresh
  snapshots of its entity (CALENDAR_CANCEL_AFTER, 2), while its date is still ahead and
  inside D's window: reported once, on the day the count is reached. A one-day glitch
  therefore never announces a cancellation, and an event that comes back before is never
  mentioned. A failed fetch is not a snapshot of the entity (it is carried, not fresh), an
  event whose date has passed or that left the window is not cancelled.
- **UID churn** is not a change: an event whose id changed but whose title and start did
  not is matched by (title, start) and classified as unchanged.

The documents are the snapshots' JSON (as stored in the index), newest first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from calendar_pipeline.sources.collect import FRESH, status_of

NEW, MOVED, RENAMED, CANCELLED = "new", "moved", "renamed", "cancelled"
KINDS = (NEW, MOVED, RENAMED, CANCELLED)
DEFAULT_CANCEL_AFTER = 2
LOOKBACK_DAYS = 14  # how far back the earlier fresh snapshots of an entity are looked for


@dataclass(frozen=True)
class Change:
    """One event's change on one day. ``kinds`` holds one or more of :data:`KINDS` (an
    event can be moved and renamed at once)."""

    entity_id: str
    event_id: str
    kinds: tuple[str, ...]
    event_date: dt.date  # today's date of the event (its last known one if cancelled)
    title: str
    start: str | None = None  # ISO start of a timed event
    previous_date: dt.date | None = None
    previous_start: str | None = None
    previous_title: str | None = None
    explicit: bool = False  # cancelled by the feed itself (STATUS:CANCELLED)
    entity_name: str = ""
    source: str = ""
    channel: str | None = None

    def as_row(self) -> dict[str, Any]:
        row = asdict(self)
        row["kinds"] = ",".join(self.kinds)
        return row


def is_fresh(document: Mapping[str, Any], entity_id: str) -> bool:
    """Whether `entity_id`'s events in `document` were fetched that day."""
    status = status_of(document, entity_id)
    return status is not None and status.get("state") == FRESH


def _cancelled(event: Mapping[str, Any]) -> bool:
    return (event.get("details") or {}).get("status") == "cancelled"


def _start(event: Mapping[str, Any]) -> str:
    """The event's start: its ISO datetime when timed, else its date."""
    details = event.get("details") or {}
    if details.get("start") and not details.get("all_day", True):
        return str(details["start"])
    return str(event["event_date"])


def _shape(event: Mapping[str, Any]) -> tuple[str, str]:
    return (str(event["title"]), _start(event))


def detect_changes(
    today: Mapping[str, Any], earlier: Sequence[Mapping[str, Any]], cancel_after: int
) -> list[Change]:
    """The changes of every entity fresh in ``today``; ``earlier``: accepted snapshots
    before today's partition, newest first."""
    changes: list[Change] = []
    grouped = _Grouped()  # each document's events by entity, built once per call
    for entity_id in sorted({e["entity_id"] for e in today.get("entities", [])}):
        if not is_fresh(today, entity_id):
            continue
        history = [doc for doc in earlier if grouped.fresh(doc, entity_id)]
        if history:
            changes.extend(_entity_changes(today, history, entity_id, cancel_after, grouped))
    entities = {e["entity_id"]: e for e in today.get("entities", [])}
    return [
        replace(
            change,
            entity_name=entities[change.entity_id].get("name", change.entity_id),
            source=entities[change.entity_id].get("source", ""),
            channel=entities[change.entity_id].get("channel"),
        )
        for change in changes
    ]


class _Grouped:
    """Events of a document by entity, and which entities are fresh in it, computed once
    per document (a day compares a few hundred entities with up to 14 earlier days)."""

    def __init__(self) -> None:
        self._events: dict[int, dict[str, dict[str, Mapping[str, Any]]]] = {}
        self._fresh: dict[int, set[str]] = {}

    def events(self, document: Mapping[str, Any], entity_id: str) -> dict[str, Mapping[str, Any]]:
        key = id(document)
        if key not in self._events:
            by_entity: dict[str, dict[str, Mapping[str, Any]]] = {}
            for event in document.get("events", []):
                by_entity.setdefault(event["entity_id"], {})[event["event_id"]] = event
            self._events[key] = by_entity
        return self._events[key].get(entity_id, {})

    def fresh(self, document: Mapping[str, Any], entity_id: str) -> bool:
        key = id(document)
        if key not in self._fresh:
            ids = {e["entity_id"] for e in document.get("entities", [])}
            self._fresh[key] = {i for i in ids if is_fresh(document, i)}
        return entity_id in self._fresh[key]


def _entity_changes(
    today: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    entity_id: str,
    cancel_after: int,
    grouped: _Grouped,
) -> list[Change]:
    day = str(today["partition"])
    window_end = str(today["window"]["end"])
    now = grouped.events(today, entity_id)
    before = grouped.events(history[0], entity_id)
    looked_at = [grouped.events(doc, entity_id) for doc in history[: max(cancel_after, 1)]]
    # UID churn: an id that vanished and an id that appeared with the same title and start
    vanished = {_shape(e): i for i, e in before.items() if i not in now and not _cancelled(e)}
    churned = {i for i, e in now.items() if i not in before and _shape(e) in vanished}
    churned_away = {vanished[_shape(now[i])] for i in churned}
    changes: list[Change] = []
    for event_id, event in sorted(now.items()):
        earlier = before.get(event_id)
        if _cancelled(event):
            if earlier is not None and not _cancelled(earlier):
                changes.append(_change(entity_id, event, (CANCELLED,), earlier, explicit=True))
            continue
        if earlier is None:
            seen = any(event_id in events for events in looked_at)
            in_view = str(event["event_date"]) <= str(history[0]["window"]["end"])
            if event_id not in churned and not seen and in_view:
                changes.append(_change(entity_id, event, (NEW,)))
            continue
        kinds = []
        if _start(event) != _start(earlier):
            kinds.append(MOVED)
        if event["title"] != earlier["title"]:
            kinds.append(RENAMED)
        if kinds:
            changes.append(_change(entity_id, event, tuple(kinds), earlier))
    changes.extend(
        _silent_cancellations(
            history, now, churned_away, entity_id, cancel_after, day, window_end, grouped
        )
    )
    return changes


def _silent_cancellations(
    history: Sequence[Mapping[str, Any]],
    now: Mapping[str, Mapping[str, Any]],
    churned_away: set[str],
    entity_id: str,
    cancel_after: int,
    day: str,
    window_end: str,
    grouped: _Grouped,
) -> list[Change]:
    """Events present in the fresh snapshot ``cancel_after`` before today and absent from
    today's and every fresh one in between: reported once, when the count is reached."""
    if cancel_after < 1 or len(history) < cancel_after:
        return []
    absent_in = [grouped.events(doc, entity_id) for doc in history[: cancel_after - 1]]
    last_seen = grouped.events(history[cancel_after - 1], entity_id)
    shapes_now = {_shape(e) for e in now.values()}
    out = []
    for event_id, event in sorted(last_seen.items()):
        if event_id in now or event_id in churned_away or _cancelled(event):
            continue
        if any(event_id in events for events in absent_in):
            continue
        if _shape(event) in shapes_now:  # re-issued under another id (UID churn)
            continue
        if not day <= str(event["event_date"]) <= window_end:
            continue  # passed, or left the window: not a cancellation
        out.append(_change(entity_id, event, (CANCELLED,)))
    return out


def _change(
    entity_id: str,
    event: Mapping[str, Any],
    kinds: tuple[str, ...],
    earlier: Mapping[str, Any] | None = None,
    explicit: bool = False,
) -> Change:
    timed = _start(event) != str(event["event_date"])
    return Change(
        entity_id=entity_id,
        event_id=str(event["event_id"]),
        kinds=kinds,
        event_date=dt.date.fromisoformat(str(event["event_date"])),
        title=str(event["title"]),
        start=_start(event) if timed else None,
        previous_date=(
            dt.date.fromisoformat(str(earlier["event_date"]))
            if earlier is not None and MOVED in kinds
            else None
        ),
        previous_start=_start(earlier) if earlier is not None and MOVED in kinds else None,
        previous_title=(
            str(earlier["title"]) if earlier is not None and RENAMED in kinds else None
        ),
        explicit=explicit,
    )


def count_changes(changes: Sequence[Change]) -> dict[str, int]:
    """``{"new": 2, "moved": 1, "renamed": 0, "cancelled": 1}``."""
    counts = dict.fromkeys(KINDS, 0)
    for change in changes:
        for kind in change.kinds:
            counts[kind] += 1
    return counts


def verify_changes(
    today: Mapping[str, Any], earlier: Sequence[Mapping[str, Any]], changes: Sequence[Change]
) -> list[str]:
    """What is wrong with ``changes`` against the snapshots (empty: nothing): a cancelled,
    moved or renamed event never seen before, a new one already in the snapshot before, a
    silent cancellation of an event still live today. (`changes_refer_to_known_events`.)"""
    day = str(today.get("partition", "?"))
    seen = {(e["entity_id"], e["event_id"]) for doc in earlier for e in doc.get("events", [])}
    previous = {
        (e["entity_id"], e["event_id"]) for e in (earlier[0] if earlier else {}).get("events", [])
    }
    live = {(e["entity_id"], e["event_id"]) for e in today.get("events", []) if not _cancelled(e)}
    wrong = []
    for change in changes:
        key = (change.entity_id, change.event_id)
        name = f"{day} {change.entity_id}/{change.event_id}"
        if NEW in change.kinds and key in previous:
            wrong.append(f"{name}: new, but in the snapshot before")
        if NEW not in change.kinds and key not in seen:
            wrong.append(f"{name}: {','.join(change.kinds)}, but never seen before")
        if CANCELLED in change.kinds and not change.explicit and key in live:
            wrong.append(f"{name}: cancelled, but still in the day's snapshot")
    return wrong
