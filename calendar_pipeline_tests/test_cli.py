"""The README's first command path: ``calendar-pipeline run`` in a fresh process, offline."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from calendar_pipeline_tests.flows import cli_process
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``calendar-pipeline run`` in a fresh process (flows.cli_process)."""
    return cli_process(tmp_path, "run", *args, **env)


def test_run_today_prints_a_short_summary(tmp_path):
    """The README's first command: about a dozen lines (at most 30), the alerts per channel
    and threshold, the digest's first lines, where the whole digest is, one closing line."""
    done = run_cli(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines() + done.stderr.splitlines()
    assert len(lines) <= 30, done.stdout + done.stderr
    assert done.stderr == ""  # Dagster's INFO log only with --verbose
    out = done.stdout.splitlines()
    outbox = list((tmp_path / "data" / "outbox").glob("*/digest.txt"))
    assert len(outbox) == 1
    digest = outbox[0].read_text()
    total = sum(int(n) for n in re.findall(r"^=== #calendar-alerts \((\d+) alerts?\) ===$",
                                           digest, re.M))  # fmt: skip
    assert total > 100  # a normal day of the embedded universe
    assert any(
        line.startswith(f"#calendar-alerts: {total} alerts (today or tomorrow ") for line in out
    ), done.stdout
    bullets = [line for line in digest.splitlines() if line.startswith("• ")]
    assert [line.strip() for line in out if line.startswith("    • ")] == bullets[:3]
    assert f"    … {len(bullets) - 3} more" in out
    assert f"Full digest: {outbox[0]};" in done.stdout
    assert "dry run (no Slack token" in done.stdout
    assert out[-1] == (
        f"Done: {outbox[0].parent.name}, dry run, {total} alerts for 1 channel, nothing "
        "posted; no warnings."
    )
    assert not list((tmp_path / "data").glob("**/*.tmp"))
    # a first run: the two checks that compare with earlier days had nothing to judge
    assert out[2].endswith(
        "checks passed (volume_within_history, index_history_consistent: nothing to judge yet)"
    ), out[2]


def test_full_prints_the_whole_digest_and_json_the_result(tmp_path, small_universe):
    universe = {"CALENDAR_UNIVERSE": str(small_universe)}
    full = run_cli(tmp_path, "--date", "2025-12-20", "--mode", "dry_run", "--full", **universe)
    assert full.returncode == 0, full.stderr[-3000:]
    digest = (tmp_path / "data" / "outbox" / "2025-12-20" / "digest.txt").read_text()
    assert digest.strip() in full.stdout
    assert "mode=dry_run" in full.stdout  # the Slack run's metadata, as before
    assert full.stdout.splitlines()[-1].startswith("Done: 2025-12-20, dry run")

    done = run_cli(tmp_path, "--date", "2025-12-20", "--mode", "dry_run", "--json", **universe)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # stdout is the JSON and nothing else
    assert result["ok"] is True
    assert (result["partition"], result["intent"], result["mode"]) == (
        "2025-12-20",
        "history",
        "dry_run",
    )
    assert result["forced_mode"] == "dry_run"
    assert {c["name"]: c["status"] for c in result["checks"]}["has_events"] == "passed"
    assert result["digest"].strip() == digest.strip()
    channels = {c["channel"]: c for c in result["channels"]}
    assert set(channels) == {"#us-ops", "#markets", "#calendar-alerts"}
    for channel, counts in channels.items():
        header = rf"^=== {re.escape(channel)} \((\d+) alerts?\) ===$"
        assert counts["alerts"] == sum(int(n) for n in re.findall(header, digest, re.M))
        assert sum(counts["by_section"].values()) == len(counts["alert_lines"])
    assert result["alerts"] == sum(c["alerts"] for c in channels.values())
    assert "Christmas Day" in "".join(channels["#us-ops"]["alert_lines"])
    assert result["delivery"]["due"] >= result["alerts"] > 0
    assert result["assets"]["raw_snapshot"]["dagster/row_count"] > 0
    assert result["outbox"].endswith("2025-12-20/digest.txt")
    assert "daily_calendar_job for partition 2025-12-20" in done.stderr  # progress


def test_verbose_shows_dagsters_log(tmp_path, small_universe):
    args = ("--date", "2025-12-20", "--mode", "dry_run")
    quiet = run_cli(tmp_path, *args, CALENDAR_UNIVERSE=str(small_universe))
    loud = run_cli(tmp_path, *args, "--verbose", CALENDAR_UNIVERSE=str(small_universe))
    assert quiet.returncode == loud.returncode == 0, loud.stderr[-3000:]
    assert quiet.stderr == "" and "fetched 4/4 entities" in loud.stderr
    assert loud.stdout.splitlines()[-1] == quiet.stdout.splitlines()[-1]


def test_run_with_a_date_and_channel(tmp_path):
    done = run_cli(tmp_path, "--date", "2025-12-20", "--mode", "dry_run", SLACK_CHANNEL="#ops")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "\n#ops: " in done.stdout
    digest = (tmp_path / "data" / "outbox" / "2025-12-20" / "digest.txt").read_text()
    assert "=== #ops" in digest and "Christmas Day" in digest


def test_a_past_date_is_history_and_says_so(tmp_path):
    done = run_cli(tmp_path, "--date", "2025-12-20")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "slack_alert_job for partition 2025-12-20 (history: a past day, posts nothing" in (
        done.stdout
    )
    assert "Slack: history, nothing posted or recorded" in done.stdout
    assert done.stdout.splitlines()[-1] == "Done: 2025-12-20, history, nothing posted; no warnings."
    assert "===" not in done.stdout and "Full digest" not in done.stdout  # nothing rendered


def test_a_past_day_forced_to_send_says_it_posts_and_posts(tmp_path, small_universe, slack_server):
    """Issue 23: the header of a past day run with `--mode send` said it posted nothing."""
    done = run_cli(
        tmp_path,
        "--date", "2025-12-20", "--mode", "send",
        CALENDAR_UNIVERSE=str(small_universe),
        SLACK_BOT_TOKEN=DEFAULT_TOKEN,
        SLACK_API_URL=slack_server.url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    header = next(line for line in done.stdout.splitlines() if "slack_alert_job" in line)
    assert header == (
        "calendar_pipeline: slack_alert_job for partition 2025-12-20 "
        "(history, --mode send: posts the day's alerts)"
    )
    assert "posts nothing" not in done.stdout
    posted = slack_server.messages
    assert posted and {m.channel for m in posted} == {"#us-ops", "#markets", "#calendar-alerts"}
    sent = sum(len(m.text.splitlines()) for m in posted)
    assert sent > 0
    summary = done.stdout.splitlines()
    assert any(line.startswith("Slack: sent (--mode send) ") for line in summary), done.stdout
    assert summary[-1].startswith("Done: 2025-12-20, ") and "posted to Slack" in summary[-1]
    assert DEFAULT_TOKEN not in done.stdout + done.stderr


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
    ("CALENDAR_FEEDS_ADDRESS", "localhost", "CALENDAR_FEEDS_ADDRESS='localhost': expected HOST"),
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
    assert "\n#from-dotenv: " in done.stdout
    snapshot = next((tmp_path / "data" / "snapshots" / "2025-12-20").glob("snapshot_*.json"))
    expected = {line.split(",")[0] for line in small_universe.read_text().splitlines()[1:]}
    assert {e["entity_id"] for e in json.loads(snapshot.read_text())["entities"]} == expected
    # a bad value in .env is refused like one in the environment, naming it
    (tmp_path / ".env").write_text("CALENDAR_THRESHOLDS=30,abc\n", encoding="utf-8")
    done = run_cli(tmp_path)
    assert done.returncode == 2
    assert "CALENDAR_THRESHOLDS='30,abc'" in done.stderr.splitlines()[1]


def test_an_exported_variable_beats_dotenv_and_the_first_line_says_so(tmp_path, small_universe):
    """Issue 23: `.env` used to win. Names only in the first line: values may be secrets."""
    (tmp_path / ".env").write_text(
        f"CALENDAR_UNIVERSE={small_universe}\n"
        "CALENDAR_THRESHOLDS=30,abc\n"  # bad, but the environment's value is used
        "SLACK_CHANNEL='#from-dotenv'\n"
        "FINNHUB_TOKEN=dotenv-secret-41\n",
        encoding="utf-8",
    )
    done = run_cli(
        tmp_path,
        "--date", "2025-12-20", "--mode", "dry_run", "--json",
        CALENDAR_THRESHOLDS="7,1",
        SLACK_CHANNEL="#from-env",
        FINNHUB_TOKEN="env-secret-42",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.splitlines()[0] == (
        f"calendar-pipeline: read {tmp_path / '.env'}: CALENDAR_THRESHOLDS, CALENDAR_UNIVERSE, "
        "FINNHUB_TOKEN, SLACK_CHANNEL; the environment overrides CALENDAR_THRESHOLDS, "
        "FINNHUB_TOKEN, SLACK_CHANNEL"
    )
    result = json.loads(done.stdout)
    channels = {c["channel"]: c for c in result["channels"]}
    assert "#from-env" in channels and "#from-dotenv" not in channels  # env's channel
    sections = {s for c in channels.values() for s in c["by_section"]}
    assert sections <= {"Today or tomorrow", "Within a week"}  # env's thresholds 7,1
    assert "#us-ops" in channels  # .env's universe (not overridden) was read
    for secret in ("dotenv-secret-41", "env-secret-42"):
        assert secret not in done.stdout + done.stderr


def test_dotenv_fills_in_what_the_environment_does_not_set(tmp_path, monkeypatch):
    """In-process: `read_dotenv` sets only the names the environment lacks."""
    from calendar_pipeline.cli import read_dotenv

    (tmp_path / ".env").write_text("CALENDAR_X_ONE=file\nCALENDAR_X_TWO=file\n")
    monkeypatch.setenv("CALENDAR_X_ONE", "environment")
    monkeypatch.delenv("CALENDAR_X_TWO", raising=False)
    found = read_dotenv(tmp_path)
    assert found is not None
    assert (found.names, found.overridden) == (
        ["CALENDAR_X_ONE", "CALENDAR_X_TWO"],
        ["CALENDAR_X_ONE"],
    )
    assert os.environ["CALENDAR_X_ONE"] == "environment"
    assert os.environ["CALENDAR_X_TWO"] == "file"
    monkeypatch.delenv("CALENDAR_X_TWO")
    assert read_dotenv(tmp_path / "nowhere") is None


@pytest.mark.parametrize("kind", ["missing", "a file", "relative"])
def test_a_dagster_home_that_is_not_a_directory_is_one_line_and_exit_2(tmp_path, kind):
    """Issue 23: a 19-line traceback and exit 1 before."""
    (tmp_path / "a-file").write_text("not a directory")
    home = {
        "missing": str(tmp_path / "no" / "such" / "home"),
        "a file": str(tmp_path / "a-file"),
        "relative": "dagster_home",
    }[kind]
    done = run_cli(tmp_path, DAGSTER_HOME=home)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"calendar-pipeline: DAGSTER_HOME='{home}': ")
    assert not (tmp_path / "data" / "snapshots").exists()


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
