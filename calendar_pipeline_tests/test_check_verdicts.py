"""The checks' judgements and words (quality/due_checks.py, index_checks.py,
snapshot_checks.py), plain values in and out: pass or fail, what the description names,
and a check that judged nothing saying so (`judged` first) instead of quietly passing.
The same checks through real runs: test_quality_checks.py."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from calendar_pipeline.quality import due_checks, index_checks
from calendar_pipeline.quality.judge import Budgets
from calendar_pipeline.quality.reconcile import compare_buckets
from calendar_pipeline.quality.snapshot_checks import volume_within_history
from calendar_pipeline.quality.volume import VolumeDrop, VolumeReport

D = dt.date(2026, 3, 10)
BUDGETS = Budgets(failed_share=0.5, missing_share=0.5, min_volume_ratio=0.5, stale_after_days=7)


@dataclass(frozen=True)
class Change:  # the fields of alerts/changes.py's Change that the check compares
    entity_id: str
    event_id: str
    title: str = ""


def test_rows_match_bucket_rule_names_each_wrong_day_and_blocks():
    ok = compare_buckets("2026-03-10", {"a|1|2026-03-11|D-1": 1}, {"a|1|2026-03-11|D-1": 1})
    wrong = compare_buckets("2026-03-11", {"a|2|2026-03-20|D-15": 15}, {"a|3|2026-03-12|D-1": 1})
    passed = due_checks.rows_match_bucket_rule([ok], rows=1)
    assert passed.passed and not passed.warn and passed.description is None
    assert passed.metadata == {"rows": 1, "partitions_wrong": 0}

    failed = due_checks.rows_match_bucket_rule([ok, wrong], rows=2)
    assert not failed.passed and not failed.warn  # ERROR severity: the check blocks
    assert failed.metadata == {"rows": 2, "partitions_wrong": 1}
    assert failed.description.startswith("2026-03-11: 1 rows, the rule gives 1: 1 missing")
    assert "1 unexpected (e.g. a|2|2026-03-20|D-15)" in failed.description
    assert "2026-03-10" not in failed.description
    assert failed.description.endswith("re-run the days.")


def test_changes_are_judged_against_what_was_stored_in_any_order():
    computed = {D: [Change("a", "1"), Change("b", "2")], D + dt.timedelta(days=1): []}
    same = {D: [Change("b", "2"), Change("a", "1")], D + dt.timedelta(days=1): []}
    verdict = due_checks.changes_refer_to_known_events(computed, same, [])
    assert verdict.passed and verdict.warn
    assert verdict.metadata == {"changes": 2, "wrong": 0}
    assert verdict.description == "2 changes, each consistent"

    renamed = {D: [Change("a", "1", title="other"), Change("b", "2")]}  # another writer
    verdict = due_checks.changes_refer_to_known_events(computed, renamed, ["a: moved twice"])
    assert not verdict.passed and verdict.warn
    assert verdict.metadata == {"changes": 2, "wrong": 2}
    assert verdict.description.splitlines() == [
        "a: moved twice",
        "2026-03-10: the stored changes differ from the snapshots' (another writer?)",
    ]


def counts(*rows: tuple[int, str | None]) -> index_checks.RowCounts:
    tally = index_checks.RowCounts()
    for row_count, problem in rows:
        tally.rows.append(row_count)
        if problem:
            tally.miscounted.append(problem)
    return tally


def test_index_problems_of_the_run_block_and_drift_elsewhere_warns():
    problems = [
        ("2026-03-10", "line 3 (2026-03-10): sha256 does not match"),
        ("2026-03-01", "line 1 (2026-03-01): points at an older snapshot"),
        (None, "line 9: trailing partial line of 12 bytes"),
    ]
    written = {"2026-03-10"}
    mine, rows, history = index_checks.judge(
        problems, written, counts((40, None)), other_days={"2026-03-01"}
    )
    assert (mine.name, mine.passed, mine.warn) == ("index_consistent", False, False)
    assert mine.metadata == {"problems": 1, "partitions_in_run": 1}
    assert mine.description == (
        "line 3 (2026-03-10): sha256 does not match\nWhat to do: re-run these days."
    )
    assert (rows.name, rows.passed, rows.metadata) == (
        "row_count_matches_snapshot",
        True,
        {"rows": 40},
    )
    assert (history.name, history.passed, history.warn) == ("index_history_consistent", False, True)
    assert history.metadata == {"problems": 2, "partitions_with_drift": 1}
    assert history.description.startswith("drift on 2026-03-01 (other days are not blocked):")
    assert "trailing partial line" in history.description

    only_file = index_checks.index_history_consistent([(None, "line 9: partial")], set())
    assert not only_file.passed and only_file.description.startswith("drift on the index file")
    assert "judged" not in only_file.metadata  # it judged the file, and found a problem


def test_a_miscounted_line_blocks():
    verdict = index_checks.row_count_matches_snapshot(counts((3, "2026-03-10: says 3"), (5, None)))
    assert not verdict.passed and verdict.metadata == {"rows": 8}
    assert verdict.description.startswith("2026-03-10: says 3\nWhat to do: the snapshot file")


def test_index_history_with_no_other_day_says_it_judged_nothing():
    alone = index_checks.index_history_consistent([], other_days=set())
    assert alone.passed
    assert list(alone.metadata) == ["judged", "problems", "partitions_with_drift"]
    assert alone.metadata["judged"].startswith("nothing — every indexed day and every stored")
    assert min(alone.metadata) == "judged"  # stored sorted: still first in the UI

    judged = index_checks.index_history_consistent([], other_days={"2026-03-01"})
    assert judged.passed and "judged" not in judged.metadata


def report(partition: str, baseline: str | None, judged: bool = True, drops=()) -> VolumeReport:
    shared = (dt.date(2026, 3, 10), dt.date(2026, 5, 8)) if judged else None
    return VolumeReport(partition, baseline, shared, list(drops))


def test_volume_with_no_baseline_passes_saying_it_judged_nothing():
    first_run = [report("2026-03-10", None, False), report("2026-03-11", None, False)]
    verdict = volume_within_history(first_run, BUDGETS)
    assert verdict.passed and verdict.warn
    assert next(iter(verdict.metadata)) == min(verdict.metadata) == "judged"
    assert verdict.metadata["judged"] == (
        "nothing — no day of the run has an accepted snapshot in the 7 days before it to "
        "compare with (a first run, or a backfill before any indexed day)"
    )
    assert verdict.metadata["partitions_judged"] == 0
    assert verdict.description == (
        "2026-03-11: no accepted snapshot in the 7 days before (nothing judged: this check "
        "passed without a baseline)"
    )

    apart = volume_within_history([report("2026-03-10", "2026-03-03", False)], BUDGETS)
    assert "sharing a date with its window" in apart.metadata["judged"]


def test_volume_judged_on_some_days_has_no_judged_entry_and_a_drop_fails():
    some = [report("2026-03-10", None, False), report("2026-03-11", "2026-03-10")]
    verdict = volume_within_history(some, BUDGETS)
    assert verdict.passed and "judged" not in verdict.metadata
    assert verdict.metadata == {"partitions_judged": 1, "partitions_flagged": 0, "min_ratio": 0.5}

    drop = VolumeDrop("entity", "beta", 20, 60)
    dropped = volume_within_history([report("2026-03-11", "2026-03-10", drops=[drop])], BUDGETS)
    assert not dropped.passed and "judged" not in dropped.metadata
    assert "beta: 20 events where the baseline had 60" in dropped.description


def test_volume_with_the_rule_off_says_it_judged_nothing():
    off = Budgets(failed_share=0.5, missing_share=0.5, min_volume_ratio=0, stale_after_days=7)
    verdict = volume_within_history([report("2026-03-11", "2026-03-10")], off)
    assert verdict.passed
    assert verdict.metadata["judged"].startswith("nothing — CALENDAR_MIN_VOLUME_RATIO=0 turns")
    assert verdict.metadata["partitions_judged"] == 0
    assert verdict.description == "2026-03-11: the rule is off (CALENDAR_MIN_VOLUME_RATIO=0)"
