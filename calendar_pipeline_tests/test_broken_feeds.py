"""One broken feed never silences anyone else's alerts, over days.

France from the embedded `holidays` source and four team iCalendar feeds served on
127.0.0.1, a local Slack, the clock moved from one morning to the next, the feeds changed
between days; days run as the schedule and `slack_alert_sensor` run them (the daily job,
then the sensor's Slack run requests), on SQLite and PostgreSQL. Measured from the Slack
server's side: alerts due from healthy entities that never reach Slack, alerts due from a
broken entity's carried data that never reach Slack, broken entities not named that day
(each must be 0), and notices repeated by a second run of the day (0).
"""

from __future__ import annotations

import datetime as dt
import re

import dagster as dg
import pytest
import time_machine
from sqlalchemy import select

from calendar_pipeline.alerts import feed_problems
from calendar_pipeline.alerts.due import bucket_for
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings, UpstreamSources
from calendar_pipeline_tests.flows import THRESHOLDS, run_daily, run_requests, slack_tick
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN
from calendar_pipeline_tests.upstream_server import Fault, Reply, UpstreamServer

D1 = dt.date(2027, 5, 3)  # a Monday
DAY = dt.timedelta(days=1)
TEAMS = ("a", "b", "c", "d")
ALERTS = "#ops"


def at(day: dt.date, hour: int = 7) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)


def team_feed(team: str, start: dt.date = D1, days: int = 40, skip: int = 0) -> bytes:
    """One all-day event every `skip + 1` days, titled by team and date."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//calendar_pipeline tests//EN"]
    for n in range(0, days, skip + 1):
        day = start + dt.timedelta(days=n)
        lines += [
            "BEGIN:VEVENT",
            f"UID:{team}-{day.isoformat()}@teams.test",
            "DTSTAMP:20270101T000000Z",
            f"DTSTART;VALUE=DATE:{day:%Y%m%d}",
            f"SUMMARY:{team.upper()} sync {day.isoformat()}",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return ("\r\n".join(lines) + "\r\n").encode()


def serve(upstream: UpstreamServer, team: str, reply: Reply) -> None:
    upstream.route(f"/{team}.ics", reply)


def healthy(team: str, **kwargs) -> Reply:
    return Reply(body=team_feed(team, **kwargs), content_type="text/calendar", etag=False)


@pytest.fixture
def world(tmp_path, engine, slack_server):
    with UpstreamServer() as upstream:
        for team in TEAMS:
            serve(upstream, team, healthy(team))
        universe = tmp_path / "universe.csv"
        rows = ["entity_id,name,source,key,channel", "fr,France,holidays,country:FR,#fr"]
        rows += [f"team-{t},Team {t.upper()},ics,{upstream.url}/{t}.ics,#team" for t in TEAMS]
        universe.write_text("\n".join(rows) + "\n", encoding="utf-8")
        calendar = CalendarSettings(
            data_dir=str(tmp_path / "data"),
            universe=str(universe),
            db_url=engine.url.render_as_string(hide_password=False),
        )
        slack = SlackSettings(
            token=DEFAULT_TOKEN, api_url=slack_server.url, channel="#general", alerts_channel=ALERTS
        )
        with dg.instance_for_test() as instance:
            # two attempts per request: a broken feed costs seconds, not a minute
            upstream_sources = UpstreamSources(http_max_attempts=2, http_timeout="1")
            resources = {"calendar": calendar, "slack": slack, "upstream": upstream_sources}
            yield {
                "defs": build_defs(resources),
                "calendar": calendar,
                "upstream": upstream,
                "slack": slack_server,
                "instance": instance,
            }


def run_day(world, day: dt.date, cursor: str | None = None):
    """The daily job for `day`, then the Slack runs the sensor asks for."""
    result = run_daily(world["defs"], world["instance"], day)
    assert result.success, "the day must never fail because of a broken entity"
    tick = slack_tick(world["defs"], world["instance"], cursor)
    slack_runs = run_requests(world["defs"], world["instance"], tick.run_requests)
    assert slack_runs and all(run.success for run in slack_runs)
    return result, tick.cursor


def lines_posted(slack, day: dt.date) -> list[str]:
    """Every digest line posted for `day` (one string per alert)."""
    found = []
    for message in slack.messages:
        texts = [b.get("text", {}).get("text", "") for b in message.blocks or []]
        texts += [
            e.get("text", "") for b in message.blocks or [] for e in b.get("elements", []) or []
        ]
        if message.channel == ALERTS or not any(f"partition {day}" in t for t in texts):
            continue
        for text in texts:
            found += [line for line in text.splitlines() if line.startswith("• *")]
    return found


def notices(slack, day: dt.date) -> list[str]:
    """The text of every broken-entities notice posted for `day`."""
    out = []
    for message in slack.messages:
        texts = [b.get("text", {}).get("text", "") for b in message.blocks or []]
        if message.channel == ALERTS and any("Calendar feeds with problems" in t for t in texts):
            context = " ".join(
                e.get("text", "") for b in message.blocks for e in b.get("elements", []) or []
            )
            if f"partition {day}" in context:
                out.append("\n".join(texts))
    return out


def notice_states(engine, day: dt.date) -> dict[str, str]:
    """entity id -> state of `day`'s rows in `feed_problem_notices` (no product reader)."""
    table = feed_problems.feed_problem_notices
    query = select(table.c.entity_id, table.c.state).where(table.c.partition_date == day)
    with engine.connect() as conn:
        return dict(conn.execute(query).all())


