"""The checks that guard Slack from bad data, each shown failing through the Dagster layer:
an upstream that truncates a feed or drops a country (volume_within_history), an index line
that disagrees with its snapshot (row_count_matches_snapshot), due_alerts rows that are not
what the bucket rule gives (rows_match_bucket_rule). Measured from the Slack server's side:
no bad day reaches Slack. And the other side: no false alarm on any day of a year of the
bundled universe."""

from __future__ import annotations

import datetime as dt
import json
import re

import dagster as dg
import pytest
import time_machine

from calendar_pipeline.alerts.due import compute_due_alerts
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs import due_alerts as due_alerts_module
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings, UpstreamSources
from calendar_pipeline.lake.snapshots import latest_snapshot, write_snapshot
from calendar_pipeline.quality.volume import volume_report
from calendar_pipeline.settings import DEFAULT_UNIVERSE
from calendar_pipeline.sources import default_sources
from calendar_pipeline.sources.collect import collect_events, snapshot_payload, split_by_window
from calendar_pipeline.sources.model import Window
from calendar_pipeline.universe import load_universe
from calendar_pipeline_tests.flows import (
    feed,
    posted_partitions,
    run_daily,
    run_range,
    run_requests,
    slack_tick,
)
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN
from calendar_pipeline_tests.upstream_server import Reply, UpstreamServer, nager_api

D = dt.date(2026, 3, 10)
DAY = dt.timedelta(days=1)
TEAMS = ("alpha", "beta", "gamma")


@pytest.fixture
def upstream():
    with UpstreamServer() as server:
        for team in TEAMS:
            serve(server, team, feed())
        server.route_prefix("/api/v3/PublicHolidays/", nager_api({"DE", "AT", "FR"}))
        yield server


def serve(upstream: UpstreamServer, team: str, body: bytes) -> None:
    upstream.route(f"/{team}.ics", Reply(body=body, content_type="text/calendar"))


def truncated(body: bytes, keep: int) -> bytes:
    """The feed cut after ``keep`` events, still a valid calendar (a silent truncation)."""
    events = body.split(b"BEGIN:VEVENT")
    return b"BEGIN:VEVENT".join(events[: keep + 1]).rstrip() + b"\r\nEND:VCALENDAR\r\n"


@pytest.fixture
def world(tmp_path, upstream, slack_server):
    universe = tmp_path / "universe.csv"
    rows = ["entity_id,name,source,key,channel"]
    rows += [f"{t},Team {t},ics,{upstream.url}/{t}.ics,#team" for t in TEAMS]
    rows += [f"nager-{c},{c},nager,{c}," for c in ("DE", "AT", "FR")]
    universe.write_text("\n".join(rows) + "\n")
    calendar = CalendarSettings(data_dir=str(tmp_path / "data"), universe=str(universe))
    upstream_settings = UpstreamSources(nager_base_url=upstream.url, rate_limit="100")
    slack = SlackSettings(token=DEFAULT_TOKEN, api_url=slack_server.url, channel="#general")
    defs = build_defs({"calendar": calendar, "upstream": upstream_settings, "slack": slack})
    with dg.instance_for_test() as instance:
        yield defs, calendar, instance


