"""Jobs: the daily asset job and the Slack delivery job (one op)."""

import dataclasses
import datetime as dt
from collections import Counter

import dagster as dg

# The tag Dagster itself writes on a backfill's runs. Dagster exports no public constant
# for it (only MAX_RUNTIME_SECONDS_TAG): this is its own, not a retyped string.
from dagster._core.storage.tags import BACKFILL_ID_TAG
from pydantic import Field
from sqlalchemy.exc import SQLAlchemyError

from calendar_pipeline.alerts import change_log, feed_problems, pending_notices, store
from calendar_pipeline.alerts.change_words import with_changes
from calendar_pipeline.alerts.deliver import (
    DeliveryReport,
    LedgerLost,
    LedgerRecovery,
    choose_mode,
    deliver,
    lost_ledger,
    note_ledger,
)
from calendar_pipeline.alerts.intent import (
    HISTORY,
    Reference,
    describe,
    intent_for,
    reference_for,
    span,
    within_grace,
)
from calendar_pipeline.alerts.slack_client import SlackConfigError, SlackDeliveryError
from calendar_pipeline.alerts.threads import ThreadReport, reply_in_threads
from calendar_pipeline.defs.markdown import md_code_block
from calendar_pipeline.defs.partitions import daily_partitions
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.settings import parse_alert_mode

# The four assets and their checks, in one process (the executor of definitions.py). Not the
# freshness check (defs/freshness.py): run inside the day's run, before the deadline, it
# would judge yesterday's partition; its own sensor runs it after each deadline and after
# each materialization while it fails.
FRESHNESS_CHECK = dg.AssetCheckKey(dg.AssetKey("raw_snapshot"), "freshness_check")
daily_calendar_job = dg.define_asset_job(
    "daily_calendar_job",
    selection=dg.AssetSelection.groups("calendar") - dg.AssetSelection.checks(FRESHNESS_CHECK),
    description="Snapshot, index and compute due alerts for one day.",
)


class SendSlackAlertsConfig(dg.Config):
    mode: str = ""
    """Force `send`, `dry_run` or `record_only` for every partition of the run; empty
    picks it per partition: `history` partitions are replayed (nothing posted, nothing
    recorded), daily ones use the settings' mode (alerts/intent.py)."""
    keys: list[str] = Field(default_factory=list)
    """Only these dedup keys of each partition (`calendar-pipeline resend`); empty: all."""


DUE_ALERTS_RUN_TAG = "calendar/due_alerts_run"


def reference_for_run(instance: dg.DagsterInstance, run: dg.DagsterRun, timezone: str) -> Reference:
    """The reference day of `run` (alerts/intent.py states the rule): the one stamped on
    it (tags `calendar/reference_day`, `calendar/reference`: the schedule's tick, the
    CLI's start, copied onto retries), else its backfill's launch, else the creation of
    the first run of its retry chain."""
    stamped = Reference.from_tags(run.tags)
    if stamped is not None:
        return stamped
    backfill_id = run.tags.get(BACKFILL_ID_TAG)
    # A backfill's launch time has no other public reader: a UI backfill launched at 23:59
    # keeps that day as its reference even when its runs start after midnight.
    backfill = instance.get_backfill(backfill_id) if backfill_id else None
    root_id = run.root_run_id or run.run_id
    return reference_for(
        timezone=timezone,
        backfill_id=backfill_id,
        backfill_launched_at=(
            dt.datetime.fromtimestamp(backfill.backfill_timestamp, dt.UTC) if backfill else None
        ),
        root_run_id=root_id,
        root_created_at=(
            _created_at(instance, root_id)
            or _created_at(instance, run.run_id)
            or dt.datetime.now(dt.UTC)  # a run that left no trace: treat it as new
        ),
    )


def _created_at(instance: dg.DagsterInstance, run_id: str) -> dt.datetime | None:
    """When `run_id` was created: the time of its first event (written by the process
    that created it, as the run is created), else the run record's creation time (the
    database server's clock), else `None` when the run is unknown."""
    first = instance.get_records_for_run(run_id, limit=1, ascending=True).records
    if first:
        return dt.datetime.fromtimestamp(first[0].event_log_entry.timestamp, dt.UTC)
    record = instance.get_run_record_by_id(run_id)
    return record.create_timestamp if record else None


