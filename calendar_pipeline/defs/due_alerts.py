"""`due_alerts`: the rows of the SQL table `due_alerts` for each day, computed from
the day's indexed snapshot by the bucket rule (alerts/due.py); with its checks
rows_match_bucket_rule (blocking) and changes_refer_to_known_events (a warning), whose
judgements and words are in quality/due_checks.py. slack_alert_sensor reads these rows
after a successful run.
"""

import datetime as dt
import hashlib
import json
from collections.abc import Iterator

import dagster as dg
from sqlalchemy.exc import SQLAlchemyError

from calendar_pipeline.alerts import change_log, feed_problems, store
from calendar_pipeline.alerts.change_words import change_words, with_changes
from calendar_pipeline.alerts.changes import (
    LOOKBACK_DAYS,
    Change,
    count_changes,
    detect_changes,
    verify_changes,
)
from calendar_pipeline.alerts.due import (
    compute_due_alerts,
    count_by_threshold,
    threshold_metadata_keys,
)
from calendar_pipeline.alerts.intent import span
from calendar_pipeline.defs.asset_common import DAILY, check_result, logged
from calendar_pipeline.defs.markdown import md_table, md_text
from calendar_pipeline.defs.resources import CalendarSettings
from calendar_pipeline.defs.snapshot_index import snapshot_index
from calendar_pipeline.lake.history import History
from calendar_pipeline.lake.index import SnapshotIndex
from calendar_pipeline.quality import due_checks
from calendar_pipeline.quality.carry import problem_rows
from calendar_pipeline.quality.reconcile import BucketDiff, compare_buckets, expected_buckets
from calendar_pipeline.sources.collect import parse_snapshot_text


@dg.asset(
    **DAILY,
    kinds={"python", "sql"},
    deps=[snapshot_index],
    check_specs=[
        dg.AssetCheckSpec(
            "changes_refer_to_known_events",
            asset="due_alerts",
            description="Every stored change of the run's days (table `event_changes`) "
            "agrees with the indexed snapshots: a cancelled, moved or renamed event was in an "
            "earlier snapshot of its entity, a new one was not in the one before, and a "
            "cancellation's event is not in the day's snapshot as a live event. Warns: "
            "another writer of the table, or a bug in alerts/changes.py.",
        ),
        dg.AssetCheckSpec(
            "rows_match_bucket_rule",
            asset="due_alerts",
            blocking=True,
            description="The stored rows of each partition of the run are exactly the "
            "events of its indexed snapshot that the bucket rule puts in a threshold, "
            "re-derived inside the check (quality/reconcile.py): none missing, none extra.",
        ),
    ],
)
def due_alerts(context: dg.AssetExecutionContext, calendar: CalendarSettings):
    """Rows of the SQL table `due_alerts` for partition D: every event whose days-until
    falls in a threshold bucket (the smallest threshold >= days until). A pure function
    of D's indexed snapshot, replaced per partition in one transaction (a range: one
    transaction for all its partitions)."""
    partitions = context.partition_keys
    run = _DueRun(context, calendar, SnapshotIndex.for_data_dir(calendar.data_path))
    engine = calendar.engine()
    try:
        store.replace_due_alerts_streamed(engine, run.days(), on_stored=run.stored)
        feed_problems.replace_problems(engine, run.problems)
        change_log.replace_changes(engine, run.changes)
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        raise dg.Failure(
            f"could not replace the due_alerts rows of {span(partitions)} in "
            f"{engine.url.render_as_string(hide_password=True)}: "
            f"{cause}. Nothing was half replaced (one transaction): the previous rows are "
            "kept. Re-run the day once the database answers."
        ) from None
    stored_changes = {day: change_log.read_changes(engine, day) for day in run.changes}
    verdicts = [
        due_checks.changes_refer_to_known_events(run.changes, stored_changes, run.wrong_changes),
        due_checks.rows_match_bucket_rule(run.diffs, run.rows),
    ]
    return dg.MaterializeResult(
        metadata={"partitions_in_run": len(partitions)},
        check_results=logged(context, "due_alerts", [check_result(v) for v in verdicts]),
    )


