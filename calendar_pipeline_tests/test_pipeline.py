"""The Dagster layer end to end, on a real (temporary) Dagster instance: the daily job,
its checks, re-materialization, the Slack job in each mode against a local Slack server,
and bad settings failing at the start of the run."""

import datetime as dt
import json

import dagster as dg
import pytest

from calendar_pipeline.alerts import store
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.lake.index import SnapshotIndex
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN

D = "2025-12-18"  # a past day (partitions end today); Christmas is 7 days ahead


def make_defs(tmp_path, universe, slack=None, **calendar_overrides):
    calendar = CalendarSettings(
        data_dir=str(tmp_path / "data"), universe=str(universe), **calendar_overrides
    )
    return build_defs({"calendar": calendar, "slack": slack or SlackSettings()}), calendar


def run_daily(defs, instance, partition=D, **kwargs):
    return defs.resolve_job_def("daily_calendar_job").execute_in_process(
        partition_key=partition, instance=instance, **kwargs
    )


def run_slack(defs, instance, partition=D, mode="", raise_on_error=True):
    config = {"ops": {"send_slack_alerts": {"config": {"mode": mode}}}} if mode else None
    return defs.resolve_job_def("slack_alert_job").execute_in_process(
        partition_key=partition,
        instance=instance,
        run_config=config,
        raise_on_error=raise_on_error,
    )


def failure_text(result) -> str:
    """Every error message and cause chain of a run's failure events."""
    texts = []
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if error is not None:
            texts.append(error.to_string())
    return "\n".join(texts)


def test_daily_job_materializes_three_assets_and_passes_checks(tmp_path, small_universe, instance):
    defs, calendar = make_defs(tmp_path, small_universe)
    result = run_daily(defs, instance)
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {
        "has_events": True,
        "failed_entities_within_budget": True,
        "missing_entities_within_budget": True,
        "volume_within_history": True,
        "index_consistent": True,
        "row_count_matches_snapshot": True,
        "index_history_consistent": True,
        "rows_match_bucket_rule": True,
        "changes_refer_to_known_events": True,
    }
    snapshots = list((tmp_path / "data" / "snapshots" / D).glob("snapshot_*.json"))
    assert len(snapshots) == 1
    payload = json.loads(snapshots[0].read_text())
    assert payload["window"] == {"start": D, "end": "2026-02-16"}
    assert payload["counts"]["entities_ok"] == 4
    christmas = [e for e in payload["events"] if e["event_date"] == "2025-12-25"]
    assert {e["entity_id"] for e in christmas} == {
        "country-US",
        "country-FR",
        "country-DE-BY",
        "market-XNYS",
    }
    index = SnapshotIndex(tmp_path / "data" / "index" / "snapshots.jsonl")
    assert index.partitions() == [D]
    line = index.get(D)
    assert line["partition"] == D and line["path"] == str(snapshots[0])
    alerts = store.read_due_alerts(calendar.engine(), dt.date.fromisoformat(D))
    xmas = [a for a in alerts if a.event_date == dt.date(2025, 12, 25)]
    assert {a.threshold_days for a in xmas} == {7} and len(xmas) == 4
    assert all(a.channel == "#markets" for a in alerts if a.entity_id == "market-XNYS")

    mats = {
        m.asset_key.to_user_string(): m
        for m in result.asset_materializations_for_node("raw_snapshot")
    }
    meta = mats["raw_snapshot"].metadata
    assert meta["dagster/row_count"].value == len(payload["events"])
    assert meta["entities_failed"].value == 0


def test_rematerializing_a_partition_leaves_one_line_and_one_set_of_rows(
    tmp_path, small_universe, instance
):
    defs, calendar = make_defs(tmp_path, small_universe)
    run_daily(defs, instance)
    first_rows = store.read_due_alerts(calendar.engine(), dt.date.fromisoformat(D))
    run_daily(defs, instance, partition="2025-12-19")
    run_daily(defs, instance)
    index = SnapshotIndex(tmp_path / "data" / "index" / "snapshots.jsonl")
    assert index.partitions() == [D, "2025-12-19"]
    snapshots = sorted((tmp_path / "data" / "snapshots" / D).glob("snapshot_*.json"))
    assert len(snapshots) == 2  # never overwritten
    assert index.get(D)["path"] == str(snapshots[-1])  # the newest one
    assert index.problems() == []
    assert store.read_due_alerts(calendar.engine(), dt.date.fromisoformat(D)) == first_rows
    stored = store.stored_buckets_many(calendar.engine(), [dt.date.fromisoformat(D)])
    assert set(stored[dt.date.fromisoformat(D)]) == {a.dedup_key for a in first_rows}