def due_titles(team: str, day: dt.date, data_of: dt.date) -> set[tuple[str, int]]:
    """The alerts (title, bucket) a team feed makes due on `day`."""
    due = set()
    for n in range(40):
        event = D1 + dt.timedelta(days=n)
        bucket = bucket_for((event - day).days, THRESHOLDS)
        if event >= data_of and bucket is not None:
            due.add((f"{team.upper()} sync {event.isoformat()}", bucket))
    return due


def posted_titles(lines: list[str], team: str, day: dt.date) -> dict[tuple[str, int], str]:
    """(title, bucket) -> the rest of the line, for `team`'s lines posted for `day`."""
    out = {}
    for line in lines:
        match = re.match(rf"• \*Team {team.upper()}\*: (\S+ sync (\S+)) · (.*)$", line)
        if match:
            days = (dt.date.fromisoformat(match[2]) - day).days
            out[(match[1], bucket_for(days, THRESHOLDS))] = match[3]
    return out


def never_posted(slack, team: str, day: dt.date) -> set[tuple[str, int]]:
    """Alerts of `team` due on `day` that reached Slack on no day up to `day`."""
    seen: set[tuple[str, int]] = set()
    for n in range((day - D1).days + 1):
        past = D1 + dt.timedelta(days=n)
        seen |= set(posted_titles(lines_posted(slack, past), team, past))
    return due_titles(team, day, day) - seen


