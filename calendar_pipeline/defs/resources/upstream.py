"""`UpstreamSources`, the `upstream` resource: the source adapters and the polite HTTP
client they share (rate limit, concurrency, retries, timeouts, size cap, proxies), the
upstream addresses and keys, and the probe budget of `upstream_availability_sensor`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import dagster as dg
from pydantic import ConfigDict
from sqlalchemy import Engine

from calendar_pipeline import settings
from calendar_pipeline.defs.resources.declared import Declared
from calendar_pipeline.instance import guard_run, unguard_run
from calendar_pipeline.retry_policy import DEFAULT_RETRY_POLICY
from calendar_pipeline.settings import Setting, SettingError
from calendar_pipeline.sources import default_sources
from calendar_pipeline.sources.finnhub import DEFAULT_FINNHUB_BASE_URL
from calendar_pipeline.sources.http.config import MIB, HttpConfig, load_proxy_file
from calendar_pipeline.sources.http.stats import ProgressCallback
from calendar_pipeline.sources.http_cache import SqlHttpCache
from calendar_pipeline.sources.http_sources import build_http_sources
from calendar_pipeline.sources.model import Source
from calendar_pipeline.sources.nager import DEFAULT_NAGER_BASE_URL


class UpstreamSources(Declared, dg.ConfigurableResource):
    """How the pipeline talks to the upstreams (nager, ics, finnhub; `holidays` is
    embedded and needs nothing). Each field is one setting, declared once (`declared.py`);
    the fractional numbers are `str` fields (Dagster reads an environment variable only
    into `str` and `int`) whose parser gives the `float`."""

    model_config = ConfigDict(use_attribute_docstrings=True)  # a field's doc: the UI's

    rate_limit: Annotated[str, Setting("CALENDAR_RATE_LIMIT", settings.parse_positive_float)] = "2"
    """Requests per second per host."""
    max_concurrency: Annotated[
        int, Setting("CALENDAR_MAX_CONCURRENCY", settings.parse_positive_int)
    ] = 4
    """Requests in flight per host."""
    http_max_attempts: Annotated[
        int, Setting("CALENDAR_HTTP_MAX_ATTEMPTS", settings.parse_positive_int)
    ] = DEFAULT_RETRY_POLICY.max_attempts
    """Attempts per request, the first included."""
    http_timeout: Annotated[
        str, Setting("CALENDAR_HTTP_TIMEOUT", settings.parse_positive_float)
    ] = "20"
    """Seconds per attempt."""
    max_response_bytes: Annotated[
        int, Setting("CALENDAR_MAX_RESPONSE_BYTES", settings.parse_positive_int)
    ] = 10 * MIB
    """A larger response (bytes, counted while streaming) fails its entity."""
    proxy_file: Annotated[str, Setting("CALENDAR_PROXY_FILE", settings.parse_path)] = ""
    """A file of proxy URLs, one a line, used in rotation (blank: no proxy)."""
    probe_budget_seconds: Annotated[
        str, Setting("CALENDAR_PROBE_BUDGET_SECONDS", settings.parse_positive_float)
    ] = "45"
    """Seconds upstream_availability_sensor may probe per tick (a tick has 60)."""
    nager_base_url: Annotated[str, Setting("NAGER_BASE_URL", settings.parse_base_url)] = (
        DEFAULT_NAGER_BASE_URL
    )
    """Nager.Date public holidays API (source `nager`)."""
    finnhub_base_url: Annotated[str, Setting("FINNHUB_BASE_URL", settings.parse_base_url)] = (
        DEFAULT_FINNHUB_BASE_URL
    )
    """Finnhub earnings calendar API (source `finnhub`)."""
    finnhub_token: Annotated[str, Setting("FINNHUB_TOKEN", secret=True)] = ""
    """Finnhub API token, sent as a header, never logged (blank: none)."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.validate()
        # The runs that use the upstreams take the calendar_upstream pool: before a step
        # waits for it, and while this run lives, end the runs of this machine whose
        # process is gone and free their slots (calendar_pipeline/instance.py).
        guard_run(context)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        unguard_run(context)

    def validate(self) -> None:
        """Parse and range-check every value (`check_settings`) and read the proxy file;
        `SettingError` names the bad one."""
        self.check_settings()
        self.http_config()

    @property
    def probe_budget(self) -> float:
        """Seconds upstream_availability_sensor may probe per tick (a tick has 60)."""
        return self.parsed("probe_budget_seconds")

    def http_config(self) -> HttpConfig:
        """The polite client's settings, validated (errors name the variable)."""
        proxy_file: Path | None = self.parsed("proxy_file")
        if proxy_file is not None:
            try:
                load_proxy_file(proxy_file)
            except ValueError as exc:
                raise SettingError("CALENDAR_PROXY_FILE", self.proxy_file, str(exc)) from None
        return HttpConfig(
            rate_limit=self.parsed("rate_limit"),
            max_concurrency=self.parsed("max_concurrency"),
            max_attempts=self.parsed("http_max_attempts"),
            timeout=self.parsed("http_timeout"),
            max_response_bytes=self.parsed("max_response_bytes"),
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
            nager_base_url=self.parsed("nager_base_url"),
            finnhub_base_url=self.parsed("finnhub_base_url"),
            finnhub_token=self.finnhub_token.strip() or None,
            ics_timezone=timezone,
            on_progress=on_progress,
        )
        return {**default_sources(), **http}
