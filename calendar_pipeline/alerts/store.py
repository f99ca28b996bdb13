"""The SQL side: the ``due_alerts`` table and the ``alert_deliveries`` ledger.

SQLAlchemy Core, one code path for SQLite (the default, in WAL mode) and PostgreSQL
(when the URL says so). Every write is one transaction.

Ledger protocol (each dedup key fires once):
  claim the pending keys (a primary key makes a second claimer lose)
  -> post -> mark each message's keys ``sent`` with the Slack ``ts``;
  a failed post marks its claims ``failed`` (with the error and the attempt count), which
  releases them: the next run claims them again;
  a claim older than the claim timeout may be taken over (its run died mid-post).

Exactly once when Slack's reply is lost: before each post, the message's keys get the
message's ``delivery_id`` and ``attempted_at`` (``mark_attempt``); the post carries the same
id in its Slack message metadata. Whoever later finds those keys claimed or failed with a
delivery id (the same run after a dropped reply, or the next run after a crash) first
looks the id up in the channel's history and marks the keys ``sent`` if Slack has it.

Why one module of 500 lines: every statement of both tables is here, so the ledger's
states (claimed, sent, failed, recorded) and every transaction that moves a key between
them read top to bottom in one place.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    delete,
    event,
    func,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from calendar_pipeline.alerts.model import DueAlert

metadata = MetaData()

due_alerts = Table(
    "due_alerts",
    metadata,
    Column("partition_date", Date, primary_key=True),
    Column("dedup_key", String(1024), primary_key=True),
    Column("entity_id", String(200), nullable=False, index=True),
    Column("entity_name", String(500), nullable=False),
    Column("source", String(50), nullable=False),
    Column("event_id", String(500), nullable=False),
    Column("event_date", Date, nullable=False),
    Column("title", Text, nullable=False),
    Column("days_until", Integer, nullable=False),
    Column("threshold_days", Integer, nullable=False),
    Column("channel", String(200), nullable=True),
    Column("computed_at", DateTime(timezone=True), nullable=False),
    Column("start", String(40), nullable=True),  # ISO start of a timed event
)

alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("dedup_key", String(1024), primary_key=True),
    Column("partition_date", Date, nullable=False),
    Column("entity_id", String(200), nullable=False),
    Column("event_id", String(500), nullable=False),
    Column("event_date", Date, nullable=False, index=True),
    Column("threshold_days", Integer, nullable=False),
    Column("channel", String(200), nullable=True),
    Column("state", String(20), nullable=False),  # claimed | sent | recorded | failed
    Column("run_id", String(64), nullable=True),
    Column("slack_ts", String(64), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text, nullable=True),
    Column("claimed_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    # the message these keys were last posted in, and when (see the module doc)
    Column("delivery_id", String(64), nullable=True),
    Column("attempted_at", DateTime(timezone=True), nullable=True),
)

# Columns added after the first release: create_tables adds them to an older database.
_ADDED_COLUMNS = {"alert_deliveries": ("delivery_id", "attempted_at"), "due_alerts": ("start",)}

DELIVERED_STATES = ("sent", "recorded")


def default_db_url(data_dir: str | Path) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'calendar.db'}"


CONNECT_TIMEOUT_SECONDS = 5


class DatabaseUnavailable(RuntimeError):
    """CALENDAR_DB_URL cannot be used; the message names the URL without its password."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.reason = reason


def shown_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable URL>"


def check_database(url: str) -> Engine:
    """An engine for ``url`` whose database answered, with the tables created; raises
    :class:`DatabaseUnavailable` within about ``CONNECT_TIMEOUT_SECONDS`` otherwise (a
    missing driver, an unsupported scheme, a server that does not answer)."""
    shown = shown_url(url)
    try:
        engine = make_engine(url)
    except (ImportError, NoSuchModuleError, ArgumentError) as exc:
        raise DatabaseUnavailable(
            shown,
            f"unsupported database URL ({type(exc).__name__}: {exc}); use "
            "sqlite:///path or postgresql+psycopg://user:password@host/db",
        ) from None
    try:
        create_tables(engine)
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        if any(word in cause for word in _DAMAGED):  # a file cut short or overwritten
            cause += (
                "; restore it from a backup, or move it aside: the next Slack run then "
                "rebuilds the ledger from Slack's history (docs/RUNBOOK.md, The ledger is lost)"
            )
        raise DatabaseUnavailable(shown, f"cannot use the database: {cause}") from None
    return engine


