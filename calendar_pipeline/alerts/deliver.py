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

A lost ledger (``calendar.db`` deleted or emptied while the lake has earlier days:
``lost_ledger``) is rebuilt from Slack itself before anything is posted: each message's
metadata also carries a 10-character digest of each of its alert keys (``key_digest``);
``LedgerRecovery`` reads the history of the channels the universe routes to, back to the
ledger's retention, and records the pending alerts found there as ``sent`` (with the
``ts`` of their message); only the rest is posted. A poster that cannot read history (a
webhook, a token without the history scopes) raises :class:`LedgerLost`: nothing is
posted, and its one line names the ledger and the next step.
"""

from __future__ import annotations

import contextlib
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

from sqlalchemy import Engine

from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.intent import HISTORY
from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.alerts.poster import HistoryUnavailable, Poster, key_digest
from calendar_pipeline.alerts.slack_format import (
    SlackMessage,
    escape_slack,
    render_digests,
    render_outbox_text,
)
from calendar_pipeline.lake.atomic import atomic_write_text
from calendar_pipeline.lake.index import IndexCorruptError, SnapshotIndex, index_path
from calendar_pipeline.lake.snapshots import SNAPSHOTS_DIR, is_valid_partition

MAX_PARALLEL_CHANNELS = 16  # threads posting to distinct channels at once
MODES = ("send", "dry_run", "record_only", "history")
# How far back a run catches up alerts earlier runs claimed and could not post (Slack
# down): their lines say how late they are; those whose event passed are named in one line.
CATCH_UP_DAYS = 7
# Slack errors that concern one channel only: that channel's messages fail, the others go.
CHANNEL_ERRORS = frozenset({"channel_not_found", "is_archived", "not_in_channel"})


class LedgerLost(RuntimeError):
    """The ledger is lost (``lost_ledger``) and cannot be rebuilt from Slack's history: the
    message is one line naming the ledger and the next step; nothing was posted."""


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
    recovered: int = 0  # alerts a lost ledger had, found in Slack's history: not posted
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
            "recovered_from_slack": self.recovered,
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
    recovery: LedgerRecovery | None = None,
) -> DeliveryReport:
    """Deliver ``alerts`` (partition D's due_alerts rows) in ``mode``; see the module doc.
    ``is_dead(run_id)`` says whether a run holding a claim has ended (killed, failed): its
    claims are taken over at once instead of after ``claim_timeout``. ``recovery`` (the
    ledger is lost): in mode ``send``, the pending alerts Slack already has are recorded
    from its history first, or :class:`LedgerLost` is raised when it cannot be read."""
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
    if recovery is not None and mode == "send" and pending:
        assert poster is not None
        pending, report.recovered = recovery.record_found(
            engine, pending, poster, run_id, claim_timeout, log
        )
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


# -- a lost ledger ----------------------------------------------------------------------------

# In the lake (the data directory), beside what the ledger is checked against: how many
# delivered rows the ledger had after the last Slack run, and the newest of their events.
# It tells a lost ledger (it had delivered rows) from one that never delivered (dry runs,
# a backfill's history runs).
LEDGER_MARKER = "ledger_marker.json"


def _read_marker(data_dir: Path) -> dict | None:
    try:
        marker = json.loads((Path(data_dir) / LEDGER_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _lake_days(data_dir: Path) -> list[str]:
    """The days the lake has processed: its index lines (else its snapshot folders)."""
    try:
        return sorted(set(SnapshotIndex(index_path(data_dir)).partitions()))
    except (IndexCorruptError, OSError, ValueError):
        root = Path(data_dir) / SNAPSHOTS_DIR
        names = [p.name for p in root.iterdir()] if root.is_dir() else []
        return sorted(name for name in names if is_valid_partition(name))


def ledger_name(engine: Engine) -> str:
    """The ledger as a person finds it: its database URL without the password."""
    return engine.url.render_as_string(hide_password=True)


def lost_ledger(
    engine: Engine,
    data_dir: Path,
    day: dt.date,
    retention: dt.timedelta | None = None,
) -> str | None:
    """Why the ledger behind ``engine`` is lost (one line), or ``None``.

    Lost: it holds no delivered row while either the lake's marker says it had delivered
    rows whose events are within ``retention`` of ``day`` (deleted, emptied or replaced
    since the last Slack run, even one of ``day`` itself), or, with no marker (a lake
    older than the marker), the lake has days before ``day`` and none of them has a
    ``due_alerts`` row (the database is newer than the lake). A new installation (no
    earlier day, no marker) or a ledger that never delivered (dry runs, history runs: a
    marker of 0) is not lost."""
    delivered, _ = store.delivered_summary(engine)
    if delivered:
        return None
    marker = _read_marker(data_dir)
    days = [d for d in _lake_days(data_dir) if d <= day.isoformat()]
    span = f"{days[0]}..{days[-1]}" if len(days) > 1 else (days[0] if days else "none")
    head = (
        f"the alert ledger {ledger_name(engine)} holds no delivered alert but the lake "
        f"{Path(data_dir).resolve()} has {len(days)} day(s) ({span})"
    )
    if marker is not None:
        if not int(marker.get("delivered") or 0):
            return None  # it never delivered anything: dry runs, history runs
        latest = marker.get("latest_event")
        with contextlib.suppress(TypeError, ValueError):
            if retention is not None and dt.date.fromisoformat(latest) < day - retention:
                return None  # every row it had is past the retention: pruned, not lost
        return (
            f"{head}, and it had {marker['delivered']} delivered alert(s) after the last "
            "Slack run: it was lost or emptied"
        )
    earlier = [dt.date.fromisoformat(d) for d in days if d < day.isoformat()]
    if not earlier or any(store.stored_buckets_many(engine, earlier).values()):
        return None  # a new installation, or a database that knows those days (a backfill)
    return f"{head}, and no due_alerts row of the days before {day}: it was lost or replaced"


def note_ledger(engine: Engine, data_dir: Path, day: dt.date) -> None:
    """After a Slack run: write the lake's marker (see ``LEDGER_MARKER``) when the ledger
    has delivered rows, or when there is no marker yet and the ledger is not lost (so a
    lost ledger is never written down as one that never delivered)."""
    delivered, latest = store.delivered_summary(engine)
    path = Path(data_dir) / LEDGER_MARKER
    if not delivered and (path.exists() or lost_ledger(engine, data_dir, day) is not None):
        return
    marker = {
        "ledger": ledger_name(engine),
        "delivered": delivered,
        "latest_event": latest.isoformat() if latest else None,
        "updated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    atomic_write_text(path, json.dumps(marker, indent=2) + "\n")


@dataclass
class LedgerRecovery:
    """Rebuilding a lost ledger from Slack for one run: ``reason`` (``lost_ledger``'s
    line), the channels our digests go to, and how far back to read them. Slack's history
    is read once per run, on first use."""

    reason: str
    channels: Sequence[str]
    oldest: dt.datetime
    found: dict[str, tuple[str, str]] | None = None  # key digest -> (channel, ts)
    recovered: int = 0

    def refusal(self, why: str) -> str:
        """The one line of a refused run: the ledger, why, and the next step."""
        return (
            f"{self.reason}; nothing posted, as it cannot be rebuilt from Slack ({why}): "
            "restore it from a backup, or re-prime it with "
            "`calendar-pipeline run --mode record_only` (records today's alerts as "
            "delivered without posting them), then run again (docs/RUNBOOK.md, "
            "The ledger is lost)"
        )

    def record_found(
        self,
        engine: Engine,
        pending: list[DueAlert],
        poster: Poster,
        run_id: str,
        claim_timeout: dt.timedelta,
        log: Callable[[str], None],
    ) -> tuple[list[DueAlert], int]:
        """Record the alerts of ``pending`` that Slack's history has as ``sent`` (with
        their message's channel and ``ts``); return the others (to be posted) and how many
        were recorded."""
        if self.found is None:
            try:
                self.found = poster.posted_key_digests(self.channels, self.oldest)
            except HistoryUnavailable as exc:
                raise LedgerLost(self.refusal(str(exc))) from None
            log(
                f"{self.reason}; rebuilding it from Slack: {len(self.found)} alert key(s) "
                f"in the history of {len(self.channels)} channel(s) since "
                f"{self.oldest:%Y-%m-%d}"
            )
        found = self.found
        matched = [a for a in pending if key_digest(a.dedup_key) in found]
        owned = store.claim(engine, matched, run_id, claim_timeout)
        by_message: dict[tuple[str, str], list[str]] = {}
        for alert in owned:
            by_message.setdefault(found[key_digest(alert.dedup_key)], []).append(alert.dedup_key)
        recorded = 0
        for (channel, ts), keys in by_message.items():
            recorded += store.mark_delivered(
                engine, keys, run_id, "sent", channel=channel, slack_ts=ts
            )
        self.recovered += recorded
        if matched:
            log(f"recovered {recorded} alert(s) already in Slack: recorded as sent, not posted")
        matched_keys = {a.dedup_key for a in matched}
        return [a for a in pending if a.dedup_key not in matched_keys], recorded