def test_a_failed_entity_never_holds_back_the_others(tmp_path, instance):
    """One bad key among two entities of a source: the day is materialized, France's
    alerts are computed, the bad entity is named (stopped: it has no earlier data) and the
    advice fits a bad key. A share over CALENDAR_MAX_FAILED_SHARE warns, and still holds
    nobody back."""
    universe = tmp_path / "u.csv"
    universe.write_text(
        "entity_id,name,source,key,channel\nfr,France,holidays,country:FR,\n"
        "zz,Nowhere,holidays,country:ZZ,\n"
    )
    defs, calendar = make_defs(tmp_path, universe)
    result = run_daily(defs, instance, raise_on_error=False)
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    failed = checks["failed_entities_within_budget"]
    assert failed.passed  # 1 of 2 = 0.5, the default share
    assert "zz (Nowhere, holidays)" in failed.description
    assert "no alerts: there is no earlier good data" in failed.description
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"raw_snapshot", "snapshot_index", "due_alerts", "calendar_feed"}
    snapshot = json.loads(next((tmp_path / "data" / "snapshots" / D).glob("*.json")).read_text())
    assert snapshot["errors"] == [
        {
            "entity_id": "zz",
            "source": "holidays",
            "error_type": "HolidayKeyError",
            "message": "key 'country:ZZ': unknown country code 'ZZ'",
        }
    ]
    assert snapshot["entity_status"]["fr"] == {"state": "fresh", "data_of": D}
    assert snapshot["entity_status"]["zz"]["state"] == "stopped"
    alerts = store.read_due_alerts(calendar.engine(), dt.date.fromisoformat(D))
    assert {a.entity_id for a in alerts} <= {"fr"}

    strict, _ = make_defs(tmp_path, universe, max_failed_share="0.4")
    result = run_daily(strict, instance, raise_on_error=False)
    assert result.success  # a warning, not a block
    check = next(
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "failed_entities_within_budget"
    )
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith("source down: holidays (1 of 2 entities broken)")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"thresholds": "30,x"}, "CALENDAR_THRESHOLDS='30,x'"),
        ({"min_volume_ratio": "2"}, "CALENDAR_MIN_VOLUME_RATIO='2'"),
        ({"lookahead_days": -1}, "CALENDAR_LOOKAHEAD_DAYS='-1'"),
        ({"lookahead_days": 20}, "CALENDAR_THRESHOLDS='30,15,7,3,1': 30 days is beyond"),
    ],
)
def test_bad_setting_fails_at_run_start_and_keeps_stored_data(
    tmp_path, small_universe, instance, override, needle
):
    good, calendar = make_defs(tmp_path, small_universe)
    run_daily(good, instance)
    before = (tmp_path / "data" / "index" / "snapshots.jsonl").read_bytes()
    bad, _ = make_defs(tmp_path, small_universe, **override)
    result = run_daily(bad, instance, raise_on_error=False)
    assert not result.success
    assert needle in failure_text(result)
    assert not result.get_asset_materialization_events()
    assert (tmp_path / "data" / "index" / "snapshots.jsonl").read_bytes() == before
    assert store.read_due_alerts(calendar.engine(), dt.date.fromisoformat(D))


