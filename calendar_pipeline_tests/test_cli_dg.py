"""The ``dg`` CLI (dagster-dg-cli) on this project, through ``[tool.dg]`` in pyproject.toml:
the README's ``dg check defs``, ``dg list defs`` and ``dg launch`` lines, taken from the
README itself, work from the repository root."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import shutil
import subprocess
from pathlib import Path

from calendar_pipeline.alerts import store
from calendar_pipeline_tests.dagster_dev import (
    REPO_ROOT,
    console_script,
    copy_of_repository,
    scrubbed_env,
)
from calendar_pipeline_tests.markdown_blocks import bash_blocks


def readme_dg_lines() -> dict[str, list[str]]:
    """The README's ``dg`` command lines (comments dropped), by subcommand."""
    lines = {}
    for block in bash_blocks("README.md"):
        for line in block.text.splitlines():
            if line.startswith("dg "):
                words = shlex.split(line, comments=True)
                lines[" ".join(words[1:3])] = words[1:]
    assert set(lines) == {"check defs", "list defs", "launch --assets"}, lines
    return lines


README_DG = readme_dg_lines()
DAY = README_DG["launch --assets"][README_DG["launch --assets"].index("--partition") + 1]


def dg(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    if not home.exists():
        home.mkdir()
        shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    env = scrubbed_env(home, tmp_path / "data")
    env["COLUMNS"] = "250"  # dg's tables cut names to the terminal's width
    return subprocess.run(
        [console_script("dg"), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_dg_check_defs_and_list_defs(tmp_path):
    checked = dg(tmp_path, *README_DG["check defs"])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All definitions loaded successfully" in checked.stdout + checked.stderr

    listed = dg(tmp_path, *README_DG["list defs"])
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for name in (
        "raw_snapshot",
        "snapshot_index",
        "due_alerts",
        "daily_calendar_job",
        "slack_alert_job",
        "daily_calendar_schedule",
        "slack_alert_sensor",
        "slack_run_failure_sensor",
        "raw_snapshot_freshness_sensor",
        "raw_snapshot_freshness_checks_sensor",
        "upstream_availability_sensor",
    ):
        assert name in listed.stdout, name
    assert "mismatch" not in listed.stdout + listed.stderr  # [tool.dg.cli] suppresses it


def test_dg_launch_materializes_a_partition(tmp_path):
    assert README_DG["launch --assets"][2] == "raw_snapshot,snapshot_index,due_alerts"
    launched = dg(tmp_path, *README_DG["launch --assets"])
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    data = tmp_path / "data"
    assert list((data / "snapshots" / DAY).glob("snapshot_*.json"))
    engine = store.make_engine(store.default_db_url(data))

    assert store.read_due_alerts(engine, dt.date.fromisoformat(DAY))
    engine.dispose()


def test_a_scaffolded_asset_is_loaded_with_no_other_edit(tmp_path):
    """`dg scaffold defs dagster.asset x.py` in a copy of the repository, then `dg list defs`
    lists the new asset beside the others: definitions.py finds what `defs/` holds."""
    copy = copy_of_repository(tmp_path / "repo")
    env = scrubbed_env(tmp_path / "home", tmp_path / "data")
    (tmp_path / "home").mkdir()

    def dg_in_copy(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [console_script("dg"), *args],
            cwd=copy, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    scaffolded = dg_in_copy("scaffold", "defs", "dagster.asset", "newcomer_asset.py")
    assert scaffolded.returncode == 0, scaffolded.stdout + scaffolded.stderr
    assert (copy / "calendar_pipeline" / "defs" / "newcomer_asset.py").is_file()
    listed = dg_in_copy("list", "defs", "--json")
    assert listed.returncode == 0, listed.stdout[-2000:] + listed.stderr[-2000:]
    assets = {a["asset_key"] for a in json.loads(listed.stdout)["assets"]}
    assert assets == {"newcomer_asset", "raw_snapshot", "snapshot_index", "due_alerts",
                      "calendar_feed"}, assets  # fmt: skip
    assert not (REPO_ROOT / "calendar_pipeline" / "defs" / "newcomer_asset.py").exists()
