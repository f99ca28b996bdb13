"""Issue 24, item 1: a lost ledger never causes repeats.

``calendar.db`` (the ledger, alerts/store.py) deleted or emptied between two days: the
next Slack run sees that the lake has earlier days while the ledger holds nothing
delivered, rebuilds the ledger from Slack's own history (every digest carries the digests
of its alert keys in its message metadata), says how many it recovered, and posts only
the rest. Without the history scope, or with a webhook, it refuses to post: one line
naming the ledger and the next step, exit 2. ``verify`` names the lost ledger. A new
installation (no earlier day, or only history days) posts as always.

Through the Dagster layer (daily job, slack_alert_sensor's run requests, the clock moved
by time-machine) and ``calendar-pipeline run`` (``main()``), against the local Slack and
upstream servers; repeats measured from what the Slack server received."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
from pathlib import Path

import pytest
import time_machine

from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.deliver import ledger_name
from calendar_pipeline.alerts.poster import KEY_DIGEST_CHARS, key_digest
from calendar_pipeline.alerts.slack_client import METADATA_EVENT_TYPE
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.defs.resources.calendar import _engine_for
from calendar_pipeline.verify import verify
from calendar_pipeline_tests.flows import (
    cli_process,
    duplicates,
    expected_due,
    make_defs,
    never_reached_slack,
    output_metadata,
    posted,
    run_daily,
    run_range,
    serve_feed,
    slack_runs,
    write_universe,
)
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN
from calendar_pipeline_tests.upstream_server import UpstreamServer

D = dt.date(2026, 3, 10)
DAY = dt.timedelta(days=1)
HISTORY_SCOPES = {"channels:history", "groups:history"}


def at(day: dt.date, hour: int = 9) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)


@pytest.fixture
def upstream():
    with UpstreamServer() as server:
        serve_feed(server)
        yield server


def db_path(calendar: CalendarSettings) -> Path:
    return calendar.data_path.resolve() / "calendar.db"


def lose_ledger(calendar: CalendarSettings, how: str) -> None:
    """What a cleanup script, a wrong volume or a lost disk does to ``calendar.db``."""
    calendar.engine().dispose()
    _engine_for.cache_clear()  # a new process would open the file anew
    path = db_path(calendar)
    if how == "deleted":
        for name in ("calendar.db", "calendar.db-wal", "calendar.db-shm"):
            (path.parent / name).unlink(missing_ok=True)
    elif how == "emptied" and calendar.db_url:  # PostgreSQL: every row of the table gone
        with store.make_engine(calendar.db_url).begin() as conn:
            conn.exec_driver_sql("DELETE FROM alert_deliveries")
    elif how == "emptied":  # every ledger row deleted; the file and its tables stay
        with sqlite3.connect(path) as db:
            db.execute("DELETE FROM alert_deliveries")
    else:
        raise ValueError(how)


def log_text(instance, result) -> str:
    return "\n".join(entry.user_message for entry in instance.all_logs(result.run_id))


def failure_message(result) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failures[-1].step_failure_data.error if failures else None
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_lost_ledger_is_rebuilt_from_slack_and_nothing_is_posted_twice(
    tmp_path, upstream, slack_server, instance, how
):
    universe = write_universe(tmp_path / "u.csv", upstream)
    defs, calendar = make_defs(tmp_path, universe, slack_server)  # SQLite in the data dir
    lost_then_rebuilt(defs, calendar, instance, slack_server, how)


def test_an_emptied_ledger_on_postgresql_is_rebuilt_too(
    tmp_path, engine, upstream, slack_server, instance
):
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite: see test_a_lost_ledger_is_rebuilt_from_slack_...")
    universe = write_universe(tmp_path / "u.csv", upstream)
    # a password the test server (trust authentication) ignores: never shown
    url = engine.url.set(password="pw-never-shown").render_as_string(hide_password=False)
    defs, calendar = make_defs(tmp_path, universe, slack_server, url)
    shown = lost_then_rebuilt(defs, calendar, instance, slack_server, "emptied")
    assert "pw-never-shown" not in shown and ":***@" in shown


def lost_then_rebuilt(defs, calendar, instance, slack_server, how: str) -> str:
    """Days 1 and 2 posted, the ledger lost (``how``), verify, day 3 rebuilt, day 4;
    returns what verify and the runs' logs said."""
    with time_machine.travel(at(D), tick=True) as clock:
        cursor = None
        for day in (D, D + DAY):  # two days posted
            clock.move_to(at(day))
            assert run_daily(defs, instance, day).success
            (result,), cursor = slack_runs(defs, instance, cursor)
            assert result.success
        before = posted(slack_server)
        assert duplicates(slack_server) == {}
        assert set(before) == expected_due(D) | expected_due(D + DAY)
        # every digest carries the digests of its alert keys, bounded in size
        for message in slack_server.history("#team"):
            payload = message["metadata"]["event_payload"]
            assert message["metadata"]["event_type"] == METADATA_EVENT_TYPE
            assert len(payload["keys"].split()) == payload["alerts"]
            assert len(payload["keys"]) <= payload["alerts"] * (KEY_DIGEST_CHARS + 1)

        lose_ledger(calendar, how)
        engine = calendar.engine()
        assert store.delivered_summary(engine) == (0, None)
        # verify names the lost ledger, in one finding
        clock.move_to(at(D + 2 * DAY, 8))
        report = verify(
            calendar.data_path,
            engine,
            calendar.threshold_days,
            calendar.claim_timeout,
            calendar.budgets,
        )
        lost = [f for f in report.findings if "holds no delivered alert" in f.problem]
        assert len(lost) == 1 and lost[0].area == "ledger" and lost[0].severity == "error"
        assert f"the alert ledger {ledger_name(engine)} holds" in lost[0].problem
        assert "record_only" in lost[0].problem and not report.ok

        # day 3: rebuilt from Slack, only the new alerts posted
        clock.move_to(at(D + 2 * DAY))
        assert run_daily(defs, instance, D + 2 * DAY).success
        (result,), cursor = slack_runs(defs, instance, cursor)
        assert result.success, failure_message(result)
        metadata = output_metadata(result)
        already = expected_due(D + 2 * DAY) & (expected_due(D) | expected_due(D + DAY))
        new = expected_due(D + 2 * DAY) - already
        print(
            f"{how}: {metadata['recovered_from_slack']} of {len(expected_due(D + 2 * DAY))} "
            f"alerts due on day 3 recovered from Slack, {metadata['sent']} posted"
        )
        assert metadata["recovered_from_slack"] == len(already) > 0
        assert metadata["sent"] == len(new) > 0
        logs = log_text(instance, result)
        assert f"{len(already)} alert(s) already posted were recorded as sent" in logs
        assert "rebuilding it from Slack" in logs and DEFAULT_TOKEN not in logs
        assert duplicates(slack_server) == {}  # every posted key counted: 0 repeats
        assert never_reached_slack(slack_server, D + 2 * DAY) == set()
        assert all(posted(slack_server)[key] == 1 for key in new)
        rows = store.ledger_rows(calendar.engine())
        assert {r["state"] for r in rows} == {"sent"}
        assert all(r["slack_ts"] for r in rows)

        # day 4: the rebuilt ledger is a ledger again (nothing recovered, nothing repeated)
        clock.move_to(at(D + 3 * DAY))
        assert run_daily(defs, instance, D + 3 * DAY).success
        (result,), _ = slack_runs(defs, instance, cursor)
        assert result.success and output_metadata(result)["recovered_from_slack"] == 0
        said = "\n".join([report.to_text(), logs, log_text(instance, result)])
    assert duplicates(slack_server) == {}
    assert never_reached_slack(slack_server, D + 3 * DAY) == set()
    assert verify(
        calendar.data_path,
        calendar.engine(),
        calendar.threshold_days,
        calendar.claim_timeout,
        calendar.budgets,
        now=at(D + 3 * DAY, 12),
    ).findings == [f for f in report.findings if f.area == "due_alerts"]  # days 1-2's rows
    return said


