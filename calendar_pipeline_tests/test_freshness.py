"""Freshness judged on the partition that should exist: with the daily runs stopped, a
history backfill run today does not make raw_snapshot fresh. Dagster's partition-aware
freshness check (what the UI shows, run by its own sensor) fails for today's partition,
and raw_snapshot_freshness_sensor posts one message naming it, once per stale period.
The clock is moved with time-machine; Slack is the local server of the tests."""

from __future__ import annotations

import datetime as dt
import json

import dagster as dg
import pytest
import time_machine

from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.freshness import raw_snapshot_freshness_checks
from calendar_pipeline.defs.jobs import FRESHNESS_CHECK
from calendar_pipeline.defs.raw_snapshot import raw_snapshot
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.quality.freshness import (
    deadline_cron,
    deadline_time,
    judge,
    latest_deadline,
)
from calendar_pipeline_tests.flows import evaluate, run_range
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN

# CALENDAR_SCHEDULE_HOUR 6 and CALENDAR_TIMEZONE UTC (the tests' settings): deadline 08:00.
D = dt.date(2026, 3, 13)  # "today"; the daily runs stopped after 2026-03-10


def at(day: dt.date, hour: float) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(hours=hour)


class Pipeline:
    """The definitions on a test instance, with the two freshness sensors ticked as the
    daemon would (each keeping its cursor) and the check runs executed in-process."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, slack_server):
        self.defs, self.instance, self.slack = defs, instance, slack_server
        self.cursors: dict[str, str | None] = {}
        self.ui: list[dg.AssetCheckEvaluation] = []  # every freshness check evaluation

    def run_day(self, day: dt.date, hour: float) -> None:
        """The schedule's run of ``day``, at ``hour`` of that day (or later: late)."""
        with time_machine.travel(at(day, hour), tick=False):
            job = self.defs.resolve_job_def("daily_calendar_job")
            result = job.execute_in_process(partition_key=day.isoformat(), instance=self.instance)
            assert result.success
            assert FRESHNESS_CHECK.name not in {
                c.check_name for c in result.get_asset_check_evaluations()
            }

    def backfill(self, first: dt.date, last: dt.date, when: dt.datetime) -> None:
        with time_machine.travel(when, tick=False):
            assert run_range(self.defs, self.instance, first, last).success

    def tick(self, when: dt.datetime) -> tuple[bool | None, str]:
        """One tick of each freshness sensor at ``when``: Dagster's (its check run, if it
        asks for one, executed as the daemon would launch it), then ours. Returns the
        check's result of this tick (None: not run) and our sensor's skip message."""
        with time_machine.travel(when, tick=False):
            checks = self._evaluate("raw_snapshot_freshness_checks_sensor")
            ran = None
            for request in checks.run_requests:
                assert list(request.asset_check_keys) == [FRESHNESS_CHECK]
                result = dg.materialize(
                    [raw_snapshot, *raw_snapshot_freshness_checks],
                    instance=self.instance,
                    selection=dg.AssetSelection.checks(*request.asset_check_keys),
                    resources=self.defs.resources,
                    tags=request.tags,
                )
                (evaluation,) = result.get_asset_check_evaluations()
                self.ui.append(evaluation)
                ran = evaluation.passed
            slack = self._evaluate("raw_snapshot_freshness_sensor")
            return ran, slack.skip_message

    def _evaluate(self, name: str):
        sensor = self.defs.resolve_sensor_def(name)
        result = evaluate(sensor, self.defs, self.instance, self.cursors.get(name))
        self.cursors[name] = result.cursor
        return result

    def stale_alerts(self) -> list:
        return [m for m in self.slack.messages if "is stale" in (m.params.get("text") or "")]


@pytest.fixture
def pipeline(tmp_path, small_universe, slack_server):
    calendar = CalendarSettings(data_dir=str(tmp_path / "data"), universe=str(small_universe))
    slack = SlackSettings(
        token=DEFAULT_TOKEN, api_url=slack_server.url, channel="#general", alerts_channel="#ops"
    )
    defs = build_defs({"calendar": calendar, "slack": slack})
    with dg.instance_for_test() as instance:
        yield Pipeline(defs, instance, slack_server)


def test_a_history_backfill_does_not_hide_a_dead_schedule(pipeline):
    for day in (D - dt.timedelta(days=4), D - dt.timedelta(days=3)):  # 03-09, 03-10
        pipeline.run_day(day, 6)
    # 03-11, 03-12, 03-13: no daily run. Today, 10:00, a backfill of older days.
    pipeline.backfill(dt.date(2026, 2, 1), dt.date(2026, 2, 5), at(D, 10))
    newest = pipeline.instance.get_latest_materialization_event(dg.AssetKey("raw_snapshot"))
    assert newest is not None and newest.timestamp == pytest.approx(at(D, 10).timestamp())

    passed, said = pipeline.tick(at(D, 10) + dt.timedelta(minutes=5))
    assert passed is False  # the UI: raw_snapshot:freshness_check failed
    assert "2026-03-13" in pipeline.ui[-1].description
    assert said.startswith("stale: partition 2026-03-13 missing, due 2026-03-13 08:00 UTC")
    assert said.endswith("alerted #ops")
    (alert,) = pipeline.stale_alerts()
    text = alert.params["text"]
    assert alert.channel == "#ops"
    assert "raw_snapshot is stale: partition 2026-03-13 missing since 2026-03-13 08:00 UTC" in text
    assert "2.1 h late" in text
    assert "The newest partition is 2026-03-10: every day since 2026-03-11 is missing" in text
    header = alert.params["blocks"][0]["text"]["text"]
    assert (
        header == "raw_snapshot is stale: partition 2026-03-13 missing since 2026-03-13 08:00 UTC"
    )

    # The next ticks: Dagster does not re-run a failed check with nothing new; ours says
    # it already told; nothing more reaches Slack, also on the next day.
    passed, again = pipeline.tick(at(D, 10.5))
    assert passed is None and "already alerted" in again
    passed, next_day = pipeline.tick(at(D, 33))
    assert passed is None and next_day.startswith("stale: partition 2026-03-14")
    assert "already alerted" in next_day and len(pipeline.stale_alerts()) == 1


