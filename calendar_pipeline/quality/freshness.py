"""The freshness rule of ``raw_snapshot``, and when staleness is worth a message.

``raw_snapshot`` promises a new materialization at least every 26 hours (the daily run,
plus two hours of slack). Dagster's own evaluation of the asset's ``FreshnessPolicy``
(``dagster-daemon``'s freshness daemon) marks it *Failing* in the UI once its newest
materialization of any partition is older than that; :func:`judge` applies the same rule,
so the Slack message and the UI agree. A *stale period* starts when the window is missed
and ends with the next materialization: one message per period, keyed by the storage id
of the materialization it is about.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

FRESHNESS_WINDOW = dt.timedelta(hours=26)


@dataclass(frozen=True)
class Freshness:
    stale: bool
    alert: bool  # stale, and nobody has been told about this stale period yet
    why: str


def judge(
    last: dt.datetime | None,
    period: str | None,
    now: dt.datetime,
    alerted_for: str | None,
    window: dt.timedelta = FRESHNESS_WINDOW,
) -> Freshness:
    """``last``: when the newest materialization happened (None: never); ``period``: its
    identity (a storage id); ``alerted_for``: the period already alerted about."""
    if last is None:
        return Freshness(False, False, "raw_snapshot was never materialized: nothing to judge")
    age = now - last
    hours = f"{age.total_seconds() / 3600:.1f} h"
    if age < window:
        return Freshness(
            False, False, f"fresh: newest materialization {hours} old (window {_h(window)})"
        )
    if alerted_for == period:
        return Freshness(True, False, f"stale for {_h(age - window)}, already alerted")
    return Freshness(True, True, f"stale: newest materialization {hours} old (window {_h(window)})")


def _h(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g} h"
