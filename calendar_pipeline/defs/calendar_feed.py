"""`calendar_feed`: the iCalendar files under `{data_dir}/feeds/` that people subscribe to
(`all.ics` and one per Slack channel), built from each day's indexed snapshot and the
changes `due_alerts` stored for it (feeds/build.py, feeds/publish.py). Served read-only by
`calendar-pipeline serve-feeds` (feeds/serve.py).
"""

import datetime as dt
import json

import dagster as dg
from sqlalchemy.exc import SQLAlchemyError

from calendar_pipeline.alerts import change_log
from calendar_pipeline.alerts.changes import CANCELLED
from calendar_pipeline.alerts.intent import span
from calendar_pipeline.defs.asset_common import DAILY, storage_failure
from calendar_pipeline.defs.due_alerts import due_alerts
from calendar_pipeline.defs.markdown import md_table
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.feeds import build, publish
from calendar_pipeline.lake.atomic import StorageError
from calendar_pipeline.lake.index import SnapshotIndex


@dg.asset(**DAILY, kinds={"python", "ical"}, deps=[due_alerts])
def calendar_feed(
    context: dg.AssetExecutionContext, calendar: CalendarSettings, slack: SlackSettings
) -> dg.MaterializeResult:
    """iCalendar feeds people subscribe to from Google Calendar, Outlook or Apple Calendar:
    `{data_dir}/feeds/all.ics` and one `<channel>.ics` per Slack channel (an entity
    without a channel is in `SLACK_CHANNEL`'s). Each event keeps one UID across days (UID
    churn included), its SEQUENCE rises when its date, time or title changes, a cancelled
    event stays 7 days as `STATUS:CANCELLED`, and it has one VALARM per alert threshold.
    Written atomically; the newest day processed rewrites the files, an older day (a
    backfill) only its stored state (`feeds/state.json`)."""
    partitions = context.partition_keys
    try:
        report = publish.publish(
            calendar.data_path,
            _days(calendar, partitions),
            thresholds=calendar.threshold_days,
            default_channel=slack.channel,
            timezone=calendar.timezone,
        )
    except StorageError as exc:
        raise storage_failure(exc, "the calendar feeds") from None
    except ValueError as exc:  # an unreadable state.json: says which and what to do
        raise dg.Failure(str(exc), allow_retries=False) from None
    for day, counts in report.per_day.items():
        context.add_asset_metadata(
            {
                "dagster/row_count": counts["events"],
                "cancelled_shown": counts["cancelled"],
                "changed_today": counts["changed_today"],
            },
            partition_key=day.isoformat(),
        )
    metadata: dict = {"partitions_in_run": len(partitions)}
    if report.skipped:
        metadata["skipped"] = span(report.skipped)
        context.log.info(
            f"feeds of {span(report.skipped)} left as they are: older than the days "
            "feeds/state.json keeps"
        )
    if report.published_day is None:
        context.log.info(
            f"feeds of {span(partitions)} stored in feeds/state.json; the published files "
            "stay those of a newer day"
        )
        metadata["published"] = "no: a newer day's feeds are published"
        return dg.MaterializeResult(metadata=metadata)
    context.log.info(
        f"calendar feeds of {report.published_day}: "
        + ", ".join(f"{name}.ics {n} events" for name, n in report.events.items())
        + f" in {publish.feeds_dir(calendar.data_path)}"
    )
    return dg.MaterializeResult(metadata={**metadata, **_published_metadata(report)})


def _days(calendar: CalendarSettings, partitions: list[str]):
    """What `publish` needs of each day, one day at a time (a long range never holds every
    snapshot): its indexed snapshot and the events cancelled that day."""
    index = SnapshotIndex.for_data_dir(calendar.data_path)
    engine = calendar.engine()
    for partition in partitions:
        entry = index.get(partition)
        if entry is None:
            raise dg.Failure(
                f"partition {partition} is not in {index.path}: materialize snapshot_index"
            )
        day = dt.date.fromisoformat(partition)
        try:
            changes = change_log.read_changes(engine, day)
        except SQLAlchemyError as exc:
            raise dg.Failure(f"could not read the changes of {day}: {exc}") from None
        cancelled = [
            build.CancelledRow(c.entity_id, c.event_id, c.event_date, c.title, c.start)
            for c in changes
            if CANCELLED in c.kinds
        ]
        yield publish.DayInput(day, json.loads(entry["content_text"]), cancelled)


def _published_metadata(report: publish.FeedReport) -> dict:
    """The published day, and per feed its event count and file."""
    metadata: dict = {"published_day": report.published_day.isoformat()}
    for name, count in report.events.items():
        metadata[f"events_{name}"] = count
        metadata[f"file_{name}"] = dg.MetadataValue.path(str(report.files[name]))
    metadata["feeds"] = dg.MetadataValue.md(
        md_table(
            ["feed", "events", "file"],
            [
                [f"{name}.ics", report.events[name], str(path)]
                for name, path in report.files.items()
            ],
        )
    )
    if report.removed:
        metadata["removed"] = ", ".join(p.name for p in report.removed)
    return metadata