def slack_run_reference(context: dg.OpExecutionContext, timezone: str) -> Reference:
    """Which day this Slack run treats as "today": the reference its tags carry (set by
    slack_alert_sensor or the CLI, and copied onto retries), else that of the run that
    computed due_alerts, else its own (a Slack run launched by hand)."""
    upstream_id = context.run.tags.get(DUE_ALERTS_RUN_TAG)
    try:
        tagged = Reference.from_tags(context.run.tags)
        if tagged is not None:
            return tagged
        upstream = context.instance.get_run_by_id(upstream_id) if upstream_id else None
        return reference_for_run(context.instance, upstream or context.run, timezone)
    except ValueError as exc:  # a reference tag typed by hand, here or on the upstream run
        raise dg.Failure(str(exc), allow_retries=False) from None


# Slack unreachable (HTTP 5xx, connection refused, timeouts): each attempt gives up after
# the client's retries (retry_policy.py: 4, full-jitter backoff from 0.5 s doubling: at
# most 7.5 s of waits plus the attempts' timeouts),
# then the op is retried once after 15 s: a run gives up within about a minute
# (docs/RUNBOOK.md; test_slack_outage measures it). No jitter: one Slack run at a time
# has no herd to spread, and Dagster's PLUS_MINUS would make the wait 0 to 2x the delay.
# What it could not post is marked failed and posted, marked late, by the next run.
SLACK_RETRY_POLICY = dg.RetryPolicy(max_retries=1, delay=15)


@dg.op(
    retry_policy=SLACK_RETRY_POLICY,
    tags={"kind": "slack"},
)
def send_slack_alerts(
    context: dg.OpExecutionContext,
    config: SendSlackAlertsConfig,
    calendar: CalendarSettings,
    slack: SlackSettings,
) -> dg.Output[None]:
    """Post partition D's due alerts to Slack once each (see alerts/deliver.py). Over a
    range (after a backfill), partitions go oldest first; those before the run's
    reference day are history (alerts/intent.py): replayed, never posted or recorded,
    unless the run config forces a mode."""
    try:
        return _send_slack_alerts(context, config, calendar, slack)
    except SQLAlchemyError as exc:  # a full disk, a lost server: one line, not a traceback
        raise dg.Failure(_database_failed(calendar, context.partition_keys, exc)) from None


def _database_failed(calendar: CalendarSettings, partitions: list[str], exc: Exception) -> str:
    cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    url = calendar.db_url or store.default_db_url(calendar.data_path)
    return (
        f"the database {store.shown_url(url)} failed during the Slack step: {cause}. What "
        "was posted is recorded, or settled by the next run from its claims (nothing is "
        "posted twice). Free space or bring the database back, then run slack_alert_job "
        f"for {span(partitions)} again."
    )


