"""Single-run backfills: a range of partitions in one run, each asset in one pass, with
results identical to materializing the partitions one by one."""

import datetime as dt
import json
import os
import subprocess
import sys

import dagster as dg
import pytest
import time_machine

from calendar_pipeline.alerts import store
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.lake.index import SnapshotIndex
from calendar_pipeline.lake.snapshots import latest_snapshot
from calendar_pipeline_tests.flows import output_metadata, slack_tick
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN

DAYS = ["2025-12-20", "2025-12-21", "2025-12-22", "2025-12-23"]


def range_tags(first: str, last: str) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }


def setup(tmp_path, name, universe, slack=None):
    calendar = CalendarSettings(data_dir=str(tmp_path / name), universe=str(universe))
    return build_defs({"calendar": calendar, "slack": slack or SlackSettings()}), calendar


def comparable_snapshot(calendar, day):
    payload = json.loads(latest_snapshot(calendar.data_path, day).read_text())
    payload.pop("generated_at")
    return payload


def test_range_run_equals_day_by_day(tmp_path, small_universe):
    one_by_one, cal_a = setup(tmp_path, "a", small_universe)
    ranged, cal_b = setup(tmp_path, "b", small_universe)
    with dg.instance_for_test() as instance:
        for day in DAYS:
            assert (
                one_by_one.resolve_job_def("daily_calendar_job")
                .execute_in_process(partition_key=day, instance=instance)
                .success
            )
        result = ranged.resolve_job_def("daily_calendar_job").execute_in_process(
            tags=range_tags(DAYS[0], DAYS[-1]), instance=instance
        )
    assert result.success
    mats = result.get_asset_materialization_events()
    by_asset = {}
    for event in mats:
        mat = event.step_materialization_data.materialization
        by_asset.setdefault(mat.asset_key.to_user_string(), set()).add(mat.partition)
    assert by_asset == {
        name: set(DAYS)
        for name in ("raw_snapshot", "snapshot_index", "due_alerts", "calendar_feed")
    }
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 9 and all(c.passed for c in checks)  # unpartitioned: once each
    # each day's materialization carries that day's figures, not the range's totals
    for event in mats:
        mat = event.step_materialization_data.materialization
        if mat.asset_key.to_user_string() == "due_alerts":
            day = dt.date.fromisoformat(mat.partition)
            rows = len(store.read_due_alerts(cal_b.engine(), day))
            assert mat.metadata["dagster/row_count"].value == rows
            assert mat.metadata["partitions_in_run"].value == len(DAYS)
            # the per-threshold counts sort (and plot) in day order, and add up
            due_keys = [key for key in mat.metadata if key.startswith("due_d")]
            assert sorted(due_keys) == ["due_d01", "due_d03", "due_d07", "due_d15", "due_d30"]
            assert sum(mat.metadata[key].value for key in due_keys) == rows
        if mat.asset_key.to_user_string() == "raw_snapshot":
            snapshot = json.loads(latest_snapshot(cal_b.data_path, mat.partition).read_text())
            assert mat.metadata["dagster/row_count"].value == len(snapshot["events"])
            assert mat.metadata["window_start"].value == mat.partition

    for day in DAYS:
        assert comparable_snapshot(cal_a, day) == comparable_snapshot(cal_b, day)
        a = store.read_due_alerts(cal_a.engine(), dt.date.fromisoformat(day))
        b = store.read_due_alerts(cal_b.engine(), dt.date.fromisoformat(day))
        assert a == b and a
    index_a = SnapshotIndex(cal_a.data_path / "index" / "snapshots.jsonl")
    index_b = SnapshotIndex(cal_b.data_path / "index" / "snapshots.jsonl")
    assert index_a.partitions() == index_b.partitions() == DAYS
    for ea, eb in zip(index_a.entries(), index_b.entries(), strict=True):
        assert (ea["row_count"], ea["error_count"]) == (eb["row_count"], eb["error_count"])
    assert index_b.problems() == []


def test_range_rerun_replaces_and_never_duplicates(tmp_path, small_universe):
    defs, calendar = setup(tmp_path, "d", small_universe)
    job = defs.resolve_job_def("daily_calendar_job")
    with dg.instance_for_test() as instance:
        job.execute_in_process(tags=range_tags(DAYS[0], DAYS[2]), instance=instance)
        rows_before = store.read_due_alerts(calendar.engine(), dt.date.fromisoformat(DAYS[1]))
        job.execute_in_process(tags=range_tags(DAYS[1], DAYS[3]), instance=instance)
    index = SnapshotIndex(calendar.data_path / "index" / "snapshots.jsonl")
    assert index.partitions() == DAYS and index.problems() == []
    assert store.read_due_alerts(calendar.engine(), dt.date.fromisoformat(DAYS[1])) == rows_before
    assert len(list((calendar.data_path / "snapshots" / DAYS[1]).glob("snapshot_*.json"))) == 2


def test_range_check_failure_names_the_partitions(tmp_path):
    universe = tmp_path / "u.csv"
    universe.write_text("entity_id,name,source,key,channel\nbv,Bouvet,holidays,country:BV,\n")
    defs, _ = setup(tmp_path, "e", universe)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("daily_calendar_job").execute_in_process(
            tags=range_tags(DAYS[0], DAYS[1]), instance=instance, raise_on_error=False
        )
    assert not result.success
    has_events = next(
        c for c in result.get_asset_check_evaluations() if c.check_name == "has_events"
    )
    assert not has_events.passed and DAYS[0] in has_events.description


