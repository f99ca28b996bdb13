"""The daily schedule: today's partition at CALENDAR_SCHEDULE_HOUR in CALENDAR_TIMEZONE,
with the tick's time stamped on the run as its reference (alerts/intent.py)."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from calendar_pipeline.alerts.intent import Reference
from calendar_pipeline.defs.jobs import daily_calendar_job
from calendar_pipeline.defs.partitions import SCHEDULE_HOUR, TIMEZONE


@dg.schedule(
    job=daily_calendar_job,
    cron_schedule=f"0 {SCHEDULE_HOUR} * * *",
    execution_timezone=TIMEZONE,
    name="daily_calendar_schedule",
    description="Runs daily_calendar_job for today's partition every day at "
    "CALENDAR_SCHEDULE_HOUR:00 in CALENDAR_TIMEZONE (fetch and snapshot, index, due_alerts, "
    "calendar feed); slack_alert_sensor then posts the day's alerts. The run carries the "
    "tick's time as its reference day (tags `calendar/reference_day`, `calendar/reference`).",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def daily_calendar_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    tick = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
    reference = Reference.of_schedule_tick(tick, TIMEZONE)
    # The tick's own day: with end_offset=1 it is the newest partition.
    return dg.RunRequest(partition_key=reference.day.isoformat(), tags=reference.as_tags())
