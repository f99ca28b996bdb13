"""Run retries with the shipped dagster.yaml: a crashed run (its process died, so Dagster
marked it failed without a step failure) is retried once, and its retry still posts its
day after midnight; a run that failed in a step (a failed blocking check, a bad Slack
token) is never retried.

The retry decision is the run-retry daemon's own code
(``consume_new_runs_for_automatic_reexecution``), run in-process over a workspace that
loads this project's definitions, on an instance configured by ``dagster.yaml``."""

from __future__ import annotations

import datetime as dt
import logging
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import time_machine
import yaml
from dagster._core.execution.plan.resume_retry import ReexecutionStrategy
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.auto_run_reexecution.auto_run_reexecution import (
    consume_new_runs_for_automatic_reexecution,
)

from calendar_pipeline_tests.flows import (
    duplicates,
    never_reached_slack,
    posted,
    run_requests,
    serve_feed,
    slack_tick,
    switch_on_slack_sensor,
    write_universe,
)
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN
from calendar_pipeline_tests.upstream_server import UpstreamServer

ROOT = Path(__file__).resolve().parents[1]
D = dt.date(2026, 3, 10)
LOCATION = "calendar_pipeline"


def shipped_instance_config() -> dict:
    """dagster.yaml as shipped, plus a launcher that runs each run here, synchronously
    (the daemon's launcher would start a process; what is tested is the retry rule)."""
    config = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert config["run_retries"]["retry_on_asset_or_op_failure"] is False
    return {
        **config,
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "DefaultRunCoordinator",
        },
        "run_launcher": {
            "module": "dagster._core.launcher.sync_in_memory_run_launcher",
            "class": "SyncInMemoryRunLauncher",
        },
    }


def write_defs_file(tmp_path: Path, universe: Path, slack_url: str, token: str) -> Path:
    path = tmp_path / "retry_defs.py"
    path.write_text(
        textwrap.dedent(
            f"""
            from calendar_pipeline.definitions import build_defs
            from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings

            defs = build_defs({{
                "calendar": CalendarSettings(
                    data_dir={str(tmp_path / "data")!r}, universe={str(universe)!r}
                ),
                "slack": SlackSettings(token={token!r}, api_url={slack_url!r}),
            }})
            """
        )
    )
    return path


class Deployment:
    """An instance from dagster.yaml and a workspace with the project's definitions."""

    def __init__(self, instance, context, defs_file: Path):
        self.instance, self.context = instance, context
        self.request = context.create_request_context()
        self.repo = self.request.get_code_location(LOCATION).get_repository("__repository__")
        sys.path.insert(0, str(defs_file.parent))
        self.defs = __import__(defs_file.stem).defs

    def launch(self, job_name: str, tags: dict[str, str]) -> dg.DagsterRun:
        remote = self.repo.get_full_job(job_name)
        run = self.instance.create_run_for_job(
            self.defs.resolve_job_def(job_name),
            tags=tags,
            remote_job_origin=remote.get_remote_origin(),
            job_code_origin=remote.get_python_origin(),
        )
        self.instance.launch_run(run.run_id, self.request)
        return self.instance.get_run_by_id(run.run_id)

    def create(self, job_name: str, tags: dict[str, str]) -> dg.DagsterRun:
        remote = self.repo.get_full_job(job_name)
        return self.instance.create_run_for_job(
            self.defs.resolve_job_def(job_name),
            tags=tags,
            remote_job_origin=remote.get_remote_origin(),
            job_code_origin=remote.get_python_origin(),
        )

    def retry_daemon_pass(self) -> None:
        failed = self.instance.get_run_records(
            filters=RunsFilter(statuses=[DagsterRunStatus.FAILURE])
        )
        list(
            consume_new_runs_for_automatic_reexecution(
                self.context, failed, logging.getLogger("run_retries")
            )
        )

    def reexecute_from_failure(self, run: dg.DagsterRun) -> dg.DagsterRun:
        """What "Re-execute from failure" in the UI (and the retry daemon) launches."""
        location = self.request.get_code_location(LOCATION)
        retry = self.instance.create_reexecuted_run(
            parent_run=self.instance.get_run_by_id(run.run_id),
            request_context=self.request,
            code_location=location,
            remote_job=self.repo.get_full_job(run.job_name),
            strategy=ReexecutionStrategy.FROM_FAILURE,
            use_parent_run_tags=True,
        )
        self.instance.launch_run(retry.run_id, self.request)
        return self.instance.get_run_by_id(retry.run_id)

    def retries_of(self, run: dg.DagsterRun) -> list[dg.DagsterRun]:
        return [r for r in self.instance.get_runs() if r.parent_run_id == run.run_id]


@pytest.fixture
def deployment_for(tmp_path):
    stack = []

    def make(universe: Path, slack_url: str, token: str = DEFAULT_TOKEN) -> Deployment:
        defs_file = write_defs_file(tmp_path, universe, slack_url, token)
        instance_cm = dg.instance_for_test(overrides=shipped_instance_config())
        instance = instance_cm.__enter__()
        target = InProcessWorkspaceLoadTarget(
            InProcessCodeLocationOrigin(
                LoadableTargetOrigin(
                    executable_path=sys.executable,
                    python_file=str(defs_file),
                    attribute="defs",
                    working_directory=str(tmp_path),
                ),
                location_name=LOCATION,
            )
        )
        context = WorkspaceProcessContext(instance, target)
        context.__enter__()
        stack.append((instance_cm, context))
        return Deployment(instance, context, defs_file)

    yield make
    for instance_cm, context in reversed(stack):
        context.__exit__(None, None, None)
        instance_cm.__exit__(None, None, None)
    sys.path[:] = [p for p in sys.path if p != str(tmp_path)]
    sys.modules.pop("retry_defs", None)