def _send_slack_alerts(
    context: dg.OpExecutionContext,
    config: SendSlackAlertsConfig,
    calendar: CalendarSettings,
    slack: SlackSettings,
) -> dg.Output[None]:
    configured = (
        parse_alert_mode(config.mode, has_token=False, name="config.mode") if config.mode else ""
    )
    engine = calendar.engine()
    partitions = [dt.date.fromisoformat(p) for p in context.partition_keys]
    reference = within_grace(slack_run_reference(context, calendar.timezone), calendar.today())
    context.log.info(
        f"delivery: {describe(partitions, reference)}"
        + (f"; mode forced to {configured} by the run config" if configured else "")
    )
    totals: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    replies: Counter[str] = Counter(ThreadReport().as_metadata())
    poster = None
    last_report = None
    bad_channels: dict[str, str] = {}  # channel -> why Slack refused it (item: fails alone)
    bad_channel_alerts = 0
    recovery: LedgerRecovery | None = None  # the ledger is lost: rebuilt from Slack
    ledger_checked = False
    for partition_date in partitions:
        mode = choose_mode(configured, slack.mode, intent_for(partition_date, reference))
        if mode == "send" and poster is None:
            poster = slack.poster()
        alerts = _alerts_to_deliver(engine, partition_date, calendar)
        if config.keys:  # a re-send: only the chosen alerts (alerts/ledger_view.py)
            alerts = [a for a in alerts if a.dedup_key in set(config.keys)]
        elif mode == "send" and not ledger_checked:  # (a re-send removed its rows itself)
            ledger_checked = True
            recovery = _ledger_recovery(context, engine, calendar, slack, partition_date, alerts)
        try:
            last_report = deliver(
                engine,
                alerts,
                partition_date=partition_date,
                mode=mode,
                run_id=context.run_id,
                default_channel=slack.channel,
                claim_timeout=calendar.claim_timeout,
                outbox_dir=calendar.data_path / "outbox" / partition_date.isoformat(),
                poster=poster if mode == "send" else None,
                log=context.log.info,
                is_dead=lambda run_id: _run_ended(context.instance, run_id),
                recovery=recovery,
            )
        except LedgerLost as exc:  # and no way to read Slack's history: nothing posted
            raise dg.Failure(
                str(exc), metadata={"ledger_lost": str(exc)}, allow_retries=False
            ) from None
        except SlackConfigError as exc:  # a wrong token or channel: retrying will not fix it
            raise dg.Failure(
                _not_posted(engine, alerts, partition_date, slack.channel, exc),
                metadata={"slack_error": exc.error},
                allow_retries=False,
            ) from None
        except SlackDeliveryError as exc:  # Slack down: retried once, then the next run
            raise dg.Failure(
                _not_posted(engine, alerts, partition_date, slack.channel, exc),
                metadata={"slack_error": exc.error},
            ) from None
        modes[mode] += 1
        if last_report.failed_channels:
            bad_channels.update(last_report.failed_channels)
            bad_channel_alerts += last_report.failed
        if mode == "send":  # replies in the threads of the messages that announced them
            threads = reply_in_threads(
                engine,
                partition_date,
                alerts,
                poster=poster,
                run_id=context.run_id,
                claim_timeout=calendar.claim_timeout,
                default_channel=slack.channel,
                log=context.log.info,
            )
            replies.update(threads.as_metadata())
            if threads.error:
                context.log.warning(
                    f"{threads.failed} thread replies of {partition_date} not posted "
                    f"({threads.error}); the next run of the day posts them"
                )
        totals.update({k: v for k, v in last_report.as_metadata().items() if k != "mode"})
    if recovery is not None and recovery.found is not None:
        context.log.warning(
            f"the lost ledger was rebuilt from Slack: {recovery.recovered} alert(s) already "
            "posted were recorded as sent and not posted again"
        )
    try:
        note_ledger(engine, calendar.data_path, partitions[-1])
    except Exception as exc:  # the marker only helps tell a lost ledger later: not fatal
        context.log.warning(f"could not write the ledger marker: {exc}")
    notice = _tell_broken_entities(context, engine, calendar, slack, partitions, reference,
                                   configured, poster)  # fmt: skip
    kept_notices = _post_kept_failure_notices(context, calendar, poster)
    if poster is not None and poster.history_warning:
        context.log.warning(poster.history_warning)
    pruned = store.prune_deliveries(engine, partitions[-1] - calendar.retention)
    history = [p for p in partitions if intent_for(p, reference) == HISTORY]
    metadata: dict = {
        "mode": ", ".join(f"{m} x{n}" if n > 1 else m for m, n in modes.items()),
        "partitions": len(partitions),
        "reference_day": reference.day.isoformat(),
        "reference": reference.why,
        "history_partitions": len(history),
        "daily_partitions": len(partitions) - len(history),
        **{key: totals[key] for key in DeliveryReport(mode="").as_metadata() if key != "mode"},
        "pruned": pruned,
        **notice.as_metadata(),
        **replies,
        "failure_notices_posted_late": kept_notices,
    }
    if bad_channels:
        metadata["failed_channels"] = ", ".join(sorted(bad_channels))
    context.log.info(", ".join(f"{key}={value}" for key, value in metadata.items()))
    if last_report is not None and last_report.outbox:
        metadata["outbox"] = dg.MetadataValue.path(str(last_report.outbox[0]))
        metadata["digest"] = dg.MetadataValue.md(md_code_block(last_report.outbox_text))
    if bad_channels:
        # Every other channel was posted in full; the run still fails so that the failure
        # notice names the channels (retrying does not fix a channel: no retries).
        lines = [f"{channel}: {why}" for channel, why in sorted(bad_channels.items())]
        raise dg.Failure(
            f"{bad_channel_alerts} alert(s) not posted: Slack refused "
            f"{len(bad_channels)} channel(s), every other channel was posted: " + "; ".join(lines),
            metadata={**metadata, "failed_channel_reasons": "\n".join(lines)},
            allow_retries=False,
        )
    return dg.Output(None, metadata=metadata)


def _ledger_recovery(
    context, engine, calendar: CalendarSettings, slack: SlackSettings, day: dt.date, alerts
) -> LedgerRecovery | None:
    """When the ledger is lost (alerts/deliver.py `lost_ledger`): how to rebuild it from
    the history of every channel the universe routes to (and the default channel), back
    to the ledger's retention; else None."""
    reason = lost_ledger(engine, calendar.data_path, day, calendar.retention)
    if reason is None:
        return None
    channels = {slack.channel} | {a.channel for a in alerts if a.channel}
    try:
        channels |= {e.channel for e in calendar.load_universe().entities if e.channel}
    except Exception as exc:  # checked at start; the alerts' own channels still count
        context.log.warning(f"reading the universe's channels: {exc}")
    context.log.warning(f"{reason}; rebuilding it from Slack's history before posting")
    return LedgerRecovery(
        reason=reason,
        channels=sorted(channels),
        oldest=dt.datetime.now(dt.UTC) - calendar.retention,
    )


