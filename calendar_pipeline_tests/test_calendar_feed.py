"""The published calendar feeds over several mornings of a changing upstream feed.

Two team iCalendar feeds on 127.0.0.1 that change the way real feeds change (a move, a
rename, an explicit and a silent cancellation, a one-day glitch, UID churn, timed events in
New York and Tokyo), the clock moved from one morning to the next, each day run through
`daily_calendar_job`. After each morning `feeds/all.ics` and the per-channel files are
parsed with `icalendar`, with `vobject` (an independent parser) and expanded with
`recurring_ical_events`; what is measured: UIDs that change, changed events without a
higher SEQUENCE, cancellations not published as cancelled, timed events at the wrong
instant, events without a VALARM per threshold. All must be 0.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import icalendar
import pytest
import recurring_ical_events
import time_machine
import vobject

from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.feeds import build
from calendar_pipeline_tests.flows import run_daily
from calendar_pipeline_tests.upstream_server import Reply, UpstreamServer

D1 = dt.date(2027, 3, 1)  # New York moves to daylight time on 2027-03-14
DAY = dt.timedelta(days=1)
THRESHOLDS = (1, 3, 7, 15, 30)  # the defaults (CALENDAR_THRESHOLDS)
OPS_THRESHOLDS = (1, 7)  # the ops entity's own


def vevent(uid: str, summary: str, start: str, status: str = "") -> list[str]:
    """`start`: `20270316` (all day), `20270304T103000` (New York), `...Z` (UTC),
    `TZ=Asia/Tokyo;20270306T090000` (another zone)."""
    if start.startswith("TZ="):
        zone, start = start[3:].split(";")
        when = f"DTSTART;TZID={zone}:{start}"
    elif "T" not in start:
        when = f"DTSTART;VALUE=DATE:{start}"
    elif start.endswith("Z"):
        when = f"DTSTART:{start}"
    else:
        when = f"DTSTART;TZID=America/New_York:{start}"
    lines = ["BEGIN:VEVENT", f"UID:{uid}", "DTSTAMP:20270101T000000Z", when]
    lines += [f"SUMMARY:{summary}"] + ([f"STATUS:{status}"] if status else [])
    return [*lines, "END:VEVENT"]


def calendar_bytes(events: list[list[str]]) -> bytes:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//calendar_pipeline tests//EN"]
    for event in events:
        lines += event
    return ("\r\n".join([*lines, "END:VCALENDAR"]) + "\r\n").encode()


# logical name -> (upstream uid, title, start): the team feed on day 1
TEAM = {
    "offsite": ("offsite", "Offsite", "20270316"),
    "review": ("review", "Review", "20270310"),
    "planning": ("planning", "Planning", "20270312"),
    "drop": ("drop", "Vendor visit", "20270308"),
    "glitch": ("glitch", "Team lunch", "20270309"),
    "standup": ("standup", "Standup", "20270305T093000"),
    "meeting": ("meeting", "Customer call", "20270304T103000"),  # 15:30 UTC
    "after-dst": ("after-dst", "Board call", "20270316T103000"),  # 14:30 UTC
    "tokyo": ("tokyo", "Tokyo sync", "TZ=Asia/Tokyo;20270306T090000"),  # 00:00 UTC
}
OPS = {"patch": ("patch", "Patch day", "20270309"), "dr": ("dr", "DR test", "20270320T080000Z")}

# the instant each timed event must be published at, per day
INSTANTS = {
    "standup": lambda n: dt.datetime(2027, 3, 5, 14, 30, tzinfo=dt.UTC),
    "meeting": lambda n: dt.datetime(2027, 3, 4, 15 if n < 3 else 16, 30, tzinfo=dt.UTC),
    "after-dst": lambda n: dt.datetime(2027, 3, 16, 14, 30, tzinfo=dt.UTC),
    "tokyo": lambda n: dt.datetime(2027, 3, 6, 0, 0, tzinfo=dt.UTC),
    "dr": lambda n: dt.datetime(2027, 3, 20, 8, 0, tzinfo=dt.UTC),
}


def team_feed(n: int) -> dict[str, tuple[str, str, str, str]]:
    """Day n's team feed: logical name -> (uid, title, start, status)."""
    events = {k: (*v, "") for k, v in TEAM.items()}
    if n >= 2:
        events["offsite"] = (*TEAM["offsite"], "CANCELLED")  # explicit cancellation
        events.pop("drop")  # silent: absent on day 2 and day 3 -> cancelled on day 3
        events["review"] = ("review", "Sprint review", "20270310", "")  # renamed
        events["planning"] = ("planning", "Planning", "20270313", "")  # moved a day
        events["standup"] = ("standup-v2", "Standup", "20270305T093000", "")  # UID churn
    if n == 2:
        events.pop("glitch")  # a one-day glitch: back on day 3
    if n >= 3:
        events["meeting"] = ("meeting", "Customer call", "20270304T113000", "")  # +1 hour
    return events


