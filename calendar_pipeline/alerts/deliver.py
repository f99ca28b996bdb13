"""Deliver partition D's due alerts: skip what the ledger holds, claim, post, record.

Modes (``choose_mode`` picks one per partition):
- ``send``: claim the pending keys, post one digest per channel (split at Slack's
  limits), mark each message's keys ``sent`` with its ``ts``. A channel Slack refuses
  (``channel_not_found``, ``is_archived``, ``not_in_channel``: ``CHANNEL_ERRORS``) fails
  alone: its keys are marked ``failed`` and named in ``DeliveryReport.failed_channels``,
  every other channel is posted in full, and nothing is raised (the caller fails the run
  after its other work). Any other failure (Slack down, a bad token) stops every channel
  before its next post. Whatever stops the run, every claim it still holds is marked
  ``failed`` before the error is raised (never left ``claimed``), also when the failure
  happens while checking an earlier attempt.
- ``dry_run``: nothing posted, nothing recorded; digests go to the outbox and the log.
- ``record_only``: nothing posted; pending keys are recorded as delivered. Only when
  forced (run config or CALENDAR_ALERT_MODE), e.g. when moving from another alerting tool.
- ``history``: the partition is history (``alerts/intent.py``): nothing posted and
  nothing written, so a replayed day never suppresses a later day's alert.

Exactly once, even when Slack's reply is lost. Each message gets a ``delivery_id`` that
is written to its keys' ledger rows before the post (``store.mark_attempt``) and sent
with the post as Slack message metadata. The poster itself settles a lost reply (it
looks the id up in the channel's history before posting again). A run that finds keys
from an earlier, unconfirmed attempt (its run died between the post and the mark, or
the post failed ambiguously) looks those ids up first and marks the keys ``sent`` with
the ``ts`` Slack has. Only when the token may not read history (``missing_scope``) is a
repeat possible: at most one per message in flight, said once in the log.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine

from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.intent import HISTORY
from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.alerts.slack_format import (
    SlackMessage,
    escape_slack,
    render_digests,
    render_outbox_text,
)
from calendar_pipeline.lake.atomic import atomic_write_text

MAX_PARALLEL_CHANNELS = 16  # threads posting to distinct channels at once
MODES = ("send", "dry_run", "record_only", "history")
# How far back a run catches up alerts earlier runs claimed and could not post (Slack
# down): their lines say how late they are; those whose event passed are named in one line.
CATCH_UP_DAYS = 7
# Slack errors that concern one channel only: that channel's messages fail, the others go.
CHANNEL_ERRORS = frozenset({"channel_not_found", "is_archived", "not_in_channel"})


class HistoryUnavailable(RuntimeError):
    """The poster cannot read channel history (a webhook, or a token without the
    ``channels:history`` scope): a lost reply may then mean one repeated message."""


class Poster(Protocol):
    """Posts one message (with its delivery id as Slack message metadata) and returns its
    ``ts``; settles a lost reply itself. Safe to call from several threads for different
    channels. ``retries`` counts its retries, ``found_after_lost_reply`` the lost replies
    it settled from the channel's history."""

    retries: int
    found_after_lost_reply: int

    def post(self, message: SlackMessage, delivery_id: str = "") -> str: ...

    def find_delivery(self, channel: str, delivery_id: str, oldest: dt.datetime) -> str | None:
        """The ``ts`` of the message posted with ``delivery_id`` to ``channel`` since
        ``oldest``, or ``None``; raises :class:`HistoryUnavailable` when it cannot look."""
        ...


@dataclass
class DeliveryReport:
    mode: str
    due: int = 0
    already_delivered: int = 0
    claimed: int = 0
    sent: int = 0
    recorded: int = 0
    failed: int = 0
    messages: int = 0
    retries: int = 0
    moved: int = 0
    history: int = 0
    confirmed_from_history: int = 0
    outbox: list[Path] = field(default_factory=list)
    outbox_text: str = ""
    # channel -> one line saying why Slack refused it (its alerts are counted in failed)
    failed_channels: dict[str, str] = field(default_factory=dict)
    late: int = 0  # alerts an earlier run could not post, posted now marked late
    passed: int = 0  # alerts an earlier run could not post whose event has passed
    passed_line: str = ""  # the one line naming them

    def as_metadata(self) -> dict[str, int | str]:
        return {
            "mode": self.mode,
            "due": self.due,
            "already_delivered": self.already_delivered,
            "claimed": self.claimed,
            "sent": self.sent,
            "recorded": self.recorded,
            "failed": self.failed,
            "messages": self.messages,
            "retries": self.retries,
            "date_changed": self.moved,
            "history_not_posted": self.history,
            "confirmed_from_slack_history": self.confirmed_from_history,
            "delivered_late": self.late,
            "passed_undelivered": self.passed,
        }


