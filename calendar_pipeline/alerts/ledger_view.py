"""What the ledger holds for a day, and choosing alerts of that day to send again.

`calendar-pipeline deliveries --date D` prints :func:`day_deliveries`: every alert due on
D (its `due_alerts` rows) with what the ledger (`alert_deliveries`) says about it: the
state (`sent`, `recorded`, `claimed`, `failed`, or `not in the ledger`), the channel and
the message `ts`. `calendar-pipeline resend` chooses some of them (:func:`choose`, by key,
entity or event), removes their ledger rows (:func:`forget`) and runs the Slack job for D
restricted to those keys: the same claim, post and record path as every other post, so a
re-sent alert is posted once and recorded again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from sqlalchemy import Engine, delete, select

from calendar_pipeline.alerts import store

NOT_IN_LEDGER = "not in the ledger"


@dataclass(frozen=True)
class Delivery:
    """One alert due on a day and its ledger row (if any)."""

    dedup_key: str
    entity_id: str
    entity_name: str
    event_id: str
    event_date: dt.date
    title: str
    threshold_days: int
    channel: str  # the alert's channel; empty: the default channel (SLACK_CHANNEL)
    state: str
    slack_ts: str
    error: str

    def as_dict(self) -> dict:
        return {**asdict(self), "event_date": self.event_date.isoformat()}


class SelectionError(ValueError):
    """A key, entity or event that is not among the alerts of the day; the message names it."""


def day_deliveries(engine: Engine, day: dt.date) -> list[Delivery]:
    """The alerts due on ``day`` (its `due_alerts` rows), each with its ledger row, by
    channel then event date."""
    alerts = store.read_due_alerts(engine, day)
    ledger = _ledger_rows(engine, [a.dedup_key for a in alerts])
    found = []
    for alert in alerts:
        row = ledger.get(alert.dedup_key, {})
        found.append(
            Delivery(
                dedup_key=alert.dedup_key,
                entity_id=alert.entity_id,
                entity_name=alert.entity_name,
                event_id=alert.event_id,
                event_date=alert.event_date,
                title=alert.title,
                threshold_days=alert.threshold_days,
                channel=alert.channel or "",
                state=row.get("state") or NOT_IN_LEDGER,
                slack_ts=row.get("slack_ts") or "",
                error=row.get("error") or "",
            )
        )
    return sorted(found, key=lambda d: (d.channel, d.event_date, d.entity_id, d.dedup_key))


def _ledger_rows(engine: Engine, keys: Sequence[str]) -> dict[str, dict]:
    table = store.alert_deliveries
    rows: dict[str, dict] = {}
    with engine.connect() as conn:
        for chunk in store.chunked(list(keys)):
            query = select(table.c.dedup_key, table.c.state, table.c.slack_ts, table.c.error)
            for row in conn.execute(query.where(table.c.dedup_key.in_(chunk))):
                rows[row.dedup_key] = dict(row._mapping)
    return rows


def choose(
    deliveries: Sequence[Delivery],
    day: dt.date,
    *,
    keys: Iterable[str] = (),
    entities: Iterable[str] = (),
    events: Iterable[str] = (),
) -> list[Delivery]:
    """The alerts of ``day`` picked by dedup key, entity id or event id (any of them
    matches). Each value given must pick at least one alert: a :class:`SelectionError`
    names the first that does not (a typo never re-sends nothing silently)."""
    keys, entities, events = list(keys), list(entities), list(events)
    if not (keys or entities or events):
        raise SelectionError("choose the alerts to re-send: --key, --entity or --event")
    for flag, wanted, field in (
        ("--key", keys, "dedup_key"),
        ("--entity", entities, "entity_id"),
        ("--event", events, "event_id"),
    ):
        for value in wanted:
            if not any(getattr(d, field) == value for d in deliveries):
                raise SelectionError(
                    f"{flag} {value!r} is not among the {len(deliveries)} alerts due on {day} "
                    f"(`calendar-pipeline deliveries --date {day}` lists them)"
                )
    return [
        d
        for d in deliveries
        if d.dedup_key in keys or d.entity_id in entities or d.event_id in events
    ]


def forget(engine: Engine, keys: Sequence[str]) -> int:
    """Remove the ledger rows of ``keys`` (so that the next send posts them); returns how
    many rows there were."""
    table = store.alert_deliveries
    removed = 0
    with engine.begin() as conn:
        for chunk in store.chunked(list(keys)):
            removed += conn.execute(delete(table).where(table.c.dedup_key.in_(chunk))).rowcount
    return removed


def render(deliveries: Sequence[Delivery], day: dt.date, default_channel: str) -> str:
    """The table `deliveries` prints: one line per alert, grouped by channel."""
    if not deliveries:
        return f"No alert due on {day} in due_alerts (materialize the day first)."
    lines = [f"{len(deliveries)} alert(s) due on {day}:"]
    channel = None
    for d in deliveries:
        if d.channel != channel:
            channel = d.channel
            lines.append(f"{channel or default_channel}:")
        ts = f" ts {d.slack_ts}" if d.slack_ts else ""
        lines.append(
            f"  {d.state}{ts}  {d.dedup_key}  {d.entity_name}: {d.title} "
            f"({d.event_date}, D-{d.threshold_days})"
        )
    counts: dict[str, int] = {}
    for d in deliveries:
        counts[d.state] = counts.get(d.state, 0) + 1
    lines.append("States: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return "\n".join(lines)
