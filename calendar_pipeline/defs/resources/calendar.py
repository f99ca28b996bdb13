"""`CalendarSettings`, the `calendar` resource: the lake, the SQL database, the
universe and the rules the checks apply. Also the rule that refuses per-machine storage
on a deployment whose runs execute on several machines (`check_deployment`)."""

from __future__ import annotations

import datetime as dt
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Annotated

import dagster as dg
from pydantic import ConfigDict
from sqlalchemy import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from calendar_pipeline import settings
from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.change_log import create_change_tables
from calendar_pipeline.alerts.changes import DEFAULT_CANCEL_AFTER
from calendar_pipeline.alerts.feed_problems import create_feed_problem_tables
from calendar_pipeline.alerts.threads import create_thread_tables
from calendar_pipeline.defs.partitions import TIMEZONE
from calendar_pipeline.defs.resources.declared import Declared
from calendar_pipeline.lake.atomic import check_writable
from calendar_pipeline.quality.carry import DEFAULT_STALE_AFTER_DAYS
from calendar_pipeline.quality.judge import Budgets
from calendar_pipeline.settings import Setting, SettingError
from calendar_pipeline.sources import SOURCE_NAMES
from calendar_pipeline.sources.http_cache import create_http_cache_table
from calendar_pipeline.universe import Universe, load_universe


