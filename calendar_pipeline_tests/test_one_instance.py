"""README, "One instance for everything": in a copy of the repository with
`DAGSTER_HOME="$PWD"`, runs started by `calendar-pipeline` and by `dg launch` show in the UI
that `dg dev` serves there, with no warning from `dg dev`, and every file the instance
writes is git-ignored."""

from __future__ import annotations

import re
import subprocess

from calendar_pipeline_tests.dagster_dev import (
    REPO_ROOT,
    DagsterDev,
    console_script,
    copy_of_repository,
    graphql,
    scrubbed_env,
)

DAY = "2026-11-20"
RUNS = "{ runsOrError { ... on Runs { results { runId jobName status tags { key value } } } } }"
# What a fresh instance's daemon says once, by design, and nothing to act on.
BENIGN = re.compile(r"EventLogConsumerDaemon - WARNING - No cursor for event type")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # its log's colours


def test_cli_dg_and_the_ui_share_the_repositorys_instance(tmp_path):
    repo = copy_of_repository(tmp_path / "repo")
    before = {p.name for p in repo.iterdir()}
    env = scrubbed_env(repo, repo / "data")  # DAGSTER_HOME="$PWD", as the README says

    def run(*cmd: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [console_script(cmd[0]), *cmd[1:]],
            cwd=repo, env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, f"{cmd}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done

    run("calendar-pipeline", "run", "--date", DAY)  # the daily run, then the Slack run
    run("dg", "launch", "--assets", "raw_snapshot", "--partition", DAY)

    dev = DagsterDev(
        dagster_home=repo, data_dir=repo / "data", cwd=repo, log_path=tmp_path / "dg_dev.log",
        env=env, command="dg dev",
    )  # fmt: skip
    with dev:
        found = graphql(dev.base_url, RUNS)["runsOrError"]["results"]
        # what it said while serving (stopping it makes its code server complain)
        log = ANSI.sub("", dev.log_path.read_text(encoding="utf-8", errors="replace"))
    # the three runs of the terminal (the sensors, running by default, may add their own)
    done = sorted(r["jobName"] for r in found if r["status"] == "SUCCESS")
    assert done == ["__ASSET_JOB", "daily_calendar_job", "slack_alert_job"], found

    warned = [line for line in log.splitlines() if re.search(r"WARNING|Warning", line)]
    warnings = [line for line in warned if not BENIGN.search(line)]
    assert not warnings, warnings

    # (a directory as `name/`: that is how git matches the ignore rules of directories)
    written = sorted(p.name + "/" * p.is_dir() for p in repo.iterdir() if p.name not in before)
    assert "storage/" in written, written  # the instance lives in the repository
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", *written],
        cwd=REPO_ROOT, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    assert sorted(ignored) == written, f"not git-ignored: {set(written) - set(ignored)}"
