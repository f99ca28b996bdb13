"""The daily partitions, in CALENDAR_TIMEZONE, with today's partition open (end_offset=1)."""

from __future__ import annotations

import dagster as dg

from calendar_pipeline.settings import load_time_settings

TIMEZONE, START_DATE, SCHEDULE_HOUR = load_time_settings()

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=START_DATE.isoformat(),
    timezone=TIMEZONE,
    end_offset=1,
)