def test_broken_feeds_over_days_never_silence_the_healthy_ones(world):
    slack, upstream = world["slack"], world["upstream"]
    calendar: CalendarSettings = world["calendar"]
    with time_machine.travel(at(D1), tick=True) as clock:
        _, cursor = run_day(world, D1)
        first = lines_posted(slack, D1)
        assert first and notices(slack, D1) == []

        # Day 2: team-b answers HTTP 500, team-c serves text that is not a calendar
        D2 = D1 + DAY
        clock.move_to(at(D2))
        serve(upstream, "b", Reply(status=500, body=b"oops", content_type="text/plain"))
        serve(upstream, "c", Reply(body=b"Service moved, see our new page " * 20))
        result, cursor = run_day(world, D2, cursor)
        lines = lines_posted(slack, D2)
        for team in ("a", "d"):  # healthy: every alert due today, none marked
            got = posted_titles(lines, team, D2)
            missing = never_posted(slack, team, D2)
            assert got and missing == set(), f"team {team}: never reached Slack: {missing}"
            assert not any("data of" in rest for rest in got.values())
        for team in ("b", "c"):  # broken: its Monday data, each line marked
            got = posted_titles(lines, team, D2)
            assert got and never_posted(slack, team, D2) == set()
            assert all(
                rest.endswith("_feed unavailable since Tue 2027-05-04; data of Mon 2027-05-03_")
                for rest in got.values()
            ), got
        assert any(line.startswith("• *France*") for line in first + lines)
        (notice,) = notices(slack, D2)
        assert "team-b (Team B, ics): HTTP 500 from 127.0.0.1, since Tue 2027-05-04" in notice
        assert "The server failed, nothing to fix here: the next run tries again." in notice
        assert "team-c (Team C, ics): not an iCalendar feed: line 1 is 'Service moved" in notice
        assert "check the feed or the entity's key." in notice
        assert "its alerts use its data of Mon 2027-05-03" in notice
        assert "team-a" not in notice and "team-d" not in notice
        for text in (notice, *lines):
            assert not re.search(r"\w…\w", text)  # nothing cut mid-word
        table = result.asset_materializations_for_node("raw_snapshot")[0].metadata
        rows = [r.data for r in table["broken_entities"].value.records]
        assert [(r["entity_id"], r["state"], r["data_of"]) for r in rows] == [
            ("team-b", "carried", D1.isoformat()),
            ("team-c", "carried", D1.isoformat()),
        ]

        # A second run of the same day (a retry, a manual re-run) names nobody again
        run_daily(world["defs"], world["instance"], D2)
        tick = slack_tick(world["defs"], world["instance"], cursor)
        run_requests(world["defs"], world["instance"], tick.run_requests)
        cursor = tick.cursor
        assert len(notices(slack, D2)) == 1
        assert notice_states(calendar.engine(), D2) == {"team-b": "sent", "team-c": "sent"}

        # Day 3: team-c is back; team-a is truncated to a third of its events
        D3 = D2 + DAY
        clock.move_to(at(D3))
        serve(upstream, "c", healthy("c"))
        serve(upstream, "a", healthy("a", days=8))
        _, cursor = run_day(world, D3, cursor)
        lines = lines_posted(slack, D3)
        assert not any("data of" in rest for rest in posted_titles(lines, "c", D3).values())
        a_lines = posted_titles(lines, "a", D3)
        assert never_posted(slack, "a", D3) == set()  # the truncation lost nothing
        assert any("feed rejected (far fewer events)" in rest for rest in a_lines.values())
        (notice,) = notices(slack, D3)
        assert "team-b" in notice and "since Tue 2027-05-04" in notice
        assert "team-a (Team A, ics)" in notice and "team-c" not in notice

        # Days 4 and 5: team-b stays down; its Monday data is used up to 3 days old, then stops
        serve(upstream, "a", healthy("a"))
        for n, carried in ((4, True), (5, False)):
            day = D1 + (n - 1) * DAY
            clock.move_to(at(day))
            _, cursor = run_day(world, day, cursor)
            b_lines = posted_titles(lines_posted(slack, day), "b", day)
            (notice,) = notices(slack, day)
            if carried:
                assert b_lines and never_posted(slack, "b", day) == set()
                assert "its alerts use its data of Mon 2027-05-03" in notice
            else:
                assert b_lines == {}
                assert "its alerts are stopped: its newest good data (Mon 2027-05-03) is more " \
                    "than 3 days old (CALENDAR_STALE_AFTER_DAYS)" in notice  # fmt: skip


