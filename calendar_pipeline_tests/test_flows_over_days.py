"""Every due alert reaches Slack across days: backfills followed by daily runs, Slack runs
that start after midnight, past-day CLI runs, failed days followed by good ones, and
large backfills read by the sensor page by page. Driven through the Dagster layer
(range runs, the sensor's run requests, the CLI) with the clock moved by time-machine,
an iCalendar feed served on 127.0.0.1, a local Slack server, on SQLite and PostgreSQL.

Measured from the Slack server's side in every test: alerts due on a send day that never
reached Slack (must be none) and alerts posted twice (none)."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
import time_machine

from calendar_pipeline import cli
from calendar_pipeline import definitions as definitions_module
from calendar_pipeline.alerts import store
from calendar_pipeline_tests.flows import (
    at,
    due,
    duplicates,
    expected_due,
    make_defs,
    never_reached_slack,
    output_metadata,
    posted,
    posted_partitions,
    run_daily,
    run_range,
    run_requests,
    serve_feed,
    slack_tick,
    switch_on_slack_sensor,
    write_universe,
)
from calendar_pipeline_tests.upstream_server import UpstreamServer

D = dt.date(2026, 3, 10)
DAY = dt.timedelta(days=1)


def db_url(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def upstream():
    with UpstreamServer() as server:
        serve_feed(server)
        yield server


def test_backfill_ending_today_posts_todays_whole_digest_even_after_midnight(
    tmp_path, engine, upstream, slack_server, instance
):
    universe = write_universe(tmp_path / "u.csv", upstream)
    defs, calendar = make_defs(tmp_path, universe, slack_server, db_url(engine))
    with time_machine.travel(at(D, 9), tick=True) as clock:
        assert run_range(defs, instance, D - 3 * DAY, D).success  # the README's backfill
        tick = slack_tick(defs, instance)
        (request,) = tick.run_requests  # one Slack run for the range run
        assert request.tags["calendar/reference_day"] == D.isoformat()
        clock.move_to(at(D + DAY, 0, 20))  # the Slack run starts after midnight
        (result,) = run_requests(defs, instance, tick.run_requests)
        assert result.success
        metadata = output_metadata(result)
        assert metadata["mode"] == "history x3, send"
        assert metadata["history_partitions"] == 3 and metadata["daily_partitions"] == 1
        assert due(calendar, D) == expected_due(D) and len(expected_due(D)) == 31
        assert never_reached_slack(slack_server, D) == set()
        assert set(posted(slack_server)) == expected_due(D)  # history posted nothing

        clock.move_to(at(D + DAY, 6))  # the next daily run posts what became due
        assert run_daily(defs, instance, D + DAY).success
        later = slack_tick(defs, instance, tick.cursor)
        assert all(r.success for r in run_requests(defs, instance, later.run_requests))
    assert never_reached_slack(slack_server, D + DAY) == set()
    assert duplicates(slack_server) == {}
    sent = store.ledger_rows(calendar.engine())
    assert {r["state"] for r in sent} == {"sent"}
    assert len(sent) == len(expected_due(D) | expected_due(D + DAY))


def test_a_slack_run_started_after_midnight_still_posts_its_day(
    tmp_path, engine, upstream, slack_server, instance
):
    universe = write_universe(tmp_path / "u.csv", upstream)
    defs, _calendar = make_defs(tmp_path, universe, slack_server, db_url(engine))
    yesterday = D - DAY
    with time_machine.travel(at(yesterday, 23, 50), tick=True) as clock:
        assert run_daily(defs, instance, yesterday).success  # a late schedule hour
        tick = slack_tick(defs, instance)
        clock.move_to(at(D, 0, 10))  # queued: the Slack run starts on the next day
        (result,) = run_requests(defs, instance, tick.run_requests)
        assert result.success and output_metadata(result)["mode"] == "send"
        assert output_metadata(result)["reference_day"] == yesterday.isoformat()
        # a retry of that Slack run (same tags) posts nothing more
        (again,) = run_requests(defs, instance, tick.run_requests)
        assert output_metadata(again)["sent"] == 0

        clock.move_to(at(D, 6))
        assert run_daily(defs, instance, D).success
        later = slack_tick(defs, instance, tick.cursor)
        assert all(r.success for r in run_requests(defs, instance, later.run_requests))
    for day in (yesterday, D):
        assert never_reached_slack(slack_server, day) == set()
    assert duplicates(slack_server) == {}


class _ClockMovingDefs:
    """The project's definitions, moving the clock when the CLI asks for the Slack job:
    the Slack half of ``calendar-pipeline run`` then starts after midnight."""

    def __init__(self, defs, clock, when):
        self._defs, self._clock, self._when = defs, clock, when

    def resolve_job_def(self, name):
        if name == "slack_alert_job" and self._when is not None:
            self._clock.move_to(self._when)
        return self._defs.resolve_job_def(name)


def test_cli_past_date_posts_nothing_and_a_late_cli_run_posts_its_day(
    tmp_path, engine, upstream, slack_server, monkeypatch, capsys
):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    universe = write_universe(tmp_path / "u.csv", upstream)
    defs, calendar = make_defs(tmp_path, universe, slack_server, db_url(engine))
    with time_machine.travel(at(D - DAY, 23, 55), tick=True) as clock:
        monkeypatch.setattr(definitions_module, "defs", _ClockMovingDefs(defs, clock, None))
        past = (D - 4 * DAY).isoformat()
        assert cli.main(["run", "--date", past]) == 0  # with a token: still history
        out = capsys.readouterr().out
        assert f"slack_alert_job for partition {past} (history" in out
        assert "Slack: history, nothing posted or recorded" in out
        assert slack_server.messages == [] and store.ledger_rows(calendar.engine()) == []

        late = _ClockMovingDefs(defs, clock, at(D, 0, 5))  # Slack starts after midnight
        monkeypatch.setattr(definitions_module, "defs", late)
        assert cli.main(["run"]) == 0
        assert "(daily)" in capsys.readouterr().out
        assert dt.datetime.now(dt.UTC).date() == D
    assert never_reached_slack(slack_server, D - DAY) == set()
    assert set(posted(slack_server)) == expected_due(D - DAY)
    assert duplicates(slack_server) == {}


def test_failed_days_never_block_later_days_and_are_repaired_by_their_rerun(
    tmp_path, engine, upstream, slack_server, instance
):
    universe = tmp_path / "u.csv"
    defs, calendar = make_defs(tmp_path, universe, slack_server, db_url(engine))
    with time_machine.travel(at(D - 2 * DAY, 6), tick=True) as clock:
        # its only entity's feed answers 404, with no earlier data: nothing to post
        write_universe(universe, upstream, broken=True, healthy=False)
        failed = run_daily(defs, instance, D - 2 * DAY)
        assert not failed.success
        errors = [
            e.message
            for e in instance.all_logs(failed.run_id)
            if e.level >= 40 and "has_events FAILED" in (e.message or "")
        ]
        assert errors and "no events at all on" in errors[0] and "re-run" in errors[0]

        clock.move_to(at(D - DAY, 6))
        write_universe(universe, upstream)
        good = run_daily(defs, instance, D - DAY)
        assert good.success  # the failed day does not block this one
        drift = _check(good, "index_history_consistent")
        assert not drift.passed and drift.severity == dg.AssetCheckSeverity.WARN
        assert (D - 2 * DAY).isoformat() in drift.description
        assert "no index line" in drift.description

        # an indexed day re-run, failing
        write_universe(universe, upstream, broken=True, healthy=False)
        assert not run_daily(defs, instance, D - DAY).success

        clock.move_to(at(D, 6))
        write_universe(universe, upstream)
        today = run_daily(defs, instance, D)
        assert today.success and _check(today, "index_consistent").passed
        drift = _check(today, "index_history_consistent")
        assert {(D - 2 * DAY).isoformat(), (D - DAY).isoformat()} <= set(
            drift.description.replace(",", " ").split()
        )
        assert "points at" in drift.description  # D-1's line names an older snapshot

        # Slack for today went out in full, whatever happened before
        tick = slack_tick(defs, instance)
        requested = sorted(r.partition_key for r in tick.run_requests)
        assert requested == [(D - DAY).isoformat(), D.isoformat()]  # never the failed runs
        assert all(r.success for r in run_requests(defs, instance, tick.run_requests))
        assert never_reached_slack(slack_server, D) == set()

        # re-running the failed days repairs them
        assert run_daily(defs, instance, D - 2 * DAY).success
        assert run_daily(defs, instance, D - DAY).success
        final = run_daily(defs, instance, D)
        assert _check(final, "index_history_consistent").passed
    assert duplicates(slack_server) == {}
    assert due(calendar, D - DAY) == expected_due(D - DAY)


def test_one_slack_run_per_successful_run_a_range_run_in_one(
    tmp_path, engine, upstream, slack_server, instance
):
    universe = write_universe(tmp_path / "u.csv", upstream)
    defs, calendar = make_defs(tmp_path, universe, slack_server, db_url(engine))
    with time_machine.travel(at(D, 9), tick=True):
        assert run_range(defs, instance, D - 11 * DAY, D).success  # 12 days, one run
        tick = slack_tick(defs, instance)
        (request,) = tick.run_requests
        assert request.tags["dagster/asset_partition_range_start"] == (D - 11 * DAY).isoformat()
        assert request.tags["dagster/asset_partition_range_end"] == D.isoformat()
        (result,) = run_requests(defs, instance, tick.run_requests)
        assert output_metadata(result)["partitions"] == 12
        # the Slack run's own success requests nothing
        assert slack_tick(defs, instance, tick.cursor).run_requests == []
        # then two single days and another range: one request per run, in order
        assert run_daily(defs, instance, D - 20 * DAY).success
        assert run_range(defs, instance, D - 19 * DAY, D - 15 * DAY).success
        assert run_daily(defs, instance, D).success
        more = slack_tick(defs, instance, tick.cursor)
        spans = [
            r.partition_key
            or f"{r.tags['dagster/asset_partition_range_start']}.."
            f"{r.tags['dagster/asset_partition_range_end']}"
            for r in more.run_requests
        ]
        assert spans == [
            (D - 20 * DAY).isoformat(),
            f"{D - 19 * DAY}..{D - 15 * DAY}",
            D.isoformat(),
        ]
        assert all(r.success for r in run_requests(defs, instance, more.run_requests))
        assert slack_tick(defs, instance, more.cursor).run_requests == []
        # a run that materialized no due_alerts (raw_snapshot alone) requests nothing
        only_raw = defs.resolve_job_def("daily_calendar_job").execute_in_process(
            partition_key=D.isoformat(),
            instance=instance,
            asset_selection=[dg.AssetKey("raw_snapshot")],
        )
        assert only_raw.success
        assert slack_tick(defs, instance, more.cursor).run_requests == []
    assert never_reached_slack(slack_server, D) == set()
    assert set(posted(slack_server)) == expected_due(D)  # the past days posted nothing
    assert duplicates(slack_server) == {}
    assert calendar.engine() is not None


def _check(result, name: str):
    return next(c for c in result.get_asset_check_evaluations() if c.check_name == name)


def test_the_daemon_back_after_days_down_posts_no_stale_digest(
    tmp_path, engine, upstream, slack_server, instance
):
    """Daily runs for four mornings while the daemon is down; the sensor's cursor is where
    it was. Back on the fourth, it asks for one Slack run per day: days more than one day
    old post no digest (GRACE_DAYS), yesterday's run still posts (late by hours), and
    everything due today reaches Slack, nothing twice."""
    universe = write_universe(tmp_path / "u.csv", upstream)
    defs, _ = make_defs(tmp_path, universe, slack_server, db_url(engine))
    with time_machine.travel(at(D - 3 * DAY, 6), tick=True) as clock:
        for back in (3, 2, 1, 0):
            clock.move_to(at(D - back * DAY, 6))
            assert run_daily(defs, instance, D - back * DAY).success
        tick = slack_tick(defs, instance)  # the daemon is back
        assert len(tick.run_requests) == 4
        results = run_requests(defs, instance, tick.run_requests)
        assert all(result.success for result in results)
    assert posted_partitions(slack_server) == {D - DAY, D}  # no digest of D-3 or D-2
    assert never_reached_slack(slack_server, D) == set()
    assert duplicates(slack_server) == {}
    stale = output_metadata(results[0])
    assert stale["history_partitions"] == 1 and stale["daily_partitions"] == 0
    logs = [e.message or "" for e in instance.all_logs(results[0].run_id)]
    assert any("its digest is not posted" in line for line in logs)


def test_switching_the_slack_sensor_on_after_a_backlog_posts_from_the_next_run(
    tmp_path, engine, upstream, slack_server, instance
):
    """Daily runs for four mornings with the Slack sensor never switched on. Switched on,
    it starts watching from that moment (no digest of days gone by); the next morning's
    run posts that day's digest, with every alert missed that is still in its bucket (the
    bucket rule: every event inside a threshold is due every day), nothing twice."""
    universe = write_universe(tmp_path / "u.csv", upstream)
    defs, _ = make_defs(tmp_path, universe, slack_server, db_url(engine))
    with time_machine.travel(at(D - 3 * DAY, 6), tick=True) as clock:
        for back in (3, 2, 1, 0):
            clock.move_to(at(D - back * DAY, 6))
            assert run_daily(defs, instance, D - back * DAY).success
        switched_on = switch_on_slack_sensor(defs, instance)  # watches from now
        clock.move_to(at(D + DAY, 6))
        assert run_daily(defs, instance, D + DAY).success
        tick = slack_tick(defs, instance, switched_on)
        (request,) = tick.run_requests
        assert request.partition_key == (D + DAY).isoformat()
        assert all(result.success for result in run_requests(defs, instance, [request]))
    assert posted_partitions(slack_server) == {D + DAY}
    assert never_reached_slack(slack_server, D + DAY) == set()
    # what fell due on D and is still in its bucket on D+1 went out on D+1 (the bucket rule)
    missed = expected_due(D) & expected_due(D + DAY)
    assert missed and missed <= set(posted(slack_server))
    assert duplicates(slack_server) == {}
