"""A pipeline left to go stale: raw_snapshot's freshness window (26 h) is missed, one
message reaches SLACK_ALERTS_CHANNEL per stale period, and Dagster's own evaluation of the
asset's FreshnessPolicy (what the UI shows) says Failing at the same moment. The clock is
moved with time-machine; Slack is a local server."""

from __future__ import annotations

import asyncio
import datetime as dt

import dagster as dg
import pytest
import time_machine
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.loader import LoadingContextForTest
from dagster._daemon.freshness import FreshnessDaemon

from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.quality.freshness import FRESHNESS_WINDOW, judge
from calendar_pipeline_tests.flows import evaluate
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN

T0 = dt.datetime(2026, 3, 10, 6, 0, tzinfo=dt.UTC)  # the schedule's tick
KEY = dg.AssetKey("raw_snapshot")


@pytest.fixture
def setup(tmp_path, small_universe, slack_server):
    calendar = CalendarSettings(data_dir=str(tmp_path / "data"), universe=str(small_universe))
    slack = SlackSettings(
        token=DEFAULT_TOKEN, api_url=slack_server.url, channel="#general", alerts_channel="#ops"
    )
    defs = build_defs({"calendar": calendar, "slack": slack})
    with dg.instance_for_test() as instance:
        yield defs, instance


def ui_state(defs, instance) -> FreshnessState:
    """What the UI shows: the freshness daemon's evaluation of the FreshnessPolicy, run
    once in-process (dagster-daemon runs it every 30 s)."""
    node = defs.resolve_asset_graph().get(KEY)
    asyncio.run(FreshnessDaemon()._evaluate_asset(LoadingContextForTest(instance), node))
    return instance.get_freshness_state_records([KEY])[KEY].freshness_state


def test_a_stale_pipeline_is_told_once_per_stale_period(setup, slack_server):
    defs, instance = setup
    sensor = defs.resolve_sensor_def("raw_snapshot_freshness_sensor")
    cursor = None

    def tick(hours: float):
        nonlocal cursor
        with time_machine.travel(T0 + dt.timedelta(hours=hours), tick=False):
            result = evaluate(sensor, defs, instance, cursor)
            cursor = result.cursor
            return result.skip_message, ui_state(defs, instance)

    def run_day(hours: float, day: str):
        with time_machine.travel(T0 + dt.timedelta(hours=hours), tick=False):
            job = defs.resolve_job_def("daily_calendar_job")
            assert job.execute_in_process(partition_key=day, instance=instance).success

    def stale_alerts():
        return [m for m in slack_server.messages if "is stale" in (m.params.get("text") or "")]

    never, _ = tick(0)
    assert "never materialized" in never and stale_alerts() == []

    run_day(0, "2026-03-10")
    fresh, state = tick(25.9)
    assert fresh.startswith("fresh: newest materialization 25.9 h old")
    assert state == FreshnessState.PASS

    stale, state = tick(27)
    assert stale.startswith("stale: newest materialization 27.0 h old") and "#ops" in stale
    assert state == FreshnessState.FAIL  # the UI says Failing at the same time
    (alert,) = stale_alerts()
    assert alert.channel == "#ops"
    assert "raw_snapshot is stale: no new data for 27 h" in alert.params["text"]

    again, _ = tick(40)
    assert "already alerted" in again and len(stale_alerts()) == 1

    run_day(41, "2026-03-11")  # the pipeline runs again: the stale period is over
    assert tick(42)[0].startswith("fresh") and tick(42)[1] == FreshnessState.PASS
    assert len(stale_alerts()) == 1

    second, _ = tick(41 + 26.5)  # stale again: a new period, a new message
    assert second.startswith("stale") and len(stale_alerts()) == 2


def test_a_failed_post_is_retried_on_the_next_tick(setup, slack_server):
    defs, instance = setup
    sensor = defs.resolve_sensor_def("raw_snapshot_freshness_sensor")
    with time_machine.travel(T0, tick=False):
        defs.resolve_job_def("daily_calendar_job").execute_in_process(
            partition_key="2026-03-10", instance=instance
        )
    with time_machine.travel(T0 + dt.timedelta(hours=30), tick=False):
        slack_server.fail_next(status=200, error="channel_not_found", method="chat.postMessage")
        with pytest.raises(Exception, match="channel_not_found"):
            evaluate(sensor, defs, instance)  # the tick fails, its cursor is not advanced
        retried = evaluate(sensor, defs, instance)
    assert "alerted #ops" in retried.skip_message
    assert len([m for m in slack_server.messages if m.channel == "#ops"]) == 1


def test_the_rule_matches_the_policy():
    last = T0
    assert dt.timedelta(hours=26) == FRESHNESS_WINDOW
    assert not judge(last, "1", last + dt.timedelta(hours=25, minutes=59), None).stale
    assert judge(last, "1", last + FRESHNESS_WINDOW, None).alert
    assert not judge(last, "1", last + FRESHNESS_WINDOW, "1").alert
    assert judge(last, "2", last + FRESHNESS_WINDOW, "1").alert