def _post_kept_failure_notices(context, calendar: CalendarSettings, poster) -> int:
    """Post the run-failure notices Slack did not take when their run failed (an outage
    day's own failure: alerts/pending_notices.py), now that this run reached Slack."""
    if poster is None or not pending_notices.pending(calendar.data_path):
        return 0
    try:
        posted = pending_notices.flush(calendar.data_path, poster.post)
    except (SlackConfigError, SlackDeliveryError) as exc:
        context.log.warning(f"kept failure notices not posted yet ({exc.error})")
        return 0
    context.log.info(f"posted {posted} failure notice(s) kept while Slack was unreachable")
    return posted


def _not_posted(engine, alerts, partition_date: dt.date, default_channel: str, error) -> str:
    """One line per channel: how many of its alerts of `partition_date` are not posted
    (marked failed: the next run posts them, marked late), and why."""
    delivered = store.delivered_keys(engine, [a.dedup_key for a in alerts])
    unsent = Counter(a.channel or default_channel for a in alerts if a.dedup_key not in delivered)
    head = f"Slack delivery of {partition_date} stopped: {error}"
    lines = [
        f"{channel}: {count} alert(s) not posted, the next run posts them (marked late)"
        for channel, count in sorted(unsent.items())
    ]
    return "\n".join([head, *lines])


def _alerts_to_deliver(engine, partition_date: dt.date, calendar: CalendarSettings) -> list:
    """Day D's due alerts as people should read them: each alert of a carried entity marked
    with where its data is from (alerts/feed_problems.py), each changed event with its
    change, timed events with their time, and the change notices of events with no alert
    pending today (alerts/change_words.py)."""
    notes = feed_problems.notes_for(engine, partition_date)
    alerts = [
        dataclasses.replace(alert, data_note=notes[alert.entity_id])
        if alert.entity_id in notes
        else alert
        for alert in store.read_due_alerts(engine, partition_date)
    ]
    delivered = store.delivered_keys(engine, [a.dedup_key for a in alerts])
    return with_changes(
        alerts,
        change_log.read_changes(engine, partition_date),
        partition_date,
        window_days=max(calendar.threshold_days),
        timezone=calendar.timezone,
        pending_keys={a.dedup_key for a in alerts} - delivered,
        told=change_log.told_on_due_lines(engine, partition_date),
    )


def _tell_broken_entities(
    context, engine, calendar, slack, partitions, reference, configured, poster
) -> feed_problems.NoticeReport:
    """One message to SLACK_ALERTS_CHANNEL naming the broken entities of the run's daily
    partition (not of history days), each once per day (alerts/feed_problems.py)."""
    daily = [p for p in partitions if intent_for(p, reference) != HISTORY]
    if not daily:
        return feed_problems.NoticeReport()
    day = daily[-1]
    mode = choose_mode(configured, slack.mode, intent_for(day, reference))
    if mode == "send" and poster is None:
        poster = slack.poster()
    report = feed_problems.tell_problems(
        engine,
        day,
        mode=mode,
        channel=slack.failure_channel,
        run_id=context.run_id,
        claim_timeout=calendar.claim_timeout,
        poster=poster,
    )
    if report.error:
        context.log.warning(
            f"the notice naming {report.failed} broken entities of {day} was not posted "
            f"({report.error}); the next run of the day posts it"
        )
    elif report.told:
        context.log.info(f"named {report.told} broken entities of {day} in {slack.failure_channel}")
    if report.text and mode != "send":
        context.log.info(f"broken entities of {day} ({mode}, not posted):\n{report.text}")
    return report


@dg.job(
    partitions_def=daily_partitions,
    description="Post partition D's due alerts to Slack, each dedup key once.",
)
def slack_alert_job():
    send_slack_alerts()


def _run_ended(instance: dg.DagsterInstance, run_id: str) -> bool:
    """Whether `run_id` is a run of this instance that has ended. A run the instance does
    not know (another instance, a throwaway one) is not judged: its claims wait for
    CALENDAR_CLAIM_TIMEOUT."""
    run = instance.get_run_by_id(run_id)
    return run is not None and run.is_finished