# What SQLite says of a damaged file (truncated, overwritten): the next step is a backup.
_DAMAGED = ("database disk image is malformed", "file is not a database")


def read_only_sqlite_engine(path: Path) -> Engine:
    """A SQLite file opened read-only (``mode=ro``) on a mount that takes no write: with
    its WAL files left beside it, SQLite reads them (3.22+); without them, ``immutable``
    keeps it from trying to create them."""
    wal = path.with_name(path.name + "-wal")
    immutable = "" if wal.exists() else "&immutable=1"
    return create_engine(f"sqlite:///file:{path}?mode=ro{immutable}&uri=true")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and its directory created;
    other servers a connect timeout of ``CONNECT_TIMEOUT_SECONDS``."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    connect_args = (
        {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        if parsed.get_backend_name() == "postgresql"
        else {}
    )
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def create_tables(engine: Engine) -> None:
    """Create the tables, and add columns a database made by an older version lacks."""
    metadata.create_all(engine)
    with engine.begin() as conn:
        for table_name, names in _ADDED_COLUMNS.items():
            present = {c["name"] for c in inspect(conn).get_columns(table_name)}
            table = metadata.tables[table_name]
            for name in names:
                if name not in present:
                    column = table.c[name]
                    kind = column.type.compile(dialect=engine.dialect)
                    conn.exec_driver_sql(f"ALTER TABLE {table_name} ADD COLUMN {name} {kind}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def replace_due_alerts_many(
    engine: Engine, alerts_by_partition: Mapping[dt.date, Sequence[DueAlert]]
) -> None:
    """Replace the rows of every given partition in one transaction (all or nothing)."""
    replace_due_alerts_streamed(engine, alerts_by_partition.items())


def replace_due_alerts_streamed(
    engine: Engine,
    batches: Iterable[tuple[dt.date, Sequence[DueAlert]]],
    on_stored: Callable[[dt.date, dict[str, int]], None] | None = None,
) -> None:
    """Replace each partition's rows as its batch comes, all in one transaction (all or
    nothing: an exception from ``batches`` or the database rolls every partition back).
    ``on_stored(day, {dedup key: threshold})`` gets what the table holds for the day
    inside the transaction, read back. Memory holds one partition's rows at a time."""
    now = _now()
    with engine.begin() as conn:
        for partition_date, alerts in batches:
            rows = [_row(partition_date, alert, now) for alert in alerts]
            conn.execute(delete(due_alerts).where(due_alerts.c.partition_date == partition_date))
            if rows:
                conn.execute(due_alerts.insert(), rows)
            if on_stored is not None:
                query = select(due_alerts.c.dedup_key, due_alerts.c.threshold_days).where(
                    due_alerts.c.partition_date == partition_date
                )
                on_stored(partition_date, {k: int(t) for k, t in conn.execute(query)})


def _row(partition_date: dt.date, alert: DueAlert, now: dt.datetime) -> dict:
    if alert.partition_date != partition_date:
        raise ValueError(f"every alert must belong to partition {partition_date}")
    return {
        "partition_date": partition_date,
        "dedup_key": alert.dedup_key,
        "entity_id": alert.entity_id,
        "entity_name": alert.entity_name,
        "source": alert.source,
        "event_id": alert.event_id,
        "event_date": alert.event_date,
        "title": alert.title,
        "days_until": alert.days_until,
        "threshold_days": alert.threshold_days,
        "channel": alert.channel,
        "computed_at": now,
        "start": alert.start,
    }


