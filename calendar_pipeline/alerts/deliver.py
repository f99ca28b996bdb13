"""Deliver partition D's due alerts: skip what the ledger holds, claim, post, record.

Modes:
- ``send``: claim the pending keys, post one digest per channel (split at Slack's
  limits), mark each message's keys ``sent`` with its ``ts``. When a post fails, the
  claims not yet sent are marked ``failed`` (released for the next run) and the error is
  raised. A crash between a post and its mark leaves that message's keys claimed until
  the claim timeout; the next run then posts that one message again: at most one
  duplicate, never a lost alert.
- ``dry_run``: nothing posted, nothing recorded; digests go to the outbox and the log.
- ``record_only``: nothing posted; pending keys are recorded as delivered (used for
  partitions before today, so a backfill never replays history into Slack).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine

from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.alerts.slack_format import SlackMessage, render_digests, render_outbox_text
from calendar_pipeline.lake.atomic import atomic_write_text

MAX_PARALLEL_CHANNELS = 16  # threads posting to distinct channels at once


class Poster(Protocol):
    """Posts one message and returns its ``ts``; safe to call from several threads for
    different channels; ``retries`` counts the retries it made."""

    retries: int

    def post(self, message: SlackMessage) -> str: ...


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
    outbox: list[Path] = field(default_factory=list)
    outbox_text: str = ""

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
        }


def choose_mode(configured: str, base: str, partition_date: dt.date, today: dt.date) -> str:
    """The run config's mode wins; else a past partition is ``record_only`` (``dry_run``
    stays ``dry_run``: without Slack nothing is recorded); else the settings' mode."""
    if configured:
        return configured
    if partition_date < today and base == "send":
        return "record_only"
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
) -> DeliveryReport:
    """Deliver ``alerts`` (partition D's due_alerts rows) in ``mode``; see the module doc."""
    if mode not in ("send", "dry_run", "record_only"):
        raise ValueError(f"unknown alert mode {mode!r}")
    if mode == "send" and poster is None:
        raise ValueError(
            "mode 'send' needs a Slack poster (set SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL)"
        )
    report = DeliveryReport(mode=mode, due=len(alerts))
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

    owned = store.claim(engine, pending, run_id, claim_timeout)
    report.claimed = len(owned)
    if len(owned) < len(pending):
        log(f"{len(pending) - len(owned)} alert(s) are claimed by another run; skipped")
    if mode == "record_only":
        keys = [a.dedup_key for a in owned]
        report.recorded = store.mark_delivered(engine, keys, run_id, "recorded")
        log(f"record_only: {report.recorded} alert(s) recorded as delivered, nothing posted")
        return report

    assert poster is not None
    messages = render_digests(owned, partition_date, default_channel)
    unsent = {a.dedup_key for a in owned}
    lock = threading.Lock()
    stop = threading.Event()  # the first failure stops every channel before its next post

    def post_channel(channel_messages: list[SlackMessage]) -> None:
        for message in channel_messages:
            if stop.is_set():
                return
            try:
                ts = poster.post(message)
            except BaseException:
                stop.set()
                raise
            sent = store.mark_delivered(
                engine, message.dedup_keys, run_id, "sent", channel=message.channel, slack_ts=ts
            )
            with lock:
                report.sent += sent
                report.messages += 1
                unsent.difference_update(message.dedup_keys)
            log(f"posted {len(message.dedup_keys)} alert(s) to {message.channel} (ts {ts})")

    # Channels are paced independently (one message per second each), so they are posted
    # side by side; within a channel, messages go in order. The pool waits for all.
    by_channel = group_by_channel(messages)
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_CHANNELS, len(by_channel)) or 1) as pool:
        futures = [pool.submit(post_channel, batch) for batch in by_channel.values()]
    report.retries = poster.retries
    failures = [error for error in (f.exception() for f in futures) if error is not None]
    if failures:
        if unsent:
            reason = f"{type(failures[0]).__name__}: {failures[0]}"
            report.failed = store.mark_failed(engine, sorted(unsent), run_id, reason)
            log(f"{report.failed} alert(s) not sent, released for the next run: {reason}")
        raise failures[0]
    return report


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
