"""The Nager.Date adapter against a local imitation of its API."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from calendar_pipeline.sources.collect import collect_events
from calendar_pipeline.sources.http import HttpClient, HttpConfig, HttpFetchError
from calendar_pipeline.sources.model import Entity, Window
from calendar_pipeline.sources.nager import NagerKeyError, NagerSource
from calendar_pipeline_tests import upstream_server
from calendar_pipeline_tests.upstream_server import Fault, Reply, nager_api, nager_holidays

upstream = upstream_server.upstream  # fixture

WINDOW = Window(dt.date(2025, 12, 1), dt.date(2026, 1, 29))  # crosses new year


def fast(**overrides) -> HttpConfig:
    values = {"rate_limit": 500.0, "max_attempts": 4, "timeout": 2.0, "backoff_base": 0.01}
    return HttpConfig(**{**values, "backoff_max": 0.05, **overrides})


def country(code: str) -> Entity:
    return Entity(entity_id=f"nager-{code}", name=code, source="nager", key=code)


@pytest.fixture
def nager(upstream):
    upstream.route_prefix("/api/v3/PublicHolidays/", nager_api(countries={"DE", "FR", "AT"}))
    return NagerSource(HttpClient(fast()), upstream.url)


def outcomes(source, entities, window=WINDOW):
    return {entity.entity_id: outcome for entity, outcome in source.fetch_many(entities, window)}


def test_both_years_of_a_window_across_new_year(nager, upstream):
    events = nager.fetch(country("DE"), WINDOW)
    paths = sorted(r.path for r in upstream.requests)
    assert paths == ["/api/v3/PublicHolidays/2025/DE", "/api/v3/PublicHolidays/2026/DE"]
    assert [(e.event_date.isoformat(), e.event_id) for e in events] == [
        ("2025-12-24", "christmas-eve-2025"),
        ("2025-12-25", "christmas-day-2025"),
        ("2025-12-26", "st-stephen-s-day-2025"),
        ("2025-12-31", "new-year-s-eve-2025"),
        ("2026-01-01", "new-year-s-day-2026"),
        ("2026-01-06", "epiphany-2026"),
    ]
    epiphany = events[-1]
    assert epiphany.title == "Epiphany" and epiphany.source == "nager"
    assert epiphany.details == {
        "local_name": "Heilige Drei Könige",
        "country_code": "DE",
        "fixed": True,
        "global": False,
        "counties": "DE-BW,DE-BY,DE-ST",
        "launch_year": None,
        "types": "Public",
    }


def test_ids_are_numbered_within_the_year_and_free_of_the_date(upstream):
    records = [
        {"date": "2025-03-03", "name": "Bank holiday", "countryCode": "GB", "types": ["Bank"]},
        {"date": "2025-05-05", "name": "Bank holiday", "countryCode": "GB", "types": ["Bank"]},
        {"date": "2025-05-05", "name": "Bank holiday", "countryCode": "GB", "counties": ["GB-SCT"]},
    ]
    upstream.route("/api/v3/PublicHolidays/2025/GB", Reply.json(records))
    source = NagerSource(HttpClient(fast()), upstream.url)
    window = Window(dt.date(2025, 5, 1), dt.date(2025, 5, 31))
    [event] = source.fetch(country("GB"), window)  # one event per (date, name)
    assert (event.event_id, event.details["counties"]) == ("bank-holiday-2025-2", "GB-SCT")
    # the first holiday moves: the second keeps its id
    records[0]["date"] = "2025-03-10"
    upstream.route("/api/v3/PublicHolidays/2025/GB", Reply.json(records))
    assert source.fetch(country("GB"), window)[0].event_id == "bank-holiday-2025-2"


def test_has_data_tells_a_quiet_window_from_a_country_without_data(nager, upstream):
    upstream.route("/api/v3/PublicHolidays/2025/XK", Reply.json([]))
    quiet = Window(dt.date(2025, 2, 1), dt.date(2025, 3, 31))  # no holiday in the fake
    found = outcomes(nager, [country("DE"), country("XK")], quiet)
    assert found == {"nager-DE": [], "nager-XK": []}
    assert nager.has_data(country("DE"), quiet) is True
    assert nager.has_data(country("XK"), quiet) is False  # Nager answered an empty year


def test_unknown_country_and_bad_key_are_entity_errors(nager, upstream):
    bad_key = Entity(entity_id="nager-bad", name="Bad", source="nager", key="France")
    found = outcomes(nager, [country("ZZ"), bad_key, country("FR")])
    assert isinstance(found["nager-ZZ"], HttpFetchError)
    # the window spans two years, fetched concurrently: either year's 404 may come first
    assert re.search(r"/api/v3/PublicHolidays/202[56]/ZZ: HTTP 404", str(found["nager-ZZ"]))
    assert isinstance(found["nager-bad"], NagerKeyError)
    assert "'France'" in str(found["nager-bad"])
    assert len(found["nager-FR"]) == 6
    assert not any("France" in r.path for r in upstream.requests)


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"<html><title>502 Bad Gateway</title></html>", "text/html", r"HTML page.*502 Bad"),
        (b'[{"date": "2025-12-25", "name": "Christmas"', None, r"not valid JSON"),
        (b'{"holidays": []}', None, r"expected a JSON list of holidays, got dict"),
        (b'[{"date": "2025-12-25", "countryCode": "DE"}]', None, r"0\.name: Field required"),
        (
            b'[{"date": "2025-02-30", "name": "X", "countryCode": "DE"}]',
            None,
            r"0\.date: Input should be a valid date",
        ),
        (b'[{"date": "2025-12-25", "name": "X", "countryCode": "FR"}]', None, r"not DE"),
        ("[]".encode("utf-16"), None, r"not valid utf-8"),
    ],
)
def test_bad_answers_name_the_url_and_the_cause(upstream, body, content_type, expected):
    reply = Reply(body=body, content_type=content_type or "application/json")
    upstream.route("/api/v3/PublicHolidays/2025/DE", reply)
    upstream.route("/api/v3/PublicHolidays/2026/DE", Reply.json(nager_holidays(2026, "DE")))
    source = NagerSource(HttpClient(fast()), upstream.url)
    [(_, outcome)] = source.fetch_many([country("DE")], WINDOW)
    assert isinstance(outcome, Exception)
    assert "/api/v3/PublicHolidays/2025/DE" in str(outcome)
    assert re.search(expected, str(outcome)), str(outcome)
    assert len(upstream.requests_to("/api/v3/PublicHolidays/2025/DE")) == 1  # not retried


def test_oversized_answers_are_refused(upstream):
    big = json.dumps(nager_holidays(2025, "DE") * 400).encode()
    upstream.route("/api/v3/PublicHolidays/2025/DE", Reply(body=big))
    source = NagerSource(HttpClient(fast(max_response_bytes=100_000)), upstream.url)
    with pytest.raises(HttpFetchError, match=r"larger than the 100,000-byte cap"):
        source.fetch(country("DE"), Window(dt.date(2025, 12, 1), dt.date(2025, 12, 31)))


def test_every_entity_is_accounted_for_under_random_faults(upstream):
    """Faults at a rate the test does not pick per entity; retries recover them all."""
    upstream.route_prefix("/api/v3/PublicHolidays/", nager_api())
    upstream.chaos(
        0.3,
        [
            Fault.status_code(503),
            Fault.status_code(429, retry_after="0"),
            Fault.status_code(502),
            Fault.reset_mid_body(),
            Fault.close(),
            Fault.delay(0.6),
        ],
        seed=7,
    )
    codes = [f"{a}{b}" for a in "ABCDEFG" for b in "ABCDE"]
    entities = [country(code) for code in codes]
    client = HttpClient(fast(timeout=0.4, max_attempts=8, progress_every=10))
    seen = []
    client.on_progress = lambda progress: seen.append(
        (progress.entities_done, progress.entities_total, progress.final)
    )
    result = collect_events(entities, WINDOW, {"nager": NagerSource(client, upstream.url)})
    assert result.entities_ok == len(entities) and result.errors == []
    assert len(result.events) == 6 * len(entities)
    assert client.stats.retried > 5 and client.stats.done == len(entities)
    assert seen == [(10, 35, False), (20, 35, False), (30, 35, False), (35, 35, True)]
    assert {r.fault for r in upstream.requests} >= {"status", "reset", "close"}


def test_requests_to_one_host_are_spaced_by_the_rate_limit(upstream):
    upstream.route_prefix("/api/v3/PublicHolidays/", nager_api())
    source = NagerSource(HttpClient(fast(rate_limit=25.0)), upstream.url)
    entities = [country(code) for code in ("DE", "FR", "AT", "CH", "IT", "ES", "PT", "NL")]
    list(source.fetch_many(entities, WINDOW))
    arrivals = sorted(r.arrived_at for r in upstream.requests)
    assert len(arrivals) == 16
    assert arrivals[-1] - arrivals[0] >= 15 / 25 * 0.95