def test_slack_after_a_backfill_of_past_days_posts_and_records_nothing(
    tmp_path, small_universe, slack_server
):
    slack = SlackSettings(token=DEFAULT_TOKEN, api_url=slack_server.url)
    defs, calendar = setup(tmp_path, "f", small_universe, slack)
    with dg.instance_for_test() as instance:
        defs.resolve_job_def("daily_calendar_job").execute_in_process(
            tags=range_tags(DAYS[0], DAYS[-1]), instance=instance
        )
        (request,) = slack_tick(defs, instance).run_requests  # one, for the whole backfill run
        assert request.tags["dagster/asset_partition_range_start"] == DAYS[0]
        assert request.tags["dagster/asset_partition_range_end"] == DAYS[-1]
        result = defs.resolve_job_def("slack_alert_job").execute_in_process(
            tags=request.tags, instance=instance
        )
    assert result.success
    assert slack_server.messages == []  # every partition is before today: history
    assert store.ledger_rows(calendar.engine()) == []  # and history suppresses nothing
    output = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
    metadata = output.step_output_data.metadata
    assert metadata["partitions"].value == 4 and metadata["mode"].value == "history x4"
    assert metadata["history_partitions"].value == 4
    assert metadata["reference_day"].value == calendar.today().isoformat()
    due = sum(len(store.read_due_alerts(calendar.engine(), dt.date.fromisoformat(d))) for d in DAYS)
    assert metadata["history_not_posted"].value == due > 0


def test_a_range_ending_today_sends_only_today(tmp_path, small_universe, slack_server):
    slack = SlackSettings(token=DEFAULT_TOKEN, api_url=slack_server.url)
    defs, calendar = setup(tmp_path, "g", small_universe, slack)
    today = calendar.today()
    days = [(today - dt.timedelta(days=n)).isoformat() for n in (2, 1, 0)]
    with dg.instance_for_test() as instance:
        tags = range_tags(days[0], days[-1])
        defs.resolve_job_def("daily_calendar_job").execute_in_process(tags=tags, instance=instance)
        defs.resolve_job_def("slack_alert_job").execute_in_process(tags=tags, instance=instance)
    sent = [r for r in store.ledger_rows(calendar.engine()) if r["state"] == "sent"]
    assert {r["partition_date"] for r in sent} <= {today}
    today_due = store.read_due_alerts(calendar.engine(), today)
    delivered_today = {r["dedup_key"] for r in store.ledger_rows(calendar.engine())}
    assert {a.dedup_key for a in today_due} <= delivered_today
    assert len(sent) == len([a for a in today_due if a.dedup_key in {r["dedup_key"] for r in sent}])
    if any(r["state"] == "sent" for r in store.ledger_rows(calendar.engine())):
        assert slack_server.messages


@pytest.mark.parametrize("asset_selection", ["group:calendar"])
def test_cli_partition_range(tmp_path, small_universe, asset_selection):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALENDAR_", "SLACK_"))}
    env.update(
        {
            "DAGSTER_HOME": str(tmp_path / "home"),
            "CALENDAR_DATA_DIR": str(tmp_path / "data"),
            "CALENDAR_UNIVERSE": str(small_universe),
        }
    )
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "asset",
            "materialize",
            "-m",
            "calendar_pipeline.definitions",
            "--select",
            asset_selection,
            "--partition-range",
            f"{DAYS[0]}...{DAYS[-1]}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RUN_SUCCESS" in done.stderr + done.stdout
    index = SnapshotIndex(tmp_path / "data" / "index" / "snapshots.jsonl")
    assert index.partitions() == DAYS


def test_a_backfill_of_more_than_1000_days_ending_today_is_one_slack_run_posting_today(
    tmp_path, small_universe, slack_server
):
    """1,100 days, from the first partition to today, in one run (the README's history
    backfill): slack_alert_sensor asks for one Slack run over the whole range, which
    posts today's digest and nothing of the 1,099 days before."""
    today = dt.date(2028, 1, 10)
    first = today - dt.timedelta(days=1099)
    slack = SlackSettings(token=DEFAULT_TOKEN, api_url=slack_server.url)
    defs, calendar = setup(tmp_path, "h", small_universe, slack)
    with (
        time_machine.travel(dt.datetime(2028, 1, 10, 9, tzinfo=dt.UTC), tick=True),
        dg.instance_for_test() as instance,
    ):
        ranged = defs.resolve_job_def("daily_calendar_job").execute_in_process(
            tags=range_tags(first.isoformat(), today.isoformat()), instance=instance
        )
        assert ranged.success
        (request,) = slack_tick(defs, instance).run_requests
        assert request.tags["dagster/asset_partition_range_start"] == first.isoformat()
        assert request.tags["dagster/asset_partition_range_end"] == today.isoformat()
        result = defs.resolve_job_def("slack_alert_job").execute_in_process(
            tags=request.tags, instance=instance
        )
    metadata = output_metadata(result)
    assert metadata["partitions"] == 1100
    assert (metadata["history_partitions"], metadata["daily_partitions"]) == (1099, 1)
    due_today = store.read_due_alerts(calendar.engine(), today)
    sent = store.ledger_rows(calendar.engine())
    assert {r["partition_date"] for r in sent} == {today}
    assert {r["dedup_key"] for r in sent} == {a.dedup_key for a in due_today} != set()
    assert slack_server.messages and all(
        f"partition {today}" in str(m.params) for m in slack_server.messages
    )