class CalendarSettings(Declared, dg.ConfigurableResource):
    """Where data lives (the lake and the SQL database) and what the pipeline watches
    (the universe, the lookahead, the thresholds) and accepts (the check budgets).

    Each field is one setting, declared once: its variable, what it is for, its parser and
    its default (`declared.py`). Dagster reads an environment variable only into a `str`
    or `int` field, so the fractional numbers, the threshold list and the deployment mode
    are `str` fields whose parser gives the typed value (`float`, `tuple[int, ...]`,
    `settings.Deployment`) to the properties below. `validate` checks everything when a
    run starts; each error is one line naming the variable, the value and what is allowed.
    """

    model_config = ConfigDict(use_attribute_docstrings=True)  # a field's doc: the UI's

    data_dir: Annotated[str, Setting("CALENDAR_DATA_DIR", settings.parse_path)] = ""
    """The lake: snapshots, index, outbox, feeds (blank: ./data)."""
    db_url: Annotated[str, Setting("CALENDAR_DB_URL", secret=True)] = ""
    """SQLAlchemy URL of the alert tables (blank: a SQLite file in the lake)."""
    deployment: Annotated[str, Setting("CALENDAR_DEPLOYMENT", settings.parse_deployment)] = "auto"
    """auto, local or shared: may runs execute on other machines (then storage is shared)?"""
    universe: Annotated[str, Setting("CALENDAR_UNIVERSE", settings.parse_path)] = ""
    """The universe CSV (blank: the bundled countries and markets)."""
    lookahead_days: Annotated[
        int, Setting("CALENDAR_LOOKAHEAD_DAYS", settings.parse_positive_int)
    ] = settings.DEFAULT_LOOKAHEAD_DAYS
    """Days after the partition day each snapshot holds."""
    thresholds: Annotated[str, Setting("CALENDAR_THRESHOLDS", settings.parse_thresholds)] = (
        ",".join(str(days) for days in settings.DEFAULT_THRESHOLDS)
    )
    """Alert thresholds in days (positive, distinct), none above the lookahead."""
    max_failed_share: Annotated[str, Setting("CALENDAR_MAX_FAILED_SHARE", settings.parse_ratio)] = (
        "0.5"
    )
    """Share of broken entities (0 to 1) above which a source is reported down."""
    max_missing_share: Annotated[
        str, Setting("CALENDAR_MAX_MISSING_SHARE", settings.parse_ratio)
    ] = "0.5"
    """Share of unknown entities (0 to 1) above which missing_entities_within_budget warns."""
    min_volume_ratio: Annotated[str, Setting("CALENDAR_MIN_VOLUME_RATIO", settings.parse_ratio)] = (
        "0.5"
    )
    """Volume check: fewer events than this share (0 to 1) of the last accepted day's are
    rejected (0: off)."""
    stale_after_days: Annotated[
        int, Setting("CALENDAR_STALE_AFTER_DAYS", settings.parse_non_negative_int)
    ] = DEFAULT_STALE_AFTER_DAYS
    """Days a broken entity keeps its last accepted events (0: never carried)."""
    cancel_after: Annotated[int, Setting("CALENDAR_CANCEL_AFTER", settings.parse_positive_int)] = (
        DEFAULT_CANCEL_AFTER
    )
    """Successful snapshots an event must be absent from before it is reported cancelled."""
    claim_timeout_minutes: Annotated[
        int, Setting("CALENDAR_CLAIM_TIMEOUT", settings.parse_positive_int)
    ] = 15
    """Minutes after which another run may take over an unfinished claim in the ledger."""
    ledger_retention_days: Annotated[
        int, Setting("CALENDAR_LEDGER_RETENTION_DAYS", settings.parse_positive_int)
    ] = 400
    """Ledger rows are pruned this many days after their event date."""
    feeds_address: Annotated[str, Setting("CALENDAR_FEEDS_ADDRESS", settings.parse_address)] = (
        "127.0.0.1:8765"
    )
    """HOST:PORT on which `calendar-pipeline serve-feeds` serves the .ics feeds."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.validate()
        self.check_deployment(context.instance)
        self.check_storage()

    def check_deployment(self, instance: dg.DagsterInstance | None) -> None:
        """On a deployment whose runs may execute on other machines, refuse the per-machine
        defaults of CALENDAR_DATA_DIR and CALENDAR_DB_URL (`SettingError` saying why)."""
        mode: settings.Deployment = self.parsed("deployment")
        if mode is settings.Deployment.AUTO:
            shared = instance is not None and not runs_on_this_machine(instance)
        else:
            shared = mode is settings.Deployment.SHARED
        if not shared:
            return
        problem = settings.shared_storage_problem(self.data_dir.strip(), self.db_url.strip())
        if problem:
            why = (
                "CALENDAR_DEPLOYMENT=shared"
                if mode is settings.Deployment.SHARED
                else f"this Dagster instance uses {describe_instance(instance)}"
            )
            raise SettingError(
                "CALENDAR_DEPLOYMENT",
                self.deployment,
                f"{problem} ({why}; CALENDAR_DEPLOYMENT=local if every process runs on "
                "this one machine)",
            )

    def check_storage(self) -> None:
        """Before any fetch: the data dir takes a write, an fsync and a lock, and the
        database answers. Raises `SettingError` naming the variable within seconds (a
        storage problem is not retried: a retry would fetch everything again)."""
        try:
            check_writable(self.data_path)
        except OSError as exc:
            raise SettingError("CALENDAR_DATA_DIR", str(self.data_path), str(exc)) from None
        self.engine()

    def validate(self) -> None:
        """Parse and range-check every value (`check_settings`); raises `SettingError`
        naming the bad one. The threshold list must fit in the lookahead."""
        self.check_settings()
        settings.check_thresholds_within_lookahead(self.threshold_days, self.lookahead)

    @property
    def threshold_days(self) -> tuple[int, ...]:
        return self.parsed("thresholds")

    @property
    def lookahead(self) -> int:
        return self.lookahead_days

    @property
    def failed_share(self) -> float:
        return self.parsed("max_failed_share")

    @property
    def missing_share(self) -> float:
        return self.parsed("max_missing_share")

    @property
    def volume_ratio(self) -> float:
        return self.parsed("min_volume_ratio")

    @property
    def claim_timeout(self) -> dt.timedelta:
        return dt.timedelta(minutes=self.claim_timeout_minutes)

    @property
    def retention(self) -> dt.timedelta:
        return dt.timedelta(days=self.ledger_retention_days)

    @property
    def timezone(self) -> str:
        """CALENDAR_TIMEZONE, as the daily partitions read it when the code loaded."""
        return TIMEZONE

    @property
    def data_path(self) -> Path:
        return self.parsed("data_dir") or Path(settings.DEFAULT_DATA_DIR)

    @property
    def universe_path(self) -> Path:
        return self.parsed("universe") or settings.DEFAULT_UNIVERSE

    def today(self) -> dt.date:
        return settings.today_in(self.timezone)

    def load_universe(self) -> Universe:
        return load_universe(
            self.universe_path, known_sources=SOURCE_NAMES, max_threshold=self.lookahead
        )

    def engine(self) -> Engine:
        """The SQL engine for CALENDAR_DB_URL (tables created on first use); raises
        `SettingError` naming the URL (password hidden) when the database cannot be used."""
        url = self.db_url or store.default_db_url(self.data_path)
        try:
            return _engine_for(url)
        except store.DatabaseUnavailable as exc:
            raise SettingError("CALENDAR_DB_URL", store.shown_url(url), exc.reason) from None

    def reading_engine(self) -> Engine:
        """The engine of an audit that writes nothing (`verify` without `--repair`): the
        usual one, except for the default SQLite file on a lake that takes no write (a
        read-only mount), opened read-only and creating nothing."""
        path = Path(make_url(store.default_db_url(self.data_path)).database or "")
        if self.db_url or not path.is_file() or os.access(self.data_path, os.W_OK):
            return self.engine()
        return store.read_only_sqlite_engine(path)

    @property
    def budgets(self) -> Budgets:
        """What raw_snapshot's checks allow (`verify --repair` judges by the same)."""
        return Budgets(
            self.failed_share, self.missing_share, self.volume_ratio, self.stale_after_days
        )


