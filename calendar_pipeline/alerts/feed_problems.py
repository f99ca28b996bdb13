"""Broken entities: stored per day, marked on their alerts, and told to people once a day.

``due_alerts`` stores day D's broken entities (quality/carry.py: fetch failed or answer
rejected; data carried or stopped) in the table ``feed_problems``, replaced per partition
like the due alerts themselves: a pure function of D's snapshot. ``slack_alert_job`` then

- marks each due alert of a carried entity with where its data comes from
  (:func:`notes_for`: "feed unavailable since Tue 2027-05-04; data of Mon 2027-05-03");
- posts **one** message to SLACK_ALERTS_CHANNEL listing the broken entities of the day that
  no earlier run has told yet (:func:`claim_notices`, table ``feed_problem_notices``): once
  per day per entity, whatever the number of runs and retries. A message whose reply was
  lost is found again in the channel's history by its delivery id, as for the digests.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    and_,
    select,
)

from calendar_pipeline.alerts.claims import claim_rows, mark_rows, replace_per_partition
from calendar_pipeline.alerts.poster import HistoryUnavailable
from calendar_pipeline.alerts.slack_format import (
    SlackMessage,
    escape_slack,
    render_outbox_text,
)

metadata = MetaData()

feed_problems = Table(
    "feed_problems",
    metadata,
    Column("partition_date", Date, primary_key=True),
    Column("entity_id", String(200), primary_key=True),
    Column("entity_name", String(500), nullable=False),
    Column("source", String(50), nullable=False),
    Column("state", String(20), nullable=False),  # carried | stopped
    Column("broken_since", Date, nullable=False),
    Column("data_of", Date, nullable=True),
    Column("line", Text, nullable=False),  # quality.carry.describe_broken
    Column("note", Text, nullable=True),  # on each alert of a carried entity
)

feed_problem_notices = Table(
    "feed_problem_notices",
    metadata,
    Column("partition_date", Date, primary_key=True),
    Column("entity_id", String(200), primary_key=True),
    Column("state", String(20), nullable=False),  # claimed | sent | recorded | failed
    Column("run_id", String(64), nullable=True),
    Column("delivery_id", String(64), nullable=True),
    Column("slack_ts", String(64), nullable=True),
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

MAX_LINES_PER_NOTICE = 25  # Block Kit sections; more entities are counted, not listed


def create_feed_problem_tables(engine: Engine) -> None:
    metadata.create_all(engine)


def replace_problems(
    engine: Engine, rows_by_partition: Mapping[dt.date, Sequence[Mapping[str, Any]]]
) -> None:
    """Replace the stored broken entities of each given day, in one transaction."""
    replace_per_partition(
        engine,
        feed_problems,
        {day: [_problem_row(row) for row in rows] for day, rows in rows_by_partition.items()},
    )


def _problem_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "entity_id": row["entity_id"],
        "entity_name": row["name"],
        "source": row["source"],
        "state": row["state"],
        "broken_since": dt.date.fromisoformat(row["broken_since"]),
        "data_of": dt.date.fromisoformat(row["data_of"]) if row.get("data_of") else None,
        "line": row["line"],
        "note": row.get("note"),
    }


def read_problems(engine: Engine, day: dt.date) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(feed_problems)
            .where(feed_problems.c.partition_date == day)
            .order_by(feed_problems.c.entity_id)
        ).mappings()
        return [dict(row) for row in rows]


def notes_for(engine: Engine, day: dt.date) -> dict[str, str]:
    """entity id -> the note its alerts carry on ``day`` (carried entities only)."""
    return {row["entity_id"]: row["note"] for row in read_problems(engine, day) if row["note"]}


def claim_notices(
    engine: Engine,
    day: dt.date,
    entity_ids: Iterable[str],
    run_id: str,
    claim_timeout: dt.timedelta,
) -> dict[str, dict[str, Any]]:
    """Claim the notices of ``entity_ids`` for ``day``; returns those this run now owns,
    with the row as it was (``delivery_id`` set: an earlier attempt may have posted it).
    Told ones (sent, recorded) and ones another run claimed recently are not returned."""
    keys = [{"partition_date": day, "entity_id": e} for e in sorted(set(entity_ids))]
    rows = claim_rows(engine, feed_problem_notices, keys, run_id, claim_timeout)
    return {row["entity_id"]: row for row in rows}


def mark_notices(
    engine: Engine,
    day: dt.date,
    entity_ids: Iterable[str],
    state: str,
    *,
    delivery_id: str | None = None,
    slack_ts: str | None = None,
) -> None:
    extra = {"delivery_id": delivery_id} if delivery_id is not None else {}
    extra |= {"slack_ts": slack_ts} if slack_ts is not None else {}
    where = and_(
        feed_problem_notices.c.partition_date == day,
        feed_problem_notices.c.entity_id.in_(list(entity_ids)),
    )
    mark_rows(engine, feed_problem_notices, where, state=state, **extra)


def render_notice(
    channel: str, day: dt.date, problems: Sequence[Mapping[str, Any]]
) -> SlackMessage:
    """One message naming each broken entity of ``day``: what failed, since when, what its
    alerts use now and what to do (the ``line`` of each stored problem)."""
    title = f"Calendar feeds with problems on {day.isoformat()}: {len(problems)}"
    shown = problems[:MAX_LINES_PER_NOTICE]
    lines = [f"• {escape_slack(p['line'], 380)}" for p in shown]
    more = len(problems) - len(shown)
    if more:
        lines.append(f"… and {more} more: see the `broken_entities` metadata of raw_snapshot")
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
    ]
    chunk: list[str] = []
    for line in lines:  # sections of at most ~2,900 characters
        if chunk and sum(len(c) + 1 for c in chunk) + len(line) > 2_900:
            blocks.append(_section("\n".join(chunk)))
            chunk = []
        chunk.append(line)
    if chunk:
        blocks.append(_section("\n".join(chunk)))
    context = f"partition {day.isoformat()} · broken entities · calendar_pipeline"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    names = ", ".join(escape_slack(f"{p['entity_id']} ({p['entity_name']})", 120) for p in shown)
    return SlackMessage(
        channel=channel, text=escape_slack(f"{title}: {names}", 300), blocks=blocks, dedup_keys=()
    )


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


@dataclass
class NoticeReport:
    """What :func:`tell_problems` did for one day."""

    broken: int = 0  # broken entities stored for the day
    told: int = 0  # named in the message of this run (posted, or recorded)
    already_told: int = 0  # named by an earlier run of the day
    failed: int = 0  # the post failed: the next run tries again
    text: str = ""  # the message, as plain text (dry run, run log)
    error: str = ""

    def as_metadata(self) -> dict[str, int]:
        return {
            "broken_entities": self.broken,
            "broken_told": self.told,
            "broken_already_told": self.already_told,
            "broken_notice_failed": self.failed,
        }


def tell_problems(
    engine: Engine,
    day: dt.date,
    *,
    mode: str,
    channel: str,
    run_id: str,
    claim_timeout: dt.timedelta,
    poster: Any = None,
) -> NoticeReport:
    """Name day D's broken entities in one message to ``channel``, each entity once per day.

    ``send`` posts (the message carries a delivery id; an earlier attempt that may have
    posted is looked up in the channel's history first); ``record_only`` records them as
    told; ``dry_run`` and ``history`` only render the text. A failed post leaves them
    ``failed``: the next run of the day tells them. Never raises for Slack: the digests
    are already out, and a notice must not fail their run."""
    problems = read_problems(engine, day)
    report = NoticeReport(broken=len(problems))
    if not problems:
        return report
    if mode not in ("send", "record_only"):
        report.text = render_outbox_text([render_notice(channel, day, problems)])
        return report
    owned = claim_notices(engine, day, [p["entity_id"] for p in problems], run_id, claim_timeout)
    report.already_told = len(problems) - len(owned)
    if not owned:
        return report
    mine = [p for p in problems if p["entity_id"] in owned]
    message = render_notice(channel, day, mine)
    report.text = render_outbox_text([message])
    if mode == "record_only":
        mark_notices(engine, day, owned, "recorded")
        report.told = len(owned)
        return report
    earlier = {row["delivery_id"] for row in owned.values() if row.get("delivery_id")}
    try:
        for delivery_id in earlier:  # a run that died after posting, before marking
            oldest = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
            try:
                ts = poster.find_delivery(channel, delivery_id, oldest)
            except HistoryUnavailable:  # a webhook: cannot look; at most one repeat
                ts = None
            if ts is not None:
                done = [e for e, row in owned.items() if row.get("delivery_id") == delivery_id]
                mark_notices(engine, day, done, "sent", slack_ts=ts)
                report.told += len(done)
                for entity_id in done:
                    owned.pop(entity_id)
        if not owned:
            return report
        mine = [p for p in problems if p["entity_id"] in owned]
        message = render_notice(channel, day, mine)
        delivery_id = uuid.uuid4().hex
        mark_notices(engine, day, owned, "claimed", delivery_id=delivery_id)
        ts = poster.post(message, delivery_id)
    except Exception as exc:  # Slack down, a wrong channel: say it, try again next run
        report.error = f"{type(exc).__name__}: {exc}"
        report.failed = len(owned)
        mark_notices(engine, day, owned, "failed")
        return report
    mark_notices(engine, day, owned, "sent", slack_ts=ts)
    report.told += len(owned)
    return report
