"""The README's first command path: ``calendar-pipeline run`` in a fresh process, offline."""

import os
import subprocess
import sys
from pathlib import Path


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CALENDAR_", "SLACK_"))}
    environ.pop("DAGSTER_HOME", None)
    environ.update({"CALENDAR_DATA_DIR": str(tmp_path / "data"), **env})
    return subprocess.run(
        [sys.executable, "-m", "calendar_pipeline.cli", "run", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_run_today_prints_the_digest_it_would_post(tmp_path):
    done = run_cli(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "check raw_snapshot:has_events passed" in out
    assert "materialized due_alerts" in out
    assert "mode=dry_run" in out
    assert "=== #calendar-alerts" in out  # the digest itself
    outbox = list((tmp_path / "data" / "outbox").glob("*/digest.txt"))
    assert len(outbox) == 1 and outbox[0].read_text().strip() in out
    assert not list((tmp_path / "data").glob("**/*.tmp"))


def test_run_with_a_date_and_channel(tmp_path):
    done = run_cli(tmp_path, "--date", "2025-12-20", "--mode", "dry_run", SLACK_CHANNEL="#ops")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "=== #ops" in done.stdout and "Christmas Day" in done.stdout


def test_a_past_date_is_history_and_says_so(tmp_path):
    done = run_cli(tmp_path, "--date", "2025-12-20")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "slack_alert_job for partition 2025-12-20 (history" in done.stdout
    assert "mode=history" in done.stdout and "history_not_posted=" in done.stdout
    assert "===" not in done.stdout  # no digest: nothing would be posted


def test_bad_dates_are_refused_by_name_without_a_traceback(tmp_path):
    for date, expected in (
        ("2026-13-01", "'2026-13-01' is not a date (YYYY-MM-DD)"),
        ("2099-01-01", "--date 2099-01-01 is outside the daily partitions"),
        ("2001-01-01", "--date 2001-01-01 is outside the daily partitions"),
    ):
        done = run_cli(tmp_path, "--date", date)
        assert done.returncode == 2 and expected in done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "snapshots").exists()


def test_bad_settings_fail_with_the_setting_named(tmp_path):
    done = run_cli(tmp_path, CALENDAR_TIMEZONE="Mars/Base")
    assert done.returncode == 2
    assert "CALENDAR_TIMEZONE='Mars/Base'" in done.stderr
    done = run_cli(tmp_path, CALENDAR_THRESHOLDS="30,x")
    assert done.returncode == 1
    assert "CALENDAR_THRESHOLDS='30,x'" in done.stdout + done.stderr
    assert not (tmp_path / "data" / "snapshots").exists()


def test_the_slack_token_never_reaches_the_output(tmp_path):
    secret = "xoxb-do-not-print-me-42"
    done = run_cli(tmp_path, "--mode", "dry_run", SLACK_BOT_TOKEN=secret)
    assert done.returncode == 0, done.stderr[-3000:]
    assert secret not in done.stdout + done.stderr
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file() and path.suffix in {".json", ".jsonl", ".txt"}:
            assert secret not in path.read_text(errors="replace")
