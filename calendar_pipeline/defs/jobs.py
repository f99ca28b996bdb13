"""Jobs: the daily asset job and the Slack delivery job (one op)."""

import datetime as dt
from collections import Counter

import dagster as dg

from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.deliver import DeliveryReport, choose_mode, deliver
from calendar_pipeline.alerts.slack_client import SlackConfigError
from calendar_pipeline.defs.partitions import daily_partitions
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.settings import parse_alert_mode

# The three assets and their checks. In-process: one process for the whole run, not a
# new process per step (what the default multiprocess executor would cost).
daily_calendar_job = dg.define_asset_job(
    "daily_calendar_job",
    selection=dg.AssetSelection.groups("calendar"),
    executor_def=dg.in_process_executor,
    description="Snapshot, index and compute due alerts for one day.",
)


class SendSlackAlertsConfig(dg.Config):
    mode: str = ""
    """Force ``send``, ``dry_run`` or ``record_only``; empty picks it from the settings
    (``record_only`` for a partition before today when the settings say ``send``)."""


@dg.op(
    retry_policy=dg.RetryPolicy(
        max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
    ),
    tags={"kind": "slack"},
)
def send_slack_alerts(
    context: dg.OpExecutionContext,
    config: SendSlackAlertsConfig,
    calendar: CalendarSettings,
    slack: SlackSettings,
) -> dg.Output[None]:
    """Post partition D's due alerts to Slack once each (see alerts/deliver.py). Over a
    range (after a backfill), partitions go oldest first; those before today are
    recorded, not posted, unless the run config forces a mode."""
    configured = (
        parse_alert_mode(config.mode, has_token=False, name="config.mode") if config.mode else ""
    )
    engine = calendar.engine()
    today = calendar.today()
    totals: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    poster = None
    last_report = None
    for partition in context.partition_keys:
        partition_date = dt.date.fromisoformat(partition)
        mode = choose_mode(configured, slack.mode, partition_date, today)
        if mode == "send" and poster is None:
            poster = slack.poster()
        try:
            last_report = deliver(
                engine,
                store.read_due_alerts(engine, partition_date),
                partition_date=partition_date,
                mode=mode,
                run_id=context.run_id,
                default_channel=slack.channel,
                claim_timeout=calendar.claim_timeout,
                outbox_dir=calendar.data_path / "outbox" / partition,
                poster=poster if mode == "send" else None,
                log=context.log.info,
            )
        except SlackConfigError as exc:  # a wrong token or channel: retrying will not fix it
            raise dg.Failure(str(exc), allow_retries=False) from None
        modes[mode] += 1
        totals.update({k: v for k, v in last_report.as_metadata().items() if k != "mode"})
    newest = dt.date.fromisoformat(context.partition_keys[-1])
    pruned = store.prune_deliveries(engine, newest - calendar.retention)
    metadata: dict = {
        "mode": ", ".join(f"{m} x{n}" if n > 1 else m for m, n in modes.items()),
        "partitions": len(context.partition_keys),
        **{key: totals[key] for key in DeliveryReport(mode="").as_metadata() if key != "mode"},
        "pruned": pruned,
    }
    context.log.info(", ".join(f"{key}={value}" for key, value in metadata.items()))
    if last_report is not None and last_report.outbox:
        metadata["outbox"] = dg.MetadataValue.path(str(last_report.outbox[0]))
        metadata["digest"] = dg.MetadataValue.md(f"```\n{last_report.outbox_text}\n```")
    return dg.Output(None, metadata=metadata)


@dg.job(
    partitions_def=daily_partitions,
    executor_def=dg.in_process_executor,
    description="Post partition D's due alerts to Slack, each dedup key once.",
)
def slack_alert_job():
    send_slack_alerts()
