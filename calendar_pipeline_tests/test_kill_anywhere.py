"""Kill the pipeline at random moments and check nothing is lost, corrupt or stuck.

``calendar-pipeline run`` (the daily job, then the Slack job) runs in a subprocess on an
instance made from the shipped ``dagster.yaml`` (pools, run retries, run monitoring), and
is killed with SIGKILL at seeded random moments spread over its whole run: while it
fetches, writes snapshots, appends the index, replaces due_alerts, claims and posts to
Slack. After each kill:

- the monitoring daemon's own code ends the dead run and frees its pool slot
  (``daemons.end_dead_runs``), as ``dagster-daemon`` would;
- ``verify`` finds no corrupt snapshot, index line or ledger row (a day whose due_alerts
  the kill left behind is only "to re-run").

Then one run that is not killed must succeed, ``verify`` must be clean, and the result
must equal a run that was never killed: the same due_alerts rows, the same events in the
indexed snapshot, and at the Slack server every due alert posted, none twice."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import signal
import time
from collections import Counter
from pathlib import Path

import dagster as dg

from calendar_pipeline.alerts import store
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.lake.index import SnapshotIndex, index_path
from calendar_pipeline.verify import verify
from calendar_pipeline_tests import daemons
from calendar_pipeline_tests.daemons import end_dead_runs, workspace
from calendar_pipeline_tests.flows import feed, posted_lines
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN, FakeSlackServer
from calendar_pipeline_tests.upstream_server import Reply, UpstreamServer

ROOT = Path(__file__).resolve().parents[1]
KILLS = 6
TEAMS = [f"team{n}" for n in range(6)]  # one channel: its digest is several messages, in turn
processes = daemons.processes  # the fixture


def universe(path: Path, upstream: UpstreamServer) -> Path:
    rows = ["entity_id,name,source,key,channel"]
    rows += [f"{t},Team {t},ics,{upstream.url}/{t}.ics,#teams" for t in TEAMS]
    path.write_text("\n".join(rows) + "\n")
    return path


def settings_for(data: Path, universe_csv: Path) -> CalendarSettings:
    return CalendarSettings(data_dir=str(data), universe=str(universe_csv))


def alert_keys(calendar: CalendarSettings, day: dt.date) -> set[tuple]:
    """(entity, title, event date, bucket) of each due_alerts row of ``day``: what Slack
    shows of an alert (``flows.posted_lines`` reads the same from the messages)."""
    return {
        (a.entity_name, a.title, a.event_date, a.threshold_days)
        for a in store.read_due_alerts(calendar.engine(), day)
    }


def test_sigkill_at_random_moments_loses_nothing_and_blocks_nothing(tmp_path, processes):
    today = dt.date.today()
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")  # as shipped
    body = feed(start=today - dt.timedelta(days=5), days=90)
    with (
        UpstreamServer(latency=0.02) as upstream,
        FakeSlackServer(latency=1.0) as slack,  # posting takes a while: kills land in it
        dg.DagsterInstance.from_config(str(home)) as instance,
        workspace(instance, tmp_path) as context,
    ):
        for team in TEAMS:
            upstream.route(f"/{team}.ics", Reply(body=body, content_type="text/calendar"))
        universe_csv = universe(tmp_path / "universe.csv", upstream)

        # the run that is never killed, for comparison (in-process, nothing posted)
        reference = settings_for(tmp_path / "reference", universe_csv)
        defs = build_defs({"calendar": reference, "slack": SlackSettings()})
        with dg.instance_for_test() as scratch:
            job = defs.resolve_job_def("daily_calendar_job")
            assert job.execute_in_process(partition_key=today.isoformat(), instance=scratch).success
        expected = alert_keys(reference, today)
        assert len(expected) > 100

        calendar = settings_for(tmp_path / "data", universe_csv)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CALENDAR_", "SLACK_"))}
        env.update(
            DAGSTER_HOME=str(home),
            CALENDAR_DATA_DIR=calendar.data_dir,
            CALENDAR_UNIVERSE=str(universe_csv),
            SLACK_BOT_TOKEN=DEFAULT_TOKEN,
            SLACK_API_URL=slack.url,
            SLACK_CHANNEL="#general",
        )
        procs = processes(env)

        def audit():
            return verify(
                calendar.data_path,
                calendar.engine(),
                calendar.threshold_days,
                calendar.claim_timeout,
                calendar.budgets,
            )

        # how long a whole run takes here, so the kills spread over all of it
        started = time.monotonic()
        first = procs.start("first", "-m", "calendar_pipeline.cli", "run", "--mode", "dry_run")
        assert first.wait(timeout=120) == 0, procs.output(first)[-3000:]
        duration = time.monotonic() - started
        posts_before = len(slack.messages)

        # seeded random moments: half over the daily job, half over the Slack job's posts
        # (each post takes a second here; the dry run above did not post)
        rng = random.Random(20261124)
        half = KILLS // 2
        moments = sorted(rng.uniform(0.3, duration - 1.0) for _ in range(half)) + sorted(
            rng.uniform(duration - 0.5, duration + 4.0) for _ in range(KILLS - half)
        )
        phases = []
        for n, moment in enumerate(moments):
            proc = procs.start(f"kill{n}", "-m", "calendar_pipeline.cli", "run")
            time.sleep(moment)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            end_dead_runs(instance, context)  # what dagster-daemon does about a dead run
            report = audit()
            corrupt = [f for f in report.errors if f.area in ("snapshots", "index", "ledger")]
            assert corrupt == [], f"after the kill at {moment:.2f} s: {corrupt}"
            states = {row["state"] for row in store.ledger_rows(calendar.engine())}
            phases.append(
                "done" if proc.returncode == 0
                else "before Slack" if not states
                else "while posting" if states - {"sent"}
                else "after posting"
            )  # fmt: skip

        final = procs.start("final", "-m", "calendar_pipeline.cli", "run")
        assert final.wait(timeout=120) == 0, procs.output(final)[-3000:]
        report = audit()
        assert report.ok, report.to_text()
        assert [f for f in report.findings if f.area == "temp_files"] == []

        assert alert_keys(calendar, today) == expected
        indexed = json.loads(
            SnapshotIndex(index_path(calendar.data_path)).get(today.isoformat())["content_text"]
        )
        reference_doc = json.loads(
            SnapshotIndex(index_path(reference.data_path)).get(today.isoformat())["content_text"]
        )
        assert indexed["events"] == reference_doc["events"]

        lines = posted_lines(slack)
        assert set(lines) == expected  # every due alert reached Slack
        repeats = {key: n for key, n in Counter(lines).items() if n > 1}
        assert repeats == {}  # and none twice, kills during posting included
        assert posts_before == 0  # the dry run posted nothing
        ledger = store.ledger_rows(calendar.engine())
        assert {row["state"] for row in ledger} == {"sent"} and len(ledger) == len(expected)
    print(f"run {duration:.1f} s; kills at {', '.join(f'{m:.1f}' for m in moments)} s: {phases}")
    assert "before Slack" in phases and "while posting" in phases
