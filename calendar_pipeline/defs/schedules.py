"""The daily schedule: today's partition at CALENDAR_SCHEDULE_HOUR in CALENDAR_TIMEZONE."""

from __future__ import annotations

import dagster as dg

from calendar_pipeline.defs.jobs import daily_calendar_job
from calendar_pipeline.defs.partitions import SCHEDULE_HOUR

# With end_offset=1 the newest partition is today's, which is what each tick runs.
daily_calendar_schedule = dg.build_schedule_from_partitioned_job(
    daily_calendar_job,
    name="daily_calendar_schedule",
    description="Runs daily_calendar_job for today's partition every day at "
    "CALENDAR_SCHEDULE_HOUR:00 in CALENDAR_TIMEZONE (fetch and snapshot, index, due_alerts); "
    "slack_alert_sensor then posts the day's alerts.",
    hour_of_day=SCHEDULE_HOUR,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
