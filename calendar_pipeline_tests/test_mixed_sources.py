"""A universe mixing all four sources, through the whole Dagster layer, against local
servers that imitate Nager.Date, an iCalendar host and Finnhub: every entity accounted
for, faults become error entries, HTTP figures land in the metadata, the upstream
sensor sees changes, and secrets stay out of everything stored."""

import datetime as dt
import json

import dagster as dg
import pytest

from calendar_pipeline.alerts import store
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.lake.snapshots import latest_snapshot
from calendar_pipeline_tests.flows import evaluate, resources
from calendar_pipeline_tests.upstream_server import (
    Fault,
    Reply,
    UpstreamServer,
    earnings_records,
    finnhub_api,
    nager_api,
)

D = "2025-12-18"
TOKEN = "finnhub-secret-token-123"
FEED = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//test//EN\r
X-WR-TIMEZONE:Europe/Paris\r
BEGIN:VEVENT\r
UID:offsite-1@example.org\r
DTSTART;VALUE=DATE:20251222\r
SUMMARY:Team offsite <!channel>\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:standup@example.org\r
DTSTART;TZID=Europe/Paris:20251201T093000\r
RRULE:FREQ=WEEKLY;COUNT=8\r
EXDATE;TZID=Europe/Paris:20251229T093000\r
SUMMARY:Weekly review\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:cancelled@example.org\r
DTSTART;VALUE=DATE:20251224\r
STATUS:CANCELLED\r
SUMMARY:Cancelled party\r
END:VEVENT\r
END:VCALENDAR\r
"""


@pytest.fixture
def servers():
    with UpstreamServer() as upstream:
        upstream.route_prefix("/api/v3/PublicHolidays/", nager_api({"DE", "AT"}))
        records = earnings_records(["AAPL", "MSFT", "NVDA"], dt.date(2025, 12, 19), 20)
        upstream.route("/api/v1/calendar/earnings", finnhub_api(records, TOKEN))
        upstream.route("/team.ics", Reply(body=FEED, content_type="text/calendar"))
        upstream.route("/broken.ics", Reply(body=b"<html>login</html>", content_type="text/html"))
        yield upstream


def universe_file(tmp_path, upstream):
    path = tmp_path / "universe.csv"
    path.write_text(
        "entity_id,name,source,key,channel\n"
        "fr,France,holidays,country:FR,\n"
        "de,Germany,nager,DE,#de\n"
        "at,Austria,nager,AT,\n"
        f"team,Platform team,ics,{upstream.url}/team.ics,#team\n"
        f"broken,Broken feed,ics,{upstream.url}/broken.ics,\n"
        "aapl,Apple,finnhub,AAPL,#earnings\n"
        "msft,Microsoft,finnhub,MSFT,#earnings\n"
        "nvda,Nvidia,finnhub,NVDA,#earnings\n"
    )
    return path


def make(tmp_path, upstream, **overrides):
    settings = {
        "data_dir": str(tmp_path / "data"),
        "universe": str(universe_file(tmp_path, upstream)),
        "nager_base_url": upstream.url,
        "finnhub_base_url": upstream.url,
        "finnhub_token": TOKEN,
        "rate_limit": "50",
        "http_timeout": "5",
    }
    built = resources(**{**settings, **overrides})
    return build_defs(built), built["calendar"]


def test_mixed_universe_end_to_end(tmp_path, servers):
    defs, calendar = make(tmp_path, servers)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("daily_calendar_job").execute_in_process(
            partition_key=D, instance=instance
        )
        logs = [entry.message or "" for entry in instance.all_logs(result.run_id)]
    assert result.success
    assert not any(TOKEN in line for line in logs)
    snapshot = json.loads(latest_snapshot(calendar.data_path, D).read_text())
    by_entity: dict[str, list[dict]] = {}
    for event in snapshot["events"]:
        by_entity.setdefault(event["entity_id"], []).append(event)
    assert set(by_entity) == {"fr", "de", "at", "team", "aapl", "msft", "nvda"}
    assert [e["entity_id"] for e in snapshot["errors"]] == ["broken"]  # a dead letter
    team = {(e["event_date"], e["title"]) for e in by_entity["team"]}
    assert ("2025-12-22", "Team offsite <!channel>") in team
    assert ("2025-12-29", "Weekly review") not in team  # EXDATE
    assert ("2025-12-22", "Weekly review") in team
    cancelled = {
        e["title"]
        for e in by_entity["team"]
        if (e.get("details") or {}).get("status") == "cancelled"
    }
    assert all("Cancelled" in title for title in cancelled)  # kept, marked, never alerted
    due_titles = {
        a.title for a in store.read_due_alerts(calendar.engine(), dt.date.fromisoformat(D))
    }
    assert not any("Cancelled" in title for title in due_titles)
    assert snapshot["counts"]["entities_ok"] == 7 and snapshot["counts"]["entities_failed"] == 1

    meta = result.asset_materializations_for_node("raw_snapshot")[0].metadata
    assert meta["http_failed"].value == 1 and meta["http_done"].value >= 6
    assert meta["http_bytes"].value > 0
    assert set(meta["source_versions"].value) == {"holidays", "nager", "ics", "finnhub"}

    due = store.read_due_alerts(calendar.engine(), dt.date.fromisoformat(D))
    assert {a.channel for a in due if a.source == "finnhub"} == {"#earnings"}
    assert {a.entity_id for a in due} >= {"fr", "de", "team", "aapl"}

    # the token went in a header only: never in the URL, the data dir or the logs
    calls = servers.requests_to("/api/v1/calendar/earnings")
    assert calls and all(c.header("X-Finnhub-Token") == TOKEN for c in calls)
    assert all(TOKEN not in c.path and TOKEN not in str(c.query) for c in calls)
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file() and path.suffix in {".json", ".jsonl", ".txt"}:
            assert TOKEN not in path.read_text(errors="replace")


def test_faults_on_one_source_never_fail_the_run(tmp_path, servers):
    servers.fail_next(Fault.status_code(503), times=2, path="/api/v3/PublicHolidays/2025/DE")
    servers.fail_next(Fault.status_code(404), times=5, path="/api/v3/PublicHolidays/2025/AT")
    defs, calendar = make(tmp_path, servers)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("daily_calendar_job").execute_in_process(
            partition_key=D, instance=instance
        )
    assert result.success
    snapshot = json.loads(latest_snapshot(calendar.data_path, D).read_text())
    failed = {e["entity_id"]: e for e in snapshot["errors"]}
    assert set(failed) == {"at", "broken"}  # DE recovered after its 503s
    assert "404" in failed["at"]["message"]
    meta = result.asset_materializations_for_node("raw_snapshot")[0].metadata
    assert meta["http_retried"].value >= 2


def test_upstream_sensor_probes_http_sources(tmp_path, servers):
    defs, _ = make(tmp_path, servers)
    sensor = defs.resolve_sensor_def("upstream_availability_sensor")
    with dg.instance_for_test() as instance:

        def tick(cursor=None):
            return evaluate(sensor, defs, instance, cursor)

        first = tick()
        assert len(first.run_requests) == 1
        assert "unchanged" in tick(first.cursor).skip_message
        servers.route(
            "/team.ics",
            Reply(body=FEED.replace(b"offsite", b"retreat"), content_type="text/calendar"),
        )
        changed = tick(first.cursor)
        assert len(changed.run_requests) == 1
        servers.stop()
        down = tick(changed.cursor)
        assert down.run_requests == [] and "unreachable" in down.skip_message
