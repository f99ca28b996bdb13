import datetime as dt

import holidays
import pytest

from calendar_pipeline.sources.collect import collect_events
from calendar_pipeline.sources.holidays_source import HolidayKeyError, HolidaysSource, parse_key
from calendar_pipeline.sources.model import Entity, Event, Window


def entity(key, entity_id="e1"):
    return Entity(entity_id=entity_id, name="E", source="holidays", key=key)


def test_country_events_match_the_holidays_package():
    window = Window(dt.date(2026, 12, 20), dt.date(2027, 1, 10))
    events = HolidaysSource().fetch(entity("country:FR"), window)
    expected = {
        (day, name)
        for year in (2026, 2027)
        for day, names in holidays.country_holidays("FR", years=year).items()
        for name in names.split("; ")
        if day in window
    }
    assert {(e.event_date, e.title) for e in events} == expected
    assert expected  # Christmas and New Year are in the window


def test_market_includes_half_days():
    window = Window(dt.date(2026, 11, 20), dt.date(2026, 12, 31))
    events = HolidaysSource().fetch(entity("financial:XNYS"), window)
    by_date = {e.event_date: e for e in events}
    assert by_date[dt.date(2026, 11, 26)].details["category"] == "public"
    assert by_date[dt.date(2026, 11, 27)].details["category"] == "half_day"
    assert "close" in by_date[dt.date(2026, 12, 24)].title


def test_two_holidays_on_one_date_are_two_events_with_stable_ids():
    # Find a date with two names in some country's calendar, independently of our code.
    for code in ("IN", "KR", "JP", "IL", "MY", "SG", "PH", "ID", "LK"):
        calendar = holidays.country_holidays(code, years=2026)
        shared = [day for day in calendar if len(calendar.get_list(day)) > 1]
        if shared:
            break
    else:
        pytest.skip("no shared-date holiday in these countries this year")
    day = shared[0]
    events = HolidaysSource().fetch(entity(f"country:{code}"), Window(day, day))
    assert len(events) == len(calendar.get_list(day)) >= 2
    assert len({e.event_id for e in events}) == len(events)
    again = HolidaysSource().fetch(
        entity(f"country:{code}"), Window(day - dt.timedelta(days=40), day)
    )
    assert {e.event_id for e in events} <= {e.event_id for e in again}


def test_event_id_does_not_depend_on_window_and_excludes_the_day():
    source = HolidaysSource()
    wide = source.fetch(entity("country:US"), Window(dt.date(2026, 1, 1), dt.date(2026, 12, 31)))
    narrow = source.fetch(entity("country:US"), Window(dt.date(2026, 12, 1), dt.date(2026, 12, 31)))
    wide_ids = {(e.event_date, e.event_id) for e in wide}
    assert {(e.event_date, e.event_id) for e in narrow} <= wide_ids
    christmas = next(e for e in narrow if e.event_date == dt.date(2026, 12, 25))
    assert christmas.event_id == "christmas-day-2026"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("country:ZZ", "unknown country code 'ZZ'"),
        ("country:US:XX", "no subdivision 'XX'"),
        ("financial:XXXX", "unknown market"),
        ("planet:Mars", "expected country:CC"),
    ],
)
def test_bad_keys_are_named(key, message):
    with pytest.raises(HolidayKeyError, match=message):
        parse_key(key)


def test_one_bad_entity_becomes_an_error_entry_not_a_failed_run():
    class Exploding:
        name = "boom"

        def version(self):
            return "boom 1"

        def fetch(self, entity, window):
            raise RuntimeError("upstream on fire")

    entities = [
        entity("country:FR", "fr"),
        entity("country:ZZ", "zz"),
        Entity(entity_id="b", name="B", source="boom", key="k"),
        Entity(entity_id="n", name="N", source="nowhere", key="k"),
    ]
    window = Window(dt.date(2026, 12, 20), dt.date(2026, 12, 31))
    result = collect_events(entities, window, {"holidays": HolidaysSource(), "boom": Exploding()})
    assert result.entities_ok == 1
    errors = {e.entity_id: e for e in result.errors}
    assert set(errors) == {"zz", "b", "n"}
    assert errors["zz"].error_type == "HolidayKeyError"
    assert errors["b"].message == "upstream on fire"
    assert "no adapter" in errors["n"].message
    assert all(isinstance(e, Event) and e.entity_id == "fr" for e in result.events)


def test_events_outside_window_or_of_another_entity_are_dropped_and_duplicates_merged():
    day = dt.date(2026, 5, 1)

    class Sloppy:
        name = "sloppy"

        def version(self):
            return "1"

        def fetch(self, entity, window):
            base = {
                "entity_id": entity.entity_id,
                "event_id": "x",
                "title": "t",
                "source": "sloppy",
            }
            return [
                Event(**base, event_date=day),
                Event(**base, event_date=day),
                Event(**base, event_date=day + dt.timedelta(days=99)),
                Event(**{**base, "entity_id": "other"}, event_date=day),
            ]

    one = Entity(entity_id="s", name="S", source="sloppy", key="k")
    result = collect_events([one], Window(day, day), {"sloppy": Sloppy()})
    assert [(e.entity_id, e.event_date) for e in result.events] == [("s", day)]
