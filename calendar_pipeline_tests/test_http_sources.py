"""The factory, the bundled Nager universe, and one universe mixing every source, run
through ``collect_events`` against local imitations of the upstreams with faults."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from calendar_pipeline.settings import BUNDLED_UNIVERSE_DIR
from calendar_pipeline.sources import default_sources
from calendar_pipeline.sources.collect import collect_events
from calendar_pipeline.sources.http import HttpClient, HttpConfig, HttpStats
from calendar_pipeline.sources.http_sources import build_http_sources, http_stats
from calendar_pipeline.sources.model import Entity, Window
from calendar_pipeline.sources.nager import NAGER_COUNTRIES, nager_universe_csv
from calendar_pipeline.universe import load_universe
from calendar_pipeline_tests import upstream_server
from calendar_pipeline_tests.upstream_server import (
    Fault,
    MemoryCache,
    Reply,
    earnings_records,
    finnhub_api,
    nager_api,
)

upstream_factory = upstream_server.upstream_factory  # fixture

CORPUS = Path(__file__).parent / "data" / "ics"
TOKEN = "fh-mixed-universe-token"
WINDOW = Window(dt.date(2025, 3, 1), dt.date(2025, 4, 29))


def fast(**overrides) -> HttpConfig:
    values = {"rate_limit": 200.0, "max_attempts": 8, "timeout": 0.5, "backoff_base": 0.01}
    return HttpConfig(**{**values, "backoff_max": 0.05, **overrides})


def test_factory_shares_one_client_and_redacts_the_token():
    sources = build_http_sources(
        HttpConfig(),
        None,
        nager_base_url="https://date.nager.at/",
        finnhub_base_url="https://finnhub.io",
        finnhub_token="secret-token-123",
    )
    assert set(sources) == {"nager", "ics", "finnhub"}
    clients = {id(source.client) for source in sources.values()}
    assert len(clients) == 1
    client = sources["nager"].client
    assert isinstance(client, HttpClient)
    assert client.redact("token secret-token-123 leaked") == "token *** leaked"
    assert sources["nager"].base_url == "https://date.nager.at"
    assert http_stats(sources) == HttpStats()
    assert http_stats(default_sources()) == HttpStats()


def test_the_bundled_nager_universe_matches_its_generator():
    path = BUNDLED_UNIVERSE_DIR / "nager_countries.csv"
    assert path.read_text(encoding="utf-8") == nager_universe_csv()
    universe = load_universe(path, known_sources={"nager"})
    assert len(universe.entities) == len(NAGER_COUNTRIES) >= 100
    assert {e.key for e in universe.entities} >= {"DE", "FR", "US", "GB", "JP", "BR", "ZA"}
    assert all(e.source == "nager" and len(e.key) == 2 for e in universe.entities)


def test_a_mixed_universe_with_faults_accounts_for_every_entity(upstream_factory):
    nager = upstream_factory()
    nager.route_prefix("/api/v3/PublicHolidays/", nager_api())
    finnhub = upstream_factory()
    symbols = [f"S{index:02d}" for index in range(30)]
    finnhub.route(
        "/api/v1/calendar/earnings",
        finnhub_api(earnings_records(symbols, dt.date(2025, 3, 3), 50), TOKEN),
    )
    feeds = upstream_factory()
    good = ["google_team_calendar.ics", "apple_icloud_family.ics", "tokyo_public_holidays.ics"]
    for name in [*good, "hostile_secondly_rrule.ics", "not_a_calendar.html"]:
        feeds.route(
            f"/{name}", Reply(body=(CORPUS / name).read_bytes(), content_type="text/calendar")
        )
    faults = [
        Fault.status_code(503),
        Fault.status_code(429, retry_after="0"),
        Fault.reset_mid_body(),
        Fault.delay(0.8),  # past the 0.5 s timeout
        Fault.instead(Reply(502, b"<html>bad gateway</html>", "text/html", etag=False)),
    ]
    for seed, server in enumerate((nager, finnhub, feeds)):
        server.chaos(0.25, faults, seed=seed)

    entities = (
        [Entity(entity_id="hol-FR", name="France", source="holidays", key="country:FR")]
        + [
            Entity(entity_id=f"nager-{c}", name=c, source="nager", key=c)
            for c in ("DE", "AT", "CH", "IT", "ES", "PT")
        ]
        + [Entity(entity_id=f"earn-{s}", name=s, source="finnhub", key=s) for s in symbols]
        + [
            Entity(entity_id=f"ics-{i}", name=name, source="ics", key=f"{feeds.url}/{name}")
            for i, name in enumerate([*good, "hostile_secondly_rrule.ics", "not_a_calendar.html"])
        ]
    )
    sources = {
        **default_sources(),
        **build_http_sources(
            fast(),
            MemoryCache(),
            nager_base_url=nager.url,
            finnhub_base_url=finnhub.url,
            finnhub_token=TOKEN,
        ),
    }
    before = http_stats(sources)
    result = collect_events(entities, WINDOW, sources)
    stats = http_stats(sources) - before

    assert result.entities_ok + result.entities_failed == len(entities)
    assert sorted(e.entity_id for e in result.errors) == ["ics-3", "ics-4"]
    assert {e.entity_id for e in result.events} >= {"hol-FR", "earn-S00", "ics-0", "ics-2"}
    assert "nager-DE" in result.entities_without_events  # the fake has no spring holiday
    assert stats.done == len(entities) - 1 - 2  # the holidays entity is not HTTP
    assert stats.failed == 2 and stats.retried > 0
    assert len(finnhub.requests) >= 1 and all("symbol" not in r.query for r in finnhub.requests)
    assert set(result.source_versions) == {"holidays", "nager", "finnhub", "ics"}

    # the next run, upstreams unchanged and calm: almost everything is a 304
    for server in (nager, finnhub, feeds):
        server.calm()
    before = http_stats(sources)
    again = collect_events(entities, WINDOW, sources)
    second = http_stats(sources) - before
    assert again.events == result.events
    assert second.not_modified >= second.requests - 2  # the two broken feeds are not cached
    assert second.bytes < stats.bytes / 10
