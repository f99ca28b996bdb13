"""What the alerts say when a calendar changes, over several mornings.

One team iCalendar feed on 127.0.0.1 that changes the way real feeds change (an explicit
and a silent cancellation, a one-day glitch, UID churn, a late addition, a move, a rename,
timed events in another zone and across a DST change), a local Slack, the clock moved from
one morning to the next, days run as the schedule and `slack_alert_sensor` run them, on
SQLite and PostgreSQL. Every Slack line is read: a change that goes unreported, a false
cancellation, a changed event's line that does not name its change, or a repeated line
each fail the test.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter

import dagster as dg
import pytest
import time_machine

from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings, UpstreamSources
from calendar_pipeline_tests.flows import run_daily, run_requests, slack_tick
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN
from calendar_pipeline_tests.upstream_server import Reply, UpstreamServer

D1 = dt.date(2027, 3, 1)  # a Monday; New York moves to daylight time on 2027-03-14
DAY = dt.timedelta(days=1)


def vevent(uid: str, summary: str, start: str, status: str = "") -> list[str]:
    """`start`: `20270316` (all day), `20270304T103000` (New York) or `...Z` (UTC)."""
    if "T" not in start:
        when = f"DTSTART;VALUE=DATE:{start}"
    elif start.endswith("Z"):
        when = f"DTSTART:{start}"
    else:
        when = f"DTSTART;TZID=America/New_York:{start}"
    lines = ["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20270101T000000Z", when]
    lines += [f"SUMMARY:{summary}"] + ([f"STATUS:{status}"] if status else [])
    return [*lines, "END:VEVENT"]


def calendar(*events: list[str]) -> bytes:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//calendar_pipeline tests//EN"]
    for event in events:
        lines += event
    return ("\r\n".join([*lines, "END:VCALENDAR"]) + "\r\n").encode()


# The feed as it is served each morning.
BASE = {
    "offsite": ("Offsite", "20270316"),
    "review": ("Review", "20270310"),
    "planning": ("Planning", "20270312"),
    "drop": ("Vendor visit", "20270308"),
    "glitch": ("Team lunch", "20270309"),
    "standup": ("Standup", "20270305T093000"),
    "meeting": ("Customer call", "20270304T103000"),  # 10:30 New York = 15:30 UTC
    "after-dst": ("Board call", "20270316T103000"),  # 10:30 New York = 14:30 UTC
    "tokyo": ("Tokyo sync", "20270306T000000Z"),
}


def feed_of(day: int) -> bytes:
    events = dict(BASE)
    status = {}
    if day >= 2:
        status["offsite"] = "CANCELLED"  # explicit cancellation
        events.pop("drop")  # silent: gone on day 2 and day 3
        events["review"] = ("Sprint review", "20270310")  # renamed
        events["planning"] = ("Planning", "20270313")  # moved a day
        events["hotfix"] = ("Hotfix release", "20270304")  # first seen 2 days before
        events["standup-v2"] = events.pop("standup")  # UID churn: same title and start
    if day == 2:
        events.pop("glitch")  # a one-day glitch: back on day 3
    if day >= 3:
        events["meeting"] = ("Customer call", "20270304T113000")  # an hour later
    return calendar(
        *(vevent(f"{uid}@team.test", title, start, status.get(uid, ""))
          for uid, (title, start) in events.items())
    )  # fmt: skip


@pytest.fixture
def world(tmp_path, engine, slack_server):
    with UpstreamServer() as upstream:
        universe = tmp_path / "universe.csv"
        universe.write_text(
            f"entity_id,name,source,key,channel\nteam,Team,ics,{upstream.url}/team.ics,#team\n",
            encoding="utf-8",
        )
        calendar_settings = CalendarSettings(
            data_dir=str(tmp_path / "data"),
            universe=str(universe),
            db_url=engine.url.render_as_string(hide_password=False),
        )
        slack = SlackSettings(token=DEFAULT_TOKEN, api_url=slack_server.url, channel="#general")
        resources = {
            "calendar": calendar_settings,
            "slack": slack,
            "upstream": UpstreamSources(http_max_attempts=2),
        }
        with dg.instance_for_test() as instance:
            yield {
                "defs": build_defs(resources),
                "upstream": upstream,
                "slack": slack_server,
                "instance": instance,
                "cursor": None,
            }


def morning(world, n: int) -> list[str]:
    """Serve day n's feed, run day n as the schedule and the sensor would; its lines."""
    day = D1 + (n - 1) * DAY
    world["upstream"].route("/team.ics", Reply(body=feed_of(n), content_type="text/calendar"))
    result = run_daily(world["defs"], world["instance"], day)
    assert result.success
    world["daily"] = result
    tick = slack_tick(world["defs"], world["instance"], world["cursor"])
    world["cursor"] = tick.cursor
    assert all(r.success for r in run_requests(world["defs"], world["instance"], tick.run_requests))
    return lines_of(world["slack"], day)


