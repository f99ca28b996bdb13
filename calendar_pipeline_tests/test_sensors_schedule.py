"""Sensors and the schedule, evaluated against a real (temporary) Dagster instance."""

import datetime as dt
import json

import dagster as dg

from calendar_pipeline.alerts.intent import Reference
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.defs.schedules import daily_calendar_schedule
from calendar_pipeline_tests.flows import evaluate, slack_tick

D = "2025-12-18"


def defs_for(tmp_path, universe, **overrides):
    calendar = CalendarSettings(
        data_dir=str(tmp_path / "data"), universe=str(universe), **overrides
    )
    return build_defs({"calendar": calendar, "slack": SlackSettings()}), calendar


def test_slack_sensor_requests_one_run_per_successful_due_alerts_run(
    tmp_path, small_universe, instance
):
    defs, _ = defs_for(tmp_path, small_universe)
    job = defs.resolve_job_def("daily_calendar_job")
    job.execute_in_process(partition_key=D, instance=instance)

    first = slack_tick(defs, instance)
    assert [r.partition_key for r in first.run_requests] == [D]
    (request,) = first.run_requests
    run_id = request.tags["calendar/due_alerts_run"]
    assert request.run_key == f"due_alerts-{run_id}"
    assert (
        request.tags["calendar/reference_day"] == Reference.from_tags(request.tags).day.isoformat()
    )

    again = slack_tick(defs, instance, first.cursor)
    assert again.run_requests == [] and again.cursor == first.cursor

    job.execute_in_process(partition_key="2025-12-19", instance=instance)
    job.execute_in_process(partition_key=D, instance=instance)  # re-materialized: once more
    third = slack_tick(defs, instance, first.cursor)
    assert [r.partition_key for r in third.run_requests] == ["2025-12-19", D]
    assert len({r.run_key for r in first.run_requests + third.run_requests}) == 3


def test_slack_sensor_ignores_materializations_without_a_successful_run(
    tmp_path, small_universe, instance
):
    defs, _ = defs_for(tmp_path, small_universe)
    defs.resolve_job_def("daily_calendar_job").execute_in_process(
        partition_key=D, instance=instance
    )
    ok = slack_tick(defs, instance)
    assert len(ok.run_requests) == 1

    # e.g. "Report materialization" clicked in the UI: no run, so no Slack
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="due_alerts", partition="2025-12-20")
    )
    assert slack_tick(defs, instance, ok.cursor).run_requests == []


def test_a_reference_tag_typed_wrong_reaches_people_instead_of_losing_the_run(
    tmp_path, small_universe, instance
):
    """A run stamped by hand with calendar/reference_day=tomorrow: the sensor still
    asks for its Slack run (Dagster's run status sensor would otherwise pass the run by
    for good), and that Slack run fails naming the tag and its value."""
    defs, _ = defs_for(tmp_path, small_universe)
    defs.resolve_job_def("daily_calendar_job").execute_in_process(
        partition_key=D, instance=instance, tags={"calendar/reference_day": "tomorrow"}
    )
    (request,) = slack_tick(defs, instance).run_requests
    assert request.partition_key == D and "calendar/reference_day" not in request.tags
    result = defs.resolve_job_def("slack_alert_job").execute_in_process(
        partition_key=D, tags=request.tags, instance=instance, raise_on_error=False
    )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert (
        "calendar/reference_day='tomorrow' is not a date" in failure.step_failure_data.error.message
    )


def test_daily_run_failing_a_blocking_check_never_materializes_due_alerts(tmp_path, instance):
    universe = tmp_path / "u.csv"
    universe.write_text(  # its only entity fails, with no earlier data: has_events fails
        "entity_id,name,source,key,channel\nzz,Nowhere,holidays,country:ZZ,\n"
    )
    defs, _ = defs_for(tmp_path, universe)
    result = defs.resolve_job_def("daily_calendar_job").execute_in_process(
        partition_key=D, instance=instance, raise_on_error=False
    )
    assert not result.success
    sensor_result = slack_tick(defs, instance)
    assert sensor_result.run_requests == []


