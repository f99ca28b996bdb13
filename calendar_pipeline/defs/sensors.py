"""Sensors: start ingest when upstreams changed; start Slack delivery after due_alerts;
post to Slack when a run fails. (Freshness: defs/freshness.py.)"""

import dagster as dg

# The tags of a run over a partition range: Dagster exports no public constant for them
# (only MAX_RUNTIME_SECONDS_TAG), nor a RunRequest argument for a range.
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from calendar_pipeline.alerts import pending_notices
from calendar_pipeline.alerts.intent import Reference, span
from calendar_pipeline.alerts.slack_client import (
    SlackConfigError,
    SlackDeliveryError,
    SlackWebhookPoster,
)
from calendar_pipeline.alerts.slack_format import render_run_failure
from calendar_pipeline.defs.jobs import (
    DUE_ALERTS_RUN_TAG,
    daily_calendar_job,
    reference_for_run,
    slack_alert_job,
)
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings, UpstreamSources
from calendar_pipeline.sources.http_sources import http_client
from calendar_pipeline.sources.model import Window
from calendar_pipeline.sources.probe import ProbeState, probe_targets, probe_upstreams

DUE_ALERTS = dg.AssetKey("due_alerts")


@dg.sensor(
    job=daily_calendar_job,
    minimum_interval_seconds=15 * 60,
    # Opt-in: it polls every upstream every 15 minutes (network traffic, rate limits)
    # and starts runs of its own; the daily schedule is enough for most (RUNBOOK).
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Probes every upstream politely (each iCalendar feed, each Nager.Date "
    "country-year, one Finnhub range call; conditional GETs within the per-host rate limit "
    "and a 45 s budget per tick, sources/probe.py). Starts today's daily_calendar_job when "
    "an upstream's data or the universe changed; otherwise skips, saying per source what "
    "it saw (changed, unchanged, failing, not probed yet).",
)
def upstream_availability_sensor(
    context: dg.SensorEvaluationContext, calendar: CalendarSettings, upstream: UpstreamSources
) -> dg.SensorResult:
    universe = calendar.load_universe()
    sources = upstream.sources(calendar.engine(), calendar.timezone)
    today = calendar.today()
    targets, broken = probe_targets(
        universe.entities, sources, Window.ahead(today, calendar.lookahead)
    )
    report = probe_upstreams(
        targets,
        ProbeState.from_cursor(context.cursor),
        universe.sha256,
        http_client(sources),
        upstream.probe_budget,
        broken,
    )
    cursor = report.state.to_cursor(partition=today.isoformat())
    if report.unreachable or not report.should_run:
        down = report.unreachable_sources
        verdict = f"upstream unreachable ({', '.join(down)})" if down else "no upstream change"
        return dg.SensorResult(skip_reason=f"{verdict}:\n{report.summary()}", cursor=cursor)
    why = "the universe changed" if report.universe_changed else report.changed_labels()
    context.log.info(f"upstream changed ({why}):\n{report.summary()}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                partition_key=today.isoformat(),
                run_key=f"upstream-{today}-{report.fingerprint[:16]}",
                tags={
                    "calendar/trigger": "upstream_availability_sensor",
                    "calendar/upstream_changed": why[:250],
                    "calendar/upstream_report": _per_source_tag(report),
                },
            )
        ],
        cursor=cursor,
    )


def _per_source_tag(report) -> str:
    """`ics 1 changed 299 unchanged; nager 220 unchanged`: a tag's worth of report."""
    return "; ".join(
        f"{source} " + " ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        for source, counts in sorted(report.per_source().items())
    )[:250]


@dg.run_status_sensor(
    name="slack_alert_sensor",
    run_status=dg.DagsterRunStatus.SUCCESS,
    request_job=slack_alert_job,
    # Every run of the instance, not only this code location's: `calendar-pipeline run`
    # and `dagster asset materialize` execute in their own process, with no location.
    monitor_all_code_locations=True,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts slack_alert_job once per successful run that materialized "
    "due_alerts (counting the runs it retried): for its partition, or for its whole range "
    "after a single-run backfill, tagged with that run's reference day (alerts/intent.py: "
    "which partitions post and which are history). Dagster keeps the cursor: a run that "
    "succeeded while the daemon was down is seen when it is back; switched on for the "
    "first time, the sensor starts from that moment (the next daily run posts what is "
    "due, by the bucket rule). Failed runs never reach Slack.",
)
def slack_alert_sensor(
    context: dg.RunStatusSensorContext, calendar: CalendarSettings
) -> dg.RunRequest | None:
    run = context.dagster_run
    if run.job_name == slack_alert_job.name:
        return None
    keys = sorted(_due_alerts_partitions(context.instance, run))
    if not keys:
        return None  # e.g. only raw_snapshot materialized: nothing for Slack
    context.log.info(f"run {run.run_id[:8]} materialized due_alerts for {span(keys)}")
    try:
        reference = reference_for_run(context.instance, run, calendar.timezone)
    except ValueError as exc:  # a reference tag typed by hand; Dagster would skip the run
        context.log.warning(f"run {run.run_id[:8]}: {exc}; its Slack run will say so")
        reference = None
    return _slack_request(keys, run.run_id, reference)


