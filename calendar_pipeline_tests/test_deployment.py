"""The deployment of docs/SCALING.md, really run: PostgreSQL, PgBouncer, Redis, a gRPC code
server, dagster-daemon, dagster-webserver and two Celery workers on loopback, each started
from the guide's own step blocks with deploy/'s files (calendar_pipeline_tests/deployment.py).

Through GraphQL, as the UI does, it launches today's partition of daily_calendar_job and an
asset backfill of the 30 days before (one run: single-run backfill policy). Then:

- every run (the two, and the Slack runs slack_alert_sensor starts) succeeded as a Celery
  task that one of the two workers ran;
- runs, events and check results are in PostgreSQL, and DAGSTER_HOME holds no SQLite;
- the lake and ``due_alerts`` (in PostgreSQL through CALENDAR_DB_URL) are what a
  single-machine run of the same 31 days computes;
- today's digest, and nothing of the 30 history days, reached the local Slack server, once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import create_engine, make_url, text

from calendar_pipeline.alerts import store
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.calendar_feed import calendar_feed
from calendar_pipeline.defs.due_alerts import due_alerts
from calendar_pipeline.defs.raw_snapshot import raw_snapshot
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.defs.snapshot_index import snapshot_index
from calendar_pipeline.lake.index import SnapshotIndex, index_path
from calendar_pipeline.lake.snapshots import latest_snapshots
from calendar_pipeline_tests.daemons import wait_for
from calendar_pipeline_tests.dagster_dev import _process_group_members, child_processes
from calendar_pipeline_tests.deployment import Deployment, new_root, port_open
from calendar_pipeline_tests.flows import posted_lines, run_range
from calendar_pipeline_tests.postgres import pg_bin
from calendar_pipeline_tests.slack_server import FakeSlackServer

NEEDED = ("redis-server", "pgbouncer", "envsubst", "psql")
ASSETS = ("raw_snapshot", "snapshot_index", "due_alerts", "calendar_feed")
# The checks each calendar run evaluates: those declared on the job's assets.
DAILY_CHECKS = {
    spec.name
    for asset in (raw_snapshot, snapshot_index, due_alerts, calendar_feed)
    for spec in asset.check_specs
}
# raw_snapshot:freshness_check judges the wall clock (test_freshness.py tests it): its
# own sensor's runs, and its result inside the backfill's run, are left out here.
FRESHNESS_SENSOR = "raw_snapshot_freshness_checks_sensor"
TODAY = dt.datetime.now(dt.UTC).date()  # CALENDAR_TIMEZONE is UTC in deploy/.env.example
HISTORY = [TODAY - dt.timedelta(days=n) for n in range(30, 0, -1)]
TASK_TAG = "dagster-celery/task_id"


def _missing() -> list[str]:
    missing = [name for name in NEEDED if shutil.which(name) is None]
    return missing + ([] if pg_bin("initdb") else ["postgresql-15"])


@pytest.fixture(scope="module")
def deployment():
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} missing; .ci/run installs them")
        pytest.skip(f"{', '.join(missing)} not installed")
    slack = FakeSlackServer().start()
    d = Deployment(new_root(), slack_url=slack.url)
    try:
        d.prepare()
        d.run_step("database", extra_env={"PGPASSWORD": d.superuser_password})
        d.run_step("instance")
        d.start_step("pgbouncer", as_postgres=True)
        d.start_step("redis")
        for name in ("pgbouncer", "redis"):
            wait_for(name, lambda n=name: port_open(d.ports[n]), 30, diagnose=d.logs)
        d.start_step("code-server")
        d.start_step("worker", label="worker-1", CELERY_WORKER_NAME="calendar-1")
        d.start_step("worker", label="worker-2", CELERY_WORKER_NAME="calendar-2")
        wait_for("code server", lambda: port_open(d.ports["code_server"]), 90, diagnose=d.logs)
        d.start_step("daemon")
        d.start_step("webserver")
        wait_for("webserver", d.webserver_up, 90, diagnose=d.logs)
        d.start_step("turn-on")  # ends by itself; overlaps the first runs
        for label in ("worker-1", "worker-2"):
            wait_for(f"{label} ready", lambda lb=label: " ready." in d.log(lb), 60, diagnose=d.logs)
        yield d, slack
    finally:
        groups = [proc.pid for _, proc in d.started]
        d.stop()
        slack.stop()
        left = {pgid: _process_group_members(pgid) for pgid in groups}
        shutil.rmtree(d.root, ignore_errors=True)
        assert not any(left.values()), f"processes left running: {left}"


LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
RUNS = """
{
  runsOrError {
    ... on Runs { results { runId jobName status tags { key value } } }
  }
}
"""
BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } }
}
"""


