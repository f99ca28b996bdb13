"""Which events are due for an alert on partition day D. Pure functions.

The bucket rule: an event ``n`` days after D (``n >= 0``) belongs to the smallest
threshold ``t >= n``; ``n = 0`` (today) goes to the smallest threshold. More than the
largest threshold: not due. So with thresholds 30/15/7/3/1 an event 5 days away is in
bucket 7 ("within a week").

Because every event inside the largest threshold is due on every day, a bucket missed
(the pipeline did not run on D-7) or an event added late (first seen 10 days ahead) is
caught up on the next run: its bucket's dedup key is not in the delivery ledger yet.
The ledger, not this module, guarantees each key fires once.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.sources.model import Entity, Event


def bucket_for(days_until: int, thresholds: Sequence[int]) -> int | None:
    """The smallest threshold >= ``days_until``; ``None`` if past or beyond the largest.

    ``thresholds`` must be sorted ascending (``settings.parse_thresholds`` does that).
    """
    if days_until < 0 or not thresholds:
        return None
    position = bisect.bisect_left(thresholds, days_until)
    return thresholds[position] if position < len(thresholds) else None


def compute_due_alerts(
    events: Iterable[Event],
    partition_date: dt.date,
    thresholds: Sequence[int],
    entities: Mapping[str, Entity],
) -> list[DueAlert]:
    """Every event of the snapshot that falls in a threshold bucket on ``partition_date``
    (the entity's own `thresholds` when the universe gives some, else ``thresholds``).
    Events the feed marks cancelled are never due: they are reported as changes.

    Events of entities no longer in the universe keep their id as name and no channel.
    The result is sorted by (event date, entity, event id) and has unique dedup keys.
    """
    due: dict[str, DueAlert] = {}
    for event in events:
        if event.details.get("status") == "cancelled":  # reported as a change, not alerted
            continue
        days_until = (event.event_date - partition_date).days
        entity = entities.get(event.entity_id)
        own = entity.thresholds if entity is not None and entity.thresholds else thresholds
        threshold = bucket_for(days_until, own)
        if threshold is None:
            continue
        alert = DueAlert(
            partition_date=partition_date,
            entity_id=event.entity_id,
            entity_name=entity.name if entity else event.entity_id,
            source=event.source,
            event_id=event.event_id,
            event_date=event.event_date,
            title=event.title,
            days_until=days_until,
            threshold_days=threshold,
            channel=entity.channel if entity else None,
            start=_timed_start(event),
        )
        due.setdefault(alert.dedup_key, alert)
    return sorted(due.values(), key=lambda a: (a.event_date, a.entity_id, a.event_id))


def _timed_start(event: Event) -> str | None:
    start = event.details.get("start")
    return str(start) if start and event.details.get("all_day") is False else None


def threshold_metadata_keys(thresholds: Sequence[int]) -> dict[int, str]:
    """``{1: "due_d01", ..., 30: "due_d30"}``: zero-padded to the widest threshold, so the
    UI, which sorts metadata keys as text, lists and plots them in day order (``due_d1,
    due_d15, due_d3`` otherwise)."""
    width = max(2, len(str(max(thresholds))))
    return {threshold: f"due_d{threshold:0{width}d}" for threshold in thresholds}


def count_by_threshold(alerts: Iterable[DueAlert], thresholds: Sequence[int]) -> dict[int, int]:
    counts = dict.fromkeys(thresholds, 0)
    for alert in alerts:
        counts[alert.threshold_days] = counts.get(alert.threshold_days, 0) + 1
    return counts
