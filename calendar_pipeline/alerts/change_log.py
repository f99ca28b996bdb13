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
    delete,
    insert,
    select,
)

from calendar_pipeline.alerts.changes import Change

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
)


def create_change_tables(engine: Engine) -> None:
    metadata.create_all(engine)


def replace_changes(engine: Engine, by_partition: Mapping[dt.date, Sequence[Change]]) -> None:
    """Replace the stored changes of each given day, in one transaction."""
    with engine.begin() as conn:
        for day, changes in by_partition.items():
            conn.execute(delete(event_changes).where(event_changes.c.partition_date == day))
            if changes:
                conn.execute(
                    insert(event_changes),
                    [{"partition_date": day, **change.as_row()} for change in changes],
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
    )
