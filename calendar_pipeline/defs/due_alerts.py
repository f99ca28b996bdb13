"""`due_alerts`: the rows of the SQL table `due_alerts` for each day, computed from
the day's indexed snapshot by the bucket rule (alerts/due.py); with its blocking check
rows_match_bucket_rule. slack_alert_sensor reads these rows after a successful run.
"""

import datetime as dt
import hashlib
import json

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
from calendar_pipeline.defs.asset_common import DAILY, logged
from calendar_pipeline.defs.markdown import md_table, md_text
from calendar_pipeline.defs.resources import CalendarSettings
from calendar_pipeline.defs.snapshot_index import snapshot_index
from calendar_pipeline.lake.history import History
from calendar_pipeline.lake.index import SnapshotIndex
from calendar_pipeline.quality.carry import problem_rows
from calendar_pipeline.quality.reconcile import compare_buckets, expected_buckets
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
    index = SnapshotIndex.for_data_dir(calendar.data_path)
    thresholds = calendar.threshold_days
    partitions = context.partition_keys
    expected: dict[dt.date, dict[str, int]] = {}  # the rule re-derived, until checked
    problems: dict[dt.date, list[dict]] = {}  # broken entities per day (feed_problems)
    changes: dict[dt.date, list[Change]] = {}  # what changed per day (event_changes)
    earlier = History(index.get)  # the days before: read once, the run's own days kept
    change_problems: list[str] = []
    counts: dict[dt.date, tuple[dict[int, int], str]] = {}  # per day: per bucket, preview
    wrong: list = []
    rows = 0

    def batches():  # one partition at a time: a long range never holds every snapshot
        seen = set()
        lines = (
            [index.get(partitions[0])] if len(partitions) == 1 else index.entries_for(partitions)
        )
        for entry in lines:
            if entry is None:
                break
            partition, content = entry["partition"], entry["content_text"]
            if hashlib.sha256(content.encode("utf-8")).hexdigest() != entry["sha256"]:
                raise dg.Failure(
                    f"index line for {partition} in {index.path}: content does not match its sha256"
                )
            try:
                events, entities = parse_snapshot_text(content)
            except ValueError as exc:
                raise dg.Failure(f"index line for {partition} in {index.path}: {exc}") from None
            day = dt.date.fromisoformat(partition)
            alerts = compute_due_alerts(events, day, thresholds, entities)
            document = json.loads(content)
            expected[day] = expected_buckets(document, day, thresholds)
            problems[day] = problem_rows(document, calendar.stale_after_days)
            before = earlier.before(partition, LOOKBACK_DAYS)
            changes[day] = detect_changes(document, before, calendar.cancel_after)
            change_problems.extend(verify_changes(document, before, changes[day]))
            earlier.keep(partition, document)
            earlier.forget_before((day - dt.timedelta(days=LOOKBACK_DAYS)).isoformat())
            preview = _alerts_markdown(
                with_changes(alerts, changes[day], day, max(thresholds), calendar.timezone)
            )
            counts[day] = (count_by_threshold(alerts, thresholds), preview)
            seen.add(partition)
            yield day, alerts
        missing = [p for p in partitions if p not in seen]
        if missing:  # raised inside the transaction: nothing of the range is replaced
            raise dg.Failure(
                f"partition {span(missing)} is not in {index.path}: materialize snapshot_index"
            )

    keys = threshold_metadata_keys(thresholds)

    def check(day: dt.date, stored: dict[str, int]) -> None:
        nonlocal rows
        rows += len(stored)
        diff = compare_buckets(str(day), stored, expected.pop(day))
        if not diff.ok:
            wrong.append(diff)
        per_threshold, preview = counts.pop(day)
        context.add_asset_metadata(
            {
                "dagster/row_count": len(stored),
                **{
                    keys.get(threshold, f"due_d{threshold:02d}"): count
                    for threshold, count in per_threshold.items()
                },
                **{f"changes_{k}": n for k, n in count_changes(changes.get(day, [])).items()},
                "preview": dg.MetadataValue.md(preview),
            },
            partition_key=day.isoformat(),
        )

    engine = calendar.engine()
    try:
        store.replace_due_alerts_streamed(engine, batches(), on_stored=check)
        feed_problems.replace_problems(engine, problems)
        change_log.replace_changes(engine, changes)
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        raise dg.Failure(
            f"could not replace the due_alerts rows of {span(partitions)} in "
            f"{engine.url.render_as_string(hide_password=True)}: "
            f"{cause}. Nothing was half replaced (one transaction): the previous rows are "
            "kept. Re-run the day once the database answers."
        ) from None
    return dg.MaterializeResult(
        metadata={"partitions_in_run": len(partitions)},
        check_results=logged(
            context,
            "due_alerts",
            [
                _changes_check(engine, changes, change_problems),
                dg.AssetCheckResult(
                    check_name="rows_match_bucket_rule",
                    passed=not wrong,
                    metadata={
                        "rows": rows,
                        "partitions_wrong": len(wrong),
                    },
                    description=(
                        "\n".join(diff.describe() for diff in wrong[:10])
                        + "\nWhat to do: nothing reaches Slack for these days. Look for "
                        "another writer of the due_alerts table or a change to alerts/due.py; "
                        "re-run the days."
                        if wrong
                        else None
                    ),
                ),
            ],
        ),
    )


def _changes_check(
    engine, changes: dict[dt.date, list[Change]], problems: list[str]
) -> dg.AssetCheckResult:
    """The judgement made while computing (`problems`), and the stored rows read back."""
    wrong = list(problems)
    for day, computed in changes.items():
        stored = change_log.read_changes(engine, day)
        if sorted(stored, key=_key) != sorted(computed, key=_key):
            wrong.append(f"{day}: the stored changes differ from the snapshots' (another writer?)")
    total = sum(len(c) for c in changes.values())
    return dg.AssetCheckResult(
        check_name="changes_refer_to_known_events",
        passed=not wrong,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"changes": total, "wrong": len(wrong)},
        description="\n".join(wrong[:10]) if wrong else f"{total} changes, each consistent",
    )


def _key(change: Change) -> tuple[str, str]:
    return (change.entity_id, change.event_id)


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
