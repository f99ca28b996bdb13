"""Deliver partition D's due alerts: skip what the ledger holds, claim, post, record.

Modes:
- ``send``: claim the pending keys, post one digest per channel (split at Slack's
  limits), mark each message's keys ``sent`` with its ``ts``. A failed post releases the
  claims it still holds and raises, so the next run retries them.
- ``dry_run``: nothing posted, nothing recorded; digests go to the outbox and the log.
- ``record_only``: nothing posted; pending keys are recorded as delivered (used for
  partitions before today, so a backfill never replays history into Slack).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine

from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.alerts.slack_format import SlackMessage, render_digests, render_outbox_text
from calendar_pipeline.lake.atomic import atomic_write_text


class Poster(Protocol):
    def post(self, message: SlackMessage) -> str: ...


@dataclass
class DeliveryReport:
    mode: str
    due: int = 0
    already_delivered: int = 0
    claimed: int = 0
    sent: int = 0
    recorded: int = 0
    messages: int = 0
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
            "messages": self.messages,
        }


def choose_mode(configured: str, base: str, partition_date: dt.date, today: dt.date) -> str:
    """The run config's mode wins; else a past partition is ``record_only`` (``dry_run``
    stays ``dry_run``: without Slack nothing is recorded); else the settings' mode."""
    if configured:
        return configured
    if partition_date < today and base == "send":
        return "record_only"
    return base


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
    report = DeliveryReport(mode=mode, due=len(alerts))
    delivered = store.delivered_keys(engine, [a.dedup_key for a in alerts])
    pending = [a for a in alerts if a.dedup_key not in delivered]
    report.already_delivered = len(delivered)

    if mode == "dry_run":
        messages = render_digests(pending, partition_date, default_channel)
        report.messages = len(messages)
        report.outbox_text = render_outbox_text(messages) if messages else "Nothing to post."
        report.outbox = write_outbox(outbox_dir, messages, report.outbox_text)
        log(
            f"dry run, nothing posted or recorded; {len(pending)} alert(s) in {len(messages)} "
            f"message(s):\n{report.outbox_text}"
        )
        return report

    owned = store.claim(engine, pending, run_id, claim_timeout)
    report.claimed = len(owned)
    if mode == "record_only":
        report.recorded = store.mark_delivered(
            engine, [a.dedup_key for a in owned], run_id, "recorded"
        )
        log(f"record_only: {report.recorded} alert(s) recorded as delivered, nothing posted")
        return report

    if mode != "send":
        raise ValueError(f"unknown alert mode {mode!r}")
    if poster is None:
        raise ValueError("mode 'send' needs a Slack poster (set SLACK_BOT_TOKEN)")
    messages = render_digests(owned, partition_date, default_channel)
    unsent = {a.dedup_key for a in owned}
    try:
        for message in messages:
            ts = poster.post(message)
            report.sent += store.mark_delivered(
                engine, message.dedup_keys, run_id, "sent", channel=message.channel, slack_ts=ts
            )
            unsent.difference_update(message.dedup_keys)
            report.messages += 1
            log(f"posted {len(message.dedup_keys)} alert(s) to {message.channel} (ts {ts})")
    finally:
        if unsent:
            store.release(engine, sorted(unsent), run_id)
            log(f"released {len(unsent)} claimed alert(s) for the next run")
    return report


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