def serve(upstream: UpstreamServer, n: int) -> None:
    team = team_feed(n)
    upstream.route(
        "/team.ics",
        Reply(
            body=calendar_bytes(
                [vevent(f"{u}@team.test", t, s, st) for u, t, s, st in team.values()]
            ),
            content_type="text/calendar",
        ),
    )
    upstream.route(
        "/ops.ics",
        Reply(
            body=calendar_bytes([vevent(f"{u}@ops.test", t, s) for u, t, s in OPS.values()]),
            content_type="text/calendar",
        ),
    )


@pytest.fixture
def world(tmp_path):
    with UpstreamServer() as upstream, dg.instance_for_test() as instance:
        universe = tmp_path / "universe.csv"
        universe.write_text(
            "entity_id,name,source,key,channel,thresholds\n"
            f"team,Team,ics,{upstream.url}/team.ics,#team,\n"
            f'ops,Ops,ics,{upstream.url}/ops.ics,,"7,1"\n',
            encoding="utf-8",
        )
        calendar = CalendarSettings(data_dir=str(tmp_path / "data"), universe=str(universe))
        slack = SlackSettings(channel="#general")  # no token: nothing is posted
        yield {
            "defs": build_defs({"calendar": calendar, "slack": slack}),
            "instance": instance,
            "upstream": upstream,
            "feeds": tmp_path / "data" / "feeds",
        }


