"""Reconciliation along the chain: raw_snapshot -> snapshot_index -> due_alerts.

Each function re-derives what a step should hold from the step before it, with code of
its own, and names every difference. They read the snapshot's JSON with the standard
library (not the pydantic models the assets use) and re-implement the bucket rule in a
few plain lines, so a bug in the assets' code path is caught rather than repeated.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def index_row_count_problem(
    entry: Mapping[str, Any], snapshot: Mapping[str, Any] | None = None
) -> str | None:
    """Whether an index line's ``row_count`` is the number of events in the snapshot it
    embeds (and that the snapshot's own ``counts.events`` says the same). ``snapshot``:
    that content already parsed, if the caller has it."""
    try:
        snapshot = snapshot if snapshot is not None else json.loads(entry["content_text"])
        events = len(snapshot["events"])
        claimed = snapshot.get("counts", {}).get("events")
    except (KeyError, TypeError, ValueError) as exc:
        return f"{entry.get('partition')}: snapshot does not parse ({type(exc).__name__})"
    if entry.get("row_count") != events or claimed != events:
        return (
            f"{entry['partition']}: index line says {entry.get('row_count')} rows, the snapshot "
            f"{entry.get('path')} holds {events} events (its counts say {claimed})"
        )
    return None


def expected_buckets(
    snapshot: Mapping[str, Any], day: dt.date, thresholds: Sequence[int]
) -> dict[str, int]:
    """``{dedup key: threshold}`` for partition ``day``: an event ``n`` days ahead
    (``0 <= n <= max``) is in the smallest threshold ``>= n`` (of its entity's own
    `thresholds`, else ``thresholds``); a cancelled event is in none."""
    expected: dict[str, int] = {}
    own = {e["entity_id"]: e.get("thresholds") for e in snapshot.get("entities", [])}
    for event in snapshot["events"]:
        if (event.get("details") or {}).get("status") == "cancelled":
            continue
        date = dt.date.fromisoformat(event["event_date"])
        n = (date - day).days
        fitting = [t for t in (own.get(event["entity_id"]) or thresholds) if t >= n]
        if n < 0 or not fitting:
            continue
        threshold = min(fitting)
        key = f"{event['entity_id']}|{event['event_id']}|{date.isoformat()}|D-{threshold}"
        expected[key] = threshold
    return expected


@dataclass(frozen=True)
class BucketDiff:
    """How the stored rows of one partition differ from the rule."""

    partition: str
    missing: list[str] = field(default_factory=list)  # expected, not stored
    unexpected: list[str] = field(default_factory=list)  # stored, not expected
    rows: int = 0
    expected: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def describe(self, limit: int = 3) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing (e.g. {', '.join(self.missing[:limit])})")
        if self.unexpected:
            parts.append(
                f"{len(self.unexpected)} unexpected (e.g. {', '.join(self.unexpected[:limit])})"
            )
        return f"{self.partition}: {self.rows} rows, the rule gives {self.expected}: " + "; ".join(
            parts
        )


def compare_buckets(
    partition: str, stored: Mapping[str, int], expected: Mapping[str, int]
) -> BucketDiff:
    """``stored`` and ``expected`` are ``{dedup key: threshold}``."""
    missing = sorted(k for k in expected if stored.get(k) != expected[k])
    unexpected = sorted(k for k in stored if expected.get(k) != stored[k])
    return BucketDiff(partition, missing, unexpected, len(stored), len(expected))