def digests(slack) -> list:
    return [m for m in slack.messages if not m.params.get("thread_ts")]


def replies(slack) -> list:
    return [m for m in slack.messages if m.params.get("thread_ts")]


def lines_of(slack, day: dt.date) -> list[str]:
    out = []
    for message in digests(slack):
        texts = [b.get("text", {}).get("text", "") for b in message.blocks or []]
        contexts = [e.get("text", "") for b in message.blocks or [] for e in b.get("elements", [])]
        if any(f"partition {day}" in c for c in contexts):
            out += [line for t in texts for line in t.splitlines()]
    return out


def lines_of_message(message) -> list[str]:
    return [
        line
        for block in message.blocks or []
        for line in block.get("text", {}).get("text", "").splitlines()
        if line.startswith("• ")
    ]


def reply_line(message) -> str:
    (line,) = lines_of_message(message)
    return line


def line_for(lines: list[str], title: str) -> list[str]:
    return [line for line in lines if line.startswith(f"• *Team*: {title} ·")]


def test_four_mornings_of_a_changing_feed(world):
    with time_machine.travel(dt.datetime(2027, 3, 1, 7, tzinfo=dt.UTC), tick=True) as clock:
        day1 = morning(world, 1)
        (call,) = line_for(day1, "Customer call")
        assert "· Thu 2027-03-04 15:30 UTC · in 3 days" in call  # the time, in UTC
        (board,) = line_for(day1, "Board call")
        assert "· Tue 2027-03-16 14:30 UTC · in 15 days" in board  # after the DST change
        (tokyo,) = line_for(day1, "Tokyo sync")
        assert "· Sat 2027-03-06 00:00 UTC ·" in tokyo
        assert line_for(day1, "Offsite") == ["• *Team*: Offsite · Tue 2027-03-16 · in 15 days"]
        assert not any("Since yesterday" in line for line in day1)  # the first snapshot

        clock.move_to(dt.datetime(2027, 3, 2, 7, tzinfo=dt.UTC))
        world["slack"].drop_after_accepting(times=1)  # a lost reply: settled, not repeated
        day2 = morning(world, 2)
        assert line_for(day2, "Offsite") == [
            "• *Team*: Offsite · Tue 2027-03-16 · in 14 days · _cancelled_"
        ]
        (hotfix,) = line_for(day2, "Hotfix release")
        assert hotfix.endswith("· in 2 days · _new_")
        (renamed,) = line_for(day2, "Sprint review")
        assert renamed.endswith("_renamed (was Review)_")
        (moved,) = line_for(day2, "Planning")
        assert "Sat 2027-03-13" in moved and "_date changed, was Fri 2027-03-12_" in moved
        assert line_for(day2, "Standup") == [] or all(
            "new" not in line for line in line_for(day2, "Standup")
        )  # UID churn: not new, not cancelled
        assert not line_for(day2, "Vendor visit") and not line_for(day2, "Team lunch")
        assert "_Since yesterday: 1 new, 1 moved, 1 renamed, 1 cancelled_" in day2
        # the UI's preview and plotted counts say the same
        meta = world["daily"].asset_materializations_for_node("due_alerts")[0].metadata
        preview = meta["preview"].value.replace("\\", "")  # Markdown escapes
        assert "renamed (was Review)" in preview and "| cancelled |" in preview
        assert "| new |" in preview and "date changed, was 2027-03-12" in preview
        counts = {k: meta[f"changes_{k}"].value for k in ("new", "moved", "renamed", "cancelled")}
        assert counts == {"new": 1, "moved": 1, "renamed": 1, "cancelled": 1}

        # every change of an announced event is also a reply in the announcing thread
        announced = {
            line.split(" · ")[0]: message.response["ts"]
            for message in digests(world["slack"])
            for line in lines_of_message(message)
            if f"partition {D1}" in str(message.params.get("blocks"))
        }
        threaded = {reply_line(m): m.params["thread_ts"] for m in replies(world["slack"])}
        assert set(threaded) == {
            "• *Team*: Offsite · Tue 2027-03-16 · in 14 days · _cancelled_",
            "• *Team*: Sprint review · Wed 2027-03-10 · in 8 days · _renamed (was Review)_",
            "• *Team*: Planning · Sat 2027-03-13 · in 11 days · _date changed, was Fri 2027-03-12_",
        }  # the new Hotfix release was never announced: no thread
        for line, thread in threaded.items():
            title = line.split(": ", 1)[1].split(" · ")[0]
            first = {"Sprint review": "Review"}.get(title, title)
            assert thread == announced[f"• *Team*: {first}"], line

        clock.move_to(dt.datetime(2027, 3, 3, 7, tzinfo=dt.UTC))
        world["slack"].drop_after_accepting(times=2)  # the digest's and a reply's answers
        day3 = morning(world, 3)
        assert line_for(day3, "Vendor visit") == [
            "• *Team*: Vendor visit · Mon 2027-03-08 · in 5 days · _cancelled_"
        ]  # absent from two successful snapshots in a row
        # the glitch came back: its alert is caught up, with no change word
        assert line_for(day3, "Team lunch") == ["• *Team*: Team lunch · Tue 2027-03-09 · in 6 days"]
        (call,) = line_for(day3, "Customer call")
        assert "Thu 2027-03-04 16:30 UTC · tomorrow" in call
        assert "_time changed, was 15:30 UTC_" in call

        morning(world, 3)  # the same morning again (a manual re-run): nothing repeated
        clock.move_to(dt.datetime(2027, 3, 4, 7, tzinfo=dt.UTC))
        day4 = morning(world, 4)
        assert not any("cancelled" in line or "Since yesterday" in line for line in day4)

    threaded = [reply_line(m) for m in replies(world["slack"])]
    assert len(threaded) == len(set(threaded)) == 5  # + Vendor visit, Customer call; once
    every = [line for line in lines_all(world["slack"]) if line.startswith("• ")]
    repeated = {line: n for line, n in Counter(every).items() if n > 1}
    assert repeated == {}
    cancelled = [line for line in every if "_cancelled_" in line]
    assert len(cancelled) == 2  # Offsite and Vendor visit, nothing else, each once
    changed = {"Hotfix release": "_new_", "Sprint review": "_renamed", "Planning": "date changed"}
    for title, word in changed.items():
        first = next(line for line in every if line.startswith(f"• *Team*: {title} ·"))
        if title != "Planning":
            assert word in first, first


