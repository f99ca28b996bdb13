"""The Finnhub earnings adapter against a local imitation of its API."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from calendar_pipeline.sources.collect import collect_events
from calendar_pipeline.sources.finnhub import FinnhubError, FinnhubSource
from calendar_pipeline.sources.http import HttpClient, HttpConfig, HttpFetchError
from calendar_pipeline.sources.model import Entity, Window
from calendar_pipeline_tests import upstream_server
from calendar_pipeline_tests.upstream_server import Fault, Reply, earnings_records, finnhub_api

upstream = upstream_server.upstream  # fixture

TOKEN = "fh-test-token-0123456789"
WINDOW = Window(dt.date(2025, 4, 1), dt.date(2025, 5, 30))
PATH = "/api/v1/calendar/earnings"


def fast(**overrides) -> HttpConfig:
    values = {"rate_limit": 500.0, "max_attempts": 3, "timeout": 2.0, "backoff_base": 0.01}
    return HttpConfig(**{**values, "backoff_max": 0.05, **overrides})


def ticker(symbol: str) -> Entity:
    return Entity(entity_id=f"earnings-{symbol}", name=symbol, source="finnhub", key=symbol)


def tickers(count: int) -> list[str]:
    return [f"T{index:03d}" for index in range(count)]


def source_for(upstream, records, token=TOKEN, **kwargs) -> FinnhubSource:
    upstream.route(PATH, finnhub_api(records, TOKEN))
    return FinnhubSource(HttpClient(fast()), upstream.url, token, **kwargs)


def outcomes(source, entities):
    return {entity.entity_id: outcome for entity, outcome in source.fetch_many(entities, WINDOW)}


def test_a_small_universe_uses_the_per_ticker_path(upstream):
    records = earnings_records(["AAPL", "MSFT", "NVDA", "TSLA"], dt.date(2025, 4, 20), 20)
    source = source_for(upstream, records)
    found = outcomes(source, [ticker("AAPL"), ticker("MSFT")])
    assert sorted(r.query["symbol"] for r in upstream.requests) == ["AAPL", "MSFT"]
    assert all(
        r.query["from"] == "2025-04-01" and r.query["to"] == "2025-05-30" for r in upstream.requests
    )
    [apple] = found["earnings-AAPL"]
    assert (apple.event_id, apple.event_date, apple.source) == (
        "earnings-2025Q2",
        dt.date(2025, 4, 20),
        "finnhub",
    )
    assert apple.title == "AAPL earnings Q2 2025 (before market open)"
    assert apple.details == {
        "symbol": "AAPL",
        "hour": "bmo",
        "quarter": 2,
        "year": 2025,
        "eps_estimate": 0.5,
        "revenue_estimate": 1_000_000_000.0,
    }


def test_a_large_universe_is_one_range_call_filtered_to_the_universe(upstream):
    watched = tickers(300)
    records = earnings_records([*watched, "NOTWATCHED"], dt.date(2025, 4, 1), 60)
    source = source_for(upstream, records)
    result = collect_events([ticker(s) for s in watched], WINDOW, {"finnhub": source})
    assert len(upstream.requests) == 1 and "symbol" not in upstream.requests[0].query
    assert result.entities_ok == 300 and not result.errors
    assert {e.entity_id for e in result.events} == {f"earnings-{s}" for s in watched}
    assert not any("NOTWATCHED" in e.title for e in result.events)


def test_the_range_can_be_cut_into_chunks(upstream):
    records = earnings_records(tickers(30), dt.date(2025, 4, 1), 60)
    source = source_for(upstream, records, max_range_days=31)
    result = collect_events([ticker(s) for s in tickers(30)], WINDOW, {"finnhub": source})
    assert [(r.query["from"], r.query["to"]) for r in upstream.requests] == [
        ("2025-04-01", "2025-05-01"),
        ("2025-05-02", "2025-05-30"),
    ]
    assert len(result.events) == 30


def test_the_token_travels_in_a_header_only_and_is_never_shown(upstream, caplog):
    caplog.set_level(logging.DEBUG)
    source = source_for(upstream, earnings_records(["AAPL"], dt.date(2025, 4, 20), 1))
    source.fetch(ticker("AAPL"), WINDOW)
    request = upstream.requests[0]
    assert request.header("X-Finnhub-Token") == TOKEN
    assert TOKEN not in request.path and TOKEN not in str(request.query)
    # a server that echoes the token back in its error page
    upstream.route(PATH, Reply(500, f"<h1>bad token {TOKEN}</h1>".encode(), "text/html"))
    with pytest.raises(HttpFetchError) as info:
        source.fetch(ticker("AAPL"), WINDOW)
    assert "HTTP 500" in str(info.value) and "bad token ***" in str(info.value)
    assert TOKEN not in str(info.value) and TOKEN not in caplog.text


def test_a_wrong_token_and_a_missing_token(upstream):
    source = source_for(upstream, [], token="wrong-token-value")
    with pytest.raises(HttpFetchError, match=r"HTTP 401.*Invalid API key") as info:
        source.fetch(ticker("AAPL"), WINDOW)
    assert "wrong-token-value" not in str(info.value)
    missing = source_for(upstream, [], token=None)
    found = outcomes(missing, [ticker("AAPL"), ticker("MSFT")])
    assert all(isinstance(o, FinnhubError) and "FINNHUB_TOKEN" in str(o) for o in found.values())
    assert len(upstream.requests) == 1  # only the wrong-token call went out


def test_a_failed_range_call_fails_every_ticker_by_name(upstream):
    source = source_for(upstream, [])
    upstream.fail_next(Fault.status_code(503), times=3)
    found = outcomes(source, [ticker(s) for s in tickers(25)])
    assert len(upstream.requests) == 3  # one call, three attempts: not one per ticker
    for symbol in tickers(25):
        message = str(found[f"earnings-{symbol}"])
        assert message.startswith(f"finnhub {symbol}: range call failed: GET ")
        assert "HTTP 503" in message


def test_a_bad_record_fails_only_its_ticker_and_unwatched_ones_are_ignored(upstream):
    records = earnings_records(tickers(25), dt.date(2025, 4, 1), 60)
    records[3]["date"] = "2025-13-45"
    records.append({"symbol": "GARBAGE", "date": "not a date", "quarter": "x"})
    records.append(["not", "a", "record"])
    source = source_for(upstream, records)
    found = outcomes(source, [ticker(s) for s in tickers(25)])
    failed = {k: v for k, v in found.items() if isinstance(v, Exception)}
    assert list(failed) == ["earnings-T003"]
    assert "finnhub T003: record 0 ('2025-13-45') is invalid: date:" in str(failed["earnings-T003"])


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[]", r"expected a JSON object, got list"),
        (b'{"error": "You don\'t have access to this resource."}', r"Finnhub answered an error"),
        (b'{"earningsCalendar": {"AAPL": 1}}', r"'earningsCalendar' is a dict"),
        (b'{"earnings": []}', r"no 'earningsCalendar' list"),
    ],
)
def test_answers_of_the_wrong_shape(upstream, body, expected):
    upstream.route(PATH, Reply(body=body))
    source = FinnhubSource(HttpClient(fast()), upstream.url, TOKEN)
    with pytest.raises(HttpFetchError, match=expected):
        source.fetch(ticker("AAPL"), WINDOW)


def test_a_moved_earnings_date_keeps_its_id(upstream):
    records = earnings_records(["AAPL"], dt.date(2025, 4, 24), 1)
    source = source_for(upstream, records)
    before = source.fetch(ticker("AAPL"), WINDOW)
    records[0]["date"] = "2025-05-01"
    after = source.fetch(ticker("AAPL"), WINDOW)
    assert before[0].event_id == after[0].event_id == "earnings-2025Q2"
    assert before[0].event_date == dt.date(2025, 4, 24)
    assert after[0].event_date == dt.date(2025, 5, 1)
