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
    failed: int  # CALENDAR_MAX_FAILED_ENTITIES
    missing: int  # CALENDAR_MAX_MISSING_ENTITIES
    min_volume_ratio: float  # CALENDAR_MIN_VOLUME_RATIO


def judge_snapshot(
    snapshot: Mapping[str, Any], baseline: Mapping[str, Any] | None, budgets: Budgets
) -> list[str]:
    """Why ``snapshot`` would fail raw_snapshot's blocking checks (empty: it passes)."""
    reasons = []
    if not snapshot.get("events"):
        reasons.append("has_events: no events")
    failed = len(snapshot.get("errors", []))
    if failed > budgets.failed:
        reasons.append(f"failed_entities_within_budget: {failed} > {budgets.failed}")
    missing = len(snapshot.get("entities_missing", []))
    if missing > budgets.missing:
        reasons.append(f"missing_entities_within_budget: {missing} > {budgets.missing}")
    volume = volume_report(snapshot, baseline, budgets.min_volume_ratio)
    if volume.drops:
        reasons.append(f"volume_within_history: {volume.describe()}")
    return reasons
