"""Driving Dagster's daemons from a test: real run processes on an instance made from the
shipped ``dagster.yaml``, and the monitoring daemon's own code run in-process, pass by
pass, with the clock moved past its time limits instead of waiting for them.
(PYTEST_DONT_REWRITE: no asserts here.)"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pytest
import time_machine
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.daemon import MonitoringDaemon
from dagster._daemon.monitoring.concurrency import execute_concurrency_slots_iteration

POOL = "calendar_upstream"
T = TypeVar("T")


def wait_for(
    what: str,
    probe: Callable[[], T],
    timeout: float = 30.0,
    *,
    diagnose: Callable[[], str] | None = None,
) -> T:
    """Poll ``probe`` until it returns something truthy (real time, not the test clock);
    on time-out, the error carries ``diagnose()`` (e.g. the processes' logs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{diagnose()}" if diagnose else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(0.1)


class Processes:
    """Processes started by this test, each in its own session (so one ``killpg`` reaches
    everything it started); whatever is still alive at the end is killed."""

    def __init__(self, cwd: Path, env: dict[str, str]):
        self.cwd, self.env, self.started = cwd, env, []

    def start(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.cwd / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop_all)
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started.append((proc, log))
        return proc

    def output(self, proc: subprocess.Popen) -> str:
        (log,) = [log for p, log in self.started if p is proc]
        log.flush()
        return Path(log.name).read_text(errors="replace")

    def stop_all(self) -> None:
        for proc, log in self.started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            log.close()


@pytest.fixture
def processes(tmp_path):  # a fixture: import it into the test module
    procs = None

    def make(env: dict[str, str]) -> Processes:
        nonlocal procs
        procs = Processes(tmp_path, env)
        return procs

    yield make
    if procs is not None:
        procs.stop_all()


def workspace(instance: dg.DagsterInstance, tmp_path: Path) -> WorkspaceProcessContext:
    """The project's code location, loaded in this process, as the daemon would see it."""
    target = InProcessWorkspaceLoadTarget(
        InProcessCodeLocationOrigin(
            LoadableTargetOrigin(
                executable_path=sys.executable,
                module_name="calendar_pipeline.definitions",
                attribute="defs",
                working_directory=str(tmp_path),
            ),
            location_name="calendar_pipeline",
        )
    )
    return WorkspaceProcessContext(instance, target)


def pool(instance: dg.DagsterInstance):
    return instance.event_log_storage.get_concurrency_info(POOL)


def holders(instance: dg.DagsterInstance) -> list[tuple[str, str]]:
    return [(slot.run_id, slot.step_key) for slot in pool(instance).claimed_slots]


def run_of(instance: dg.DagsterInstance, day: dt.date) -> dg.DagsterRun | None:
    runs = instance.get_runs(
        RunsFilter(job_name="daily_calendar_job", tags={PARTITION_NAME_TAG: day.isoformat()})
    )
    return runs[0] if runs else None


def messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        entry.dagster_event.message if entry.dagster_event else entry.user_message
        for entry in instance.all_logs(run_id)
    ]


def end_dead_runs(instance: dg.DagsterInstance, context: WorkspaceProcessContext) -> list[str]:
    """What the monitoring daemon does about runs whose process is gone, without waiting:
    one pass once they are older than ``max_runtime_seconds`` (marked failed), then one
    slot pass ``free_slots_after_run_end_seconds`` after their end (slots released).
    Call it only when no run is alive. Returns the ids of the runs it ended."""
    started = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED]))
    if not started:
        return []
    max_runtime = instance.run_monitoring_max_runtime_seconds
    free_after = instance.run_monitoring_settings["free_slots_after_run_end_seconds"]
    oldest = min(record.start_time or record.create_timestamp.timestamp() for record in started)
    with time_machine.travel(dt.datetime.fromtimestamp(oldest + max_runtime + 5, dt.UTC)):
        list(MonitoringDaemon(interval_seconds=60).run_iteration(context))
    ended = [instance.get_run_record_by_id(record.dagster_run.run_id) for record in started]
    latest = max(record.end_time or time.time() for record in ended)
    with time_machine.travel(dt.datetime.fromtimestamp(latest + free_after + 5, dt.UTC)):
        list(execute_concurrency_slots_iteration(context, logging.getLogger("daemons")))
    return [record.dagster_run.run_id for record in ended]
