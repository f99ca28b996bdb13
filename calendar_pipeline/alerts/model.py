"""The due-alert row: one event inside one threshold bucket for one partition."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property


def dedup_key(entity_id: str, event_id: str, event_date: dt.date, threshold_days: int) -> str:
    """``entity_id|event_id|event_date|D-n``: the identity of one alert, fired once."""
    return f"{entity_id}|{event_id}|{event_date.isoformat()}|D-{threshold_days}"


@dataclass(frozen=True)
class DueAlert:
    partition_date: dt.date
    entity_id: str
    entity_name: str
    source: str
    event_id: str
    event_date: dt.date
    title: str
    days_until: int
    threshold_days: int
    channel: str | None
    previous_date: dt.date | None = None
    """Set when this event was alerted before on another date (it moved)."""
    data_note: str | None = None
    """Set when the entity's feed is broken and its events are its last known good
    (alerts/feed_problems.py): "feed unavailable since Tue 2027-05-04; data of Mon ..."."""
    start: str | None = None
    """ISO start of a timed event (all-day events: None)."""
    time_text: str | None = None
    """The start shown in CALENDAR_TIMEZONE with the zone, `15:30 UTC` (alerts/change_words.py)."""
    change: str | None = None
    """What changed since the entity's last good snapshot: `new`, `moved`, `renamed`,
    `cancelled`, or several joined by commas (alerts/changes.py)."""
    previous_title: str | None = None
    previous_time_text: str | None = None
    notice: str | None = None
    """Set on a change notice (a change of an event with no alert due today): what makes
    its ledger key, e.g. `cancelled` or `renamed-1a2b3c4d`; its `threshold_days` is 0."""

    @cached_property
    def dedup_key(self) -> str:
        if self.notice:
            return f"{self.entity_id}|{self.event_id}|{self.event_date.isoformat()}|{self.notice}"
        return dedup_key(self.entity_id, self.event_id, self.event_date, self.threshold_days)
