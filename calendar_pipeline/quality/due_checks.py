"""The two checks of `due_alerts`, each with its judgement and its words. Pure:
`defs/due_alerts.py` computes and stores the rows and changes, gathers what is judged
here and turns each :class:`~.verdict.Verdict` into an asset check result.

- `changes_refer_to_known_events` (warn): what the change model found wrong while
  computing (alerts/changes.py `verify_changes`), and the stored changes of each day read
  back against the computed ones.
- `rows_match_bucket_rule` (blocking): the stored rows of each day are the bucket rule
  re-derived from its indexed snapshot (quality/reconcile.py): none missing, none extra.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Protocol

from calendar_pipeline.quality.reconcile import BucketDiff
from calendar_pipeline.quality.verdict import Verdict

MAX_LINES = 10  # problems named in a description


class _Change(Protocol):  # alerts/changes.py's Change, as far as this check reads it
    entity_id: str
    event_id: str


def changes_refer_to_known_events(
    computed: Mapping[dt.date, Sequence[_Change]],
    stored: Mapping[dt.date, Sequence[_Change]],
    problems: Sequence[str],
) -> Verdict:
    """``computed``: each day's changes as the run computed them; ``stored``: the same
    days' changes read back from `event_changes`; ``problems``: what `verify_changes`
    found while computing."""
    wrong = list(problems)
    for day, changes in computed.items():
        if sorted(stored.get(day, []), key=_key) != sorted(changes, key=_key):
            wrong.append(f"{day}: the stored changes differ from the snapshots' (another writer?)")
    total = sum(len(c) for c in computed.values())
    return Verdict(
        "changes_refer_to_known_events",
        passed=not wrong,
        warn=True,
        metadata={"changes": total, "wrong": len(wrong)},
        description="\n".join(wrong[:MAX_LINES]) if wrong else f"{total} changes, each consistent",
    )


def rows_match_bucket_rule(diffs: Sequence[BucketDiff], rows: int) -> Verdict:
    """``diffs``: each day's stored rows against the rule (`reconcile.compare_buckets`);
    ``rows``: the rows stored over the run's days."""
    wrong = [diff for diff in diffs if not diff.ok]
    return Verdict(
        "rows_match_bucket_rule",
        passed=not wrong,
        metadata={"rows": rows, "partitions_wrong": len(wrong)},
        description=(
            "\n".join(diff.describe() for diff in wrong[:MAX_LINES])
            + "\nWhat to do: nothing reaches Slack for these days. Look for another writer "
            "of the due_alerts table or a change to alerts/due.py; re-run the days."
            if wrong
            else None
        ),
    )


def _key(change: _Change) -> tuple[str, str]:
    return (change.entity_id, change.event_id)
