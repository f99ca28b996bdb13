"""One asset check's result in plain values: what the check modules of quality/ return and
`defs/asset_common.check_result` turns into Dagster's `AssetCheckResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JUDGED = "judged"  # the metadata entry of a check that had nothing to judge


@dataclass(frozen=True)
class Verdict:
    """One check's result, in plain values."""

    name: str
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    warn: bool = False  # a WARN check: it never blocks what comes after


def judged_nothing(reason: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with `judged: "nothing — <reason>"` first: a check that had nothing to
    judge still passes (Dagster 1.13 records no *skipped* result for a check that ran, and
    an asset that leaves out a declared check's result fails its step), but says so before
    any count. Dagster stores metadata with its keys sorted, so the UI shows `judged` first
    only where it sorts before the check's other keys (true of every check using it)."""
    return {JUDGED: f"nothing — {reason}", **metadata}
