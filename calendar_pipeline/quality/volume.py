"""The volume rule: a day whose upstreams answered with far fewer events than before.

An upstream that truncates a feed or drops a country still answers ``200 OK``: no entity
fails, every other check passes, and the day would reach Slack as a quiet one. This rule
compares a new snapshot with the *baseline*: the newest snapshot already accepted into the
index for the same day or one of the 7 days before it (only snapshots that passed the
blocking checks are indexed, so a bad day never becomes the baseline of the next one).

Like is compared with like. The two windows are rolling (D..D+60 against D-1..D+59), so
events leave one end and enter the other every day; a raw total would swing with the
seasons (the Christmas cluster of holidays, earnings season). The rule counts only events
dated on the days *both* windows cover, so an unchanged upstream gives equal counts and an
ordinary day can never be flagged. Then, over the entities that answered both times (an
entity that failed is the failed-entities budget's business, not this rule's):

- a **source** is flagged when its count is under ``min_ratio`` times its baseline count;
- an **entity** is flagged when its count is under ``min_ratio`` times its baseline
  count, or when it had data before and the upstream now knows nothing about it
  (listed in ``entities_missing``: a dropped country, an emptied feed).

Counts below ``MIN_EVENTS`` in the baseline are not judged (one cancelled meeting out of
two is not a broken upstream). ``min_ratio = 0`` turns the rule off.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

LOOKBACK_DAYS = 7  # how far back a baseline may be
MIN_EVENTS = 2  # baseline counts below this are too small to judge


@dataclass(frozen=True)
class VolumeDrop:
    """One source or entity with far fewer events than in the baseline."""

    kind: str  # "source" or "entity"
    name: str
    now: int
    before: int
    lost_data: bool = False  # the upstream knows nothing about the entity any more

    def describe(self) -> str:
        if self.lost_data:
            return f"{self.name}: the upstream has no data at all for it any more"
        return f"{self.name}: {self.now} events where the baseline had {self.before}"


@dataclass(frozen=True)
class VolumeReport:
    """The verdict on one partition."""

    partition: str
    baseline: str | None  # the baseline's partition, None when there is none
    shared: tuple[dt.date, dt.date] | None = None  # the dates both windows cover
    drops: list[VolumeDrop] = field(default_factory=list)

    @property
    def judged(self) -> bool:
        return self.shared is not None

    def describe(self) -> str:
        if self.baseline is None:
            return f"{self.partition}: no accepted snapshot in the {LOOKBACK_DAYS} days before"
        if self.shared is None:
            return f"{self.partition}: its window shares no day with {self.baseline}'s"
        if not self.drops:
            return f"{self.partition}: volume as on {self.baseline}"
        sources = [d.describe() for d in self.drops if d.kind == "source"]
        entities = [d.describe() for d in self.drops if d.kind == "entity"]
        parts = []
        if sources:
            parts.append("sources " + "; ".join(sources))
        if entities:
            more = f" and {len(entities) - 10} more" if len(entities) > 10 else ""
            parts.append("entities " + "; ".join(entities[:10]) + more)
        start, end = self.shared
        return (
            f"{self.partition} against {self.baseline} (events dated {start}..{end}): "
            + " | ".join(parts)
        )


def baseline_candidates(partition: str) -> list[str]:
    """Where to look for a baseline, best first: the day itself (a re-run), then the 7
    days before it, newest first."""
    day = dt.date.fromisoformat(partition)
    return [(day - dt.timedelta(days=n)).isoformat() for n in range(LOOKBACK_DAYS + 1)]


def find_baseline(
    documents: Callable[[str], Mapping[str, Any] | None], partition: str, include_self: bool = True
) -> Mapping[str, Any] | None:
    """The baseline of ``partition`` as its JSON document, or None: the first candidate
    (:func:`baseline_candidates`) that ``documents`` (``lake.history.History.document``)
    has. Without ``include_self``, the day itself is skipped (``verify`` judges its newest
    snapshot against the days before)."""
    for candidate in baseline_candidates(partition)[0 if include_self else 1 :]:
        document = documents(candidate)
        if document is not None:
            return document
    return None


def volume_report(
    today: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    min_ratio: float,
    min_events: int = MIN_EVENTS,
) -> VolumeReport:
    """Compare two snapshot documents (the JSON written by ``raw_snapshot``)."""
    partition = str(today["partition"])
    if baseline is None:
        return VolumeReport(partition, None)
    shared = _shared_dates(today["window"], baseline["window"])
    if shared is None:
        return VolumeReport(partition, str(baseline["partition"]))
    answered = _answered(today) & _answered(baseline)
    source_of = {e["entity_id"]: e["source"] for e in today.get("entities", [])}
    now = _count(today["events"], shared, answered)
    before = _count(baseline["events"], shared, answered)
    drops: list[VolumeDrop] = []
    if min_ratio > 0:
        by_source_now = _by_source(now, source_of)
        by_source_before = _by_source(before, source_of)
        for source, count in sorted(by_source_before.items()):
            if count >= min_events and by_source_now[source] < min_ratio * count:
                drops.append(VolumeDrop("source", source, by_source_now[source], count))
        lost = set(today.get("entities_missing", [])) - set(baseline.get("entities_missing", []))
        for entity in sorted(answered):
            had, has = before[entity], now[entity]
            if entity in lost:
                drops.append(VolumeDrop("entity", entity, has, had, lost_data=True))
            elif had >= min_events and has < min_ratio * had:
                drops.append(VolumeDrop("entity", entity, has, had))
    return VolumeReport(partition, str(baseline["partition"]), shared, drops)


def _shared_dates(a: Mapping[str, str], b: Mapping[str, str]) -> tuple[dt.date, dt.date] | None:
    start = max(dt.date.fromisoformat(a["start"]), dt.date.fromisoformat(b["start"]))
    end = min(dt.date.fromisoformat(a["end"]), dt.date.fromisoformat(b["end"]))
    return (start, end) if start <= end else None


def _answered(snapshot: Mapping[str, Any]) -> set[str]:
    """Entities of the snapshot's universe whose fetch did not fail."""
    failed = {error["entity_id"] for error in snapshot.get("errors", [])}
    return {e["entity_id"] for e in snapshot.get("entities", [])} - failed


def _count(
    events: Iterable[Mapping[str, Any]], shared: tuple[dt.date, dt.date], entities: set[str]
) -> Counter[str]:
    start, end = shared[0].isoformat(), shared[1].isoformat()
    return Counter(
        e["entity_id"]
        for e in events
        if start <= str(e["event_date"]) <= end and e["entity_id"] in entities
    )


def _by_source(counts: Counter[str], source_of: Mapping[str, str]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for entity, count in counts.items():
        totals[source_of.get(entity, "?")] += count
    return totals