def test_without_the_history_scope_a_lost_ledger_refuses_to_post(
    tmp_path, upstream, slack_server, instance
):
    universe = write_universe(tmp_path / "u.csv", upstream)
    defs, calendar = make_defs(tmp_path, universe, slack_server)
    with time_machine.travel(at(D), tick=True) as clock:
        assert run_daily(defs, instance, D).success
        (result,), cursor = slack_runs(defs, instance)
        assert result.success
        lose_ledger(calendar, "deleted")
        slack_server.scopes -= HISTORY_SCOPES
        sent_before = len(slack_server.messages)
        clock.move_to(at(D + DAY))
        assert run_daily(defs, instance, D + DAY).success
        (refused,), _ = slack_runs(defs, instance, cursor)
    assert not refused.success
    assert len(slack_server.messages) == sent_before  # nothing posted
    message = failure_message(refused)
    line = message.splitlines()[0].removeprefix("dagster._core.definitions.events.Failure: ")
    assert line.startswith(f"the alert ledger sqlite:///{db_path(calendar)} holds no delivered")
    assert "missing_scope" in line and "--mode record_only" in line and "restore" in line
    assert DEFAULT_TOKEN not in message
    # not retried (a retry cannot read history either): one attempt only
    attempts = [e for e in refused.all_events if e.event_type_value == "STEP_START"]
    assert len(attempts) == 1
    assert store.ledger_rows(calendar.engine()) == []


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``calendar-pipeline run`` in a fresh process (flows.cli_process)."""
    return cli_process(tmp_path, "run", *args, **env)


@pytest.mark.parametrize("poster", ["token without history scope", "webhook"])
def test_the_cli_refuses_in_one_line_with_exit_2(tmp_path, small_universe, slack_server, poster):
    """Yesterday posted (forced), the ledger deleted, today's run: one line, exit 2,
    nothing posted. With the token, the next step it names (record_only) then works."""
    from calendar_pipeline.settings import load_time_settings, today_in

    yesterday = today_in(load_time_settings()[0]) - DAY
    env = {"CALENDAR_UNIVERSE": str(small_universe), "SLACK_API_URL": slack_server.url}
    token = {"SLACK_BOT_TOKEN": DEFAULT_TOKEN}
    done = run_cli(tmp_path, "--date", yesterday.isoformat(), "--mode", "send", **env, **token)
    assert done.returncode == 0, done.stderr[-3000:]
    posted_before = len(slack_server.messages)
    assert posted_before > 0
    path = tmp_path / "data" / "calendar.db"
    for name in ("calendar.db", "calendar.db-wal", "calendar.db-shm"):
        (path.parent / name).unlink(missing_ok=True)
    if poster == "webhook":
        token = {"SLACK_WEBHOOK_URL": slack_server.webhook_url}
    else:
        slack_server.scopes -= HISTORY_SCOPES

    done = run_cli(tmp_path, **env, **token)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    shown = f"calendar-pipeline: the alert ledger sqlite:///{path.resolve()} holds no delivered"
    assert lines[0].startswith(shown), lines[0]
    assert "restore it from a backup" in lines[0] and "--mode record_only" in lines[0]
    assert ("webhook" if poster == "webhook" else "missing_scope") in lines[0]
    for secret in (DEFAULT_TOKEN, slack_server.webhook_path):
        assert secret not in done.stdout + done.stderr
    assert len(slack_server.messages) == posted_before
    assert not slack_server.calls_to("webhook")
    print(f"{poster}: {lines[0]}")
    if poster == "webhook":
        return

    # the next step the line names: re-prime with record_only; the next run posts nothing
    done = run_cli(tmp_path, "--mode", "record_only", **env, **token)
    assert done.returncode == 0, done.stderr[-3000:]
    done = run_cli(tmp_path, **env, **token)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(slack_server.messages) == posted_before


def test_a_new_installation_posts_as_always(tmp_path, upstream, slack_server, instance):
    """No earlier day: not a lost ledger. Posted in full, nothing read from history."""
    universe = write_universe(tmp_path / "u.csv", upstream)
    defs, _calendar = make_defs(tmp_path, universe, slack_server)
    with time_machine.travel(at(D), tick=True):
        assert run_daily(defs, instance, D).success
        (result,), _ = slack_runs(defs, instance)
    assert result.success
    assert output_metadata(result)["recovered_from_slack"] == 0
    assert output_metadata(result)["sent"] == 31
    assert never_reached_slack(slack_server, D) == set()
    assert not slack_server.calls_to("conversations.history")
    assert "lost" not in log_text(instance, result)


@pytest.mark.parametrize("before", ["backfill", "dry runs"])
def test_a_new_installation_with_earlier_days_and_a_webhook_posts(
    tmp_path, upstream, slack_server, instance, before
):
    """The README's setup (a backfill of history days first), or days in dry run before a
    webhook is set: the ledger never delivered anything, it is not lost, and a webhook
    (which cannot read history) posts the first daily digest."""
    universe = write_universe(tmp_path / "u.csv", upstream)
    calendar = CalendarSettings(data_dir=str(tmp_path / "data"), universe=str(universe))
    webhook = SlackSettings(webhook_url=slack_server.webhook_url, channel="#general")
    dry = SlackSettings(channel="#general")
    with time_machine.travel(at(D), tick=True) as clock:
        if before == "backfill":
            defs = build_defs({"calendar": calendar, "slack": webhook})
            assert run_range(defs, instance, D - 3 * DAY, D - DAY).success
            cursor = None
        else:
            defs = build_defs({"calendar": calendar, "slack": dry})
            cursor = None
            for day in (D - 2 * DAY, D - DAY):
                clock.move_to(at(day))
                assert run_daily(defs, instance, day).success
                (result,), cursor = slack_runs(defs, instance, cursor)
                assert result.success and output_metadata(result)["mode"] == "dry_run"
            defs = build_defs({"calendar": calendar, "slack": webhook})
        clock.move_to(at(D))
        assert run_daily(defs, instance, D).success
        results, _ = slack_runs(defs, instance, cursor)
    assert results and all(r.success for r in results), failure_message(results[-1])
    assert sum(output_metadata(r)["sent"] for r in results) == 31
    assert len([c for c in slack_server.calls_to("webhook") if c.ok]) == 1
    assert key_digest("x") != key_digest("y")


def test_a_ledger_lost_on_the_first_day_is_rebuilt_too(tmp_path, upstream, slack_server, instance):
    """The lake's only day was posted, then the ledger deleted: not a new installation
    (the marker says the ledger had delivered alerts), so the day's re-run repeats nothing."""
    universe = write_universe(tmp_path / "u.csv", upstream)
    defs, calendar = make_defs(tmp_path, universe, slack_server)
    with time_machine.travel(at(D), tick=True):
        assert run_daily(defs, instance, D).success
        (result,), cursor = slack_runs(defs, instance)
        assert result.success and output_metadata(result)["sent"] == 31
        lose_ledger(calendar, "deleted")
        assert run_daily(defs, instance, D).success  # the day run again
        (again,), _ = slack_runs(defs, instance, cursor)
    assert again.success, failure_message(again)
    assert output_metadata(again)["recovered_from_slack"] == 31
    assert output_metadata(again)["sent"] == 0
    assert duplicates(slack_server) == {}


