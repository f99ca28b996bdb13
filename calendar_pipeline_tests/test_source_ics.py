"""The iCalendar adapter: a corpus of real-world-style feeds, good and broken, parsed
directly and served over HTTP by a local server."""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

import pytest

from calendar_pipeline.sources.collect import collect_events
from calendar_pipeline.sources.http import HttpClient, HttpConfig, HttpFetchError
from calendar_pipeline.sources.ics import IcsError, IcsLimits, IcsSource, feed_url, read_feed
from calendar_pipeline.sources.model import Entity, Window
from calendar_pipeline_tests import upstream_server
from calendar_pipeline_tests.upstream_server import MemoryCache, Reply

upstream = upstream_server.upstream  # fixture

CORPUS = Path(__file__).parent / "data" / "ics"
WINDOW = Window(dt.date(2025, 3, 1), dt.date(2025, 4, 29))
STANDUP = "7kukuqrfedlm2f9t1qg8frl5m8@google.com"


def feed(name: str, **kwargs) -> list:
    text = (CORPUS / name).read_bytes().decode("utf-8-sig")
    return read_feed(text, entity_id="team", window=kwargs.pop("window", WINDOW), **kwargs).events


def dated(events) -> list[tuple[str, str]]:
    """(date, id) of the events that still happen (cancelled ones are kept, marked)."""
    return [(e.event_date.isoformat(), e.event_id) for e in active(events)]


def active(events) -> list:
    return [e for e in events if e.details.get("status") != "cancelled"]


def fast(**overrides) -> HttpConfig:
    values = {"rate_limit": 500.0, "max_attempts": 2, "timeout": 5.0, "backoff_base": 0.01}
    return HttpConfig(**{**values, "backoff_max": 0.05, **overrides})


def ics_entity(entity_id: str, url: str) -> Entity:
    return Entity(entity_id=entity_id, name=entity_id, source="ics", key=url)


def generated_feed(events: int, start: dt.date = dt.date(2025, 3, 1)) -> str:
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//Generated//EN"]
    for index in range(events):
        day = start + dt.timedelta(days=index % 50)
        lines += [
            "BEGIN:VEVENT",
            f"UID:gen-{index}@example.com",
            "DTSTAMP:20250301T000000Z",
            f"DTSTART:{day:%Y%m%d}T{index % 24:02d}0000Z",
            "DURATION:PT30M",
            f"SUMMARY:Generated event {index}",
            "END:VEVENT",
        ]
    return "\r\n".join([*lines, "END:VCALENDAR", ""])


# --- good feeds ---------------------------------------------------------------------------


def test_google_export_recurrences_overrides_and_cancellations():
    events = feed("google_team_calendar.ics", default_timezone="Europe/Berlin")
    pairs = dated(events)
    standups = [day for day, event_id in pairs if event_id.startswith(STANDUP)]
    # Mondays and Wednesdays; EXDATEs (03-05, 04-21) are gone, the cancelled 03-19 is kept marked;
    # the 03-10 occurrence moved to 03-11 and keeps its original recurrence id
    assert standups == [
        "2025-03-03",
        "2025-03-11",
        "2025-03-12",
        "2025-03-17",
        "2025-03-24",
        "2025-03-26",
        "2025-03-31",
        "2025-04-02",
        "2025-04-07",
        "2025-04-09",
        "2025-04-14",
        "2025-04-16",
        "2025-04-23",
        "2025-04-28",
    ]
    assert ("2025-03-11", f"{STANDUP}/20250310T083000Z") in pairs
    assert ("2025-03-31", f"{STANDUP}/20250331T073000Z") in pairs  # after the DST change
    moved = next(e for e in events if e.event_date == dt.date(2025, 3, 11))
    assert moved.title == "Platform standup (moved: Monday is the all-hands)"
    reviews = [day for day, event_id in pairs if event_id.startswith("sprint-review")]
    assert reviews == ["2025-03-07", "2025-04-04", "2025-04-17"]  # 1st Fridays + an RDATE
    offsite = next(e for e in events if e.title == "Team offsite")
    assert (offsite.event_date, offsite.event_id) == (
        dt.date(2025, 3, 20),
        "2m6o1nsq3v0v9h5k8dl2c4e7ab@google.com",
    )
    assert offsite.details["all_day"] is True and offsite.details["location"] == "Potsdam"
    cutover = next(e for e in events if e.title.startswith("Release 4.2"))
    assert cutover.event_date == dt.date(2025, 3, 26)  # 23:00Z is midnight in Berlin
    titles = {e.title for e in active(events)}
    assert "Vendor demo" not in titles and "Christmas party" not in titles
    # kept, marked cancelled: the change model reports them (alerts/changes.py)
    cancelled = {e.title for e in events if e.details.get("status") == "cancelled"}
    assert "Vendor demo" in cancelled
    assert any(e.event_id.startswith(STANDUP) and e.event_date == dt.date(2025, 3, 19)
               for e in events if e.details.get("status") == "cancelled")  # fmt: skip


