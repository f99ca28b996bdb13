"""The README's first command path: ``calendar-pipeline run`` in a fresh process, offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


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


# Every setting and option, fed a bad value: (variable or option, value, what the one
# line must say). Nothing may run: exit 2, one line on stderr, nothing on stdout.
BAD_INPUTS = [
    ("CALENDAR_THRESHOLDS", "30,abc", "CALENDAR_THRESHOLDS='30,abc': 'abc' is not a positive"),
    ("CALENDAR_THRESHOLDS", "90,30", "90 days is beyond CALENDAR_LOOKAHEAD_DAYS=60"),
    ("CALENDAR_LOOKAHEAD_DAYS", "abc", "CALENDAR_LOOKAHEAD_DAYS='abc': expected a positive"),
    ("CALENDAR_LOOKAHEAD_DAYS", "0", "CALENDAR_LOOKAHEAD_DAYS='0': expected a positive"),
    ("CALENDAR_TIMEZONE", "Mars/Base", "CALENDAR_TIMEZONE='Mars/Base': unknown time zone"),
    ("CALENDAR_START_DATE", "2026-02-30", "CALENDAR_START_DATE='2026-02-30': expected a date"),
    ("CALENDAR_SCHEDULE_HOUR", "25", "CALENDAR_SCHEDULE_HOUR='25': expected an hour 0-23"),
    ("CALENDAR_ALERT_MODE", "sned", "CALENDAR_ALERT_MODE='sned': expected one of send, dry_run"),
    ("CALENDAR_DEPLOYMENT", "cloud", "CALENDAR_DEPLOYMENT='cloud': expected one of auto"),
    ("CALENDAR_MAX_FAILED_SHARE", "-1", "CALENDAR_MAX_FAILED_SHARE='-1': expected a number from"),
    ("CALENDAR_MAX_MISSING_SHARE", "x", "CALENDAR_MAX_MISSING_SHARE='x': expected a number from"),
    ("CALENDAR_STALE_AFTER_DAYS", "-2", "CALENDAR_STALE_AFTER_DAYS='-2': expected a non"),
    ("CALENDAR_CANCEL_AFTER", "0", "CALENDAR_CANCEL_AFTER='0': expected a positive"),
    ("CALENDAR_MIN_VOLUME_RATIO", "2", "CALENDAR_MIN_VOLUME_RATIO='2': expected a number from 0"),
    ("CALENDAR_CLAIM_TIMEOUT", "-3", "CALENDAR_CLAIM_TIMEOUT='-3': expected a positive"),
    ("CALENDAR_LEDGER_RETENTION_DAYS", "1e3", "CALENDAR_LEDGER_RETENTION_DAYS='1e3': expected"),
    ("CALENDAR_RATE_LIMIT", "-1", "CALENDAR_RATE_LIMIT='-1': expected a positive number"),
    ("CALENDAR_MAX_CONCURRENCY", "0", "CALENDAR_MAX_CONCURRENCY='0': expected a positive"),
    ("CALENDAR_HTTP_MAX_ATTEMPTS", "many", "CALENDAR_HTTP_MAX_ATTEMPTS='many': expected a pos"),
    ("CALENDAR_HTTP_TIMEOUT", "inf", "CALENDAR_HTTP_TIMEOUT='inf': expected a positive number"),
    ("CALENDAR_MAX_RESPONSE_BYTES", "1.5", "CALENDAR_MAX_RESPONSE_BYTES='1.5': expected a pos"),
    ("CALENDAR_PROXY_FILE", "/nonexistent", "CALENDAR_PROXY_FILE='/nonexistent': cannot read"),
    ("CALENDAR_PROBE_BUDGET_SECONDS", "x", "CALENDAR_PROBE_BUDGET_SECONDS='x': expected a pos"),
    ("NAGER_BASE_URL", "ftp://x", "NAGER_BASE_URL='ftp://x': expected an http:// or https://"),
    ("FINNHUB_BASE_URL", "finnhub", "FINNHUB_BASE_URL='finnhub': expected an http:// or"),
    ("SLACK_API_URL", "slack", "SLACK_API_URL='slack': expected an http:// or https://"),
    ("SLACK_WEBHOOK_URL", "hooks-secret-1", "SLACK_WEBHOOK_URL='***': expected an https://"),
    ("CALENDAR_UNIVERSE", "/nonexistent.csv", "universe /nonexistent.csv: cannot read"),
    ("CALENDAR_DATA_DIR", "/proc/nonexistent", "CALENDAR_DATA_DIR='/proc/nonexistent': "),
    ("CALENDAR_DB_URL", "mysql://u:pw@h/db", "CALENDAR_DB_URL='mysql://u:***@h/db': unsupported"),
    ("CALENDAR_DB_URL", "postgresql+psycopg://u:pw@127.0.0.1:1/db", "cannot use the database"),
    ("--date", "2026-13-01", "argument --date: '2026-13-01' is not a date (YYYY-MM-DD)"),
    ("--date", "2099-01-01", "--date 2099-01-01 is outside the daily partitions 2025-01-01.."),
    ("--date", "2001-01-01", "--date 2001-01-01 is outside the daily partitions"),
    ("--mode", "sned", "argument --mode: invalid choice: 'sned'"),
    ("--bogus", "", "unrecognized arguments: --bogus"),
]


def cli_args(name: str, value: str) -> tuple[list[str], dict[str, str]]:
    if name.startswith("--"):
        return [a for a in (name, value) if a], {}
    return [], {name: value}


@pytest.mark.parametrize(("name", "value", "expected"), BAD_INPUTS, ids=lambda v: str(v)[:30])
def test_a_bad_setting_or_option_is_one_line_and_exit_2(
    tmp_path, monkeypatch, capsys, name, value, expected
):
    """In-process (``main()``, the console script's function) for speed; the terminal
    test below runs a few of the same cases as real processes."""
    from calendar_pipeline.cli import main

    args, env = cli_args(name, value)
    for variable in list(os.environ):
        if variable.startswith(("CALENDAR_", "SLACK_", "DAGSTER_HOME")):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("CALENDAR_DATA_DIR", str(tmp_path / "data"))
    for variable, text in env.items():
        monkeypatch.setenv(variable, text)
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["run", *args])
    except SystemExit as exit_:  # argparse's own exit
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2, out[-2000:] + err[-2000:]
    assert out == ""
    assert err.count("\n") == 1 and expected in err, err
    for secret in ("pw", "hooks-secret-1"):
        assert secret not in err
    assert not (tmp_path / "data" / "snapshots").exists()


@pytest.mark.parametrize("case", [0, 1, 27, 29, 30, 33], ids=lambda n: BAD_INPUTS[n][0])
def test_on_the_terminal_a_bad_input_is_one_line_and_exit_2(tmp_path, case):
    name, value, expected = BAD_INPUTS[case]
    args, env = cli_args(name, value)
    done = run_cli(tmp_path, *args, **env)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
    assert "pw@" not in done.stderr
    assert not (tmp_path / "data" / "snapshots").exists()


def test_every_setting_has_a_bad_input_case():
    from calendar_pipeline.defs.resources import RESOURCES

    free_text = {"SLACK_BOT_TOKEN", "FINNHUB_TOKEN", "SLACK_CHANNEL", "SLACK_ALERTS_CHANNEL",
                 "CALENDAR_WEBSERVER_URL"}  # fmt: skip
    covered = {name for name, _, _ in BAD_INPUTS}
    every = {name for _, names, _ in RESOURCES.values() for name in names.values()}
    every |= {"CALENDAR_TIMEZONE", "CALENDAR_START_DATE", "CALENDAR_SCHEDULE_HOUR"}
    assert every - free_text - covered == set()


def test_dotenv_in_the_working_directory_is_read_and_named(tmp_path, small_universe):
    (tmp_path / ".env").write_text(
        f"CALENDAR_UNIVERSE={small_universe}\nSLACK_CHANNEL='#from-dotenv'\n", encoding="utf-8"
    )
    done = run_cli(tmp_path, "--date", "2025-12-20", "--mode", "dry_run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.splitlines()[0] == (
        f"calendar-pipeline: read {tmp_path / '.env'}: CALENDAR_UNIVERSE, SLACK_CHANNEL"
    )
    assert "=== #from-dotenv" in done.stdout
    snapshot = next((tmp_path / "data" / "snapshots" / "2025-12-20").glob("snapshot_*.json"))
    expected = {line.split(",")[0] for line in small_universe.read_text().splitlines()[1:]}
    assert {e["entity_id"] for e in json.loads(snapshot.read_text())["entities"]} == expected
    # a bad value in .env is refused like one in the environment, naming it
    (tmp_path / ".env").write_text("CALENDAR_THRESHOLDS=30,abc\n", encoding="utf-8")
    done = run_cli(tmp_path)
    assert done.returncode == 2
    assert "CALENDAR_THRESHOLDS='30,abc'" in done.stderr.splitlines()[1]


def test_no_warning_or_traceback_in_a_good_run(tmp_path):
    done = run_cli(tmp_path, "--date", "2025-12-20", "--mode", "dry_run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_the_slack_token_never_reaches_the_output(tmp_path):
    secret = "xoxb-do-not-print-me-42"
    done = run_cli(tmp_path, "--mode", "dry_run", SLACK_BOT_TOKEN=secret)
    assert done.returncode == 0, done.stderr[-3000:]
    assert secret not in done.stdout + done.stderr
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file() and path.suffix in {".json", ".jsonl", ".txt"}:
            assert secret not in path.read_text(errors="replace")