def launch(d: Deployment) -> tuple[str, str]:
    """Today's run and the 30-day backfill, as the UI launches them."""
    selector = {
        "repositoryLocationName": "calendar_pipeline",
        "repositoryName": "__repository__",
        "jobName": "daily_calendar_job",
    }
    params = {
        "selector": selector,
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": TODAY.isoformat()}]},
    }
    run = d.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert run["__typename"] == "LaunchRunSuccess", run
    backfill = d.graphql(
        LAUNCH_BACKFILL,
        {
            "params": {
                "assetSelection": [{"path": [asset]} for asset in ASSETS],
                "partitionNames": [day.isoformat() for day in HISTORY],
                "title": "30 days on the workers",
            }
        },
    )["launchPartitionBackfill"]
    assert backfill["__typename"] == "LaunchBackfillSuccess", backfill
    return run["run"]["runId"], backfill["backfillId"]


def runs(d: Deployment) -> list[dict]:
    found = d.graphql(RUNS)["runsOrError"]["results"]
    for run in found:
        run["tags"] = {tag["key"]: tag["value"] for tag in run["tags"]}
    return found


def settled(d: Deployment, backfill_id: str) -> list[dict] | None:
    """Every run once the backfill is done and both Slack runs have ended."""
    status = d.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]["status"]
    found = runs(d)
    slack_runs = [r for r in found if r["jobName"] == "slack_alert_job"]
    ended = all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in found)
    return found if status.startswith("COMPLETED") and len(slack_runs) >= 2 and ended else None


def tasks_succeeded(d: Deployment, found: list[dict]) -> dict[str, list[str]] | None:
    """run id -> the workers whose log says its Celery task succeeded; None until each
    run's task has."""
    logs = {label: d.log(label, lines=100_000) for label in ("worker-1", "worker-2")}
    ran_on = {
        run["runId"]: [
            label
            for label, log in logs.items()
            if re.search(rf"Task execute_job\[{run['tags'][TASK_TAG]}\] succeeded", log)
        ]
        for run in found
    }
    return ran_on if all(ran_on.values()) else None


def single_machine_due(tmp_path: Path) -> tuple[dict[dt.date, set], dict[str, list]]:
    """due_alerts rows and snapshot events of the same 31 days on one machine: SQLite,
    a local data dir, an in-process run."""
    calendar = CalendarSettings(data_dir=str(tmp_path / "single"))
    defs = build_defs({"calendar": calendar, "slack": SlackSettings()})
    with dg.instance_for_test() as instance:
        assert run_range(defs, instance, HISTORY[0], TODAY).success
    return due_by_day(calendar.engine()), events_by_day(calendar.data_path)


def due_by_day(engine) -> dict[dt.date, set]:
    return {
        day: {
            (a.entity_id, a.event_id, a.event_date, a.threshold_days)
            for a in store.read_due_alerts(engine, day)
        }
        for day in [*HISTORY, TODAY]
    }


def events_by_day(data_dir: Path) -> dict[str, list]:
    """Each indexed day's events, from the snapshot its index line points at."""
    index = SnapshotIndex(index_path(data_dir))
    latest = latest_snapshots(data_dir)
    days = {}
    for entry in index.entries():
        assert Path(entry["path"]).name == latest[entry["partition"]].name, entry
        events = json.loads(latest[entry["partition"]].read_text(encoding="utf-8"))["events"]
        days[entry["partition"]] = sorted(events, key=lambda e: (e["entity_id"], e["event_id"]))
    return days


