"""Freshness of ``raw_snapshot``, judged on the partition that should exist.

- ``raw_snapshot:freshness_check``: Dagster's partition-aware freshness check
  (``build_time_partition_freshness_checks``): once the day's deadline has passed
  (CALENDAR_SCHEDULE_HOUR + 2 h, in CALENDAR_TIMEZONE), the day's partition must be
  materialized. It is what the UI shows. A run of other partitions (a history backfill)
  does not make it pass.
- ``raw_snapshot_freshness_checks_sensor`` (``build_sensor_for_freshness_checks``) runs
  that check when it can have changed: after each deadline, and after a materialization of
  raw_snapshot while it is failing.
- ``raw_snapshot_freshness_sensor`` posts to SLACK_ALERTS_CHANNEL (default SLACK_CHANNEL)
  once per stale period, by the same rule applied to the same records
  (quality/freshness.py), naming the missing partition and since when.

Dagster marks both factories *superseded* by ``FreshnessPolicy``; in 1.13 a
``FreshnessPolicy`` judges the newest materialization of any partition, which is the
defect this module exists to avoid: the warning is silenced here, on purpose.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings

import dagster as dg

from calendar_pipeline.alerts.slack_format import render_stale
from calendar_pipeline.defs.partitions import (
    SCHEDULE_HOUR,
    START_DATE,
    TIMEZONE,
    daily_partitions,
)
from calendar_pipeline.defs.resources import SlackSettings
from calendar_pipeline.quality.freshness import (
    deadline_cron,
    deadline_time,
    judge,
    latest_deadline,
    missing_since,
)

RAW_SNAPSHOT = dg.AssetKey("raw_snapshot")
DEADLINE_CRON = deadline_cron(SCHEDULE_HOUR)
NO_PERIOD = json.dumps({})  # the cursor outside a stale period; in one: {"alerted": day}
LOOKBACK_DAYS = 366  # how far back the newest partition is looked for, for the message

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.SupersessionWarning)
    raw_snapshot_freshness_checks = dg.build_time_partition_freshness_checks(
        assets=[RAW_SNAPSHOT],
        deadline_cron=DEADLINE_CRON,
        timezone=TIMEZONE,
        severity=dg.AssetCheckSeverity.WARN,
    )
    raw_snapshot_freshness_checks_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=raw_snapshot_freshness_checks,
        name="raw_snapshot_freshness_checks_sensor",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        tags={"calendar/trigger": "raw_snapshot_freshness_checks_sensor"},
    )


@dg.sensor(
    name="raw_snapshot_freshness_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts to SLACK_ALERTS_CHANNEL (default SLACK_CHANNEL) once per stale "
    "period when the day's raw_snapshot partition is not materialized by its deadline "
    "(CALENDAR_SCHEDULE_HOUR + 2 h, same day): the rule of raw_snapshot:freshness_check, "
    "which the UI shows (quality/freshness.py). Other partitions (a history backfill) do "
    "not count. The message names the missing partition and since when.",
)
def raw_snapshot_freshness_sensor(
    context: dg.SensorEvaluationContext, slack: SlackSettings
) -> dg.SensorResult:
    now = dt.datetime.now(dt.UTC)
    deadline = latest_deadline(now, deadline_time(SCHEDULE_HOUR), TIMEZONE)
    expected = deadline.date().isoformat()
    instance = context.instance
    materialized = _has_materialization(instance, expected)
    ever = materialized or instance.get_latest_materialization_event(RAW_SNAPSHOT) is not None
    alerted = json.loads(context.cursor).get("alerted") if context.cursor else None
    verdict = judge(
        expected, deadline, now, materialized=materialized, ever=ever, alerted=bool(alerted)
    )
    if not verdict.stale:
        return dg.SensorResult(skip_reason=verdict.why, cursor=NO_PERIOD)  # (None: unchanged)
    if not verdict.alert:
        return dg.SensorResult(skip_reason=verdict.why, cursor=context.cursor)
    newest = _newest_partition(instance, expected)
    message = render_stale(
        channel=slack.failure_channel,
        asset="raw_snapshot",
        partition=expected,
        due=deadline.strftime("%Y-%m-%d %H:%M %Z"),
        late_hours=(now - deadline).total_seconds() / 3600,
        newest=newest,
        missing_since=missing_since(newest) if newest else None,
        asset_url=f"{slack.webserver_url.rstrip('/')}/assets/raw_snapshot",
    )
    if slack.can_post:
        slack.poster().post(message)  # raises when Slack fails: the next tick tries again
    else:
        context.log.info(f"no Slack token: not posting the staleness alert\n{message.text}")
    return dg.SensorResult(
        skip_reason=f"{verdict.why}: alerted {message.channel}",
        cursor=json.dumps({"alerted": expected}),
    )


def _has_materialization(instance: dg.DagsterInstance, partition: str) -> bool:
    """The check's own test: a materialization record of that partition (any run)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_SNAPSHOT, asset_partitions=[partition]), limit=1
    ).records
    return bool(records)


def _newest_partition(instance: dg.DagsterInstance, before: str) -> str | None:
    """The newest materialized partition before ``before``, within LOOKBACK_DAYS."""
    last = dt.date.fromisoformat(before)
    first = max(last - dt.timedelta(days=LOOKBACK_DAYS), START_DATE)
    days = [first + dt.timedelta(days=n) for n in range((last - first).days)]
    if not days:
        return None
    keys = [day.isoformat() for day in days]
    status = instance.get_status_by_partition(RAW_SNAPSHOT, keys, daily_partitions) or {}
    done = [k for k in keys if status.get(k) == dg.AssetPartitionStatus.MATERIALIZED]
    return done[-1] if done else None