def test_outlook_export_with_windows_time_zone_names():
    events = feed("outlook_office_closures.ics")
    assert [(e.event_date.isoformat(), e.title) for e in events] == [
        ("2025-03-29", "Server room maintenance"),
        ("2025-04-18", "Office closed - Good Friday"),
        ("2025-04-21", "Office closed - Easter Monday"),
        ("2025-04-25", "Early close (last Friday of the month)"),  # 03-28 is an EXDATE
    ]
    assert events[0].event_id.startswith("040000008200E00074C5B7101A82E008")  # unfolded UID


def test_apple_export_dates_follow_calendar_timezone():
    """A timed event is dated in CALENDAR_TIMEZONE (the pipeline's zone, in which alerts
    count days and show times), not in the feed's own zone."""
    utc = feed("apple_icloud_family.ics", default_timezone="UTC")
    flight = next(e for e in utc if e.title.startswith("Red-eye"))
    assert flight.event_date == dt.date(2025, 3, 16)  # 23:30 in Los Angeles is 3-16 in UTC
    events = feed("apple_icloud_family.ics", default_timezone="America/Los_Angeles")
    assert [(e.event_date.isoformat(), e.title) for e in events] == [
        ("2025-03-07", "Soccer practice"),
        ("2025-03-15", "Red-eye flight SFO → JFK"),  # 23:30 in Los Angeles
        ("2025-03-21", "Soccer practice"),
        ("2025-04-04", "Soccer practice"),
        ("2025-04-12", "Grandma's birthday 🎂"),
        ("2025-04-18", "Soccer practice"),
    ]
    birthday = events[4]
    assert birthday.event_id == "9A6F4C1E-0B7D-4E35-9C4B-3F1F5E6A7B8C/20250412"


def test_utc_times_are_dated_in_calendar_timezone():
    events = feed("tokyo_public_holidays.ics", default_timezone="Asia/Tokyo")
    assert dated(events) == [
        ("2025-03-21", "tokyo-vernal-social@google.com"),  # 15:00Z is 00:00 in Tokyo
        ("2025-04-29", "20250429_showa@holiday.calendar.google.com"),
    ]


def test_utc_times_without_a_calendar_zone_use_the_default_timezone():
    in_utc = dated(feed("ticketing_utc_no_timezone.ics"))
    assert in_utc == [
        ("2025-03-12", "change-8841@helpdesk.acme.example"),
        ("2025-04-02", "change-8850@helpdesk.acme.example"),
        ("2025-04-09", "change-8852@helpdesk.acme.example"),  # floating: as written
    ]
    in_tokyo = dated(feed("ticketing_utc_no_timezone.ics", default_timezone="Asia/Tokyo"))
    assert in_tokyo[0] == ("2025-03-13", "change-8841@helpdesk.acme.example")
    assert in_tokyo[2] == ("2025-04-09", "change-8852@helpdesk.acme.example")