def test_today_and_a_30_day_backfill_run_on_the_celery_workers(deployment, tmp_path):
    d, slack = deployment
    run_id, backfill_id = launch(d)
    found = wait_for("the runs and the Slack runs", lambda: settled(d, backfill_id), 150,
                       diagnose=lambda: f"{runs(d)}\n{d.logs()}")  # fmt: skip

    turn_on = next(proc for label, proc in d.started if label == "turn-on")
    assert turn_on.wait(timeout=60) == 0, d.log("turn-on")

    # Every run succeeded, as a Celery task one of the two workers ran.
    assert {r["status"] for r in found} == {"SUCCESS"}, found
    checked = {
        r["runId"] for r in found if r["tags"].get("dagster/sensor_name") == FRESHNESS_SENSOR
    }
    jobs = Counter(r["jobName"] for r in found if r["runId"] not in checked)
    # (an asset backfill runs the implicit asset job, not daily_calendar_job)
    assert jobs == {"daily_calendar_job": 1, "__ASSET_JOB": 1, "slack_alert_job": 2}, jobs
    # (the task returns a moment after Dagster records the run's end)
    ran_on = wait_for(
        "every task's end in a worker log", lambda: tasks_succeeded(d, found), 30, diagnose=d.logs
    )
    assert all(len(workers) == 1 for workers in ran_on.values()), ran_on

    # Runs, events and check results are in PostgreSQL; no SQLite under DAGSTER_HOME.
    settings = d.settings()
    dagster_db = create_engine(
        f"postgresql+psycopg://{settings['DAGSTER_PG_USERNAME']}:{settings['DAGSTER_PG_PASSWORD']}"
        f"@127.0.0.1:{settings['DAGSTER_PG_PORT']}/{settings['DAGSTER_PG_DB']}"
    )
    with dagster_db.connect() as conn:
        stored_runs = (
            conn.execute(
                text(
                    "SELECT run_id FROM runs WHERE run_id NOT IN (SELECT run_id FROM run_tags "
                    "WHERE key = 'dagster/sensor_name' AND value = :sensor)"
                ),
                {"sensor": FRESHNESS_SENSOR},
            )
            .scalars()
            .all()
        )  # (a check run may start after `found` was read)
        materialized = conn.execute(
            text(
                "SELECT asset_key, partition FROM event_logs "
                "WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
            )
        ).all()
        checks = conn.execute(
            text(
                "SELECT check_name, execution_status, run_id FROM asset_check_executions "
                "WHERE check_name != 'freshness_check'"
            )
        ).all()
    dagster_db.dispose()
    assert set(stored_runs) == {r["runId"] for r in found} - checked
    assert run_id in stored_runs
    per_asset = Counter(key for key, _ in materialized)
    assert all(n == 31 for n in per_asset.values()) and len(per_asset) == 4, per_asset
    # Each check ran once per calendar run and passed. (Dagster 1.13 also leaves a PLANNED
    # row per partition for checks without partitions, as on SQLite: never evaluated as such.)
    names = {name for name, _, _ in checks}
    assert names == DAILY_CHECKS, names
    for run in found:
        if run["jobName"] != "slack_alert_job" and run["runId"] not in checked:
            passed = {n for n, status, r in checks if r == run["runId"] and status == "SUCCEEDED"}
            assert passed == names, (run, checks)
    assert {status for _, status, _ in checks} <= {"SUCCEEDED", "PLANNED"}, checks
    home = Path(settings["DAGSTER_HOME"])
    assert not [p for p in home.rglob("*.db")], list(home.rglob("*"))

    # The data: what one machine computes for the same days.
    # (the workers reach PgBouncer's socket through PGHOST; this process says it in the URL)
    db_url = make_url(settings["CALENDAR_DB_URL"]).update_query_dict({"host": settings["PGHOST"]})
    calendar = CalendarSettings(
        data_dir=settings["CALENDAR_DATA_DIR"], db_url=db_url.render_as_string(False)
    )
    assert calendar.engine().dialect.name == "postgresql"
    expected_due, expected_events = single_machine_due(tmp_path)
    assert due_by_day(calendar.engine()) == expected_due
    assert events_by_day(calendar.data_path) == expected_events
    assert len(expected_events) == 31 and all(expected_due.values())

    # Slack: today's digest, each line once; nothing of the 30 history days.
    lines = Counter(posted_lines(slack))
    due_today = store.read_due_alerts(calendar.engine(), TODAY)
    assert set(lines) == {
        (a.entity_name, a.title, a.event_date, a.threshold_days) for a in due_today
    }
    assert set(lines.values()) == {1} and len(lines) == len(due_today) > 0


