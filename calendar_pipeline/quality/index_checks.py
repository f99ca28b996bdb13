"""The three checks of `snapshot_index`, each with its judgement and its words. Pure:
`defs/snapshot_index.py` writes the lines, gathers what is judged here and turns each
:class:`~.verdict.Verdict` into an asset check result.

- `index_consistent` (blocking): each partition the run wrote has one line, in order,
  pointing at its newest snapshot, with a matching sha256.
- `row_count_matches_snapshot` (blocking): each line the run wrote has the row count of
  the snapshot it embeds (quality/reconcile.py, counted again).
- `index_history_consistent` (warn): no drift on the days the run did not write. With no
  such day (a first run, or a backfill over every stored day) it judged nothing: it
  passes with `judged: "nothing — …"` as its first metadata entry.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from calendar_pipeline.quality.reconcile import index_row_count_problem
from calendar_pipeline.quality.verdict import Verdict, judged_nothing
from calendar_pipeline.text import first_ids

MAX_LINES = 20  # problems named in a description

Problem = tuple[str | None, str]  # (partition, or None for the file itself; what is wrong)


@dataclass
class RowCounts:
    """What `row_count_matches_snapshot` judges, gathered as the run builds each line."""

    rows: list[int] = field(default_factory=list)  # each written line's row_count
    miscounted: list[str] = field(default_factory=list)

    def add(self, entry: Mapping[str, Any], snapshot: Mapping[str, Any]) -> None:
        """One line written for ``snapshot`` (the content it embeds, parsed)."""
        if problem := index_row_count_problem(entry, snapshot):
            self.miscounted.append(problem)
        self.rows.append(entry["row_count"])


def judge(
    problems: Sequence[Problem],
    written: Collection[str],
    counts: RowCounts,
    other_days: Collection[str],
) -> list[Verdict]:
    """The three verdicts of a run that wrote the lines of ``written``. ``problems``:
    `SnapshotIndex.problems` of the whole index (the run's days judged in full);
    ``other_days``: the indexed or stored days the run did not write."""
    mine = [text for partition, text in problems if partition in written]
    drift = [(partition, text) for partition, text in problems if partition not in written]
    return [
        index_consistent(mine, len(written)),
        row_count_matches_snapshot(counts),
        index_history_consistent(drift, other_days),
    ]


def index_consistent(mine: Sequence[str], partitions_in_run: int) -> Verdict:
    return Verdict(
        "index_consistent",
        passed=not mine,
        metadata={"problems": len(mine), "partitions_in_run": partitions_in_run},
        description=(
            "\n".join(mine[:MAX_LINES]) + "\nWhat to do: re-run these days." if mine else None
        ),
    )


def row_count_matches_snapshot(counts: RowCounts) -> Verdict:
    miscounted = counts.miscounted
    return Verdict(
        "row_count_matches_snapshot",
        passed=not miscounted,
        metadata={"rows": sum(counts.rows)},
        description=(
            "\n".join(miscounted[:MAX_LINES]) + "\nWhat to do: the snapshot file was "
            "changed or written by another program; re-run these days."
            if miscounted
            else None
        ),
    )


def index_history_consistent(drift: Sequence[Problem], other_days: Collection[str]) -> Verdict:
    drifted = sorted({p for p, _ in drift if p is not None})
    metadata = {"problems": len(drift), "partitions_with_drift": len(drifted)}
    if not drift and not other_days:
        metadata = judged_nothing(
            "every indexed day and every stored snapshot is one this run wrote (those are "
            "index_consistent's)",
            metadata,
        )
    return Verdict(
        "index_history_consistent",
        passed=not drift,
        warn=True,
        metadata=metadata,
        description=(
            f"drift on {first_ids(drifted) or 'the index file'} (other days are not "
            "blocked):\n"
            + "\n".join(text for _, text in drift[:MAX_LINES])
            + "\nWhat to do: re-run those days (RUNBOOK.md, Re-running a day)."
            if drift
            else None
        ),
    )
