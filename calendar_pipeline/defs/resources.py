"""Dagster resources: every setting of the pipeline, read from the environment.

A setting present in the environment is passed as ``EnvVar`` so the UI shows which
variable it came from (and never a secret's value); an absent one takes its default.
Values are validated by ``calendar_pipeline.settings`` when a run starts, so a bad one
fails with a message naming the variable and the value.
"""

from __future__ import annotations

import datetime as dt
import os
import zoneinfo
from functools import lru_cache
from pathlib import Path

import dagster as dg
from dagster_slack import SlackResource
from slack_sdk import WebClient
from sqlalchemy import Engine

from calendar_pipeline import settings
from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.slack_client import (
    DEFAULT_API_URL,
    SlackPoster,
    SlackWebhookPoster,
    web_client,
)
from calendar_pipeline.lake.atomic import check_writable
from calendar_pipeline.quality.judge import Budgets
from calendar_pipeline.settings import SettingError
from calendar_pipeline.sources import default_sources
from calendar_pipeline.sources.http import HttpConfig, ProgressCallback, parse_positive_float
from calendar_pipeline.sources.http_cache import SqlHttpCache, create_http_cache_table
from calendar_pipeline.sources.http_sources import build_http_sources
from calendar_pipeline.sources.model import Source
from calendar_pipeline.universe import Universe, load_universe


def setting(name: str, default: str) -> str | dg.EnvVar:
    """``EnvVar(name)`` when the variable is set and not blank, else ``default``."""
    return dg.EnvVar(name) if os.environ.get(name, "").strip() else default


