"""One asset check's result in plain values: what the check modules of quality/ return and
`defs/asset_common.check_result` turns into Dagster's `AssetCheckResult`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """One check's result, in plain values."""

    name: str
    passed: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    warn: bool = False  # a WARN check: it never blocks what comes after