def test_a_normal_day_is_fresh_and_tells_nobody(pipeline):
    pipeline.run_day(D, 6)
    passed, said = pipeline.tick(at(D, 8.5))  # after the deadline
    assert passed is True and said.startswith("fresh: partition 2026-03-13 exists")
    # Before the deadline the day's partition is not due yet: yesterday's is (and exists).
    pipeline.run_day(D + dt.timedelta(days=1), 6)
    passed, said = pipeline.tick(at(D + dt.timedelta(days=1), 7.9))
    assert passed is None  # still passing: Dagster's sensor waits for the next deadline
    assert said.startswith("fresh: partition 2026-03-13 exists")
    assert pipeline.stale_alerts() == [] and pipeline.slack.messages == []


def test_the_stale_period_ends_with_the_partition_and_a_new_one_alerts_again(pipeline):
    pipeline.run_day(D - dt.timedelta(days=1), 6)
    passed, said = pipeline.tick(at(D, 9))  # 03-13's run did not happen
    assert passed is False and said.endswith("alerted #ops")
    (first,) = pipeline.stale_alerts()
    assert "The newest partition before it is 2026-03-12" in first.params["text"]

    pipeline.run_day(D, 11)  # late, but it ran: the stale period is over
    passed, said = pipeline.tick(at(D, 11.1))
    assert passed is True and said.startswith("fresh: partition 2026-03-13 exists")
    assert json.loads(pipeline.cursors["raw_snapshot_freshness_sensor"]) == {}
    assert len(pipeline.stale_alerts()) == 1

    passed, said = pipeline.tick(at(D + dt.timedelta(days=1), 7))  # not due yet
    assert passed is None and said.startswith("fresh")
    passed, said = pipeline.tick(at(D + dt.timedelta(days=1), 8.25))  # 03-14 missed
    assert passed is False and said.endswith("alerted #ops")
    second = pipeline.stale_alerts()[1]
    assert "partition 2026-03-14 missing since 2026-03-14 08:00 UTC" in second.params["text"]
    assert json.loads(pipeline.cursors["raw_snapshot_freshness_sensor"]) == {
        "alerted": "2026-03-14"
    }
    assert len(pipeline.stale_alerts()) == 2


def test_a_never_materialized_asset_is_not_alerted(pipeline):
    passed, said = pipeline.tick(at(D, 9))
    assert passed is False  # Dagster's check: "never observed/materialized"
    assert "never materialized" in said and pipeline.slack.messages == []


def test_a_failed_post_is_retried_on_the_next_tick(pipeline):
    pipeline.run_day(D - dt.timedelta(days=1), 6)
    pipeline.slack.fail_next(status=200, error="channel_not_found", method="chat.postMessage")
    with pytest.raises(Exception, match="channel_not_found"):
        pipeline.tick(at(D, 9))  # the tick fails, its cursor is not advanced
    _, retried = pipeline.tick(at(D, 9.1))
    assert retried.endswith("alerted #ops")
    assert len([m for m in pipeline.slack.messages if m.channel == "#ops"]) == 1


@pytest.mark.filterwarnings("ignore::dagster.SupersessionWarning")  # see defs/freshness.py
@pytest.mark.parametrize(
    "now",
    [at(D, h) for h in (0, 7.99, 8, 8.01, 23.99)]
    + [
        dt.datetime(2026, 3, 29, 7, 59, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 29, 8, 1, tzinfo=dt.UTC),
    ],
)
@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin", "America/New_York"])
def test_the_rule_expects_the_partition_dagsters_check_expects(now, timezone):
    """The same expected partition as Dagster's check with the same deadline_cron, in
    CALENDAR_TIMEZONE (daily partitions there, end_offset=1), across a DST change."""
    partitions = dg.DailyPartitionsDefinition(
        start_date="2026-01-01", timezone=timezone, end_offset=1
    )

    @dg.asset(name="raw_snapshot", partitions_def=partitions)
    def asset():
        return None

    cron = deadline_cron(6)
    (check,) = dg.build_time_partition_freshness_checks(
        assets=[asset], deadline_cron=cron, timezone=timezone
    )
    with dg.instance_for_test() as instance, time_machine.travel(now, tick=False):
        result = dg.materialize(
            [asset, check],
            instance=instance,
            selection=dg.AssetSelection.checks(check),
        )
        (evaluation,) = result.get_asset_check_evaluations()
    ours = latest_deadline(now, deadline_time(6), timezone).date().isoformat()
    assert f"partition {ours} " in evaluation.description


def test_the_deadline_is_after_the_schedule_on_the_same_day():
    assert deadline_cron(6) == "0 8 * * *"
    assert deadline_cron(21) == "0 23 * * *"
    assert deadline_cron(22) == deadline_cron(23) == "59 23 * * *"
    deadline = at(D, 8)
    verdict = judge("2026-03-13", deadline, at(D, 9), materialized=False, ever=True, alerted=False)
    assert verdict.alert and verdict.why.endswith("(1.0 h late)")
    assert not judge("x", deadline, at(D, 9), materialized=False, ever=True, alerted=True).alert
    assert not judge("x", deadline, at(D, 9), materialized=True, ever=True, alerted=True).stale
