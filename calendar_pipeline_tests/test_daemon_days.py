"""Days down, then the sensor daemon back: issue 20's scenario through the daemon's own code.

The sensor daemon's iteration (``execute_sensor_iteration``: default-on sensors, cursors
stored in the instance, run keys, runs submitted through the shipped ``dagster.yaml``'s
queue) runs in-process, pass by pass, with the clock moved from one morning to the next,
over a workspace that loads this project's definitions. Runs execute here, synchronously.

- D0, 08:30: the daemon runs; today's run succeeds, its digest is posted once.
- D1: the daemon is down; a run of D1 succeeds (started by hand), nothing reaches Slack.
- D2, D3: nothing runs at all.
- D4, 09:00: a history backfill of D1..D3 (one run), then the daemon is back:
  the Slack runs it starts post no digest of any day before D4 (D1 is past the grace
  window, the backfill's days are history), and the staleness notice says that D4's
  partition is missing, once.
- D4, later: today's run; its digest is posted with everything due, once.
"""

from __future__ import annotations

import datetime as dt
import logging

import time_machine
from dagster._core.storage.dagster_run import DagsterRunStatus
from dagster._daemon.sensor import execute_sensor_iteration

from calendar_pipeline_tests.flows import (
    _partition_of,
    at,
    duplicates,
    never_reached_slack,
    range_tags,
    serve_feed,
    write_universe,
)
from calendar_pipeline_tests.test_run_retries import (  # noqa: F401 - a fixture
    Deployment,
    deployment_for,
)
from calendar_pipeline_tests.upstream_server import UpstreamServer

D0 = dt.date(2026, 3, 10)
DAY = dt.timedelta(days=1)
D1, D2, D3, D4 = (D0 + n * DAY for n in range(1, 5))


def daemon_passes(deployment: Deployment, clock, passes: int = 6) -> None:
    """What the sensor daemon does over ``passes`` minutes: one iteration a minute (every
    sensor here ticks at most once a minute or every 30 s)."""
    for _ in range(passes):
        list(
            execute_sensor_iteration(
                deployment.context,
                logging.getLogger("sensor_daemon"),
                threadpool_executor=None,
                submit_threadpool_executor=None,
            )
        )
        clock.shift(dt.timedelta(seconds=61))


def stale_notices(slack) -> list[str]:
    return [
        m.params.get("text") or ""
        for m in slack.messages
        if "is stale" in (m.params.get("text") or "")
    ]


def digest_days(slack) -> set[dt.date]:
    """The partitions of the digests Slack received (staleness notices left out)."""
    return {
        _partition_of(m) for m in slack.messages if "is stale" not in (m.params.get("text") or "")
    }


def test_days_down_then_a_history_backfill_post_no_stale_digest_and_one_notice(
    tmp_path,
    deployment_for,  # noqa: F811 - the fixture imported above
    slack_server,
):
    with (
        UpstreamServer() as upstream,
        time_machine.travel(at(D0, 8, 30), tick=True) as clock,
    ):
        serve_feed(upstream)
        universe = write_universe(tmp_path / "u.csv", upstream)
        deployment = deployment_for(universe, slack_server.url)
        daemon_passes(deployment, clock, 1)  # the daemon starts: the sensors begin watching
        today = deployment.launch("daily_calendar_job", {"dagster/partition": D0.isoformat()})
        assert today.status == DagsterRunStatus.SUCCESS
        daemon_passes(deployment, clock, 2)
        assert digest_days(slack_server) == {D0}
        assert never_reached_slack(slack_server, D0) == set()
        posts_on_d0 = len(slack_server.messages)

        clock.move_to(at(D1, 6))  # the daemon is down: a run by hand, no Slack run
        late = deployment.launch("daily_calendar_job", {"dagster/partition": D1.isoformat()})
        assert late.status == DagsterRunStatus.SUCCESS
        assert len(slack_server.messages) == posts_on_d0

        clock.move_to(at(D4, 9))  # nothing ran on D2 and D3; a backfill of history
        backfill = deployment.launch("daily_calendar_job", range_tags(D1, D3))
        assert backfill.status == DagsterRunStatus.SUCCESS
        daemon_passes(deployment, clock, 6)  # the daemon is back

        slack_runs = {
            r.tags["calendar/due_alerts_run"]: r
            for r in deployment.instance.get_runs()
            if r.job_name == "slack_alert_job"
        }
        assert set(slack_runs) == {today.run_id, late.run_id, backfill.run_id}
        assert all(r.status == DagsterRunStatus.SUCCESS for r in slack_runs.values())
        said = [
            e.message or "" for e in deployment.instance.all_logs(slack_runs[late.run_id].run_id)
        ]
        assert any("its digest is not posted" in line for line in said)
        # no digest of a day before D4: D1's is past the grace window, D1..D3 are history
        assert digest_days(slack_server) == {D0}
        (notice,) = stale_notices(slack_server)
        assert f"partition {D4} missing since {D4} 08:00 UTC" in notice
        assert str(D3) in notice  # the newest partition: the backfill's last day

        daemon_passes(deployment, clock, 3)  # still stale: no second notice
        assert len(stale_notices(slack_server)) == 1

        fresh = deployment.launch("daily_calendar_job", {"dagster/partition": D4.isoformat()})
        assert fresh.status == DagsterRunStatus.SUCCESS
        daemon_passes(deployment, clock, 3)
    assert digest_days(slack_server) == {D0, D4}
    assert never_reached_slack(slack_server, D4) == set()
    assert duplicates(slack_server) == {}
    assert len(stale_notices(slack_server)) == 1