def read_due_alerts(engine: Engine, partition_date: dt.date) -> list[DueAlert]:
    query = (
        select(due_alerts)
        .where(due_alerts.c.partition_date == partition_date)
        .order_by(due_alerts.c.event_date, due_alerts.c.entity_id, due_alerts.c.event_id)
    )
    with engine.connect() as conn:
        return [
            DueAlert(
                partition_date=row.partition_date,
                entity_id=row.entity_id,
                entity_name=row.entity_name,
                source=row.source,
                event_id=row.event_id,
                event_date=row.event_date,
                title=row.title,
                days_until=row.days_until,
                threshold_days=row.threshold_days,
                channel=row.channel,
                start=row.start,
            )
            for row in conn.execute(query)
        ]


def stored_buckets_many(
    engine: Engine, partition_dates: Sequence[dt.date]
) -> dict[dt.date, dict[str, int]]:
    """``{dedup key: threshold}`` of the stored rows of each partition (empty when it has
    none), in one query per 500 partitions: what ``rows_match_bucket_rule`` compares."""
    found: dict[dt.date, dict[str, int]] = {day: {} for day in partition_dates}
    dates = sorted(partition_dates)
    with engine.connect() as conn:
        for chunk in chunked(dates):
            query = select(
                due_alerts.c.partition_date, due_alerts.c.dedup_key, due_alerts.c.threshold_days
            ).where(due_alerts.c.partition_date.in_(chunk))
            for day, key, threshold in conn.execute(query):
                found[day][key] = int(threshold)
    return found


T = TypeVar("T")
IN_CHUNK = 500  # values per IN (...): under every database's bound on bound parameters


