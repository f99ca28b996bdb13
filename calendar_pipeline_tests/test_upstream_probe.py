"""upstream_availability_sensor against local upstreams: every feed, every Nager
country-year and one Finnhub range call probed by conditional GET; a run only when data
changed; failures reported, not mistaken for changes; a tick that stops at its budget and
the next ones that finish the round."""

from __future__ import annotations

import datetime as dt
import json
import time

import dagster as dg
import pytest

from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings, UpstreamSources
from calendar_pipeline.sources.probe import sha16
from calendar_pipeline_tests import upstream_server
from calendar_pipeline_tests.flows import evaluate, feed, resources
from calendar_pipeline_tests.upstream_server import (
    Fault,
    Reply,
    UpstreamServer,
    earnings_records,
    finnhub_api,
    nager_api,
)

upstream_factory = upstream_server.upstream_factory
TOKEN = "finnhub-secret-token-probe"
FEED_SECRET = "private-feed-key-8f3a"
FEEDS = 30


def team_feed(n: int, *, stamp: str = "20260101T000000Z", rename: str | None = None) -> bytes:
    """Feed ``n``: an event a day from today; ``rename`` changes one event's title."""
    body = feed(start=dt.date.today() - dt.timedelta(days=n % 5), days=90)
    body = body.replace(b"DTSTAMP:20260101T000000Z", f"DTSTAMP:{stamp}".encode())
    if rename:
        first = body.index(b"SUMMARY:")
        end = body.index(b"\r\n", first)
        body = body[:first] + f"SUMMARY:{rename}".encode() + body[end:]
    return body


def serve_feed(upstream: UpstreamServer, n: int, body: bytes) -> None:
    upstream.route(f"/feeds/{n:02d}.ics", Reply(body=body, content_type="text/calendar"))


@pytest.fixture
def upstream():
    with UpstreamServer() as server:
        for n in range(FEEDS):
            serve_feed(server, n, team_feed(n))
        server.route_prefix("/api/v3/PublicHolidays/", nager_api({"DE", "AT", "FR"}))
        records = earnings_records(["AAPL", "MSFT", "NVDA"], dt.date.today(), 20)
        server.route("/api/v1/calendar/earnings", finnhub_api(records, TOKEN))
        yield server


def make(tmp_path, upstream, feeds: int = FEEDS, **overrides):
    rows = ["entity_id,name,source,key,channel", "fr,France,holidays,country:FR,"]
    for n in range(feeds):
        secret = f"?key={FEED_SECRET}" if n == 0 else ""
        rows.append(f"feed-{n:02d},Team {n},ics,{upstream.url}/feeds/{n:02d}.ics{secret},")
    rows += [f"nager-{c},{c},nager,{c}," for c in ("DE", "AT", "FR")]
    rows += [f"{t.lower()},{t},finnhub,{t}," for t in ("AAPL", "MSFT", "NVDA")]
    universe = tmp_path / "universe.csv"
    universe.write_text("\n".join(rows) + "\n")
    settings = {
        "data_dir": str(tmp_path / "data"),
        "universe": str(universe),
        "nager_base_url": upstream.url,
        "finnhub_base_url": upstream.url,
        "finnhub_token": TOKEN,
        "rate_limit": "200",
        "http_timeout": "5",
        "http_max_attempts": "2",
    }
    built = resources(**{**settings, **overrides})
    return build_defs(built), built["calendar"]


class Ticks:
    """Evaluates the sensor tick after tick, carrying the cursor like the daemon does."""

    def __init__(self, defs, instance):
        self.defs, self.instance = defs, instance
        self.sensor = defs.resolve_sensor_def("upstream_availability_sensor")
        self.cursor = None
        self.seen: list[str] = []  # every skip message, tag and cursor, for the secret check

    def __call__(self):
        result = evaluate(self.sensor, self.defs, self.instance, self.cursor)
        self.cursor = result.cursor
        self.seen += [result.cursor or "", result.skip_message or ""]
        self.seen += [json.dumps(r.tags) for r in result.run_requests]
        return result


def probed_paths(upstream, since: int = 0) -> list[tuple[str, int]]:
    return [(r.path, r.status) for r in upstream.requests[since:]]