def lines_all(slack) -> list[str]:
    return [
        line
        for message in digests(slack)
        for block in message.blocks or []
        for line in block.get("text", {}).get("text", "").splitlines()
    ]


def test_digest_lines_name_their_change_in_the_dry_run_too(world, tmp_path):
    """The dry run (no token) renders the same words into the outbox."""
    with time_machine.travel(dt.datetime(2027, 3, 1, 7, tzinfo=dt.UTC), tick=True) as clock:
        morning(world, 1)
        clock.move_to(dt.datetime(2027, 3, 2, 7, tzinfo=dt.UTC))
        world["upstream"].route("/team.ics", Reply(body=feed_of(2), content_type="text/calendar"))
        day = D1 + DAY
        assert run_daily(world["defs"], world["instance"], day).success
        result = (
            world["defs"]
            .resolve_job_def("slack_alert_job")
            .execute_in_process(
                partition_key=day.isoformat(),
                instance=world["instance"],
                run_config={"ops": {"send_slack_alerts": {"config": {"mode": "dry_run"}}}},
            )
        )
        digest = (tmp_path / "data" / "outbox" / day.isoformat() / "digest.txt").read_text()
        assert result.success
        assert "Offsite · Tue 2027-03-16 · in 14 days · _cancelled_" in digest
        assert re.search(r"Hotfix release · .* · in 2 days · _new_", digest)
        assert "Since yesterday: 1 new, 1 moved, 1 renamed, 1 cancelled" in digest


def test_an_entity_with_its_own_thresholds(tmp_path, slack_server):
    """`thresholds` in the universe (7,1 for this team) replaces CALENDAR_THRESHOLDS for
    that entity only: its 15-day event is not due, its 3-day one is in its 7-day bucket."""
    with UpstreamServer() as upstream, dg.instance_for_test() as instance:
        upstream.route("/team.ics", Reply(body=feed_of(1), content_type="text/calendar"))
        universe = tmp_path / "universe.csv"
        universe.write_text(
            "entity_id,name,source,key,channel,thresholds\n"
            f'team,Team,ics,{upstream.url}/team.ics,#team,"7,1"\n'
            "fr,France,holidays,country:FR,#team,\n",
            encoding="utf-8",
        )
        calendar_settings = CalendarSettings(
            data_dir=str(tmp_path / "data"), universe=str(universe)
        )
        slack = SlackSettings(token=DEFAULT_TOKEN, api_url=slack_server.url, channel="#general")
        defs = build_defs({"calendar": calendar_settings, "slack": slack})
        with time_machine.travel(dt.datetime(2027, 3, 1, 7, tzinfo=dt.UTC), tick=True):
            assert run_daily(defs, instance, D1).success
            tick = slack_tick(defs, instance)
            assert all(r.success for r in run_requests(defs, instance, tick.run_requests))
    lines = lines_of(slack_server, D1)
    assert line_for(lines, "Offsite") == []  # 15 days away: beyond the team's 7
    assert line_for(lines, "Customer call")  # 3 days away
    assert "*Within a week*" in lines and "*Within 15 days*" not in lines
    assert not any(line.startswith("• *Team*") and "in 15 days" in line for line in lines)
