"""Two SQL patterns the small tables of the Slack side share (the same on SQLite and
PostgreSQL): rows replaced per partition in one transaction, and rows *claimed* by one run
before it posts, so that two runs never post the same thing.

A claimable row is `new`, `failed`, or `claimed` by a run longer ago than the claim
timeout (a run that died). The tables using them: `feed_problems` and
`feed_problem_notices` (alerts/feed_problems.py), `event_changes` (alerts/change_log.py),
`thread_notices` (alerts/threads.py). The alert ledger itself (alerts/store.py) has its
own, richer claim (dead runs, attempts).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Engine, Table, and_, delete, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from calendar_pipeline.alerts.store import chunked


def replace_per_partition(
    engine: Engine, table: Table, rows_by_partition: Mapping[dt.date, Sequence[Mapping[str, Any]]]
) -> None:
    """Replace the rows of each given day (column `partition_date`) in one transaction."""
    with engine.begin() as conn:
        for day, rows in rows_by_partition.items():
            conn.execute(delete(table).where(table.c.partition_date == day))
            if rows:
                conn.execute(insert(table), [{"partition_date": day, **row} for row in rows])


def claim_rows(
    engine: Engine,
    table: Table,
    keys: Sequence[Mapping[str, Any]],
    run_id: str,
    claim_timeout: dt.timedelta,
) -> list[dict[str, Any]]:
    """Insert the rows of ``keys`` (their primary key values and what a new row needs)
    that do not exist yet as `new`, claim those that are claimable for ``run_id``, and
    return the rows this run now owns, as they were before the claim (a `delivery_id` set
    means an earlier attempt may have posted)."""
    if not keys:
        return []
    now = dt.datetime.now(dt.UTC)
    names = [column.name for column in table.primary_key.columns]
    dialect = sqlite if engine.dialect.name == "sqlite" else postgresql
    new_rows = [{**key, "state": "new", "updated_at": now} for key in keys]
    claimable = or_(
        table.c.state.in_(("new", "failed")),
        and_(table.c.state == "claimed", table.c.claimed_at < now - claim_timeout),
    )
    owned: list[dict[str, Any]] = []
    # ``store.IN_CHUNK`` keys per IN (...), every chunk in one transaction (all or nothing)
    with engine.begin() as conn:
        conn.execute(dialect.insert(table).on_conflict_do_nothing(index_elements=names), new_rows)
        for chunk in chunked([tuple(key[name] for name in names) for key in keys]):
            mine = tuple_(*(table.c[name] for name in names)).in_(chunk)
            before = {
                tuple(row[name] for name in names): dict(row)
                for row in conn.execute(select(table).where(mine)).mappings()
            }
            conn.execute(
                update(table)
                .where(and_(mine, claimable))
                .values(state="claimed", run_id=run_id, claimed_at=now, updated_at=now)
            )
            claimed = conn.execute(
                select(*(table.c[name] for name in names)).where(
                    and_(mine, table.c.state == "claimed", table.c.run_id == run_id)
                )
            )
            owned.extend(before[tuple(row)] for row in claimed)
    return owned


def mark_rows(engine: Engine, table: Table, where, **values: Any) -> None:
    """Set ``values`` (and `updated_at`) on the rows of ``where``."""
    with engine.begin() as conn:
        conn.execute(
            update(table).where(where).values(updated_at=dt.datetime.now(dt.UTC), **values)
        )