def test_empty_calendars_and_missing_uid_or_summary():
    assert feed("empty_calendar.ics") == []
    first, second = feed("missing_uid_and_summary.ics")
    assert first.event_id.startswith("no-uid-") and first.title == "(no title)"
    assert first.event_id == feed("missing_uid_and_summary.ics")[0].event_id  # stable
    assert second.event_id == "has-uid-no-summary"


def test_a_moved_occurrence_keeps_its_id():
    text = (CORPUS / "google_team_calendar.ics").read_text(encoding="utf-8")
    moved_again = text.replace(  # the override moves from the 11th to the 13th
        "DTSTART;TZID=Europe/Berlin:20250311T140000", "DTSTART;TZID=Europe/Berlin:20250313T140000"
    ).replace(
        "DTEND;TZID=Europe/Berlin:20250311T141500", "DTEND;TZID=Europe/Berlin:20250313T141500"
    )
    assert moved_again != text
    events = read_feed(moved_again, entity_id="team", window=WINDOW).events
    assert ("2025-03-13", f"{STANDUP}/20250310T083000Z") in dated(events)
    assert ("2025-03-11", f"{STANDUP}/20250310T083000Z") not in dated(events)


# --- broken and hostile feeds -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("broken_truncated.ics", r"incomplete iCalendar feed: no END:VCALENDAR"),
        ("broken_unterminated_event.ics", r"cannot parse iCalendar"),
        ("not_a_calendar.html", r"not an iCalendar feed: the server sent an HTML"),
        ("broken_all_invalid_dates.ics", r"no usable event: 2 broken.*'month-13@cms\.example'"),
        ("hostile_secondly_rrule.ics", r"'every-second@fuzz\.example': RRULE FREQ=SECONDLY"),
        ("hostile_minutely_since_2015.ics", r"FREQ=MINUTELY.*refusing a runaway recurrence"),
        ("hostile_yearly_every_second.ics", r"'yearly-bomb@fuzz\.example'.*limit 500,000"),
    ],
)
def test_broken_and_hostile_feeds_fail_fast_with_a_clear_cause(name, expected):
    started = time.monotonic()
    with pytest.raises(IcsError, match=expected):
        feed(name)
    assert time.monotonic() - started < 2.0


def test_unreadable_events_are_skipped_and_reported(caplog):
    caplog.set_level(logging.WARNING)
    events = feed("broken_some_invalid_dates.ics")
    assert dated(events) == [("2025-03-15", "good@cms.example")]
    assert "3 broken event(s)" in caplog.text
    for uid in ("feb-30@cms.example", "soon@cms.example", "no-start@cms.example"):
        assert uid in caplog.text


def test_too_many_occurrences_are_refused():
    text = generated_feed(1500)
    assert len(read_feed(text, entity_id="big", window=WINDOW).events) == 1500
    with pytest.raises(IcsError, match=r"more than 1,000 occurrences"):
        read_feed(text, entity_id="big", window=WINDOW, limits=IcsLimits(max_occurrences=1000))


def test_a_slow_expansion_is_stopped_by_the_deadline():
    text = generated_feed(1500).replace("DURATION:PT30M", "DURATION:PT30M\r\nRRULE:FREQ=DAILY")
    with pytest.raises(IcsError, match=r"took more than 0.05 s"):
        read_feed(
            text,
            entity_id="slow",
            window=WINDOW,
            limits=IcsLimits(max_occurrences=10**7, max_expand_seconds=0.05),
        )


def test_deeply_nested_components_do_not_crash():
    text = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\n"
        + "BEGIN:VEVENT\r\n" * 5000
        + "UID:deep\r\nDTSTART;VALUE=DATE:20250310\r\n"
        + "END:VEVENT\r\n" * 5000
        + "END:VCALENDAR\r\n"
    )
    with pytest.raises(IcsError, match="no usable event"):  # the outer VEVENT has no DTSTART
        read_feed(text, entity_id="deep", window=WINDOW)