def chunked(values: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    """``values`` in pieces of at most ``size``, for ``column.in_(piece)`` queries."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _insert_ignoring_conflicts(engine: Engine):
    dialect = sqlite if engine.dialect.name == "sqlite" else postgresql
    return dialect.insert(alert_deliveries).on_conflict_do_nothing(index_elements=["dedup_key"])


def delivered_keys(engine: Engine, keys: Iterable[str]) -> set[str]:
    """The keys among ``keys`` that the ledger holds as sent or recorded."""
    found: set[str] = set()
    keys = list(keys)
    with engine.connect() as conn:
        for chunk in chunked(keys):
            query = select(alert_deliveries.c.dedup_key).where(
                and_(
                    alert_deliveries.c.dedup_key.in_(chunk),
                    alert_deliveries.c.state.in_(DELIVERED_STATES),
                )
            )
            found.update(conn.execute(query).scalars())
    return found


def delivered_summary(engine: Engine) -> tuple[int, dt.date | None]:
    """How many keys the ledger holds as sent or recorded, and the newest of their event
    dates (what tells a lost ledger: alerts/deliver.py ``lost_ledger``)."""
    query = select(
        func.count(alert_deliveries.c.dedup_key), func.max(alert_deliveries.c.event_date)
    ).where(alert_deliveries.c.state.in_(DELIVERED_STATES))
    with engine.connect() as conn:
        count, latest = conn.execute(query).one()
    if isinstance(latest, str):  # SQLite's MAX of a date column may come back as text
        latest = dt.date.fromisoformat(latest)
    return int(count or 0), latest


def claim(
    engine: Engine,
    alerts: Sequence[DueAlert],
    run_id: str,
    claim_timeout: dt.timedelta,
    now: dt.datetime | None = None,
    dead_runs: Collection[str] = (),
) -> list[DueAlert]:
    """Claim the alerts' keys for ``run_id``; returns the alerts this run now owns.

    A key another live run has claimed, or that is already sent/recorded, is not
    returned. A ``failed`` key is claimed again; a claim older than ``claim_timeout``, or
    held by one of ``dead_runs`` (runs known to have ended: killed, failed), is taken
    over. Every claim adds one to the row's ``attempts``.
    """
    if not alerts:
        return []
    now = now or _now()
    keys = [alert.dedup_key for alert in alerts]
    rows = [
        {
            "dedup_key": alert.dedup_key,
            "partition_date": alert.partition_date,
            "entity_id": alert.entity_id,
            "event_id": alert.event_id,
            "event_date": alert.event_date,
            "threshold_days": alert.threshold_days,
            "channel": alert.channel,
            "state": "claimed",
            "run_id": run_id,
            "attempts": 1,
            "claimed_at": now,
            "updated_at": now,
        }
        for alert in alerts
    ]
    claimable = or_(
        alert_deliveries.c.state == "failed",
        and_(
            alert_deliveries.c.state == "claimed",
            alert_deliveries.c.run_id != run_id,
            or_(
                alert_deliveries.c.claimed_at < now - claim_timeout,
                alert_deliveries.c.run_id.in_(list(dead_runs)),
            ),
        ),
    )
    owned: set[str] = set()
    # One transaction for every chunk: the claim stays all or nothing, as unchunked.
    with engine.begin() as conn:
        conn.execute(_insert_ignoring_conflicts(engine), rows)
        for chunk in chunked(keys):
            conn.execute(
                update(alert_deliveries)
                .where(and_(alert_deliveries.c.dedup_key.in_(chunk), claimable))
                .values(
                    state="claimed",
                    run_id=run_id,
                    claimed_at=now,
                    updated_at=now,
                    attempts=alert_deliveries.c.attempts + 1,
                )
            )
            owned.update(
                conn.execute(
                    select(alert_deliveries.c.dedup_key).where(_claimed_by(run_id, chunk))
                ).scalars()
            )
    return [alert for alert in alerts if alert.dedup_key in owned]


def claim_holders(engine: Engine, keys: Iterable[str]) -> set[str]:
    """The run ids holding a ``claimed`` row among ``keys``."""
    keys = list(keys)
    holders: set[str] = set()
    with engine.connect() as conn:
        for chunk in chunked(keys):
            query = select(alert_deliveries.c.run_id).where(
                and_(
                    alert_deliveries.c.dedup_key.in_(chunk),
                    alert_deliveries.c.state == "claimed",
                )
            )
            holders.update(r for r in conn.execute(query).scalars() if r)
    return holders


def _claimed_by(run_id: str, chunk: Sequence[str]):
    """Which rows among ``chunk`` (at most ``IN_CHUNK`` keys) this run holds a claim on
    (and so may mark)."""
    return and_(
        alert_deliveries.c.dedup_key.in_(chunk),
        alert_deliveries.c.run_id == run_id,
        alert_deliveries.c.state == "claimed",
    )


def _mark_claimed(engine: Engine, keys: Sequence[str], run_id: str, **values) -> int:
    """Set ``values`` on the rows of ``keys`` this run holds a claim on, ``IN_CHUNK`` keys
    per statement, all in one transaction (all or nothing, as one statement would be);
    returns how many rows changed."""
    changed = 0
    with engine.begin() as conn:
        for chunk in chunked(list(keys)):
            statement = update(alert_deliveries).where(_claimed_by(run_id, chunk))
            changed += conn.execute(statement.values(**values)).rowcount
    return changed


def mark_delivered(
    engine: Engine,
    keys: Sequence[str],
    run_id: str,
    state: str,
    channel: str | None = None,
    slack_ts: str | None = None,
) -> int:
    """Turn this run's claims into ``sent`` (with the ts) or ``recorded``."""
    if state not in DELIVERED_STATES:
        raise ValueError(f"state must be one of {DELIVERED_STATES}, not {state!r}")
    values: dict = {"state": state, "updated_at": _now(), "error": None}
    if channel is not None:
        values["channel"] = channel
    if slack_ts is not None:
        values["slack_ts"] = slack_ts
    return _mark_claimed(engine, keys, run_id, **values)


def mark_attempt(
    engine: Engine, keys: Sequence[str], run_id: str, delivery_id: str, channel: str
) -> int:
    """Just before posting a message: its keys (claimed by this run) get its delivery id,
    channel and the attempt time, so a run that finds them later can look the message up."""
    now = _now()
    return _mark_claimed(
        engine,
        keys,
        run_id,
        delivery_id=delivery_id,
        channel=channel,
        attempted_at=now,
        updated_at=now,
    )


Attempt = tuple[str, str, dt.datetime]  # (delivery id, channel, attempted at)


def unconfirmed_attempts(engine: Engine, keys: Iterable[str]) -> dict[str, Attempt]:
    """Keys whose last post attempt has no confirmation yet (state ``claimed`` or
    ``failed`` with a delivery id): key -> (delivery id, channel, attempted at)."""
    found: dict[str, Attempt] = {}
    keys = list(keys)
    with engine.connect() as conn:
        for chunk in chunked(keys):
            query = select(
                alert_deliveries.c.dedup_key,
                alert_deliveries.c.delivery_id,
                alert_deliveries.c.channel,
                alert_deliveries.c.attempted_at,
            ).where(
                and_(
                    alert_deliveries.c.dedup_key.in_(chunk),
                    alert_deliveries.c.state.in_(("claimed", "failed")),
                    alert_deliveries.c.delivery_id.is_not(None),
                )
            )
            for key, delivery_id, channel, attempted_at in conn.execute(query):
                if attempted_at is not None and attempted_at.tzinfo is None:
                    attempted_at = attempted_at.replace(tzinfo=dt.UTC)  # SQLite drops it
                found[key] = (delivery_id, channel or "", attempted_at)
    return found


def undelivered_before(
    engine: Engine, day: dt.date, since: dt.date
) -> dict[str, tuple[dt.date, dt.date]]:
    """Keys a run of a partition in [``since``, ``day``) claimed and did not deliver
    (``failed``, or ``claimed`` by a run that died): key -> (the partition that first
    claimed it, the event's date). What a run of ``day`` catches up after an outage."""
    with engine.connect() as conn:
        query = select(
            alert_deliveries.c.dedup_key,
            alert_deliveries.c.partition_date,
            alert_deliveries.c.event_date,
        ).where(
            and_(
                alert_deliveries.c.state.in_(("failed", "claimed")),
                alert_deliveries.c.partition_date < day,
                alert_deliveries.c.partition_date >= since,
            )
        )
        return {key: (first, event) for key, first, event in conn.execute(query)}


def mark_failed(engine: Engine, keys: Sequence[str], run_id: str, error: str) -> int:
    """The post failed: record why and release this run's claims for the next run."""
    return _mark_claimed(
        engine, keys, run_id, state="failed", error=error[:2000], updated_at=_now()
    )


def previous_dates(engine: Engine, alerts: Sequence[DueAlert]) -> dict[tuple[str, str], dt.date]:
    """For events that moved: (entity_id, event_id) -> the date they were alerted on.

    An event whose date moved gets new dedup keys (the date is part of the key), so it
    is alerted again; this lets its first message on the new date say that the date
    changed. Once an alert for the new date has been sent, the move is old news.
    """
    wanted = {(a.entity_id, a.event_id): a.event_date for a in alerts}
    sent_dates: dict[tuple[str, str], list[dt.date]] = {}
    entity_ids = sorted({entity for entity, _ in wanted})
    with engine.connect() as conn:
        for chunk in chunked(entity_ids):
            query = (
                select(
                    alert_deliveries.c.entity_id,
                    alert_deliveries.c.event_id,
                    alert_deliveries.c.event_date,
                )
                .where(
                    and_(
                        alert_deliveries.c.entity_id.in_(chunk),
                        alert_deliveries.c.state == "sent",
                    )
                )
                .order_by(alert_deliveries.c.updated_at)
            )
            for entity_id, event_id, event_date in conn.execute(query):
                if (entity_id, event_id) in wanted:
                    sent_dates.setdefault((entity_id, event_id), []).append(event_date)
    return {key: dates[-1] for key, dates in sent_dates.items() if wanted[key] not in dates}


def prune_deliveries(engine: Engine, event_date_before: dt.date) -> int:
    """Delete ledger rows whose event is older than ``event_date_before``."""
    with engine.begin() as conn:
        result = conn.execute(
            delete(alert_deliveries).where(alert_deliveries.c.event_date < event_date_before)
        )
    return result.rowcount


def ledger_rows(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(alert_deliveries))]