def test_every_upstream_is_probed_and_only_a_data_change_starts_a_run(tmp_path, upstream):
    defs, calendar = make(tmp_path, upstream)
    years = sorted({calendar.today().year, (calendar.today() + dt.timedelta(days=60)).year})
    with dg.instance_for_test() as instance:
        tick = Ticks(defs, instance)

        first = tick()  # no cursor: the universe is new, one run for today
        assert [r.partition_key for r in first.run_requests] == [calendar.today().isoformat()]
        assert first.run_requests[0].tags["calendar/upstream_changed"] == "the universe changed"
        paths = {path for path, _ in probed_paths(upstream)}
        assert {f"/feeds/{n:02d}.ics" for n in range(FEEDS)} <= paths
        assert {f"/api/v3/PublicHolidays/{y}/{c}" for y in years for c in ("DE", "AT", "FR")} <= (
            paths
        )
        assert len(upstream.requests_to("/api/v1/calendar/earnings")) == 1  # one range call
        assert len(upstream.requests) == FEEDS + 3 * len(years) + 1

        mark = len(upstream.requests)
        quiet = tick()
        assert quiet.run_requests == [] and quiet.skip_message.startswith("no upstream change")
        assert "ics: 30 probed: 30 unchanged" in quiet.skip_message
        assert {status for _, status in probed_paths(upstream, mark)} == {304}  # conditional

        # a new export time (DTSTAMP, hence a new ETag) over the same events: not a change
        serve_feed(upstream, 17, team_feed(17, stamp="20260301T101500Z"))
        churn = tick()
        assert churn.run_requests == []
        assert ("/feeds/17.ics", 200) in probed_paths(upstream, mark)

        # one event renamed in one feed out of thirty: a run, naming that feed
        serve_feed(upstream, 23, team_feed(23, rename="Release (moved to the afternoon)"))
        changed = tick()
        assert len(changed.run_requests) == 1
        assert changed.run_requests[0].tags["calendar/upstream_changed"] == "ics:feed-23"
        assert "1 changed" in changed.run_requests[0].tags["calendar/upstream_report"]
        assert changed.run_requests[0].run_key != first.run_requests[0].run_key
        assert tick().run_requests == []  # seen once, started once

        # Nager drops a country (an empty list): a change of that country-year
        upstream.route(f"/api/v3/PublicHolidays/{years[0]}/AT", Reply.json([]))
        dropped = tick()
        assert f"nager:AT {years[0]}" in dropped.run_requests[0].tags["calendar/upstream_changed"]

        # Finnhub moves an earnings date: the range call's content changed
        records = earnings_records(["AAPL", "MSFT", "NVDA"], dt.date.today(), 20)
        records[1]["date"] = (dt.date.today() + dt.timedelta(days=40)).isoformat()
        upstream.route("/api/v1/calendar/earnings", finnhub_api(records, TOKEN))
        moved = tick()
        assert moved.run_requests[0].tags["calendar/upstream_changed"].startswith("finnhub:")

        # a failing feed is reported, not a change; back with the same data: still none
        upstream.fail_next(Fault.status_code(500), times=5, path="/feeds/05.ics")
        failing = tick()
        assert failing.run_requests == []
        assert "1 failing" in failing.skip_message
        assert "feed-05: HTTP 500" in failing.skip_message and "/feeds/" not in failing.skip_message
        assert tick().run_requests == []

        upstream.stop()
        down = tick()
        assert down.run_requests == []
        assert down.skip_message.startswith("upstream unreachable (finnhub, ics, nager)")
        assert "holidays: 1 probed: 1 unchanged" in down.skip_message

    assert not any(FEED_SECRET in text or TOKEN in text for text in tick.seen)
    assert all(len(key) == 16 for key in json.loads(tick.cursor)["fingerprints"] if ":" not in key)


def test_the_run_the_sensor_starts_reads_the_probed_answers_from_the_cache(tmp_path, upstream):
    defs, _ = make(tmp_path, upstream, feeds=5)
    with dg.instance_for_test() as instance:
        request = Ticks(defs, instance)().run_requests[0]
        mark = len(upstream.requests)
        result = defs.resolve_job_def("daily_calendar_job").execute_in_process(
            partition_key=request.partition_key, tags=request.tags, instance=instance
        )
    assert result.success
    feeds = [(p, s) for p, s in probed_paths(upstream, mark) if p.startswith("/feeds/")]
    assert len(feeds) == 5 and {s for _, s in feeds} == {304}


def test_a_tick_stops_at_its_budget_and_the_next_ticks_finish_the_round(tmp_path, upstream_factory):
    slow = upstream_factory(latency=0.05)
    feeds = 40
    for n in range(feeds):
        serve_feed(slow, n, team_feed(n))
    universe = tmp_path / "universe.csv"
    universe.write_text(
        "entity_id,name,source,key,channel\n"
        + "".join(
            f"feed-{n:02d},Team {n},ics,{slow.url}/feeds/{n:02d}.ics,\n" for n in range(feeds)
        )
    )
    calendar = CalendarSettings(data_dir=str(tmp_path / "data"), universe=str(universe))
    upstream_settings = UpstreamSources(
        rate_limit="10",  # one host: at most ~10 probes per second
        probe_budget_seconds="1",
    )
    defs = build_defs(
        {"calendar": calendar, "upstream": upstream_settings, "slack": SlackSettings()}
    )
    with dg.instance_for_test() as instance:
        tick = Ticks(defs, instance)
        started = time.monotonic()
        first = tick()
        assert time.monotonic() - started < 3.0  # the budget, plus loading the universe
        assert len(first.run_requests) == 1  # the universe is new
        left = json.loads(first.cursor)["fingerprints"]
        assert 3 <= len(left) < feeds
        ticks = 1
        while len(json.loads(tick.cursor)["fingerprints"]) < feeds:
            result = tick()  # feeds seen for the first time: a baseline, not a change
            assert result.run_requests == [] and "left for the next tick" in result.skip_message
            ticks += 1
            assert ticks < 10
        # the round is complete: a change in the feed probed longest ago is found first
        oldest = next(iter(json.loads(tick.cursor)["fingerprints"]))
        changed_n = next(
            n for n in range(feeds) if sha16(f"{slow.url}/feeds/{n:02d}.ics") == oldest
        )
        serve_feed(slow, changed_n, team_feed(changed_n, rename="Moved"))
        found = tick()
        assert (
            found.run_requests[0].tags["calendar/upstream_changed"] == f"ics:feed-{changed_n:02d}"
        )


def test_each_source_reports_what_it_saw_without_a_token_or_an_adapter(tmp_path, upstream):
    defs, _ = make(tmp_path, upstream, feeds=2, finnhub_token="")
    with dg.instance_for_test() as instance:
        first = Ticks(defs, instance)()
    # Finnhub cannot be probed without a token: reported, and the rest still decides
    assert len(first.run_requests) == 1
    report = first.run_requests[0].tags["calendar/upstream_report"]
    assert "finnhub 1 failing" in report and "ics 2 new" in report