class Days:
    """Run days as the schedule would and deliver what slack_alert_sensor requests."""

    def __init__(self, defs, instance, slack: bool = True):
        self.defs, self.instance, self.cursor, self.slack = defs, instance, None, slack

    def run(self, day: dt.date, hour: int = 6, **kwargs) -> dict[str, dg.AssetCheckEvaluation]:
        morning = dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)
        with time_machine.travel(morning, tick=True):  # the schedule's tick on that day
            result = run_daily(self.defs, self.instance, day, **kwargs)
            if not self.slack:
                return {c.check_name: c for c in result.get_asset_check_evaluations()}
            tick = slack_tick(self.defs, self.instance, self.cursor)
            self.cursor = tick.cursor
            run_requests(self.defs, self.instance, tick.run_requests)
        return {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_a_truncated_feed_or_a_dropped_country_is_set_aside_and_never_holds_back_the_others(
    world, upstream, slack_server
):
    defs, _calendar, instance = world
    days = Days(defs, instance)
    first = days.run(D)["volume_within_history"]
    assert first.passed  # no baseline yet: nothing to judge, and it says so
    assert first.metadata["judged"].value.startswith("nothing — no day of the run has an")

    assert days.run(D + DAY)["volume_within_history"].passed  # an ordinary day

    serve(upstream, "beta", truncated(feed(), keep=90))  # 200 daily events cut to 90
    bad = days.run(D + 2 * DAY)["volume_within_history"]
    assert not bad.passed and not bad.blocking
    assert bad.severity == dg.AssetCheckSeverity.WARN
    assert "2026-03-12 against 2026-03-11 (events dated 2026-03-12..2026-05-10)" in bad.description
    assert "entities beta: 20 events where the baseline had 60" in bad.description
    assert "sources" not in bad.description  # ics as a whole stays above half
    assert "keep their last known good events" in bad.description
    assert "CALENDAR_MIN_VOLUME_RATIO=0" in bad.description

    # still truncated the next day: compared with the carried data, still set aside
    worse = days.run(D + 3 * DAY)["volume_within_history"]
    assert not worse.passed and "against 2026-03-12" in worse.description
    assert re.search(r"entities beta: \d+ events where the baseline had \d+", worse.description)

    serve(upstream, "beta", feed())
    assert days.run(D + 4 * DAY)["volume_within_history"].passed

    upstream.route(f"/api/v3/PublicHolidays/{D.year}/AT", Reply.json([]))  # AT dropped
    dropped = days.run(D + 5 * DAY)["volume_within_history"]
    assert not dropped.passed
    assert "nager-AT: the upstream has no data at all for it any more" in dropped.description

    # measured at Slack: every day arrived; beta's lines of the bad days say why
    assert posted_partitions(slack_server) == {D + n * DAY for n in range(6)}
    texts = [
        b.get("text", {}).get("text", "") for m in slack_server.messages for b in m.blocks or []
    ]
    marked = [line for t in texts for line in t.splitlines() if "feed rejected" in line]
    assert marked and all(line.startswith("• *Team beta*") for line in marked)
    assert any("since Thu 2026-03-12; data of Wed 2026-03-11" in line for line in marked)


def test_a_real_drop_is_accepted_by_one_run_with_the_check_off(world, upstream):
    defs, calendar, instance = world
    days = Days(defs, instance, slack=False)  # the checks only (Slack: the test above)
    days.run(D)
    serve(upstream, "gamma", truncated(feed(), keep=15))
    assert not days.run(D + DAY)["volume_within_history"].passed
    relaxed = CalendarSettings(**{**calendar.model_dump(), "min_volume_ratio": "0"})
    once = Days(build_defs({**defs.resources, "calendar": relaxed}), instance, slack=False)
    # an hour later: the newest snapshot of the day is the accepted one (same-morning runs
    # would race on the snapshot's timestamp)
    accepted = once.run(D + DAY, hour=7)["volume_within_history"]
    assert accepted.passed and accepted.metadata["partitions_judged"].value == 0
    assert accepted.metadata["judged"].value.startswith("nothing — CALENDAR_MIN_VOLUME_RATIO=0")
    assert days.run(D + 2 * DAY)["volume_within_history"].passed  # the new normal


def stored_checks(instance, run_id: str) -> dict[str, dg.AssetCheckEvaluation]:
    """The run's check evaluations as the instance stored them (what the UI shows; its
    metadata comes back with the keys sorted)."""
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = [event.dagster_event.event_specific_data for event in events]
    return {evaluation.check_name: evaluation for evaluation in evaluations}


def test_a_backfill_first_run_says_which_checks_judged_nothing(world):
    """Issue 23: after a backfill into an empty data directory, volume_within_history had
    no baseline and index_history_consistent no other day, yet both showed a bare Passed."""
    defs, _calendar, instance = world
    with time_machine.travel(dt.datetime(2026, 3, 12, 6, tzinfo=dt.UTC), tick=True):
        backfill = run_range(defs, instance, D, D + 2 * DAY)
    assert backfill.success
    checks = stored_checks(instance, backfill.run_id)
    assert len(checks) == 9 and all(c.passed for c in checks.values())
    judged_nothing = {name for name, c in checks.items() if "judged" in c.metadata}
    assert judged_nothing == {"volume_within_history", "index_history_consistent"}
    volume, history = checks["volume_within_history"], checks["index_history_consistent"]
    assert next(iter(volume.metadata)) == next(iter(history.metadata)) == "judged"
    assert volume.metadata["judged"].value == (
        "nothing — no day of the run has an accepted snapshot in the 7 days before it to "
        "compare with (a first run, or a backfill before any indexed day)"
    )
    assert volume.metadata["partitions_judged"].value == 0
    assert "nothing judged" in volume.description
    assert history.metadata["judged"].value.startswith("nothing — every indexed day")

    # the next day has a baseline and other days: both judge, and say nothing of the kind
    next_day = Days(defs, instance, slack=False).run(D + 3 * DAY)
    assert all(c.passed for c in next_day.values())
    assert not {name for name, c in next_day.items() if "judged" in c.metadata}
    assert next_day["volume_within_history"].metadata["partitions_judged"].value == 1
    assert next_day["volume_within_history"].description == "2026-03-13: volume as on 2026-03-12"


def test_an_index_line_that_disagrees_with_its_snapshot_blocks_the_day(world):
    defs, calendar, instance = world
    days = Days(defs, instance)
    days.run(D)
    good = latest_snapshot(calendar.data_path, D.isoformat())
    document = json.loads(good.read_text())
    document["counts"]["events"] += 7  # a writer that miscounts
    forged = write_snapshot(calendar.data_path, D.isoformat(), document)  # the newest one
    result = defs.resolve_job_def("daily_calendar_job").execute_in_process(
        partition_key=D.isoformat(),
        instance=instance,
        asset_selection=[dg.AssetKey("snapshot_index"), dg.AssetKey("due_alerts")],
        raise_on_error=False,
    )
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    check = checks["row_count_matches_snapshot"]
    assert not check.passed and not result.success
    n = len(document["events"])
    assert f"index line says {n + 7} rows" in check.description
    assert f"the snapshot {forged} holds {n} events" in check.description
    assert "due_alerts" not in {
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
    }


def test_rows_that_break_the_bucket_rule_block_the_day(world, monkeypatch, slack_server):
    defs, _calendar, instance = world

    def off_by_one(events, day, thresholds, entities):  # a regression in alerts/due.py
        return [a for a in compute_due_alerts(events, day, thresholds, entities) if a.days_until]

    monkeypatch.setattr(due_alerts_module, "compute_due_alerts", off_by_one)
    days = Days(defs, instance)
    check = days.run(D)["rows_match_bucket_rule"]
    assert not check.passed
    assert "missing (e.g. alpha|release-2026-03-10@flows.test|2026-03-10|D-1" in check.description
    assert posted_partitions(slack_server) == set()


def test_no_false_alarm_on_any_day_of_a_year_of_the_bundled_universe():
    """The bundled 283 entities, every day of 2026 against the day before and against a
    week before (a gap in the runs): not one flag. The same code path as a backfill: one
    fetch, cut into daily windows."""
    universe = load_universe(DEFAULT_UNIVERSE, {"holidays"})
    first, last, lookahead = dt.date(2026, 1, 1), dt.date(2026, 12, 31), 60
    start = first - dt.timedelta(days=7)
    days = [start + dt.timedelta(days=n) for n in range((last - start).days + 1)]
    windows = [Window.ahead(day, lookahead) for day in days]
    sources = default_sources()
    fetched = collect_events(universe.entities, Window(windows[0].start, windows[-1].end), sources)
    results = split_by_window(fetched, universe.entities, windows, sources)
    snapshots = {
        day: snapshot_payload(
            partition=day.isoformat(),
            window=window,
            result=result,
            universe_path="bundled",
            universe_sha256=universe.sha256,
            entities=universe.entities,
            generated_at="2026-01-01T00:00:00+00:00",
        )
        for day, window, result in zip(days, windows, results, strict=True)
    }
    flagged = []
    for day in days[7:]:
        for gap in (1, 7):
            report = volume_report(snapshots[day], snapshots[day - dt.timedelta(days=gap)], 0.5)
            assert report.judged
            if report.drops:
                flagged.append(report.describe())
    assert flagged == []
    assert len(days[7:]) == 365


def snapshot(partition: str, events: dict[str, list[str]], **extra) -> dict:
    """A snapshot document: ``events`` maps entity ids to event dates."""
    start = dt.date.fromisoformat(partition)
    return {
        "partition": partition,
        "window": {"start": partition, "end": (start + dt.timedelta(days=60)).isoformat()},
        "events": [
            {"entity_id": e, "event_id": f"{e}-{d}", "event_date": d, "source": "ics"}
            for e, dates in events.items()
            for d in dates
        ],
        "entities": [{"entity_id": e, "source": "ics"} for e in extra.pop("entities", events)],
        "errors": [{"entity_id": e} for e in extra.pop("failed", [])],
        "entities_missing": extra.pop("missing", []),
    }


def test_the_volume_rule_judges_only_what_both_windows_cover_and_only_answers():
    days = [f"2026-03-{n:02d}" for n in range(10, 20)]
    before = snapshot("2026-03-09", {"a": ["2026-03-09", *days], "b": days[:2], "c": days})
    # a: the event of the 9th left the window (not a drop); b: 2 -> 1 (too small to judge)
    after = snapshot("2026-03-10", {"a": days, "b": days[:1], "c": days}, failed=["c"])
    assert volume_report(after, before, 0.5).drops == []  # c failed: the failure budget's
    gone = snapshot("2026-03-10", {"a": days[:4], "b": days[:2]}, entities=["a", "b", "c"])
    report = volume_report(gone, before, 0.5)
    assert [(d.kind, d.name, d.now, d.before) for d in report.drops] == [
        ("source", "ics", 6, 22),
        ("entity", "a", 4, 10),
        ("entity", "c", 0, 10),
    ]
    assert volume_report(gone, before, 0.0).drops == []  # the rule switched off
    removed = snapshot("2026-03-10", {"a": days, "b": days[:2]})  # c left the universe
    assert volume_report(removed, before, 0.5).drops == []
    lost = snapshot("2026-03-10", {"a": days, "b": days[:2], "c": []}, missing=["c"])
    assert [d.describe() for d in volume_report(lost, before, 0.5).drops] == [
        "c: the upstream has no data at all for it any more"
    ]
    far = snapshot("2026-06-01", {"a": []})
    assert not volume_report(far, before, 0.5).judged  # no shared dates