def test_a_run_whose_worker_process_dies_is_failed_and_retried_on_a_worker(deployment):
    """The process executing a run is killed (as by the OOM killer) in the middle of it:
    Celery records the task as failed (WorkerLostError), run monitoring marks the run
    failed, run_retries starts it again, a worker runs the retry, and the lake and tables
    are consistent afterwards (``calendar-pipeline verify``)."""
    d, slack = deployment
    posts_before = len(slack.messages)
    first, last = TODAY - dt.timedelta(days=400), TODAY - dt.timedelta(days=201)
    params = {
        "selector": {
            "repositoryLocationName": "calendar_pipeline",
            "repositoryName": "__repository__",
            "jobName": "daily_calendar_job",
        },
        "executionMetadata": {
            "tags": [
                {"key": "dagster/asset_partition_range_start", "value": first.isoformat()},
                {"key": "dagster/asset_partition_range_end", "value": last.isoformat()},
            ]
        },
    }
    launched = d.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def running_on() -> tuple[str, str] | None:
        run = next(r for r in runs(d) if r["runId"] == run_id)
        task = run["tags"].get(TASK_TAG)
        if run["status"] != "STARTED" or not task:
            return None
        for label in ("worker-1", "worker-2"):
            if f"execute_job[{task}] received" in d.log(label, lines=100_000):
                return label, task
        return None

    label, task = wait_for("the 200-day run to start on a worker", running_on, 60)
    time.sleep(2)  # inside the run's steps
    (worker,) = [proc for lbl, proc in d.started if lbl == label]
    (celery_main,) = child_processes(worker.pid)
    pool = child_processes(celery_main)
    assert pool, "no Celery pool process"
    for pid in pool:  # the one running the task, and its idle sibling
        os.kill(pid, signal.SIGKILL)

    def retried() -> dict | None:
        found = runs(d)
        original = next(r for r in found if r["runId"] == run_id)
        retry = [r for r in found if r["tags"].get("dagster/parent_run_id") == run_id]
        if original["status"] == "FAILURE" and retry and retry[0]["status"] == "SUCCESS":
            return retry[0]
        return None

    retry = wait_for("the run to fail and its retry to succeed", retried, 150,
                       diagnose=lambda: f"{runs(d)}\n{d.logs()}")  # fmt: skip
    # Celery saw the process die
    assert "WorkerLostError: Worker exited prematurely: signal 9" in d.log(label, 100_000)
    # the worker logs the task's end just after the run's end is stored: wait for the line
    wait_for("the retry's task end in a worker log", lambda: tasks_succeeded(d, [retry]), 30,
             diagnose=d.logs)  # fmt: skip
    assert retry["tags"]["dagster/retry_number"] == "1" and retry["tags"][TASK_TAG] != task

    settings = d.settings()
    verify = subprocess.run(
        [str(Path(sys.executable).parent / "calendar-pipeline"), "verify"],
        env={**d.base_env(), **settings},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # Slack: the failure alert for the killed run (slack_run_failure_sensor), once; no
    # digest (the days are history).
    def failure_alerts() -> list:
        new = slack.messages[posts_before:]
        return [m for m in new if run_id[:8] in json.dumps(m.blocks or m.text)]

    wait_for("the run-failure alert", failure_alerts, 60)
    new = slack.messages[posts_before:]
    assert len(failure_alerts()) == 1 and len(new) == 1, [m.text for m in new]
