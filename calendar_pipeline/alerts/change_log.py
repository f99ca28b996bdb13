"""The table `event_changes`: each day's changes (alerts/changes.py), stored by
`due_alerts` and replaced per partition like the due alerts (a pure function of the
stored snapshots), read by `slack_alert_job` to name each change on its line."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Engine,
    MetaData,
    String,
    Table,
    Text,
    and_,
    select,
)

from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.changes import Change
from calendar_pipeline.alerts.claims import replace_per_partition

metadata = MetaData()

event_changes = Table(
    "event_changes",
    metadata,
    Column("partition_date", Date, primary_key=True),
    Column("entity_id", String(200), primary_key=True),
    Column("event_id", String(500), primary_key=True),
    Column("kinds", String(60), nullable=False),  # "moved,renamed"
    Column("event_date", Date, nullable=False),
    Column("title", Text, nullable=False),
    Column("start", String(40), nullable=True),
    Column("previous_date", Date, nullable=True),
    Column("previous_start", String(40), nullable=True),
    Column("previous_title", Text, nullable=True),
    Column("explicit", Boolean, nullable=False, default=False),
    Column("entity_name", String(500), nullable=False),
    Column("source", String(50), nullable=False),
    Column("channel", String(200), nullable=True),
)


def create_change_tables(engine: Engine) -> None:
    metadata.create_all(engine)


def replace_changes(engine: Engine, by_partition: Mapping[dt.date, Sequence[Change]]) -> None:
    """Replace the stored changes of each given day, in one transaction."""
    replace_per_partition(
        engine,
        event_changes,
        {day: [change.as_row() for change in changes] for day, changes in by_partition.items()},
    )


def read_changes(engine: Engine, day: dt.date) -> list[Change]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(event_changes)
            .where(event_changes.c.partition_date == day)
            .order_by(event_changes.c.entity_id, event_changes.c.event_id)
        ).mappings()
        return [_change(row) for row in rows]


def _change(row: Mapping[str, Any]) -> Change:
    return Change(
        entity_id=row["entity_id"],
        event_id=row["event_id"],
        kinds=tuple(row["kinds"].split(",")),
        event_date=row["event_date"],
        title=row["title"],
        start=row["start"],
        previous_date=row["previous_date"],
        previous_start=row["previous_start"],
        previous_title=row["previous_title"],
        explicit=bool(row["explicit"]),
        entity_name=row["entity_name"],
        source=row["source"],
        channel=row["channel"],
    )


def told_on_due_lines(engine: Engine, day: dt.date) -> set[tuple[str, str]]:
    """(entity id, event id) of the events whose due alert was delivered in day D's digest:
    that line already named D's change, so no notice repeats it (a second run of the day)."""
    ledger = store.alert_deliveries.c
    query = select(ledger.entity_id, ledger.event_id).where(
        and_(
            ledger.partition_date == day,
            ledger.state.in_(store.DELIVERED_STATES),
            ledger.threshold_days > 0,
        )
    )
    with engine.connect() as conn:
        return {(entity_id, event_id) for entity_id, event_id in conn.execute(query)}
