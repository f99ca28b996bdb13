"""Dagster resources: every setting of the pipeline, read from the environment.

A setting present in the environment is passed as ``EnvVar`` (``EnvVar.int`` for whole
numbers) so the UI shows which variable it came from (and never a secret's value); an
absent one takes its default. Values are validated by ``calendar_pipeline.settings`` when
a run starts, so a bad one fails with one line naming the variable and the value.
``CALENDAR_ENV`` and ``SLACK_ENV`` map each field to its variable.
"""

from __future__ import annotations

import datetime as dt
import os
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
from calendar_pipeline.defs.partitions import TIMEZONE
from calendar_pipeline.lake.atomic import check_writable
from calendar_pipeline.quality.judge import Budgets
from calendar_pipeline.settings import SettingError
from calendar_pipeline.sources import SOURCE_NAMES, default_sources
from calendar_pipeline.sources.http.config import (
    HttpConfig,
    load_proxy_file,
    parse_positive_float,
)
from calendar_pipeline.sources.http.stats import ProgressCallback
from calendar_pipeline.sources.http_cache import SqlHttpCache, create_http_cache_table
from calendar_pipeline.sources.http_sources import build_http_sources, parse_base_url
from calendar_pipeline.sources.model import Source
from calendar_pipeline.universe import Universe, load_universe


class CalendarSettings(dg.ConfigurableResource):
    """Where data lives and what the calendar pipeline watches.

    Whole numbers are ``int`` fields (``EnvVar.int`` when set in the environment). Dagster
    reads an environment variable only into a ``str`` or ``int`` field, so the fractional
    numbers, the threshold list and the deployment mode are ``str`` here and parsed into
    their types (``float``, ``tuple[int, ...]``, :class:`~calendar_pipeline.settings.Deployment`)
    by the properties below. :meth:`validate` parses and range-checks everything once, when
    a run starts; each error is one line naming the variable, the value and what is allowed.
    """

    data_dir: str = ""  # "" = ./data
    db_url: str = ""  # "" = a SQLite file in the data dir
    deployment: str = settings.Deployment.AUTO.value
    universe: str = ""
    lookahead_days: int = settings.DEFAULT_LOOKAHEAD_DAYS
    thresholds: str = ",".join(str(days) for days in reversed(settings.DEFAULT_THRESHOLDS))
    max_failed_entities: int = 0
    max_missing_entities: int = 50
    min_volume_ratio: str = "0.5"
    claim_timeout_minutes: int = 15
    ledger_retention_days: int = 400
    # HTTP sources (nager, ics, finnhub): politeness, faults, upstream addresses
    rate_limit: str = "2"
    max_concurrency: int = 4
    http_max_attempts: int = 5
    http_timeout: str = "20"
    max_response_bytes: int = 10 * 1024 * 1024
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
        database answers. Raises ``SettingError`` naming the variable within seconds (a
        storage problem is not retried: a retry would fetch everything again)."""
        try:
            check_writable(self.data_path)
        except OSError as exc:
            raise SettingError("CALENDAR_DATA_DIR", str(self.data_path), str(exc)) from None
        self.engine()

    def validate(self) -> None:
        """Parse and range-check every value once; raises ``SettingError`` naming the bad
        one. The threshold list must fit in the lookahead."""
        for field, minimum in INT_MINIMUMS.items():
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                kind = "a non-negative integer" if minimum == 0 else "a positive integer"
                raise SettingError(CALENDAR_ENV[field], value, f"expected {kind}")
        settings.check_thresholds_within_lookahead(self.threshold_days, self.lookahead)
        self.volume_ratio  # noqa: B018 - parsing is the check
        self.probe_budget  # noqa: B018
        settings.parse_deployment(self.deployment)
        self.http_config()
        parse_base_url(self.nager_base_url, "NAGER_BASE_URL")
        parse_base_url(self.finnhub_base_url, "FINNHUB_BASE_URL")

    @property
    def threshold_days(self) -> tuple[int, ...]:
        return settings.parse_thresholds(self.thresholds)

    @property
    def lookahead(self) -> int:
        return self.lookahead_days

    @property
    def failed_budget(self) -> int:
        return self.max_failed_entities

    @property
    def missing_budget(self) -> int:
        return self.max_missing_entities

    @property
    def volume_ratio(self) -> float:
        return settings.parse_ratio(self.min_volume_ratio, "CALENDAR_MIN_VOLUME_RATIO")

    @property
    def probe_budget(self) -> float:
        """Seconds upstream_availability_sensor may probe per tick (a tick has 60)."""
        return parse_positive_float(self.probe_budget_seconds, "CALENDAR_PROBE_BUDGET_SECONDS")

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
        return Path(self.data_dir.strip() or settings.DEFAULT_DATA_DIR).expanduser()

    @property
    def universe_path(self) -> Path:
        return Path(self.universe).expanduser() if self.universe else settings.DEFAULT_UNIVERSE

    def today(self) -> dt.date:
        return settings.today_in(self.timezone)

    def http_config(self) -> HttpConfig:
        """The polite client's settings, validated (errors name the variable)."""
        proxy_file = Path(self.proxy_file.strip()).expanduser() if self.proxy_file.strip() else None
        if proxy_file is not None:
            try:
                load_proxy_file(proxy_file)
            except ValueError as exc:
                raise SettingError("CALENDAR_PROXY_FILE", self.proxy_file, str(exc)) from None
        return HttpConfig(
            rate_limit=parse_positive_float(self.rate_limit, "CALENDAR_RATE_LIMIT"),
            max_concurrency=self.max_concurrency,
            max_attempts=self.http_max_attempts,
            timeout=parse_positive_float(self.http_timeout, "CALENDAR_HTTP_TIMEOUT"),
            max_response_bytes=self.max_response_bytes,
            proxy_file=proxy_file,
        )

    def sources(self, on_progress: ProgressCallback | None = None) -> dict[str, Source]:
        """Every adapter by its universe name (``SOURCE_NAMES``): the embedded
        ``holidays`` source and the HTTP ones sharing one polite client whose
        conditional-GET cache lives in the SQL database."""
        http = build_http_sources(
            self.http_config(),
            SqlHttpCache(self.engine()),
            nager_base_url=self.nager_base_url,
            finnhub_base_url=self.finnhub_base_url,
            finnhub_token=self.finnhub_token.strip() or None,
            ics_timezone=self.timezone,
            on_progress=on_progress,
        )
        return {**default_sources(), **http}

    def load_universe(self) -> Universe:
        return load_universe(self.universe_path, known_sources=SOURCE_NAMES)

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