class CalendarSettings(dg.ConfigurableResource):
    """Where data lives and what the calendar pipeline watches."""

    data_dir: str = ""  # "" = ./data
    db_url: str = ""  # "" = a SQLite file in the data dir
    deployment: str = "auto"
    universe: str = ""
    lookahead_days: str = str(settings.DEFAULT_LOOKAHEAD_DAYS)
    thresholds: str = "30,15,7,3,1"
    timezone: str = settings.DEFAULT_TIMEZONE
    max_failed_entities: str = "0"
    max_missing_entities: str = "50"
    min_volume_ratio: str = "0.5"
    claim_timeout_minutes: str = "15"
    ledger_retention_days: str = "400"
    # HTTP sources (nager, ics, finnhub): politeness, faults, upstream addresses
    rate_limit: str = "2"
    max_concurrency: str = "4"
    http_max_attempts: str = "5"
    http_timeout: str = "20"
    max_response_bytes: str = str(10 * 1024 * 1024)
    proxy_file: str = ""
    probe_budget_seconds: str = "45"
    nager_base_url: str = "https://date.nager.at"
    finnhub_base_url: str = "https://finnhub.io"
    finnhub_token: str = ""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.validate()
        self.check_deployment(context.instance)
        self.check_storage()

    def check_deployment(self, instance: dg.DagsterInstance | None) -> None:
        """On a deployment whose runs may execute on other machines, refuse the per-machine
        defaults of CALENDAR_DATA_DIR and CALENDAR_DB_URL (``SettingError`` saying why)."""
        mode = settings.parse_deployment(self.deployment)
        if mode == "auto":
            shared = instance is not None and not runs_on_this_machine(instance)
        else:
            shared = mode == "shared"
        if not shared:
            return
        problem = settings.shared_storage_problem(self.data_dir.strip(), self.db_url.strip())
        if problem:
            why = (
                "CALENDAR_DEPLOYMENT=shared"
                if mode == "shared"
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
        database answers. Raises ``SettingError`` naming the variable within seconds (a
        storage problem is not retried: a retry would fetch everything again)."""
        try:
            check_writable(self.data_path)
        except OSError as exc:
            raise SettingError("CALENDAR_DATA_DIR", str(self.data_path), str(exc)) from None
        self.engine()

    def validate(self) -> None:
        """Parse every value once; raises ``SettingError`` naming the bad one."""
        self.threshold_days  # noqa: B018 - parsing is the check
        self.lookahead  # noqa: B018
        self.failed_budget  # noqa: B018
        self.missing_budget  # noqa: B018
        self.volume_ratio  # noqa: B018
        self.probe_budget  # noqa: B018
        settings.parse_timezone(self.timezone)
        settings.parse_deployment(self.deployment)
        self.claim_timeout  # noqa: B018
        self.retention  # noqa: B018
        self.http_config()

    @property
    def threshold_days(self) -> tuple[int, ...]:
        return settings.parse_thresholds(self.thresholds)

    @property
    def lookahead(self) -> int:
        return settings.parse_positive_int(self.lookahead_days, "CALENDAR_LOOKAHEAD_DAYS")

    @property
    def failed_budget(self) -> int:
        return settings.parse_positive_int(
            self.max_failed_entities, "CALENDAR_MAX_FAILED_ENTITIES", allow_zero=True
        )

    @property
    def missing_budget(self) -> int:
        return settings.parse_positive_int(
            self.max_missing_entities, "CALENDAR_MAX_MISSING_ENTITIES", allow_zero=True
        )

    @property
    def volume_ratio(self) -> float:
        return settings.parse_ratio(self.min_volume_ratio, "CALENDAR_MIN_VOLUME_RATIO")

    @property
    def probe_budget(self) -> float:
        """Seconds upstream_availability_sensor may probe per tick (a tick has 60)."""
        return parse_positive_float(self.probe_budget_seconds, "CALENDAR_PROBE_BUDGET_SECONDS")

    @property
    def claim_timeout(self) -> dt.timedelta:
        minutes = settings.parse_positive_int(self.claim_timeout_minutes, "CALENDAR_CLAIM_TIMEOUT")
        return dt.timedelta(minutes=minutes)

    @property
    def retention(self) -> dt.timedelta:
        days = settings.parse_positive_int(
            self.ledger_retention_days, "CALENDAR_LEDGER_RETENTION_DAYS"
        )
        return dt.timedelta(days=days)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir.strip() or settings.DEFAULT_DATA_DIR).expanduser()

    @property
    def universe_path(self) -> Path:
        return Path(self.universe).expanduser() if self.universe else settings.DEFAULT_UNIVERSE

    def today(self) -> dt.date:
        return dt.datetime.now(zoneinfo.ZoneInfo(settings.parse_timezone(self.timezone))).date()

    def http_config(self) -> HttpConfig:
        """The polite client's settings, validated (errors name the variable)."""
        fields = ("rate_limit", "max_concurrency", "http_max_attempts", "http_timeout",
                  "max_response_bytes", "proxy_file")  # fmt: skip
        return HttpConfig.from_env({CALENDAR_ENV[field]: getattr(self, field) for field in fields})

    def sources(self, on_progress: ProgressCallback | None = None) -> dict[str, Source]:
        """Every adapter by its universe name: the embedded ``holidays`` source and the
        HTTP ones (``nager``, ``ics``, ``finnhub``) sharing one polite client whose
        conditional-GET cache lives in the SQL database."""
        http = build_http_sources(
            self.http_config(),
            SqlHttpCache(self.engine()),
            nager_base_url=self.nager_base_url,
            finnhub_base_url=self.finnhub_base_url,
            finnhub_token=self.finnhub_token.strip() or None,
            ics_timezone=settings.parse_timezone(self.timezone),
            on_progress=on_progress,
        )
        return {**default_sources(), **http}

    def known_sources(self) -> set[str]:
        return {"holidays", "nager", "ics", "finnhub"}

    def load_universe(self) -> Universe:
        return load_universe(self.universe_path, known_sources=self.known_sources())

    def engine(self) -> Engine:
        """The SQL engine for CALENDAR_DB_URL (tables created on first use); raises
        ``SettingError`` naming the URL (password hidden) when the database cannot be used."""
        url = self.db_url or store.default_db_url(self.data_path)
        try:
            return _engine_for(url)
        except store.DatabaseUnavailable as exc:
            raise SettingError("CALENDAR_DB_URL", store.shown_url(url), exc.reason) from None

    @property
    def budgets(self) -> Budgets:
        """What raw_snapshot's checks allow (``verify --repair`` judges by the same)."""
        return Budgets(self.failed_budget, self.missing_budget, self.volume_ratio)


# What `dagster dev` and a bare DAGSTER_HOME use: everything in this machine's processes.
LOCAL_RUN_STORAGES = {"SqliteRunStorage", "InMemoryRunStorage"}
LOCAL_RUN_LAUNCHERS = {"DefaultRunLauncher", "SyncInMemoryRunLauncher"}


def runs_on_this_machine(instance: dg.DagsterInstance) -> bool:
    """True for the single-machine default: runs stored in SQLite (or memory) and
    launched as local processes. PostgreSQL storage or another launcher (Celery,
    Kubernetes, Docker) means runs may execute on other machines."""
    return (
        type(instance.run_storage).__name__ in LOCAL_RUN_STORAGES
        and type(instance.run_launcher).__name__ in LOCAL_RUN_LAUNCHERS
    )


def describe_instance(instance: dg.DagsterInstance) -> str:
    return f"{type(instance.run_storage).__name__} and {type(instance.run_launcher).__name__}"


@lru_cache(maxsize=8)
def _engine_for(url: str) -> Engine:
    """One engine (one connection pool) per URL per process, its tables created; raises
    ``store.DatabaseUnavailable`` (not cached) when the database cannot be used."""
    engine = store.check_database(url)
    create_http_cache_table(engine)
    return engine


class SlackSettings(SlackResource):
    """How alerts reach Slack: ``dagster_slack.SlackResource`` (``token``, the bot token;
    ``get_client()``) plus the API URL, channels, mode and an optional incoming webhook.
    Neither a token nor a webhook means dry-run: digests go to the outbox and the log."""

    token: str = ""  # SLACK_BOT_TOKEN; optional here (SlackResource requires it)
    webhook_url: str = ""
    channel: str = "#calendar-alerts"
    alerts_channel: str = ""
    api_url: str = DEFAULT_API_URL
    alert_mode: str = ""
    webserver_url: str = "http://127.0.0.1:3000"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.mode  # noqa: B018 - parsing is the check

    def get_client(self) -> WebClient:
        """A ``slack_sdk.WebClient`` for SLACK_API_URL with this project's retry handlers
        (429, 5xx and connection errors) and a logger that redacts tokens."""
        return web_client(self.token.strip(), self.api_url)

    @property
    def can_post(self) -> bool:
        return bool(self.token.strip() or self.webhook_url.strip())

    @property
    def mode(self) -> str:
        return settings.parse_alert_mode(self.alert_mode, has_token=self.can_post)

    @property
    def failure_channel(self) -> str:
        """Where run-failure alerts go: SLACK_ALERTS_CHANNEL, else SLACK_CHANNEL."""
        return self.alerts_channel.strip() or self.channel

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values that must never appear in a log line, metadata or an error."""
        return tuple(v for v in (self.token.strip(), self.webhook_url.strip()) if v)

    def poster(self) -> SlackPoster | SlackWebhookPoster:
        """The bot-token poster, or the webhook poster when only a webhook is set."""
        if self.token.strip():
            return SlackPoster(token=self.token.strip(), api_url=self.api_url)
        if self.webhook_url.strip():
            return SlackWebhookPoster(url=self.webhook_url.strip())
        raise dg.Failure(
            "mode 'send' needs SLACK_BOT_TOKEN (or SLACK_WEBHOOK_URL); without either, "
            "use CALENDAR_ALERT_MODE=dry_run",
            allow_retries=False,
        )


# Which environment variable sets which resource field (the field's default applies when
# the variable is unset or blank). .env.example documents each one.
CALENDAR_ENV = {
    "data_dir": "CALENDAR_DATA_DIR",
    "db_url": "CALENDAR_DB_URL",
    "deployment": "CALENDAR_DEPLOYMENT",
    "universe": "CALENDAR_UNIVERSE",
    "lookahead_days": "CALENDAR_LOOKAHEAD_DAYS",
    "thresholds": "CALENDAR_THRESHOLDS",
    "timezone": "CALENDAR_TIMEZONE",
    "max_failed_entities": "CALENDAR_MAX_FAILED_ENTITIES",
    "max_missing_entities": "CALENDAR_MAX_MISSING_ENTITIES",
    "min_volume_ratio": "CALENDAR_MIN_VOLUME_RATIO",
    "claim_timeout_minutes": "CALENDAR_CLAIM_TIMEOUT",
    "ledger_retention_days": "CALENDAR_LEDGER_RETENTION_DAYS",
    "rate_limit": "CALENDAR_RATE_LIMIT",
    "max_concurrency": "CALENDAR_MAX_CONCURRENCY",
    "http_max_attempts": "CALENDAR_HTTP_MAX_ATTEMPTS",
    "http_timeout": "CALENDAR_HTTP_TIMEOUT",
    "max_response_bytes": "CALENDAR_MAX_RESPONSE_BYTES",
    "proxy_file": "CALENDAR_PROXY_FILE",
    "probe_budget_seconds": "CALENDAR_PROBE_BUDGET_SECONDS",
    "nager_base_url": "NAGER_BASE_URL",
    "finnhub_base_url": "FINNHUB_BASE_URL",
    "finnhub_token": "FINNHUB_TOKEN",
}
SLACK_ENV = {
    "token": "SLACK_BOT_TOKEN",
    "webhook_url": "SLACK_WEBHOOK_URL",
    "channel": "SLACK_CHANNEL",
    "alerts_channel": "SLACK_ALERTS_CHANNEL",
    "api_url": "SLACK_API_URL",
    "alert_mode": "CALENDAR_ALERT_MODE",
    "webserver_url": "CALENDAR_WEBSERVER_URL",
}


def _from_env(resource: type[dg.ConfigurableResource], names: dict[str, str]):
    fields = resource.model_fields
    return resource(**{field: setting(env, fields[field].default) for field, env in names.items()})


def calendar_settings_from_env() -> CalendarSettings:
    """``CalendarSettings`` with the environment's values themselves (not ``EnvVar``s),
    for code that runs outside Dagster (``calendar-pipeline verify``)."""
    fields = CalendarSettings.model_fields
    return CalendarSettings(
        **{
            field: os.environ[env] if os.environ.get(env, "").strip() else fields[field].default
            for field, env in CALENDAR_ENV.items()
        }
    )


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    return {
        "calendar": _from_env(CalendarSettings, CALENDAR_ENV),
        "slack": _from_env(SlackSettings, SLACK_ENV),
    }
