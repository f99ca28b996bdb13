"""`UpstreamSources`, the `upstream` resource: the source adapters and the polite HTTP
client they share (rate limit, concurrency, retries, timeouts, size cap, proxies), the
upstream addresses and keys, and the probe budget of `upstream_availability_sensor`."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from sqlalchemy import Engine

from calendar_pipeline import settings
from calendar_pipeline.instance import guard_run, unguard_run
from calendar_pipeline.settings import SettingError
from calendar_pipeline.sources import default_sources
from calendar_pipeline.sources.http.config import (
    HttpConfig,
    load_proxy_file,
    parse_positive_float,
)
from calendar_pipeline.sources.http.stats import ProgressCallback
from calendar_pipeline.sources.http_cache import SqlHttpCache
from calendar_pipeline.sources.http_sources import build_http_sources, parse_base_url
from calendar_pipeline.sources.model import Source


class UpstreamSources(dg.ConfigurableResource):
    """How the pipeline talks to the upstreams (nager, ics, finnhub; `holidays` is
    embedded and needs nothing). Fractional numbers are `str` (Dagster reads an
    environment variable only into `str` and `int`) and parsed by `validate`."""

    rate_limit: str = "2"  # requests per second per host
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
        # The runs that use the upstreams take the calendar_upstream pool: before a step
        # waits for it, and while this run lives, end the runs of this machine whose
        # process is gone and free their slots (calendar_pipeline/instance.py).
        guard_run(context)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        unguard_run(context)

    def validate(self) -> None:
        """Parse and range-check every value once; `SettingError` names the bad one."""
        for field, minimum in INT_MINIMUMS.items():
            value, name = getattr(self, field), UPSTREAM_ENV[field]
            settings.parse_positive_int(value, name, allow_zero=minimum == 0)
        self.http_config()
        self.probe_budget  # noqa: B018 - parsing is the check
        parse_base_url(self.nager_base_url, "NAGER_BASE_URL")
        parse_base_url(self.finnhub_base_url, "FINNHUB_BASE_URL")

    @property
    def probe_budget(self) -> float:
        """Seconds upstream_availability_sensor may probe per tick (a tick has 60)."""
        return parse_positive_float(self.probe_budget_seconds, "CALENDAR_PROBE_BUDGET_SECONDS")

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

    def sources(
        self, engine: Engine, timezone: str, on_progress: ProgressCallback | None = None
    ) -> dict[str, Source]:
        """Every adapter by its universe name (`SOURCE_NAMES`): the embedded
        `holidays` source and the HTTP ones sharing one polite client whose
        conditional-GET cache lives in `engine`'s database. `timezone` dates the
        events of iCalendar feeds that name none."""
        http = build_http_sources(
            self.http_config(),
            SqlHttpCache(engine),
            nager_base_url=self.nager_base_url,
            finnhub_base_url=self.finnhub_base_url,
            finnhub_token=self.finnhub_token.strip() or None,
            ics_timezone=timezone,
            on_progress=on_progress,
        )
        return {**default_sources(), **http}


INT_MINIMUMS = {"max_concurrency": 1, "http_max_attempts": 1, "max_response_bytes": 1}

UPSTREAM_ENV = {
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
