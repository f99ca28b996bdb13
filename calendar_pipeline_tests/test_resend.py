"""`calendar-pipeline deliveries` and `calendar-pipeline resend` (issue 23), in fresh
processes against the local Slack server: what the ledger holds for a day, and chosen
alerts posted again once each through the Slack job, without SQL and without files in the
checkout. Bad choices are refused by name before anything changes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from calendar_pipeline_tests.flows import cli_process
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN

DAY = "2025-12-20"


def cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return cli_process(tmp_path, *args, **env)


@pytest.fixture
def posted_day(tmp_path, small_universe, slack_server):
    """DAY run and posted (`--mode send`); returns the environment the commands need."""
    env = {
        "CALENDAR_UNIVERSE": str(small_universe),
        "SLACK_BOT_TOKEN": DEFAULT_TOKEN,
        "SLACK_API_URL": slack_server.url,
    }
    done = cli(tmp_path, "run", "--date", DAY, "--mode", "send", **env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert slack_server.messages
    return env


def ledger(tmp_path, env) -> list[dict]:
    done = cli(tmp_path, "deliveries", "--date", DAY, "--json", **env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def bullets(messages) -> list[str]:
    """The alert lines of Slack messages (in their blocks; `text` is the notification)."""
    texts = [b.get("text", {}).get("text", "") for m in messages for b in m.blocks or []]
    return [line for text in texts for line in text.splitlines() if line.startswith("• ")]


def test_deliveries_lists_each_alert_of_the_day_with_its_state_and_ts(
    tmp_path, posted_day, slack_server
):
    rows = ledger(tmp_path, posted_day)
    assert rows and {r["state"] for r in rows} == {"sent"}
    ts_posted = {m.response["ts"] for m in slack_server.messages}
    assert {r["slack_ts"] for r in rows} <= ts_posted
    assert {r["channel"] for r in rows} >= {"#us-ops", "#markets"}

    text = cli(tmp_path, "deliveries", "--date", DAY, **posted_day)
    assert text.returncode == 0, text.stderr
    out = text.stdout.splitlines()
    assert out[0] == f"{len(rows)} alert(s) due on {DAY}:"
    assert "#us-ops:" in out and "#markets:" in out
    assert out[-1] == f"States: {len(rows)} sent"
    first = rows[0]
    assert any(first["dedup_key"] in line and first["title"] in line for line in out)
    assert DEFAULT_TOKEN not in text.stdout + text.stderr


def test_resend_one_key_posts_it_once_and_records_it_again(tmp_path, posted_day, slack_server):
    rows = ledger(tmp_path, posted_day)
    target = next(r for r in rows if r["channel"] == "#markets")
    before = len(slack_server.messages)

    done = cli(tmp_path, "resend", "--date", DAY, "--key", target["dedup_key"], **posted_day)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    new = slack_server.messages[before:]
    assert [m.channel for m in new] == ["#markets"]  # one message, the key's channel
    lines = bullets(new)
    assert len(lines) == 1 and target["title"] in lines[0]
    assert done.stdout.splitlines()[-1].startswith(f"Done: 1 of 1 alert(s) of {DAY} sent again")

    after = {r["dedup_key"]: r for r in ledger(tmp_path, posted_day)}
    assert after[target["dedup_key"]]["state"] == "sent"
    assert after[target["dedup_key"]]["slack_ts"] == new[0].response["ts"]
    for row in rows:  # every other alert keeps its ledger row as it was
        if row["dedup_key"] != target["dedup_key"]:
            assert after[row["dedup_key"]] == row
    assert not (tmp_path / "send.yaml").exists()  # nothing left in the working directory

    # the day's own run afterwards finds nothing more to post
    again = cli(tmp_path, "run", "--date", DAY, "--mode", "send", **posted_day)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(slack_server.messages) == before + 1  # the day's run finds nothing to post


def test_resend_by_entity_posts_every_alert_of_that_entity(tmp_path, posted_day, slack_server):
    rows = ledger(tmp_path, posted_day)
    mine = [r for r in rows if r["entity_id"] == "country-US"]
    assert len(mine) >= 2
    before = len(slack_server.messages)
    dry = cli(
        tmp_path, "resend", "--date", DAY, "--entity", "country-US", "--dry-run", **posted_day
    )
    assert dry.returncode == 0 and "--dry-run: nothing changed" in dry.stdout
    assert len(slack_server.messages) == before

    done = cli(tmp_path, "resend", "--date", DAY, "--entity", "country-US", **posted_day)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = bullets(slack_server.messages[before:])
    assert len(lines) == len(mine)
    assert all("United States" in line for line in lines)


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--key", "country-US|no-such-event|2026-01-01|D-7"), ("--entity", "country-XX"),
     ("--event", "no-such-event")],
)  # fmt: skip
def test_a_choice_that_picks_nothing_is_refused_by_name_and_changes_nothing(
    tmp_path, posted_day, slack_server, flag, value
):
    rows = ledger(tmp_path, posted_day)
    before = len(slack_server.messages)
    done = cli(tmp_path, "resend", "--date", DAY, "--key", rows[0]["dedup_key"], flag, value,
               **posted_day)  # fmt: skip
    assert done.returncode == 2
    assert f"{flag} {value!r} is not among the {len(rows)} alerts due on {DAY}" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(slack_server.messages) == before
    assert ledger(tmp_path, posted_day) == rows  # no ledger row removed


def test_resend_without_a_token_is_refused_before_any_change(tmp_path, posted_day):
    rows = ledger(tmp_path, posted_day)
    env = {k: v for k, v in posted_day.items() if k != "SLACK_BOT_TOKEN"}
    done = cli(tmp_path, "resend", "--date", DAY, "--key", rows[0]["dedup_key"], **env)
    assert done.returncode == 2
    assert "resend posts to Slack: set SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL" in done.stderr
    assert ledger(tmp_path, posted_day) == rows