class _DueRun:
    """One run of due_alerts, a day at a time: each day's rows (`days`, for the store),
    checked as they are stored (`stored`), and what else the day gives: its broken
    entities (`problems`, for feed_problems) and its changes (`changes`, event_changes)."""

    def __init__(
        self, context: dg.AssetExecutionContext, calendar: CalendarSettings, index: SnapshotIndex
    ) -> None:
        self.context, self.calendar, self.index = context, calendar, index
        self.partitions = context.partition_keys
        self.thresholds = calendar.threshold_days
        self.keys = threshold_metadata_keys(self.thresholds)
        self.earlier = History(index.get)  # the days before: read once, the run's own kept
        self.problems: dict[dt.date, list[dict]] = {}
        self.changes: dict[dt.date, list[Change]] = {}
        self.wrong_changes: list[str] = []  # verify_changes' findings
        self.expected: dict[dt.date, dict[str, int]] = {}  # the rule re-derived, until checked
        self.counts: dict[dt.date, tuple[dict[int, int], str]] = {}  # per bucket, preview
        self.diffs: list[BucketDiff] = []
        self.rows = 0

    def days(self) -> Iterator[tuple[dt.date, list]]:
        """``(day, its due alerts)``, one partition at a time: a long range never holds
        every snapshot. A partition missing from the index fails the run inside the
        transaction: nothing of the range is replaced."""
        index, partitions, seen = self.index, self.partitions, set()
        lines = (
            [index.get(partitions[0])] if len(partitions) == 1 else index.entries_for(partitions)
        )
        for entry in lines:
            if entry is None:
                break
            seen.add(entry["partition"])
            yield self._day(entry)
        missing = [p for p in partitions if p not in seen]
        if missing:
            raise dg.Failure(
                f"partition {span(missing)} is not in {index.path}: materialize snapshot_index"
            )

    def _day(self, entry: dict) -> tuple[dt.date, list]:
        partition, content, calendar = entry["partition"], entry["content_text"], self.calendar
        where = f"index line for {partition} in {self.index.path}"
        if hashlib.sha256(content.encode("utf-8")).hexdigest() != entry["sha256"]:
            raise dg.Failure(f"{where}: content does not match its sha256")
        try:
            events, entities = parse_snapshot_text(content)
        except ValueError as exc:
            raise dg.Failure(f"{where}: {exc}") from None
        day = dt.date.fromisoformat(partition)
        thresholds = self.thresholds
        alerts = compute_due_alerts(events, day, thresholds, entities)
        document = json.loads(content)
        self.expected[day] = expected_buckets(document, day, thresholds)
        self.problems[day] = problem_rows(document, calendar.stale_after_days)
        before = self.earlier.before(partition, LOOKBACK_DAYS)
        changes = self.changes[day] = detect_changes(document, before, calendar.cancel_after)
        self.wrong_changes.extend(verify_changes(document, before, changes))
        self.earlier.keep(partition, document)
        self.earlier.forget_before((day - dt.timedelta(days=LOOKBACK_DAYS)).isoformat())
        preview = _alerts_markdown(
            with_changes(alerts, changes, day, max(thresholds), calendar.timezone)
        )
        self.counts[day] = (count_by_threshold(alerts, thresholds), preview)
        return day, alerts

    def stored(self, day: dt.date, stored: dict[str, int]) -> None:
        """What the table holds for ``day``, read back in the transaction: judged against
        the rule (rows_match_bucket_rule) and put on the day's materialization."""
        self.rows += len(stored)
        self.diffs.append(compare_buckets(str(day), stored, self.expected.pop(day)))
        per_threshold, preview = self.counts.pop(day)
        self.context.add_asset_metadata(
            {
                "dagster/row_count": len(stored),
                **{
                    self.keys.get(threshold, f"due_d{threshold:02d}"): count
                    for threshold, count in per_threshold.items()
                },
                **{f"changes_{k}": n for k, n in count_changes(self.changes[day]).items()},
                "preview": dg.MetadataValue.md(preview),
            },
            partition_key=day.isoformat(),
        )


def _alerts_markdown(alerts, limit: int = 30) -> str:
    """The day's lines as a table: the same time and change words as the Slack lines
    (change notices, bucket 0, first)."""
    if not alerts:
        return "Nothing due."
    ordered = sorted(alerts, key=lambda a: (a.threshold_days > 0, a.days_until, a.entity_name))
    rows = [
        ("change" if a.notice else f"D\\-{a.threshold_days}",
         f"{a.event_date} {a.time_text}" if a.time_text else a.event_date, a.days_until,
         md_text(a.entity_name, 100), md_text(a.title, 200), md_text(_change_text(a), 200))
        for a in ordered[:limit]
    ]  # fmt: skip
    return md_table(
        ("bucket", "date", "days", "entity", "event", "change"),
        rows,
        more=len(alerts) - len(rows),
    )


def _change_text(alert) -> str:
    words = change_words(alert)
    if alert.previous_date is not None and alert.previous_date != alert.event_date:
        words.append(f"date changed, was {alert.previous_date}")
    if alert.previous_time_text:
        words.append(f"time changed, was {alert.previous_time_text}")
    return "; ".join(words)
