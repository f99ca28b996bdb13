"""Dead runs with the shipped dagster.yaml: a run of daily_calendar_job killed with SIGKILL
inside raw_snapshot (pool ``calendar_upstream``, one slot) is marked failed by the
monitoring daemon, its slot is released, and a run of another day that was waiting for
the slot then runs to success.

Both runs are real processes on an instance whose DAGSTER_HOME holds a copy of the
repository's ``dagster.yaml``: the killed one is ``dagster job execute``, the waiting one
is ``calendar-pipeline run``. The daemon is Dagster's own code, run in-process once per
pass (``MonitoringDaemon.run_iteration`` and ``execute_concurrency_slots_iteration``),
with this process's clock moved past ``max_runtime_seconds`` and
``free_slots_after_run_end_seconds`` instead of waiting for them.

Without any daemon, the project releases such a run itself (``calendar_pipeline/instance.py``):
a run already waiting for the slot does within seconds of the kill, and the next
``calendar-pipeline`` does at its start; each says which run it released."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import time_machine
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._core.storage.tags import PARTITION_NAME_TAG, WILL_RETRY_TAG
from dagster._daemon.daemon import MonitoringDaemon
from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration

from calendar_pipeline.instance import WATCH_INTERVAL_SECONDS, assign_lost_slots
from calendar_pipeline_tests import daemons
from calendar_pipeline_tests.daemons import (
    holders,
    messages,
    pool,
    run_of,
    wait_for,
    workspace,
)
from calendar_pipeline_tests.flows import feed, write_universe
from calendar_pipeline_tests.upstream_server import Reply, Request, UpstreamServer

ROOT = Path(__file__).resolve().parents[1]
POOL = "calendar_upstream"
KILLED_DAY, NEXT_DAY = dt.date(2026, 3, 10), dt.date(2026, 3, 11)
processes = daemons.processes  # the fixture


def test_a_killed_run_is_failed_by_the_monitoring_daemon_and_frees_its_pool_slot(
    tmp_path, processes
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")  # verbatim, as shipped
    fetching, release = threading.Event(), threading.Event()

    def slow_feed(request: Request) -> Reply:  # the killed run dies while it waits here
        fetching.set()
        release.wait(60)
        return Reply(body=feed(), content_type="text/calendar")

    logger = logging.getLogger("dead_runs")
    with (
        UpstreamServer() as upstream,
        dg.DagsterInstance.from_config(str(home)) as instance,
        workspace(instance, tmp_path) as context,
    ):
        upstream.route("/team.ics", slow_feed)
        universe = write_universe(tmp_path / "universe.csv", upstream)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CALENDAR_", "SLACK_"))}
        env.update(
            DAGSTER_HOME=str(home),
            CALENDAR_DATA_DIR=str(tmp_path / "data"),
            CALENDAR_UNIVERSE=str(universe),
            CALENDAR_START_DATE="2026-01-01",
        )
        procs = processes(env)
        # what the shipped file turns on (and why a time limit is needed: see dagster.yaml)
        assert "MONITORING" in instance.get_required_daemon_types()
        assert not instance.run_launcher.supports_check_run_worker_health
        max_runtime = instance.run_monitoring_max_runtime_seconds
        free_after = instance.run_monitoring_settings["free_slots_after_run_end_seconds"]

        # 1. A real run, killed with SIGKILL while raw_snapshot fetches (holding the slot).
        tags = f'{{"{PARTITION_NAME_TAG}": "{KILLED_DAY.isoformat()}"}}'
        killed = procs.start(
            "killed", "-m", "dagster", "job", "execute", "-m", "calendar_pipeline.definitions",
            "-j", "daily_calendar_job", "--tags", tags,
        )  # fmt: skip
        try:
            assert fetching.wait(60), procs.output(killed)[-3000:]
            dead = wait_for("the killed run", lambda: run_of(instance, KILLED_DAY))
            assert holders(instance) == [(dead.run_id, "raw_snapshot")]
            os.killpg(killed.pid, signal.SIGKILL)
            assert killed.wait(timeout=10) == -signal.SIGKILL
        finally:
            release.set()

        # 2. Nobody is left to end it: STARTED, and the pool's only slot is still its own.
        assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.STARTED
        assert pool(instance).slot_count == 1
        assert holders(instance) == [(dead.run_id, "raw_snapshot")]
        # The daemon cannot tell a dead run from a slow one before max_runtime_seconds.
        list(MonitoringDaemon(interval_seconds=60).run_iteration(context))
        assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.STARTED

        # 3. A daemon pass once the run is older than max_runtime_seconds: failed, and to be
        # retried (a crash, not a step failure). The slot is not freed yet: ending a run
        # does not free it, free_slots_after_run_end_seconds later does.
        start = instance.get_run_record_by_id(dead.run_id).start_time
        later = dt.datetime.fromtimestamp(start + max_runtime + 5, dt.UTC)
        with time_machine.travel(later, tick=True):
            list(MonitoringDaemon(interval_seconds=60).run_iteration(context))
        failed = instance.get_run_record_by_id(dead.run_id)
        assert failed.dagster_run.status == DagsterRunStatus.FAILURE
        assert failed.dagster_run.tags[WILL_RETRY_TAG] == "true"
        assert f"maximum runtime of {max_runtime} seconds" in "\n".join(
            messages(instance, dead.run_id)
        )
        assert holders(instance) == [(dead.run_id, "raw_snapshot")]

        # 4. The next day's run (the project's CLI, execute_in_process) waits for the slot.
        waiting = procs.start(
            "waiting", "-m", "calendar_pipeline.cli", "run", "--date", NEXT_DAY.isoformat(),
            "--mode", "dry_run",
        )  # fmt: skip
        second = wait_for("the second run", lambda: run_of(instance, NEXT_DAY))
        blocked = f"Step blocked by limit for pool {POOL}"
        wait_for(blocked, lambda: blocked in messages(instance, second.run_id))
        (pending,) = [s for s in pool(instance).pending_steps if s.run_id == second.run_id]
        assert pending.step_key == "raw_snapshot" and pending.assigned_timestamp is None
        time.sleep(2)  # still blocked: the slot is not released by anything but the daemon
        assert waiting.poll() is None
        assert holders(instance) == [(dead.run_id, "raw_snapshot")]

        # 5. free_slots_after_run_end_seconds after the run's end, the daemon's slot pass
        # frees the slot. (Only this half of the daemon's iteration: on this moved clock
        # the live second run would look older than max_runtime_seconds too.)
        freed_at = dt.datetime.fromtimestamp(failed.end_time + free_after + 5, dt.UTC)
        with time_machine.travel(freed_at, tick=True):
            list(execute_concurrency_slots_iteration(context, logger))
        assert (dead.run_id, "raw_snapshot") not in holders(instance)

        # 6. The waiting run gets the slot and succeeds; the pool is free again.
        assert waiting.wait(timeout=60) == 0, procs.output(waiting)[-3000:]
        assert instance.get_run_by_id(second.run_id).status == DagsterRunStatus.SUCCESS
        assert holders(instance) == [] and pool(instance).pending_steps == []
    data = tmp_path / "data" / "snapshots"
    assert list((data / NEXT_DAY.isoformat()).glob("snapshot_*.json"))
    assert not (data / KILLED_DAY.isoformat()).exists()  # killed before it wrote anything


WAITING_DAY, LATER_DAY = dt.date(2026, 3, 12), dt.date(2026, 3, 13)


def test_a_killed_run_is_released_within_a_minute_without_the_daemon(tmp_path, processes):
    """No daemon at all (CLI-only use with DAGSTER_HOME set). A run waiting for the pool
    when the slot's holder is SIGKILLed gets the slot within seconds: its own watch
    (``calendar_pipeline/instance.py``) sees the holder's process gone, marks that run
    failed, frees the slot and says so in its log. Then a run killed the same way is
    released by the next ``calendar-pipeline run`` at its start, on stderr."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    fetching, release = threading.Event(), threading.Event()

    def slow_feed(request: Request) -> Reply:
        fetching.set()
        release.wait(60)
        return Reply(body=feed(), content_type="text/calendar")

    with (
        UpstreamServer() as upstream,
        dg.DagsterInstance.from_config(str(home)) as instance,
    ):
        upstream.route("/team.ics", slow_feed)
        universe = write_universe(tmp_path / "universe.csv", upstream)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CALENDAR_", "SLACK_"))}
        env.update(
            DAGSTER_HOME=str(home),
            CALENDAR_DATA_DIR=str(tmp_path / "data"),
            CALENDAR_UNIVERSE=str(universe),
            CALENDAR_START_DATE="2026-01-01",
        )
        procs = processes(env)

        def start_holder(name: str, day: dt.date):
            fetching.clear()
            release.clear()
            tags = f'{{"{PARTITION_NAME_TAG}": "{day.isoformat()}"}}'
            proc = procs.start(
                name, "-m", "dagster", "job", "execute", "-m", "calendar_pipeline.definitions",
                "-j", "daily_calendar_job", "--tags", tags,
            )  # fmt: skip
            assert fetching.wait(60), procs.output(proc)[-3000:]
            run = wait_for("the holder", lambda: run_of(instance, day))
            assert holders(instance) == [(run.run_id, "raw_snapshot")]
            return proc, run

        # 1. The holder fetches; a second run (dagster CLI) waits for the pool.
        killed, dead = start_holder("killed", KILLED_DAY)
        waiting = procs.start(
            "waiting", "-m", "dagster", "job", "execute", "-m", "calendar_pipeline.definitions",
            "-j", "daily_calendar_job", "--tags", f'{{"{PARTITION_NAME_TAG}": "{WAITING_DAY}"}}',
        )  # fmt: skip
        second = wait_for("the waiting run", lambda: run_of(instance, WAITING_DAY))
        blocked = f"Step blocked by limit for pool {POOL}"
        wait_for(blocked, lambda: blocked in messages(instance, second.run_id), timeout=60)

        # 2. SIGKILL the holder; nothing else runs (no daemon, no UI).
        os.killpg(killed.pid, signal.SIGKILL)
        assert killed.wait(timeout=10) == -signal.SIGKILL
        killed_at = time.monotonic()
        release.set()
        wait_for(
            "the waiting run to end",
            lambda: waiting.poll() is not None,
            timeout=90,
            diagnose=lambda: procs.output(waiting)[-3000:],
        )
        elapsed = time.monotonic() - killed_at
        assert waiting.returncode == 0, procs.output(waiting)[-3000:]
        print(f"slot of the killed run released and used {elapsed:.1f} s after the kill")
        assert elapsed < 60
        assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
        assert any(
            f"released dead run {dead.run_id}" in (m or "")
            for m in messages(instance, second.run_id)
        )
        assert instance.get_run_by_id(second.run_id).status == DagsterRunStatus.SUCCESS
        assert holders(instance) == []

        # 3. Killed again; the next calendar-pipeline run releases it at its start.
        killed, dead = start_holder("killed2", LATER_DAY)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=10)
        release.set()
        started = time.monotonic()
        cli = procs.start(
            "cli", "-m", "calendar_pipeline.cli", "run", "--date", NEXT_DAY.isoformat(),
            "--mode", "dry_run",
        )  # fmt: skip
        assert cli.wait(timeout=90) == 0, procs.output(cli)[-3000:]
        print(f"calendar-pipeline run after a kill: {time.monotonic() - started:.1f} s")
        line = f"calendar-pipeline: released dead run {dead.run_id} (daily_calendar_job,"
        assert line in procs.output(cli)
        assert f"freed its slot in pool {POOL}" in procs.output(cli)
        assert instance.get_run_by_id(dead.run_id).status == DagsterRunStatus.FAILURE
        assert holders(instance) == [] and pool(instance).pending_steps == []


def test_a_free_slot_no_waiting_step_was_given_is_handed_on(tmp_path):
    """The lost hand-over seen with runs started together on a SQLite instance: the pool
    is empty, a step waits unassigned. ``assign_lost_slots`` gives it the slot once it has
    waited longer than a watch interval, and never gives a slot the pool does not have."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots(POOL, 1)
        storage.add_pending_step(POOL, "run-a", "raw_snapshot")
        storage.add_pending_step(POOL, "run-b", "raw_snapshot")
        said: list[str] = []
        assert assign_lost_slots(instance, said.append) == []  # not waited long enough
        later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=WATCH_INTERVAL_SECONDS + 5)
        with time_machine.travel(later):
            assert assign_lost_slots(instance, said.append) == [POOL]
            assert assign_lost_slots(instance, said.append) == []  # one slot, given once
        assigned = [s.run_id for s in pool(instance).pending_steps if s.assigned_timestamp]
        assert assigned == ["run-a"]  # the oldest waiting step
        assert said == [f"pool {POOL} had a free slot no waiting step was given: handed it on"]