class Parsed:
    """One feed file read three ways; events by (summary without the entity's name)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.cal = icalendar.Calendar.from_ical(data)
        self.events = {str(e["SUMMARY"]): e for e in self.cal.walk("VEVENT")}
        assert len(self.events) == len(self.cal.walk("VEVENT")), "two events, one summary"
        self.vcal = vobject.readOne(data.decode("utf-8"))
        self.vevents = {e.summary.value: e for e in self.vcal.vevent_list}
        expanded = recurring_ical_events.of(self.cal).between(
            dt.date(2027, 1, 1), dt.date(2027, 12, 31)
        )
        self.expanded = {str(e["SUMMARY"]): e for e in expanded}


def read(world, name: str = "all") -> Parsed:
    return Parsed((world["feeds"] / f"{name}.ics").read_bytes())


def morning(world, n: int) -> Parsed:
    serve(world["upstream"], n)
    result = run_daily(world["defs"], world["instance"], D1 + (n - 1) * DAY)
    assert result.success
    assert result.asset_materializations_for_node("calendar_feed")
    return read(world)


def summary(name: str) -> str:
    for key, table in (("Team", TEAM), ("Ops", OPS)):
        if name in table:
            return f"{key}: {table[name][1]}"
    raise KeyError(name)


def check_every_event(parsed: Parsed, day_n: int) -> dict[str, int]:
    """What must hold of every event of a feed, counted as the issue counts it."""
    bad = {"no_valarm_per_threshold": 0, "wrong_instant": 0, "parsers_disagree": 0}
    for title, event in parsed.events.items():
        own = OPS_THRESHOLDS if title.startswith("Ops:") else THRESHOLDS
        triggers = sorted(a.decoded("TRIGGER") for a in event.walk("VALARM"))
        if triggers != sorted(-dt.timedelta(days=d) for d in own):
            bad["no_valarm_per_threshold"] += 1
        v = parsed.vevents[title]
        same = (
            v.uid.value == str(event["UID"])
            and int(v.sequence.value) == int(event["SEQUENCE"])
            and v.dtstart.value == event.decoded("DTSTART")
            and len(v.valarm_list) == len(triggers)
            and str(getattr(v, "status", None) and v.status.value) == str(event.get("STATUS"))
        )
        bad["parsers_disagree"] += not same
        assert title in parsed.expanded, title  # recurring_ical_events sees each one
        start = event.decoded("DTSTART")
        if isinstance(start, dt.datetime):
            assert str(event["DTSTART"].to_ical().decode()).endswith("Z")
            logical = next((k for k in INSTANTS if summary(k) == title), None)
            if logical is None or start != INSTANTS[logical](day_n):
                bad["wrong_instant"] += 1
        else:
            assert event["DTSTART"].params.get("VALUE") == "DATE"
    return bad


def test_feeds_over_mornings_of_a_changing_feed(world):
    seen_uids: dict[str, str] = {}
    sequences: dict[str, list[int]] = {}
    with time_machine.travel(dt.datetime(2027, 3, 1, 7, tzinfo=dt.UTC), tick=True) as clock:
        day1 = morning(world, 1)
        cal = day1.cal
        assert str(cal["VERSION"]) == "2.0" and str(cal["METHOD"]) == "PUBLISH"
        assert str(cal["CALSCALE"]) == "GREGORIAN" and str(cal["PRODID"]) == build.PRODID
        assert str(cal["X-WR-CALNAME"]) == "Calendar pipeline"
        assert b"REFRESH-INTERVAL;VALUE=DURATION:PT1H" in day1.data
        assert b"X-PUBLISHED-TTL:PT1H" in day1.data
        assert set(day1.events) == {summary(k) for k in [*TEAM, *OPS]}
        for event in day1.events.values():
            assert int(event["SEQUENCE"]) == 0 and str(event["STATUS"]) == "CONFIRMED"
            assert "Source: ics" in str(event["DESCRIPTION"])
            assert event.decoded("DTSTAMP") == dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
        # per channel: the team's own feed, and the ops entity (no channel) in SLACK_CHANNEL's
        assert sorted(p.name for p in world["feeds"].glob("*.ics")) == [
            "all.ics", "general.ics", "team.ics"
        ]  # fmt: skip
        assert set(read(world, "team").events) == {summary(k) for k in TEAM}
        assert set(read(world, "general").events) == {summary(k) for k in OPS}
        meta = _feed_metadata(world)
        assert meta["events_all"].value == len(TEAM) + len(OPS)
        assert meta["events_team"].value == len(TEAM) and meta["events_general"].value == 2
        assert meta["file_all"].value == str(world["feeds"] / "all.ics")

        days = {1: day1}
        for n in (2, 3, 4):
            clock.move_to(dt.datetime(2027, 3, n, 7, tzinfo=dt.UTC))
            days[n] = morning(world, n)

        changed_uids = 0
        for n, parsed in days.items():
            assert check_every_event(parsed, n) == {
                "no_valarm_per_threshold": 0, "wrong_instant": 0, "parsers_disagree": 0
            }  # fmt: skip
            for logical in [*TEAM, *OPS]:
                title = summary(logical)
                if logical == "review" and n >= 2:
                    title = "Team: Sprint review"
                event = parsed.events.get(title)
                if event is None:
                    continue
                uid = str(event["UID"])
                changed_uids += seen_uids.setdefault(logical, uid) != uid
                sequences.setdefault(logical, []).append(int(event["SEQUENCE"]))
        assert changed_uids == 0

        # every event stayed in the feed every day (the silent cancellation, the glitch too)
        assert all(len(seqs) == 4 for seqs in sequences.values()), sequences
        assert sequences["review"] == [0, 1, 1, 1]  # renamed on day 2
        assert sequences["planning"] == [0, 1, 1, 1]  # moved on day 2
        assert sequences["meeting"] == [0, 0, 1, 1]  # an hour later on day 3
        assert sequences["offsite"] == [0, 1, 1, 1]  # cancelled on day 2
        assert sequences["drop"] == [0, 0, 1, 1]  # silently cancelled on day 3
        assert sequences["standup"] == [0, 0, 0, 0]  # UID churn is not a change
        assert sequences["glitch"] == [0, 0, 0, 0]  # a one-day glitch is not a change
        status = {n: {t: str(e["STATUS"]) for t, e in p.events.items()} for n, p in days.items()}
        assert status[2]["Team: Offsite"] == "CANCELLED"
        assert status[2]["Team: Vendor visit"] == "CONFIRMED"  # absent once: not yet
        assert status[2]["Team: Team lunch"] == "CONFIRMED"  # the glitch
        assert status[3]["Team: Vendor visit"] == "CANCELLED"
        assert {t for t, s in status[4].items() if s == "CANCELLED"} == {
            "Team: Vendor visit",
            "Team: Offsite",
        }  # kept, still cancelled, nothing else
        assert days[2].events["Team: Planning"].decoded("DTSTART") == dt.date(2027, 3, 13)
        # the same UID the first day gave, after the upstream id changed
        assert str(days[4].events["Team: Standup"]["UID"]) == build.uid_for(
            "team", "standup@team.test"
        )
        churn = days[4].vevents["Team: Standup"]
        assert churn.uid.value == seen_uids["standup"]

        # the same morning again: the same bytes (DTSTAMP is the day's, not the clock's)
        before = {p.name: p.read_bytes() for p in world["feeds"].glob("*.ics")}
        morning(world, 4)
        assert {p.name: p.read_bytes() for p in world["feeds"].glob("*.ics")} == before
        # a re-run of an older day (a backfill) leaves the published feeds alone
        serve(world["upstream"], 3)
        assert run_daily(world["defs"], world["instance"], D1 + 2 * DAY).success
        assert {p.name: p.read_bytes() for p in world["feeds"].glob("*.ics")} == before
        morning(world, 4)  # and the newest day re-run after it: still the same
        assert {p.name: p.read_bytes() for p in world["feeds"].glob("*.ics")} == before

        # a week after their cancellation, cancelled events leave the feed
        clock.move_to(dt.datetime(2027, 3, 10, 7, tzinfo=dt.UTC))
        day10 = morning(world, 10)
        assert "Team: Offsite" not in day10.events and "Team: Vendor visit" not in day10.events
        assert str(day10.events["Team: Board call"]["UID"]) == seen_uids["after-dst"]
        assert check_every_event(day10, 10)["no_valarm_per_threshold"] == 0


def _feed_metadata(world) -> dict:
    record = world["instance"].get_latest_materialization_event(dg.AssetKey("calendar_feed"))
    return record.asset_materialization.metadata


def test_the_daily_job_materializes_the_feed_after_due_alerts(world):
    with time_machine.travel(dt.datetime(2027, 3, 1, 7, tzinfo=dt.UTC), tick=True):
        serve(world["upstream"], 1)
        result = run_daily(world["defs"], world["instance"], D1)
    assert result.success
    order = [
        e.asset_key.path[-1]
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key
    ]
    assert order.index("due_alerts") < order.index("calendar_feed")