def test_feed_keys():
    assert feed_url("webcal://p01-caldav.icloud.com/published/2/abc") == (
        "https://p01-caldav.icloud.com/published/2/abc"
    )
    with pytest.raises(IcsError, match="http"):
        feed_url("team-calendar.ics")


# --- over HTTP ----------------------------------------------------------------------------


def test_a_universe_of_feeds_good_and_broken_is_fully_accounted_for(upstream):
    names = sorted(p.name for p in CORPUS.iterdir())
    for name in names:
        content_type = "text/html" if name.endswith(".html") else "text/calendar"
        upstream.route(
            f"/{name}", Reply(body=(CORPUS / name).read_bytes(), content_type=content_type)
        )
    entities = [ics_entity(f"feed-{i}", f"{upstream.url}/{name}") for i, name in enumerate(names)]
    source = IcsSource(HttpClient(fast()))
    result = collect_events(entities, WINDOW, {"ics": source})
    assert result.entities_ok + result.entities_failed == len(names)
    failed = {e.entity_id: e.message for e in result.errors}
    failed_names = sorted(names[int(entity_id.split("-")[1])] for entity_id in failed)
    assert failed_names == [
        "broken_all_invalid_dates.ics",
        "broken_truncated.ics",
        "broken_unterminated_event.ics",
        "hostile_minutely_since_2015.ics",
        "hostile_secondly_rrule.ics",
        "hostile_yearly_every_second.ics",
        "not_a_calendar.html",
        "outlook_windows1252.ics",  # no charset declared and not UTF-8
    ]
    for entity_id, message in failed.items():
        assert f"/{names[int(entity_id.split('-')[1])]}" in message  # names the URL
    assert source.has_data(entities[names.index("empty_calendar.ics")], WINDOW) is False
    assert source.has_data(entities[names.index("broken_truncated.ics")], WINDOW) is False
    assert source.has_data(entities[names.index("google_team_calendar.ics")], WINDOW) is True
    quiet = Window(dt.date(2030, 1, 1), dt.date(2030, 2, 1))  # nothing then, but a calendar
    tokyo = entities[names.index("tokyo_public_holidays.ics")]
    assert source.fetch(tokyo, quiet) == [] and source.has_data(tokyo, quiet) is True
    google = [
        e for e in result.events if e.entity_id == f"feed-{names.index('google_team_calendar.ics')}"
    ]
    assert len(active(google)) == 19  # and 2 kept as cancelled


def test_a_declared_charset_is_honoured(upstream):
    body = (CORPUS / "outlook_windows1252.ics").read_bytes()
    upstream.route(
        "/cp1252.ics", Reply(body=body, content_type="text/calendar; charset=windows-1252")
    )
    [event] = IcsSource(HttpClient(fast())).fetch(
        ics_entity("fr", f"{upstream.url}/cp1252.ics"), WINDOW
    )
    assert event.title == "Réunion d’équipe – café"


def test_an_oversized_feed_is_abandoned(upstream):
    upstream.route(
        "/huge.ics", Reply(body=generated_feed(8000).encode(), content_type="text/calendar")
    )
    source = IcsSource(HttpClient(fast(max_response_bytes=1_000_000)))
    with pytest.raises(HttpFetchError, match=r"/huge.ics: body of [\d,]+ bytes is larger"):
        source.fetch(ics_entity("huge", f"{upstream.url}/huge.ics"), WINDOW)


def test_an_unchanged_feed_costs_a_304(upstream):
    body = (CORPUS / "google_team_calendar.ics").read_bytes()
    upstream.route("/team.ics", Reply(body=body, content_type="text/calendar"))
    source = IcsSource(HttpClient(fast(), MemoryCache()))
    entity = ics_entity("team", f"{upstream.url}/team.ics")
    first = source.fetch(entity, WINDOW)
    second = source.fetch(entity, WINDOW)
    assert first == second and len(active(first)) == 19
    assert [r.status for r in upstream.requests] == [200, 304]