def test_a_whole_source_down_is_reported_loudly_and_carried(world):
    slack, upstream = world["slack"], world["upstream"]
    with time_machine.travel(at(D1), tick=True) as clock:
        _, cursor = run_day(world, D1)
        D2 = D1 + DAY
        clock.move_to(at(D2))
        for team in TEAMS:
            serve(upstream, team, Reply(status=503, body=b"down", content_type="text/plain"))
        result, cursor = run_day(world, D2, cursor)
        check = next(
            c
            for c in result.get_asset_check_evaluations()
            if c.check_name == "failed_entities_within_budget"
        )
        assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
        assert check.description.startswith("source down: ics (4 of 4 entities broken)")
        lines = lines_posted(slack, D2)
        for team in TEAMS:
            got = posted_titles(lines, team, D2)
            assert got and never_posted(slack, team, D2) == set()
            assert all("feed unavailable since Tue 2027-05-04" in rest for rest in got.values())
        (notice,) = notices(slack, D2)
        assert all(f"team-{t} (Team {t.upper()}, ics): HTTP 503" in notice for t in TEAMS)


def test_a_404_says_to_check_the_key_and_a_timeout_says_the_server_failed(world):
    slack, upstream = world["slack"], world["upstream"]
    with time_machine.travel(at(D1), tick=True):
        serve(upstream, "d", Reply(status=404, body=b"no such calendar", content_type="text/plain"))
        upstream.fail_next(Fault.delay(3.0), times=4, path="/c.ics")  # past the 1 s timeout
        run_day(world, D1)
        (notice,) = notices(slack, D1)
        assert "team-c (Team C, ics): timeout from 127.0.0.1" in notice
        assert "The server did not answer in time: the next run tries again." in notice
        assert "team-d (Team D, ics): HTTP 404 (not found) from 127.0.0.1" in notice
        assert "Check the entity's key in the universe CSV" in notice
        assert "no alerts: there is no earlier good data to use" in notice
        assert posted_titles(lines_posted(slack, D1), "a", D1)  # the others are posted
        assert never_posted(slack, "a", D1) == set()


def test_through_calendar_pipeline_run_the_terminal_names_each_broken_entity(
    world, monkeypatch, capsys
):
    """The same outage through `calendar-pipeline run` (in-process, the definitions of this
    test's servers): exit 0, each broken entity named with its problem, no stack trace,
    the healthy feeds' alerts and the day's notice in Slack."""
    from calendar_pipeline import cli
    from calendar_pipeline import definitions as definitions_module

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setattr(definitions_module, "defs", world["defs"])
    slack, upstream = world["slack"], world["upstream"]
    with time_machine.travel(at(D1), tick=True) as clock:
        assert cli.main(["run"]) == 0
        capsys.readouterr()
        D2 = D1 + DAY
        clock.move_to(at(D2))
        serve(upstream, "b", Reply(status=500, body=b"oops", content_type="text/plain"))
        serve(upstream, "c", Reply(body=b"<html>moved</html>", content_type="text/html"))
        assert cli.main(["run"]) == 0
        captured = capsys.readouterr()
    terminal = captured.out + captured.err
    assert "Traceback" not in terminal and "DagsterExecutionStepExecutionError" not in terminal
    assert "team-b (Team B, ics): HTTP 500 from 127.0.0.1, since Tue 2027-05-04" in terminal
    assert "team-c (Team C, ics): not an iCalendar feed: the server sent an HTML" in terminal
    summary = [line.strip() for line in captured.out.splitlines() if "broken: " in line]
    assert summary == [
        "broken: team-b (Team B, ics): HTTP 500 from 127.0.0.1, since 2027-05-04; alerts use "
        "data of 2027-05-03",
        "broken: team-c (Team C, ics): not an iCalendar feed: the server sent an HTML/XML page, "
        "since 2027-05-04; alerts use data of 2027-05-03",
    ]  # the summary's warnings: one line per broken entity
    for team in ("a", "d"):
        assert never_posted(slack, team, D2) == set()
    for team in ("b", "c"):
        assert never_posted(slack, team, D2) == set()
    (notice,) = notices(slack, D2)
    assert "team-b" in notice and "team-c" in notice