def choose_mode(configured: str, base: str, intent: str) -> str:
    """The run config's mode wins (a person asked for it); else a ``history`` partition is
    ``history``; else the settings' mode (``send`` with a token, ``dry_run`` without)."""
    if configured:
        return configured
    if intent == HISTORY:
        return "history"
    return base


def group_by_channel(messages: Sequence[SlackMessage]) -> dict[str, list[SlackMessage]]:
    """Messages per channel, in their original order."""
    by_channel: dict[str, list[SlackMessage]] = {}
    for message in messages:
        by_channel.setdefault(message.channel, []).append(message)
    return by_channel


def deliver(
    engine: Engine,
    alerts: Sequence[DueAlert],
    *,
    partition_date: dt.date,
    mode: str,
    run_id: str,
    default_channel: str,
    claim_timeout: dt.timedelta,
    outbox_dir: Path,
    poster: Poster | None = None,
    log: Callable[[str], None] = print,
    is_dead: Callable[[str], bool] = lambda run_id: False,
) -> DeliveryReport:
    """Deliver ``alerts`` (partition D's due_alerts rows) in ``mode``; see the module doc.
    ``is_dead(run_id)`` says whether a run holding a claim has ended (killed, failed): its
    claims are taken over at once instead of after ``claim_timeout``."""
    if mode not in MODES:
        raise ValueError(f"unknown alert mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "send" and poster is None:
        raise ValueError(
            "mode 'send' needs a Slack poster (set SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL)"
        )
    report = DeliveryReport(mode=mode, due=len(alerts))
    if mode == "history":
        report.history = len(alerts)
        log(
            f"{partition_date} is history: {len(alerts)} due alert(s) neither posted nor "
            "recorded (a later day still posts what is due then)"
        )
        return report
    delivered = store.delivered_keys(engine, [a.dedup_key for a in alerts])
    pending = [a for a in alerts if a.dedup_key not in delivered]
    report.already_delivered = len(delivered)
    pending = _with_previous_dates(engine, pending)
    report.moved = sum(1 for a in pending if a.previous_date is not None)

    if mode == "dry_run":
        messages = render_digests(pending, partition_date, default_channel)
        report.messages = len(messages)
        report.outbox_text = render_outbox_text(messages) if messages else "Nothing to post."
        report.outbox = write_outbox(outbox_dir, messages, report.outbox_text)
        log(
            f"dry run, nothing posted or recorded; {len(pending)} alert(s) in "
            f"{len(messages)} message(s):\n{report.outbox_text}"
        )
        return report

    passed: list[DueAlert] = []
    if mode == "send":
        pending, passed = _catch_up(engine, pending, partition_date)
        report.late = sum(1 for a in pending if a.data_note and a.data_note.startswith("late"))
        if report.late or passed:
            log(
                f"catching up after a failed delivery: {report.late} alert(s) posted late, "
                f"{len(passed)} whose event passed named in one line"
            )
        pending = pending + passed
    holders = store.claim_holders(engine, [a.dedup_key for a in pending]) - {run_id}
    dead = {holder for holder in holders if is_dead(holder)}
    if dead:
        log(f"taking over the claims of ended run(s) {', '.join(sorted(d[:8] for d in dead))}")
    owned = store.claim(engine, pending, run_id, claim_timeout, dead_runs=dead)
    report.claimed = len(owned)
    if len(owned) < len(pending):
        log(f"{len(pending) - len(owned)} alert(s) are claimed by another run; skipped")
    if mode == "record_only":
        keys = [a.dedup_key for a in owned]
        report.recorded = store.mark_delivered(engine, keys, run_id, "recorded")
        log(f"record_only: {report.recorded} alert(s) recorded as delivered, nothing posted")
        return report

    assert poster is not None
    retries_before = poster.retries  # a poster may serve several partitions of a range
    found_before = poster.found_after_lost_reply
    try:
        passed_keys = {a.dedup_key for a in passed}
        _post_owned(
            engine,
            owned,
            poster,
            run_id,
            report,
            log,
            partition_date,
            default_channel,
            passed_keys,
        )
    except BaseException as exc:
        # Every claim this run still holds is released, whatever failed (a post, the
        # history check of an earlier attempt, the database): never left ``claimed``.
        # A key with a delivery id stays an unconfirmed attempt the next run looks up.
        reason = f"{type(exc).__name__}: {exc}"
        report.failed += store.mark_failed(
            engine, sorted(a.dedup_key for a in owned), run_id, reason
        )
        if report.failed:
            log(f"{report.failed} alert(s) not sent, released for the next run: {reason}")
        raise
    finally:
        report.retries = poster.retries - retries_before
        report.confirmed_from_history += poster.found_after_lost_reply - found_before
    return report


def is_channel_error(error: BaseException) -> bool:
    """Whether ``error`` is Slack refusing one channel (the others can still be posted)."""
    return getattr(error, "error", None) in CHANNEL_ERRORS and bool(getattr(error, "channel", None))


def _post_owned(
    engine: Engine,
    owned: list[DueAlert],
    poster: Poster,
    run_id: str,
    report: DeliveryReport,
    log: Callable[[str], None],
    partition_date: dt.date,
    default_channel: str,
    passed_keys: set[str] = frozenset(),  # type: ignore[assignment]
) -> None:
    owned = _settle_earlier_attempts(engine, owned, poster, run_id, report, log)
    ahead = [a for a in owned if a.dedup_key not in passed_keys]
    messages = render_digests(ahead, partition_date, default_channel)
    passed = [a for a in owned if a.dedup_key in passed_keys]
    if passed:
        message = passed_message(passed, default_channel)
        report.passed, report.passed_line = len(passed), message.text
        messages.append(message)
    lock = threading.Lock()
    stop = threading.Event()  # a failure that is not one channel's stops every channel

    def post_channel(channel_messages: list[SlackMessage]) -> None:
        for message in channel_messages:
            if stop.is_set():
                return
            delivery_id = uuid.uuid4().hex
            store.mark_attempt(engine, message.dedup_keys, run_id, delivery_id, message.channel)
            try:
                ts = poster.post(message, delivery_id)
            except Exception as exc:
                if not is_channel_error(exc):
                    stop.set()
                    raise
                keys = sorted({k for m in channel_messages for k in m.dedup_keys})
                failed = store.mark_failed(engine, keys, run_id, f"{type(exc).__name__}: {exc}")
                with lock:
                    report.failed += failed
                    report.failed_channels[message.channel] = str(exc)
                log(f"{message.channel}: {failed} alert(s) not sent: {exc}")
                return
            except BaseException:
                stop.set()
                raise
            sent = store.mark_delivered(
                engine, message.dedup_keys, run_id, "sent", channel=message.channel, slack_ts=ts
            )
            with lock:
                report.sent += sent
                report.messages += 1
            log(f"posted {len(message.dedup_keys)} alert(s) to {message.channel} (ts {ts})")

    # Channels are paced independently (one message per second each), so they are posted
    # side by side; within a channel, messages go in order. The pool waits for all.
    by_channel = group_by_channel(messages)
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_CHANNELS, len(by_channel)) or 1) as pool:
        futures = [pool.submit(post_channel, batch) for batch in by_channel.values()]
    failures = [error for error in (f.exception() for f in futures) if error is not None]
    if failures:
        raise failures[0]