def test_failed_blocking_check_and_bad_token_are_not_retried(
    tmp_path, deployment_for, slack_server
):
    with (
        UpstreamServer() as upstream,
        time_machine.travel(dt.datetime(2026, 3, 10, 6, tzinfo=dt.UTC), tick=True),
    ):
        serve_feed(upstream)
        # its only entity's feed answers 404, nothing earlier to carry: has_events fails
        universe = write_universe(tmp_path / "u.csv", upstream, broken=True, healthy=False)
        deployment = deployment_for(universe, slack_server.url, token="xoxb-wrong-token")
        checked = deployment.launch("daily_calendar_job", {"dagster/partition": D.isoformat()})
        assert checked.status == DagsterRunStatus.FAILURE
        assert checked.tags["dagster/failure_reason"] == "STEP_FAILURE"

        write_universe(universe, upstream)
        assert (
            deployment.launch("daily_calendar_job", {"dagster/partition": D.isoformat()}).status
            == DagsterRunStatus.SUCCESS
        )
        bad_token = deployment.launch("slack_alert_job", {"dagster/partition": D.isoformat()})
        assert bad_token.status == DagsterRunStatus.FAILURE

        deployment.retry_daemon_pass()
        for run in (checked, bad_token):
            assert deployment.retries_of(run) == []
            tags = deployment.instance.get_run_by_id(run.run_id).tags
            assert tags["dagster/will_retry"] == "false"
    snapshots = list((tmp_path / "data" / "snapshots" / D.isoformat()).glob("snapshot_*.json"))
    assert len(snapshots) == 2  # the failed run and the good one: no third fetch
    assert [c.method for c in slack_server.calls] == ["chat.postMessage"]  # tried once


def test_a_crashed_slack_run_is_retried_once_and_still_posts_its_day_after_midnight(
    tmp_path, deployment_for, slack_server
):
    with (
        UpstreamServer() as upstream,
        time_machine.travel(dt.datetime(2026, 3, 10, 23, 40, tzinfo=dt.UTC), tick=True) as clock,
    ):
        serve_feed(upstream)
        universe = write_universe(tmp_path / "u.csv", upstream)
        deployment = deployment_for(universe, slack_server.url)
        daily = deployment.launch("daily_calendar_job", {"dagster/partition": D.isoformat()})
        assert daily.status == DagsterRunStatus.SUCCESS
        (request,) = slack_tick(deployment.defs, deployment.instance).run_requests
        crashed = deployment.create(
            "slack_alert_job", {**request.tags, "dagster/partition": D.isoformat()}
        )
        deployment.instance.report_run_failed(crashed)  # its process was killed

        clock.move_to(dt.datetime(2026, 3, 11, 0, 30, tzinfo=dt.UTC))  # the daemon, later
        deployment.retry_daemon_pass()
        (retry,) = deployment.retries_of(crashed)
        retry = deployment.instance.get_run_by_id(retry.run_id)
        assert retry.status == DagsterRunStatus.SUCCESS
        assert retry.tags["calendar/reference_day"] == D.isoformat()  # copied: still daily
        deployment.retry_daemon_pass()  # max_retries: 1, and it succeeded: nothing more
        assert len(deployment.retries_of(crashed)) == 1
    assert never_reached_slack(slack_server, D) == set()
    assert duplicates(slack_server) == {}


def test_a_run_re_executed_from_failure_after_due_alerts_still_reaches_slack(
    tmp_path, deployment_for, slack_server
):
    """The daily run fails in calendar_feed, after due_alerts (the feeds directory cannot
    be written); the cause fixed, it is re-executed from failure, which runs calendar_feed
    alone. Its success stands for the whole run: the Slack run covers the due_alerts its
    first attempt wrote, and posts them once."""
    with (
        UpstreamServer() as upstream,
        time_machine.travel(dt.datetime(2026, 3, 10, 6, tzinfo=dt.UTC), tick=True),
    ):
        serve_feed(upstream)
        universe = write_universe(tmp_path / "u.csv", upstream)
        deployment = deployment_for(universe, slack_server.url)
        watching = switch_on_slack_sensor(deployment.defs, deployment.instance)
        blocker = tmp_path / "data" / "feeds"
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("not a directory")
        first = deployment.launch("daily_calendar_job", {"dagster/partition": D.isoformat()})
        assert first.status == DagsterRunStatus.FAILURE
        assert slack_tick(deployment.defs, deployment.instance, watching).run_requests == []

        blocker.unlink()
        retry = deployment.reexecute_from_failure(first)
        assert retry.status == DagsterRunStatus.SUCCESS
        assert retry.parent_run_id == first.run_id
        (request,) = slack_tick(deployment.defs, deployment.instance, watching).run_requests
        assert request.partition_key == D.isoformat()
        results = run_requests(deployment.defs, deployment.instance, [request])
        assert all(result.success for result in results)
    assert never_reached_slack(slack_server, D) == set() and posted(slack_server)
    assert duplicates(slack_server) == {}