# The smallest value each whole-number setting takes (0: the rule it sets may be "none").
INT_MINIMUMS = {
    "lookahead_days": 1,
    "max_failed_entities": 0,
    "max_missing_entities": 0,
    "claim_timeout_minutes": 1,
    "ledger_retention_days": 1,
    "max_concurrency": 1,
    "http_max_attempts": 1,
    "max_response_bytes": 1,
}


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
        self.validate()

    def validate(self) -> None:
        """The mode parses and the URLs are http(s) URLs; ``SettingError`` otherwise."""
        self.mode  # noqa: B018 - parsing is the check
        parse_base_url(self.api_url, "SLACK_API_URL")
        if self.webhook_url.strip():
            try:  # the webhook URL is a secret: never shown, even in this error
                parse_base_url(self.webhook_url.strip(), "SLACK_WEBHOOK_URL")
            except SettingError:
                raise SettingError(
                    "SLACK_WEBHOOK_URL", "***", "expected an https:// incoming-webhook URL"
                ) from None

    def get_client(self) -> WebClient:
        """A ``slack_sdk.WebClient`` for SLACK_API_URL with this project's retry handlers
        (429, 5xx and connection errors) and a logger that redacts tokens."""
        return web_client(self.token.strip(), self.api_url)

    @property
    def can_post(self) -> bool:
        return bool(self.token.strip() or self.webhook_url.strip())

    @property
    def mode(self) -> settings.AlertMode:
        """CALENDAR_ALERT_MODE as an ``AlertMode`` (a ``str`` field, as Dagster reads an
        environment variable only into ``str`` and ``int``); blank: ``send`` with a token
        or webhook, else ``dry_run``."""
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


def _is_set(name: str) -> bool:
    return bool(os.environ.get(name, "").strip())


def _from_env(resource: type[dg.ConfigurableResource], names: dict[str, str]):
    """``resource`` with ``EnvVar(name)`` (``EnvVar.int`` for an ``int`` field) for each
    variable set and not blank, so the UI shows where each value came from and never a
    secret's value; an unset variable leaves the field's default. Values are resolved and
    validated when a run starts."""
    values = {}
    for field, name in names.items():
        if _is_set(name):
            is_int = resource.model_fields[field].annotation in (int, "int")
            values[field] = dg.EnvVar.int(name) if is_int else dg.EnvVar(name)
    return resource(**values)


def _plain_from_env(resource: type[dg.ConfigurableResource], names: dict[str, str]):
    """``resource`` with the environment's values themselves (not ``EnvVar``s), each
    ``int`` parsed here so a bad one raises ``SettingError`` naming the variable: for code
    that runs outside Dagster (``calendar-pipeline``)."""
    values: dict[str, object] = {}
    for field, name in names.items():
        if not _is_set(name):
            continue
        text = os.environ[name].strip()
        if resource.model_fields[field].annotation in (int, "int"):
            allow_zero = INT_MINIMUMS.get(field, 1) == 0
            values[field] = settings.parse_positive_int(text, name, allow_zero=allow_zero)
        else:
            values[field] = text
    return resource(**values)


def calendar_settings_from_env() -> CalendarSettings:
    return _plain_from_env(CalendarSettings, CALENDAR_ENV)


def check_environment() -> tuple[CalendarSettings, SlackSettings]:
    """Every setting of the environment parsed and checked, before anything runs: the
    values, the universe file and the database (which answers within seconds or is named
    unusable). Raises ``SettingError`` or ``UniverseError`` with a one-line message.
    ``calendar-pipeline`` calls this first; Dagster runs check the same at run start."""
    settings.load_time_settings()
    calendar = calendar_settings_from_env()
    slack = _plain_from_env(SlackSettings, SLACK_ENV)
    calendar.validate()
    slack.validate()
    calendar.load_universe()
    calendar.check_storage()
    return calendar, slack


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    return {
        "calendar": _from_env(CalendarSettings, CALENDAR_ENV),
        "slack": _from_env(SlackSettings, SLACK_ENV),
    }
