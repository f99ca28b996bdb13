"""The HTTP adapters, built together around one shared polite client.

    engine = store.make_engine(url)
    create_http_cache_table(engine)
    config = HttpConfig(rate_limit=2.0, max_concurrency=4)   # CalendarSettings.http_config()
    sources = build_http_sources(
        config, SqlHttpCache(engine),
        nager_base_url=..., finnhub_base_url=..., finnhub_token=...,
    )
    result = collect_events(entities, window, {**default_sources(), **sources})
    http_stats(sources)                                 # done, failed, retried, 304s, bytes

The three adapters share one :class:`HttpClient`, so the statistics, the rate limit of a
host both adapters use and the secrets to redact are shared too.

The bundled ``calendar_pipeline/universe/nager_countries.csv`` lists the countries the
public Nager.Date API covers; see ``NAGER_COUNTRIES`` in
:mod:`calendar_pipeline.sources.nager` for where that list comes from and how to
regenerate the file.
"""

from __future__ import annotations

from collections.abc import Mapping

from calendar_pipeline.sources.finnhub import DEFAULT_FINNHUB_BASE_URL, FinnhubSource
from calendar_pipeline.sources.http.client import HttpClient
from calendar_pipeline.sources.http.config import HttpConfig
from calendar_pipeline.sources.http.stats import BatchProgress, HttpStats, ProgressCallback
from calendar_pipeline.sources.http_cache import HttpCache
from calendar_pipeline.sources.ics import DEFAULT_LIMITS, IcsLimits, IcsSource
from calendar_pipeline.sources.model import Source
from calendar_pipeline.sources.nager import DEFAULT_NAGER_BASE_URL, NagerSource

__all__ = [
    "DEFAULT_FINNHUB_BASE_URL",
    "DEFAULT_NAGER_BASE_URL",
    "BatchProgress",
    "HttpConfig",
    "HttpStats",
    "build_http_sources",
    "http_stats",
]


def build_http_sources(
    config: HttpConfig,
    cache: HttpCache | None,
    *,
    nager_base_url: str = DEFAULT_NAGER_BASE_URL,
    finnhub_base_url: str = DEFAULT_FINNHUB_BASE_URL,
    finnhub_token: str | None = None,
    ics_timezone: str = "UTC",
    ics_limits: IcsLimits = DEFAULT_LIMITS,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Source]:
    """``{"nager": ..., "ics": ..., "finnhub": ...}`` sharing one :class:`HttpClient`.

    ``cache`` (a :class:`~calendar_pipeline.sources.http_cache.SqlHttpCache`) enables
    conditional GET; ``None`` disables it. ``ics_timezone`` dates UTC events of feeds
    that name no time zone (pass the pipeline's ``CALENDAR_TIMEZONE``).
    ``on_progress`` receives a :class:`BatchProgress` every ``config.progress_every``
    entities and at the end of each source's batch (it can also be set later on
    ``sources["nager"].client.on_progress``).
    """
    client = HttpClient(config, cache, secrets=[finnhub_token or ""], on_progress=on_progress)
    return {
        "nager": NagerSource(client, nager_base_url),
        "ics": IcsSource(client, default_timezone=ics_timezone, limits=ics_limits),
        "finnhub": FinnhubSource(client, finnhub_base_url, finnhub_token),
    }


def http_client(sources: Mapping[str, Source]) -> HttpClient | None:
    """The client the HTTP adapters among ``sources`` share (None when none is HTTP)."""
    for source in sources.values():
        client = getattr(source, "client", None)
        if isinstance(client, HttpClient):
            return client
    return None


def http_stats(sources: Mapping[str, Source]) -> HttpStats:
    """The running totals of the client behind ``sources`` (zeros when none is HTTP).

    Take one before and one after ``collect_events`` and subtract them for one run's
    figures: ``after - before``.
    """
    client = http_client(sources)
    return client.stats if client is not None else HttpStats()
