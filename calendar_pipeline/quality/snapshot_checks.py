"""The four checks of `raw_snapshot`, each with its judgement and its words, over the days
of one run. Pure: `defs/raw_snapshot.py` turns each :class:`~.verdict.Verdict` into an asset
check result.

- `has_events` (blocking): every day of the run has events (after last-known-good carry).
- `failed_entities_within_budget` (warn): per source, the share of broken entities is at
  most `failed_share`; every broken entity is named either way.
- `missing_entities_within_budget` (warn): per source, the share of entities the upstream
  knows nothing of is at most `missing_share`.
- `volume_within_history` (warn): no entity or source fell far below its baseline. A run
  none of whose days has a baseline (the first run, a backfill of days before any indexed
  day: a run's own days are not each other's baseline) judged nothing: it passes with
  `judged: "nothing — …"` as its first metadata entry, not quietly; so does a run with the
  rule off (CALENDAR_MIN_VOLUME_RATIO=0).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from calendar_pipeline.alerts.intent import span
from calendar_pipeline.quality.carry import (
    CARRIED,
    STOPPED,
    broken_entities,
    describe_broken,
    missing_over_share,
    sources_down,
)
from calendar_pipeline.quality.judge import Budgets
from calendar_pipeline.quality.verdict import Verdict, judged_nothing
from calendar_pipeline.quality.volume import LOOKBACK_DAYS, VolumeReport
from calendar_pipeline.text import first_ids

MAX_BROKEN_LINES = 20  # broken entities named in a description; the rest counted


@dataclass(frozen=True)
class Day:
    """What the checks need of one written snapshot (its events are not kept)."""

    partition: str
    events: int
    broken: list[dict[str, Any]]
    down: list[tuple[str, int, int]]  # sources over the failed share: (source, n, total)
    missing: list[tuple[str, int, int]]  # sources over the missing share
    entities_missing: list[str]


def summarize(payload: Mapping[str, Any], budgets: Budgets) -> Day:
    return Day(
        partition=payload["partition"],
        events=len(payload["events"]),
        broken=broken_entities(payload),
        down=sources_down(payload, budgets.failed_share),
        missing=missing_over_share(payload, budgets.missing_share),
        entities_missing=list(payload["entities_missing"]),
    )


def judge(days: Sequence[Day], volumes: Sequence[VolumeReport], budgets: Budgets) -> list[Verdict]:
    """The four verdicts of a run over ``days`` (oldest first; the broken entities and the
    sources down are those of the newest day, the one people act on)."""
    return [
        has_events(days),
        failed_within_budget(days[-1], budgets),
        missing_within_budget(days, budgets),
        volume_within_history(volumes, budgets),
    ]


def has_events(days: Sequence[Day]) -> Verdict:
    empty = [d.partition for d in days if not d.events]
    return Verdict(
        "has_events",
        passed=not empty,
        metadata={"events": sum(d.events for d in days), "empty_partitions": len(empty)},
        description=(
            f"no events at all on {first_ids(empty)}, and no earlier data to carry. What to "
            "do: read the `errors` metadata, fix CALENDAR_UNIVERSE or the source, then re-run "
            "these days."
            if empty
            else None
        ),
    )


def failed_within_budget(newest: Day, budgets: Budgets) -> Verdict:
    lines = [describe_broken(row, budgets.stale_after_days) for row in newest.broken]
    if not lines:
        description = "No broken entity."
    else:
        head = (
            "source down: "
            + "; ".join(f"{s} ({n} of {t} entities broken)" for s, n, t in newest.down)
            + f" (over CALENDAR_MAX_FAILED_SHARE={budgets.failed_share:g}). Healthy "
            "entities are posted as usual."
            if newest.down
            else f"{len(lines)} broken entities, within the budget."
        )
        more = len(lines) - MAX_BROKEN_LINES
        description = "\n".join(
            [head, *lines[:MAX_BROKEN_LINES], *([f"… and {more} more"] if more > 0 else [])]
        )
    return Verdict(
        "failed_entities_within_budget",
        passed=not newest.down,
        warn=True,
        metadata={
            "broken": len(newest.broken),
            "carried": sum(r["state"] == CARRIED for r in newest.broken),
            "stopped": sum(r["state"] == STOPPED for r in newest.broken),
            "sources_down": len(newest.down),
            "max_share": budgets.failed_share,
        },
        description=description,
    )


def missing_within_budget(days: Sequence[Day], budgets: Budgets) -> Verdict:
    over = next((d for d in days if d.missing), None)
    return Verdict(
        "missing_entities_within_budget",
        passed=over is None,
        warn=True,
        metadata={
            "missing": max(len(d.entities_missing) for d in days),
            "max_share": budgets.missing_share,
        },
        description=(
            f"on {over.partition}: "
            + "; ".join(
                f"{s}: the upstream knows nothing of {n} of its {t} entities"
                for s, n, t in over.missing
            )
            + f" ({first_ids(over.entities_missing, 10)}). What to do: check those keys and "
            "sources (a broken upstream often returns empty data)."
            if over is not None
            else first_ids(days[-1].entities_missing)
        ),
    )


def volume_within_history(volumes: Sequence[VolumeReport], budgets: Budgets) -> Verdict:
    dropped = [v for v in volumes if v.drops]
    off = budgets.min_volume_ratio <= 0  # CALENDAR_MIN_VOLUME_RATIO=0: nothing is compared
    judged = 0 if off else sum(v.judged for v in volumes)
    if dropped:
        description = (
            f"far fewer events than before on {first_ids([v.partition for v in dropped])}:\n"
            + "\n".join(v.describe() for v in dropped[:10])
            + "\nThose entities keep their last known good events (marked in their alerts). "
            "If the drop is real, re-run the days once with CALENDAR_MIN_VOLUME_RATIO=0: the "
            "accepted snapshot becomes the new baseline."
        )
    elif off:
        description = (
            f"{span([v.partition for v in volumes])}: the rule is off (CALENDAR_MIN_VOLUME_RATIO=0)"
        )
    else:
        description = volumes[-1].describe() + (
            "" if judged else " (nothing judged: this check passed without a baseline)"
        )
    metadata = {
        "partitions_judged": judged,
        "partitions_flagged": len(dropped),
        "min_ratio": budgets.min_volume_ratio,
    }
    return Verdict(
        "volume_within_history",
        passed=not dropped,
        warn=True,
        metadata=metadata if judged else judged_nothing(_no_baseline(volumes, off), metadata),
        description=description,
    )


def _no_baseline(volumes: Sequence[VolumeReport], off: bool) -> str:
    """Why no day of the run was compared with a baseline."""
    if off:
        return (
            "CALENDAR_MIN_VOLUME_RATIO=0 turns the rule off: the run's snapshots are "
            "accepted as they are and become the next days' baseline"
        )
    if all(v.baseline is None for v in volumes):
        return (
            f"no day of the run has an accepted snapshot in the {LOOKBACK_DAYS} days before "
            "it to compare with (a first run, or a backfill before any indexed day)"
        )
    return (
        "no day of the run has a baseline sharing a date with its window (an accepted "
        f"snapshot of the {LOOKBACK_DAYS} days before whose window overlaps)"
    )