def _due_alerts_partitions(instance: dg.DagsterInstance, run: dg.DagsterRun) -> set[str]:
    """The due_alerts partitions materialized by `run` and by the runs it retried (a
    re-execution from failure does not repeat the steps that had succeeded)."""
    # get_asset_partitions_for_run: a DagsterInstance method (not underscored, not marked
    # @public in 1.13) that reads the run's distinct materialized partitions in one query.
    keys: set[str] = set()
    current: dg.DagsterRun | None = run
    while current is not None:
        by_asset = instance.get_asset_partitions_for_run(
            current.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        )
        keys.update(key for key in by_asset.get(DUE_ALERTS, ()) if key)
        parent_id = current.parent_run_id
        current = instance.get_run_by_id(parent_id) if parent_id else None
    return keys


def _slack_request(keys: list[str], run_id: str, reference: Reference | None) -> dg.RunRequest:
    tags = {DUE_ALERTS_RUN_TAG: run_id, **(reference.as_tags() if reference else {})}
    run_key = f"due_alerts-{run_id}"
    if len(keys) == 1:
        return dg.RunRequest(partition_key=keys[0], run_key=run_key, tags=tags)
    return dg.RunRequest(
        run_key=run_key,
        tags={
            **tags,
            ASSET_PARTITION_RANGE_START_TAG: keys[0],
            ASSET_PARTITION_RANGE_END_TAG: keys[-1],
        },
    )


@dg.run_failure_sensor(
    name="slack_run_failure_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts to SLACK_ALERTS_CHANNEL (default SLACK_CHANNEL) when any run of "
    "this project fails: job, partition, failing step, its error, and a link to the run.",
)
def slack_run_failure_sensor(
    context: dg.RunFailureSensorContext, slack: SlackSettings, calendar: CalendarSettings
) -> None:
    run = context.dagster_run
    failures = context.get_step_failure_events()
    step = failures[0].step_key if failures else None
    if failures and failures[0].step_failure_data.error is not None:
        failed = failures[0].step_failure_data.error
        while failed.cause is not None and failed.message.startswith("Exceeded max_retries"):
            failed = failed.cause  # the retried step's own error says what happened
        error = failed.message
    else:
        error = context.failure_event.message or "run failed"
    message = render_run_failure(
        channel=slack.failure_channel,
        job_name=run.job_name,
        run_id=run.run_id,
        partition=run.tags.get("dagster/partition"),
        step=step,
        error=_redact(error, slack),
        run_url=f"{slack.webserver_url.rstrip('/')}/runs/{run.run_id}",
    )
    if not slack.can_post:
        context.log.info(f"no Slack token: not posting failure alert\n{message.text}")
        return
    # Dagster moves this sensor's cursor past the run even if posting raises: a notice
    # Slack does not take now is kept and posted later (alerts/pending_notices.py).
    poster = slack.poster()
    try:
        pending_notices.flush(calendar.data_path, poster.post)
        poster.post(message)
        return
    except (SlackConfigError, SlackDeliveryError) as exc:
        failure = exc
    # Slack down or the token refused (often the very failure being reported): the
    # incoming webhook, when one is set, is another way in.
    if slack.token.strip() and slack.webhook_url.strip():
        context.log.warning(f"bot token post failed ({failure.error}); posting through the webhook")
        try:
            SlackWebhookPoster(url=slack.webhook_url.strip()).post(message)
            return
        except (SlackConfigError, SlackDeliveryError) as exc:
            failure = exc
    path = pending_notices.keep(calendar.data_path, run.run_id, message)
    context.log.warning(
        f"failure notice of run {run.run_id} not posted ({failure.error}); kept in {path}, "
        "posted by the next Slack run or failure notice that reaches Slack"
    )


def _redact(text: str, slack: SlackSettings) -> str:
    for secret in slack.secrets:
        text = text.replace(secret, "***")
    return text