def test_upstream_sensor_starts_once_then_skips_unchanged(tmp_path, small_universe, instance):
    defs, calendar = defs_for(tmp_path, small_universe)
    sensor = defs.resolve_sensor_def("upstream_availability_sensor")

    def tick(cursor=None):
        return evaluate(sensor, defs, instance, cursor)

    first = tick()
    today = calendar.today().isoformat()
    assert [r.partition_key for r in first.run_requests] == [today]
    assert json.loads(first.cursor)["partition"] == today

    second = tick(first.cursor)
    assert second.run_requests == []
    assert "unchanged" in second.skip_message

    # the universe changed: a new fingerprint, a new run with a different run_key
    small_universe.write_text(small_universe.read_text() + "jp,Japan,holidays,country:JP,\n")
    third = tick(first.cursor)
    assert third.run_requests[0].run_key != first.run_requests[0].run_key


def test_a_source_that_cannot_be_probed_is_reported_not_fatal(tmp_path, small_universe):
    from calendar_pipeline.sources.model import Window
    from calendar_pipeline.sources.probe import ProbeState, probe_targets, probe_upstreams
    from calendar_pipeline.universe import load_universe

    class Down:
        name = "holidays"

        def version(self):
            raise ConnectionError("connection refused")

    universe = load_universe(small_universe, {"holidays"})
    window = Window.ahead(dt.date(2026, 3, 4), 60)
    targets, broken = probe_targets(universe.entities, {"holidays": Down()}, window)
    assert targets == [] and [(b.target.source, b.error) for b in broken] == [
        ("holidays", "connection refused")
    ]
    report = probe_upstreams(targets, ProbeState(), universe.sha256, None, 5.0, broken)
    assert report.unreachable and report.unreachable_sources == ["holidays"]
    assert report.state.universe_sha256 is None  # kept for a tick that can start the run
    assert "holidays: 1 probed: 1 failing; failing: holidays: connection refused" in (
        report.summary()
    )


def test_schedule_runs_todays_partition_at_the_configured_hour(tmp_path, small_universe, instance):
    defs, _ = defs_for(tmp_path, small_universe)
    schedule = defs.resolve_schedule_def("daily_calendar_schedule")
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.execution_timezone == "UTC"
    when = dt.datetime(2026, 3, 4, 6, 0, tzinfo=dt.UTC)
    context = dg.build_schedule_context(
        instance=instance, scheduled_execution_time=when, repository_def=defs.get_repository_def()
    )
    data = schedule.evaluate_tick(context)
    assert [r.partition_key for r in data.run_requests] == ["2026-03-04"]
    # the tick is stamped on the run as its reference day (no hidden Dagster tag read)
    assert Reference.from_tags(data.run_requests[0].tags) == Reference(
        dt.date(2026, 3, 4), "schedule tick 2026-03-04T06:00:00+00:00"
    )
    assert daily_calendar_schedule.name == "daily_calendar_schedule"


def test_jobs_are_partitioned_and_in_process(tmp_path, small_universe):
    defs, _ = defs_for(tmp_path, small_universe)
    daily = defs.resolve_job_def("daily_calendar_job")
    slack = defs.resolve_job_def("slack_alert_job")
    assert daily.executor_def.name == slack.executor_def.name == "in_process"
    assert daily.partitions_def == slack.partitions_def
    assert set(daily.asset_layer.asset_graph.get_all_asset_keys()) >= {
        dg.AssetKey(k) for k in ("raw_snapshot", "snapshot_index", "due_alerts", "calendar_feed")
    }
    assert list(slack.graph.node_names()) == ["send_slack_alerts"]


def test_every_schedule_and_sensor_says_what_it_does(tmp_path):
    """The UI shows these descriptions beside each schedule and sensor."""
    defs = build_defs(
        {"calendar": CalendarSettings(data_dir=str(tmp_path)), "slack": SlackSettings()}
    )
    repo = defs.get_repository_def()
    described = {s.name: s.description for s in [*repo.schedule_defs, *repo.sensor_defs]}
    assert set(described) >= {"daily_calendar_schedule", "slack_alert_sensor"}
    assert all(text and len(text) > 40 for text in described.values()), described
    assert "CALENDAR_SCHEDULE_HOUR" in described["daily_calendar_schedule"]