def test_a_range_before_the_first_partition_fails_at_once_without_retries(
    tmp_path, small_universe, instance
):
    """The RUNBOOK's long-backfill command with a start before CALENDAR_START_DATE: one
    failure naming the start, not three retries of a minute each."""
    defs, _ = make_defs(tmp_path, small_universe)
    result = defs.resolve_job_def("daily_calendar_job").execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": "2023-11-21",
            "dagster/asset_partition_range_end": "2023-11-23",
        },
        raise_on_error=False,
    )
    assert not result.success
    kinds = [event.event_type_value for event in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in kinds and kinds.count("STEP_FAILURE") == 1
    assert "range start 2023-11-21 is before the partitions definition start" in failure_text(
        result
    )
    assert not (tmp_path / "data" / "snapshots").exists()


def test_bad_universe_fails_naming_the_file(tmp_path, instance):
    universe = tmp_path / "u.csv"
    universe.write_text(
        "entity_id,name,source,key,channel\nfr,F,holidays,country:FR,\nfr,F,holidays,country:FR,\n"
    )
    defs, _ = make_defs(tmp_path, universe)
    result = run_daily(defs, instance, raise_on_error=False)
    assert not result.success
    assert f"universe {universe} line 3: duplicate entity_id 'fr'" in failure_text(result)


def test_slack_dry_run_writes_outbox_and_records_nothing(tmp_path, small_universe, instance):
    defs, calendar = make_defs(tmp_path, small_universe)
    run_daily(defs, instance)
    result = run_slack(defs, instance, mode="dry_run")  # D is past: history unless forced
    out = result.output_for_node("send_slack_alerts")
    assert out is None
    digest = (tmp_path / "data" / "outbox" / D / "digest.txt").read_text()
    assert "Christmas Day" in digest and "#markets" in digest and "#us-ops" in digest
    payloads = sorted((tmp_path / "data" / "outbox" / D).glob("*.json"))
    assert {json.loads(p.read_text())["channel"] for p in payloads} == {
        "#calendar-alerts",
        "#markets",
        "#us-ops",
    }
    assert store.ledger_rows(calendar.engine()) == []


def test_slack_send_posts_once_then_nothing(tmp_path, small_universe, instance, slack_server):
    slack = SlackSettings(token=DEFAULT_TOKEN, api_url=slack_server.url, channel="#general")
    today = dt.date.fromisoformat(D)
    defs, calendar = make_defs(tmp_path, small_universe, slack)
    run_daily(defs, instance)
    due = store.read_due_alerts(calendar.engine(), today)
    run_slack(defs, instance, mode="send")
    posted = slack_server.messages
    assert {m.channel for m in posted} == {"#general", "#markets", "#us-ops"}
    rows = store.ledger_rows(calendar.engine())
    assert len(rows) == len(due) and {r["state"] for r in rows} == {"sent"}
    assert all(r["slack_ts"] for r in rows)
    run_slack(defs, instance, mode="send")
    assert len(slack_server.messages) == len(posted)  # nothing twice


def test_past_partition_is_history_posts_nothing_and_suppresses_nothing(
    tmp_path, small_universe, instance, slack_server
):
    slack = SlackSettings(token=DEFAULT_TOKEN, api_url=slack_server.url)
    defs, calendar = make_defs(tmp_path, small_universe, slack)
    run_daily(defs, instance)
    assert dt.date.fromisoformat(D) < calendar.today()
    result = run_slack(defs, instance)  # no mode forced: a past partition is history
    assert result.success
    assert slack_server.messages == []
    assert store.ledger_rows(calendar.engine()) == []
    # a person may still post that day on purpose, and then it is delivered once
    run_slack(defs, instance, mode="send")
    due = store.read_due_alerts(calendar.engine(), dt.date.fromisoformat(D))
    assert sum(len(m.params.get("metadata", {})) > 0 for m in slack_server.messages) >= 1
    assert {r["state"] for r in store.ledger_rows(calendar.engine())} == {"sent"}
    assert len(store.ledger_rows(calendar.engine())) == len(due)


def test_forced_record_only_marks_delivered_and_suppresses_later_sends(
    tmp_path, small_universe, instance, slack_server
):
    slack = SlackSettings(token=DEFAULT_TOKEN, api_url=slack_server.url)
    defs, calendar = make_defs(tmp_path, small_universe, slack)
    run_daily(defs, instance)
    run_slack(defs, instance, mode="record_only")  # a migration: "these were sent elsewhere"
    rows = store.ledger_rows(calendar.engine())
    assert rows and {r["state"] for r in rows} == {"recorded"}
    run_slack(defs, instance, mode="send")
    assert slack_server.messages == []


def test_slack_token_invalid_fails_clearly_without_leaking(
    tmp_path, small_universe, instance, slack_server
):
    secret = "xoxb-wrong-secret-123"
    slack = SlackSettings(token=secret, api_url=slack_server.url)
    defs, calendar = make_defs(tmp_path, small_universe, slack)
    run_daily(defs, instance)
    result = run_slack(defs, instance, mode="send", raise_on_error=False)
    assert not result.success
    message = failure_text(result)
    assert "SLACK_BOT_TOKEN" in message
    assert secret not in message
    rows = store.ledger_rows(calendar.engine())
    assert rows and {r["state"] for r in rows} == {"failed"}  # released, nothing marked sent
    assert all("SLACK_BOT_TOKEN" in r["error"] and secret not in r["error"] for r in rows)
    logs = instance.all_logs(result.run_id)
    assert all(secret not in (entry.message or "") for entry in logs)


def test_a_quiet_calendar_is_not_missing_but_a_calendar_without_data_is(tmp_path, instance):
    """France has no public holiday between 16 August and 15 October: without events,
    but not missing. Bouvet Island has no holidays at all: missing."""
    universe = tmp_path / "u.csv"
    universe.write_text(
        "entity_id,name,source,key,channel\nfr,France,holidays,country:FR,\n"
        "us,US,holidays,country:US,\n"
    )
    defs, _ = make_defs(tmp_path, universe, max_missing_share="0")
    result = run_daily(defs, instance, partition="2025-08-16")
    assert result.success
    meta = result.asset_materializations_for_node("raw_snapshot")[0].metadata
    assert meta["entities_without_events"].value == 1  # France
    assert meta["entities_missing"].value == 0

    universe.write_text(universe.read_text() + "bv,Bouvet Island,holidays,country:BV,\n")
    result = run_daily(defs, instance, partition="2025-08-16", raise_on_error=False)
    assert result.success  # a warning: France and the US still get their alerts
    check = next(
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "missing_entities_within_budget"
    )
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.description.startswith(
        "on 2025-08-16: holidays: the upstream knows nothing of 1 of its 3 entities (bv)."
    )
    assert "check those keys and sources" in check.description
