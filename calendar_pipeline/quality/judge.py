"""The raw_snapshot checks as one verdict on one stored snapshot, for ``verify --repair``:
may a snapshot that was never indexed be indexed now? Only if it passes what the blocking
checks of ``raw_snapshot`` would have required of it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from calendar_pipeline.quality.volume import volume_report


@dataclass(frozen=True)
class Budgets:
    """What raw_snapshot's checks allow, per source (see quality/carry.py for what happens
    to a broken entity)."""

    failed_share: float  # CALENDAR_MAX_FAILED_SHARE: broken entities of a source
    missing_share: float  # CALENDAR_MAX_MISSING_SHARE: entities the upstream does not know
    min_volume_ratio: float  # CALENDAR_MIN_VOLUME_RATIO
    stale_after_days: int  # CALENDAR_STALE_AFTER_DAYS: how old carried data may be


def judge_snapshot(
    snapshot: Mapping[str, Any], baseline: Mapping[str, Any] | None, budgets: Budgets
) -> list[str]:
    """Why ``snapshot`` should not be indexed (empty: it may be). ``has_events`` blocks, as in
    raw_snapshot. The volume rule is applied too: raw_snapshot sets aside what it flags
    (quality/carry.py), so a snapshot it wrote passes it, and a snapshot that still shows a
    drop was not written that way: it is left out rather than made a baseline. Broken
    entities and the per-source shares never block."""
    reasons = [] if snapshot.get("events") else ["has_events: no events"]
    volume = volume_report(snapshot, baseline, budgets.min_volume_ratio)
    if volume.drops:
        reasons.append(f"volume_within_history: {volume.describe()}")
    return reasons