# What `dagster dev` and a bare DAGSTER_HOME use: everything in this machine's processes.
LOCAL_RUN_STORAGES = {"SqliteRunStorage", "InMemoryRunStorage"}
LOCAL_RUN_LAUNCHERS = {"DefaultRunLauncher", "SyncInMemoryRunLauncher"}


def runs_on_this_machine(instance: dg.DagsterInstance) -> bool:
    """True for the single-machine default: runs stored in SQLite (or memory) and
    launched as local processes. PostgreSQL storage or another launcher (Celery,
    Kubernetes, Docker) means runs may execute on other machines. (By class name: the
    instance's storages and launcher are public properties, their classes are not all
    importable without the optional packages.)"""
    return (
        type(instance.run_storage).__name__ in LOCAL_RUN_STORAGES
        and type(instance.run_launcher).__name__ in LOCAL_RUN_LAUNCHERS
    )


def describe_instance(instance: dg.DagsterInstance) -> str:
    return f"{type(instance.run_storage).__name__} and {type(instance.run_launcher).__name__}"


TABLE_CREATION_ATTEMPTS = 8
RACE_SIGNS = ("already exists", "database is locked")  # what a lost creation race says


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    """One engine (one connection pool) per URL per process, its tables created; raises
    `store.DatabaseUnavailable` (not cached) when the database cannot be used.

    Runs started together on a new database race to create the same tables: each checks
    that a table is missing, then one of the two `CREATE TABLE`s fails with "already
    exists"; on a new SQLite file, switching it to WAL takes a lock that does not wait
    ("database is locked"). Creation is idempotent, so the loser simply tries again."""
    for attempt in range(1, TABLE_CREATION_ATTEMPTS + 1):
        try:
            engine = store.check_database(url)
            create_http_cache_table(engine)
            create_feed_problem_tables(engine)
            create_change_tables(engine)
            create_thread_tables(engine)
            return engine
        except (store.DatabaseUnavailable, SQLAlchemyError) as exc:
            raced = any(sign in str(exc) for sign in RACE_SIGNS)
            if not raced or attempt == TABLE_CREATION_ATTEMPTS:
                raise
            time.sleep(0.1 * attempt)
    raise AssertionError("unreachable")
