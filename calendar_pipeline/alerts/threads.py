"""Change notices in the thread of the message that announced the event.

The people who read Monday's "Offsite · in 15 days" should learn on Tuesday that it is
cancelled where they saw it. After day D's digests are posted, every line of D that names
a change (alerts/change_words.py) and whose event was announced in an earlier day's
message (the ledger records each alert's channel and Slack `ts`) is also posted as a reply
in that message's thread: the same line, so it reads alone.

Exactly once, like the digests: each reply has its own row in `thread_notices` (key: the
line's ledger key), claimed before the post, its delivery id written before the post and
sent as message metadata, and marked with the reply's `ts` after. A reply whose answer was
lost is found again in the thread (`conversations.replies`) by its delivery id, by the
poster itself, or by the next run for an attempt that died; a failed post is tried again by
the next run of the day.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    and_,
    select,
)

from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.claims import claim_rows, mark_rows
from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.alerts.poster import HistoryUnavailable
from calendar_pipeline.alerts.slack_format import SlackMessage, event_line

metadata = MetaData()

thread_notices = Table(
    "thread_notices",
    metadata,
    Column("dedup_key", String(1024), primary_key=True),  # the change line's ledger key
    Column("partition_date", Date, nullable=False),
    Column("channel", String(200), nullable=False),
    Column("thread_ts", String(64), nullable=False),
    Column("state", String(20), nullable=False),  # new | claimed | sent | failed
    Column("run_id", String(64), nullable=True),
    Column("delivery_id", String(64), nullable=True),
    Column("reply_ts", String(64), nullable=True),
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def create_thread_tables(engine: Engine) -> None:
    metadata.create_all(engine)


@dataclass
class ThreadReport:
    replied: int = 0
    already: int = 0
    failed: int = 0
    error: str = ""

    def as_metadata(self) -> dict[str, int]:
        return {
            "thread_replies": self.replied,
            "thread_replies_already": self.already,
            "thread_replies_failed": self.failed,
        }


def announcements(
    engine: Engine, day: dt.date, events: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str]]:
    """(entity id, event id) -> (channel, ts) of the first message that announced the
    event on a day before ``day`` (an alert of a threshold, posted)."""
    ledger = store.alert_deliveries.c
    wanted = set(events)
    found: dict[tuple[str, str], tuple[str, str]] = {}
    entity_ids = sorted({entity for entity, _ in wanted})
    with engine.connect() as conn:
        for chunk in store.chunked(entity_ids):
            rows = conn.execute(
                select(ledger.entity_id, ledger.event_id, ledger.channel, ledger.slack_ts)
                .where(
                    and_(
                        ledger.entity_id.in_(chunk),
                        ledger.partition_date < day,
                        ledger.state == "sent",
                        ledger.slack_ts.is_not(None),
                        ledger.threshold_days > 0,
                    )
                )
                .order_by(ledger.partition_date, ledger.slack_ts)
            )
            for entity_id, event_id, channel, ts in rows:
                key = (entity_id, event_id)
                if key in wanted and key not in found and channel:
                    found[key] = (channel, ts)
    return found


def reply_in_threads(
    engine: Engine,
    day: dt.date,
    alerts: Sequence[DueAlert],
    *,
    poster,
    run_id: str,
    claim_timeout: dt.timedelta,
    default_channel: str,
    log: Callable[[str], None] = lambda _: None,
) -> ThreadReport:
    """Reply in the announcing thread for each of ``alerts`` (the day's lines) that names a
    change and was delivered in D's digest."""
    report = ThreadReport()
    changed = [a for a in alerts if a.change or a.previous_date or a.previous_time_text]
    if not changed:
        return report
    delivered = store.delivered_keys(engine, [a.dedup_key for a in changed])
    changed = [a for a in changed if a.dedup_key in delivered]
    threads = announcements(engine, day, [(a.entity_id, a.event_id) for a in changed])
    todo = [a for a in changed if (a.entity_id, a.event_id) in threads]
    if not todo:
        return report
    keys = [
        {
            "dedup_key": a.dedup_key,
            "partition_date": day,
            "channel": threads[(a.entity_id, a.event_id)][0] or default_channel,
            "thread_ts": threads[(a.entity_id, a.event_id)][1],
        }
        for a in todo
    ]
    rows = claim_rows(engine, thread_notices, keys, run_id, claim_timeout)
    owned = {row["dedup_key"]: row for row in rows}
    report.already = len(todo) - len(owned)
    for alert in todo:
        row = owned.get(alert.dedup_key)
        if row is None:
            continue
        try:
            ts = _reply_once(engine, poster, row, alert)
        except Exception as exc:  # Slack down, an archived channel: the next run retries
            report.failed += 1
            report.error = f"{type(exc).__name__}: {exc}"
            _mark(engine, alert.dedup_key, state="failed")
            continue
        _mark(engine, alert.dedup_key, state="sent", reply_ts=ts)
        report.replied += 1
    if report.replied:
        log(f"replied in {report.replied} announcing thread(s) with the change of their event")
    return report


def _reply_once(engine: Engine, poster, row: dict, alert: DueAlert) -> str:
    channel, thread_ts = row["channel"], row["thread_ts"]
    if row.get("delivery_id"):  # an earlier attempt may have posted it: look first
        since = (row.get("claimed_at") or dt.datetime.now(dt.UTC)) - dt.timedelta(days=2)
        try:
            ts = poster.find_delivery(channel, row["delivery_id"], since, thread_ts=thread_ts)
        except HistoryUnavailable:
            ts = None
        if ts is not None:
            return ts
    delivery_id = uuid.uuid4().hex
    _mark(engine, alert.dedup_key, state="claimed", delivery_id=delivery_id)
    line = event_line(alert)
    context = f"partition {alert.partition_date.isoformat()} · what changed since this alert"
    message = SlackMessage(
        channel=channel,
        text=line,
        blocks=[
            {"type": "section", "text": {"type": "mrkdwn", "text": line}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
        dedup_keys=(),
        thread_ts=thread_ts,
    )
    return poster.post(message, delivery_id)


def _mark(engine: Engine, key: str, **values) -> None:
    mark_rows(engine, thread_notices, thread_notices.c.dedup_key == key, **values)