def late_note(first_due: dt.date, day: dt.date) -> str:
    """``late: due yesterday`` / ``late: due 3 days ago`` (Slack could not be reached)."""
    days = (day - first_due).days
    return "late: due yesterday" if days == 1 else f"late: due {days} days ago"


def _catch_up(
    engine: Engine, pending: list[DueAlert], day: dt.date
) -> tuple[list[DueAlert], list[DueAlert]]:
    """The alerts runs of the last ``CATCH_UP_DAYS`` days claimed and did not deliver
    (Slack down, a bad channel): those still ahead join ``pending`` marked late (also when
    ``day`` has them due again), those whose event passed are returned apart, to be named
    in one line. An alert that was never claimed (a day never run) is not caught up."""
    earlier = store.undelivered_before(engine, day, day - dt.timedelta(days=CATCH_UP_DAYS))
    if not earlier:
        return pending, []

    def marked(alert: DueAlert, first_due: dt.date) -> DueAlert:
        note = late_note(first_due, day)
        return dataclasses.replace(
            alert, data_note=f"{note}; {alert.data_note}" if alert.data_note else note
        )

    pending_keys = {a.dedup_key for a in pending}
    result = [marked(a, earlier[a.dedup_key][0]) if a.dedup_key in earlier else a for a in pending]
    passed: list[DueAlert] = []
    missing = {key: first for key, (first, _) in earlier.items() if key not in pending_keys}
    for first_due in sorted(set(missing.values())):
        for alert in store.read_due_alerts(engine, first_due):
            if missing.get(alert.dedup_key) != first_due:
                continue
            days_until = (alert.event_date - day).days
            if days_until >= 0:
                moved = dataclasses.replace(alert, partition_date=day, days_until=days_until)
                result.append(marked(moved, first_due))
            else:
                passed.append(alert)
    return result, passed