def test_a_ledger_cut_in_half_is_refused_with_the_next_step(
    tmp_path, upstream, slack_server, instance
):
    """``calendar.db`` cut short (a full disk, a bad copy): refused by name, as before, and
    now with what to do; moved aside, the next day is rebuilt from Slack, 0 repeats."""
    from calendar_pipeline.settings import SettingError

    universe = write_universe(tmp_path / "u.csv", upstream)
    defs, calendar = make_defs(tmp_path, universe, slack_server)
    with time_machine.travel(at(D), tick=True) as clock:
        assert run_daily(defs, instance, D).success
        (result,), cursor = slack_runs(defs, instance)
        assert result.success
        calendar.engine().dispose()
        _engine_for.cache_clear()
        path = db_path(calendar)
        with path.open("r+b") as db:
            db.truncate(path.stat().st_size // 2)
        with pytest.raises(SettingError) as refused:
            calendar.engine()
        message = str(refused.value)
        assert str(path) in message and "malformed" in message
        assert "restore it from a backup, or move it aside" in message
        path.rename(path.with_suffix(".damaged"))  # the next step it names
        clock.move_to(at(D + DAY))
        assert run_daily(defs, instance, D + DAY).success
        (result,), _ = slack_runs(defs, instance, cursor)
    assert result.success, failure_message(result)
    assert output_metadata(result)["recovered_from_slack"] == 26
    assert duplicates(slack_server) == {}
    assert never_reached_slack(slack_server, D + DAY) == set()