def passed_message(alerts: Sequence[DueAlert], channel: str) -> SlackMessage:
    """One line naming alerts that could not be posted before their event passed."""
    names = [
        f"{escape_slack(a.entity_name, 60)}: {escape_slack(a.title, 80)} "
        f"({a.event_date.isoformat()}, due {a.partition_date.isoformat()})"
        for a in sorted(alerts, key=lambda a: (a.event_date, a.entity_name, a.title))
    ]
    text = f"Not posted in time (Slack unreachable), event passed: {'; '.join(names)}"
    if len(text) > 2900:
        text = text[:2850].rsplit(";", 1)[0] + f"; and {len(names)} in all"
    return SlackMessage(
        channel=channel,
        text=text,
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        dedup_keys=tuple(a.dedup_key for a in alerts),
    )


def _settle_earlier_attempts(
    engine: Engine,
    owned: list[DueAlert],
    poster: Poster,
    run_id: str,
    report: DeliveryReport,
    log: Callable[[str], None],
) -> list[DueAlert]:
    """Keys an earlier attempt may have posted (its run died before the mark, or the post
    failed without an answer): mark them ``sent`` if Slack has that message; return the
    alerts that still need posting."""
    earlier = store.unconfirmed_attempts(engine, [a.dedup_key for a in owned])
    if not earlier:
        return owned
    by_attempt: dict[tuple[str, str, dt.datetime], list[str]] = {}
    for key, attempt in earlier.items():
        by_attempt.setdefault(attempt, []).append(key)
    settled: set[str] = set()
    unchecked: list[str] = []
    reason = ""
    for (delivery_id, channel, attempted_at), keys in by_attempt.items():
        try:
            ts = poster.find_delivery(channel, delivery_id, attempted_at - dt.timedelta(minutes=1))
        except HistoryUnavailable as exc:  # this attempt is posted again: at least once
            unchecked.append(f"{len(keys)} in {channel}")
            reason = str(exc)
            continue
        if ts is None:
            continue
        report.confirmed_from_history += store.mark_delivered(
            engine, keys, run_id, "sent", channel=channel, slack_ts=ts
        )
        settled.update(keys)
        log(f"{len(keys)} alert(s) were already in {channel} (ts {ts}); marked sent")
    if unchecked:
        log(f"cannot check whether these alerts were posted ({', '.join(unchecked)}): {reason}")
    return [a for a in owned if a.dedup_key not in settled]


def _with_previous_dates(engine: Engine, alerts: list[DueAlert]) -> list[DueAlert]:
    moved = store.previous_dates(engine, alerts) if alerts else {}
    return [
        dataclasses.replace(a, previous_date=moved[(a.entity_id, a.event_id)])
        if (a.entity_id, a.event_id) in moved
        else a
        for a in alerts
    ]


def _safe_name(channel: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", channel).strip("_") or "channel"


def write_outbox(outbox_dir: Path, messages: Sequence[SlackMessage], text: str) -> list[Path]:
    """``{outbox}/digest.txt`` plus one JSON file per message (the exact API payload)."""
    for stale in outbox_dir.glob("[0-9][0-9][0-9]_*.json"):
        stale.unlink()  # a previous dry run of this partition may have had more messages
    paths = [outbox_dir / "digest.txt"]
    atomic_write_text(paths[0], text + "\n")
    for number, message in enumerate(messages, start=1):
        path = outbox_dir / f"{number:03d}_{_safe_name(message.channel)}.json"
        body = {
            "channel": message.channel,
            "text": message.text,
            "blocks": message.blocks,
            "unfurl_links": False,
            "unfurl_media": False,
        }
        atomic_write_text(path, json.dumps(body, ensure_ascii=False, indent=2) + "\n")
        paths.append(path)
    return paths
