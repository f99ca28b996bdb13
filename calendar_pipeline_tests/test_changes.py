"""The change model (alerts/changes.py) day by day, on snapshot documents as the index
stores them: each rule of the issue, and what must never be reported."""

from __future__ import annotations

import datetime as dt

import pytest

from calendar_pipeline.alerts.changes import (
    CANCELLED,
    MOVED,
    NEW,
    RENAMED,
    count_changes,
    detect_changes,
    verify_changes,
)
from calendar_pipeline.universe import UniverseError, load_universe

D = dt.date(2027, 3, 1)


def ev(event_id: str, day: str, title: str = "Offsite", start: str | None = None, **details):
    info = {"all_day": start is None, **details}
    if start:
        info["start"] = start
    return {"entity_id": "t", "event_id": event_id, "event_date": day, "title": title,
            "source": "ics", "details": info}  # fmt: skip


def snap(day: dt.date, events: list, state: str = "fresh") -> dict:
    return {
        "partition": day.isoformat(),
        "window": {"start": day.isoformat(), "end": (day + dt.timedelta(days=60)).isoformat()},
        "entities": [{"entity_id": "t", "name": "T", "source": "ics", "key": "k"}],
        "entity_status": {"t": {"state": state, "data_of": day.isoformat()}},
        "events": events,
        "errors": [],
    }


class Days:
    """Snapshots day after day; ``changes(events)`` adds day n and returns its changes."""

    def __init__(self, cancel_after: int = 2) -> None:
        self.docs: list[dict] = []
        self.cancel_after = cancel_after

    def changes(self, events: list, state: str = "fresh"):
        day = D + dt.timedelta(days=len(self.docs))
        today = snap(day, events, state)
        earlier = list(reversed(self.docs))
        found = detect_changes(today, earlier, self.cancel_after)
        assert verify_changes(today, earlier, found) == []
        self.docs.append(today)
        return {(c.event_id, c.kinds) for c in found}, found


def test_first_snapshot_has_no_changes_and_an_unchanged_feed_none():
    days = Days()
    assert days.changes([ev("a", "2027-03-20")])[0] == set()
    assert days.changes([ev("a", "2027-03-20")])[0] == set()


def test_new_moved_renamed_and_both():
    days = Days()
    days.changes([ev("a", "2027-03-20"), ev("b", "2027-03-25", "Review")])
    kinds, found = days.changes(
        [ev("a", "2027-03-21"), ev("b", "2027-03-25", "Sprint review"), ev("c", "2027-03-03")]
    )
    assert kinds == {("a", (MOVED,)), ("b", (RENAMED,)), ("c", (NEW,))}
    moved = next(c for c in found if c.event_id == "a")
    assert moved.previous_date == dt.date(2027, 3, 20) and moved.event_date == dt.date(2027, 3, 21)
    renamed = next(c for c in found if c.event_id == "b")
    assert renamed.previous_title == "Review"
    kinds, _ = days.changes(
        [ev("a", "2027-03-22", "Offsite (Potsdam)"), ev("b", "2027-03-25", "Sprint review"),
         ev("c", "2027-03-03")]
    )  # fmt: skip
    assert kinds == {("a", (MOVED, RENAMED))}
    assert count_changes(found) == {NEW: 1, MOVED: 1, RENAMED: 1, CANCELLED: 0}


def test_a_timed_event_moved_by_an_hour_is_moved():
    days = Days()
    days.changes([ev("m", "2027-03-04", "Sync", start="2027-03-04T15:30:00+00:00")])
    kinds, found = days.changes([ev("m", "2027-03-04", "Sync", start="2027-03-04T16:30:00+00:00")])
    assert kinds == {("m", (MOVED,))}
    assert found[0].previous_start == "2027-03-04T15:30:00+00:00"


def test_explicit_cancellation_is_reported_that_day_and_once():
    days = Days()
    days.changes([ev("a", "2027-03-20")])
    kinds, found = days.changes([ev("a", "2027-03-20", status="cancelled")])
    assert kinds == {("a", (CANCELLED,))} and found[0].explicit
    assert days.changes([ev("a", "2027-03-20", status="cancelled")])[0] == set()


def test_silent_cancellation_after_two_absences_and_never_for_a_one_day_glitch():
    days = Days(cancel_after=2)
    days.changes([ev("a", "2027-03-20"), ev("g", "2027-03-22")])
    assert days.changes([ev("g", "2027-03-22")])[0] == set()  # a gone once: not yet
    kinds, _ = days.changes([])  # a gone twice: cancelled; g gone once: not yet
    assert kinds == {("a", (CANCELLED,))}
    kinds, _ = days.changes([ev("g", "2027-03-22")])  # g came back: never mentioned
    assert kinds == set()
    assert days.changes([ev("g", "2027-03-22")])[0] == set()  # and a is not reported again


def test_a_failed_fetch_is_not_an_absence_and_shows_no_change():
    days = Days(cancel_after=2)
    days.changes([ev("a", "2027-03-20")])
    assert days.changes([], state="carried")[0] == set()  # broken: no changes at all
    assert days.changes([ev("a", "2027-03-20")])[0] == set()  # it was there all along
    assert days.changes([])[0] == set()
    assert days.changes([], state="stopped")[0] == set()
    assert days.changes([])[0] == {("a", (CANCELLED,))}  # two fresh absences


def test_passed_events_and_events_beyond_the_window_are_not_cancelled():
    days = Days(cancel_after=1)
    days.changes([ev("past", "2027-03-01"), ev("far", "2027-04-30")])
    # day 2: "past" is yesterday; the window still covers "far", which disappears
    kinds, _ = days.changes([])
    assert kinds == {("far", (CANCELLED,))}
    days2 = Days(cancel_after=1)
    days2.changes([ev("edge", "2027-04-30")])
    today = snap(D + dt.timedelta(days=1), [])
    today["window"]["end"] = "2027-04-29"  # a shorter lookahead: "edge" left the window
    assert detect_changes(today, days2.docs, 1) == []


def test_uid_churn_is_neither_cancelled_nor_new():
    days = Days(cancel_after=1)
    days.changes(
        [
            ev("uid-1", "2027-03-20"),
            ev("t-1", "2027-03-05", "Sync", start="2027-03-05T10:00:00+00:00"),
        ]
    )
    kinds, _ = days.changes(
        [
            ev("uid-2", "2027-03-20"),
            ev("t-2", "2027-03-05", "Sync", start="2027-03-05T10:00:00+00:00"),
        ]
    )
    assert kinds == set()  # fmt: skip


def test_an_event_coming_into_view_is_not_new_but_a_late_addition_is():
    days = Days()
    days.changes([ev("a", "2027-03-20")])
    kinds, _ = days.changes([ev("a", "2027-03-20"), ev("edge", "2027-05-01")])  # D+1's window end
    assert kinds == set()
    kinds, _ = days.changes(
        [ev("a", "2027-03-20"), ev("edge", "2027-05-01"), ev("late", "2027-03-05")]
    )
    assert kinds == {("late", (NEW,))}  # fmt: skip


def test_verify_changes_catches_a_wrong_classification():
    earlier = [snap(D, [ev("a", "2027-03-20")])]
    today = snap(D + dt.timedelta(days=1), [ev("a", "2027-03-20")])
    from calendar_pipeline.alerts.changes import Change

    bogus = [
        Change("t", "a", (NEW,), dt.date(2027, 3, 20), "Offsite"),
        Change("t", "zz", (MOVED,), dt.date(2027, 3, 20), "Ghost"),
        Change("t", "a", (CANCELLED,), dt.date(2027, 3, 20), "Offsite"),
    ]
    problems = verify_changes(today, earlier, bogus)
    assert len(problems) == 3
    assert "new, but in the snapshot before" in problems[0]
    assert "never seen before" in problems[1]
    assert "still in the day's snapshot" in problems[2]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("7,x", "line 3: thresholds: Value error, 'x' is not a positive whole number of days"),
        ("7,7", "line 3: thresholds: Value error, a threshold is listed twice"),
        ("0", "line 3: thresholds: Value error, '0' is not a positive"),
        ("90,7", "line 3: thresholds 90 days is beyond the lookahead of 60 days"),
    ],
)
def test_a_bad_thresholds_value_names_the_file_and_line(tmp_path, value, message):
    path = tmp_path / "u.csv"
    path.write_text(
        "entity_id,name,source,key,channel,thresholds\n"
        "fr,France,holidays,country:FR,,\n"
        f'team,Team,ics,https://x.test/t.ics,#team,"{value}"\n'
    )
    with pytest.raises(UniverseError) as raised:
        load_universe(path, known_sources={"holidays", "ics"}, max_threshold=60)
    assert str(path) in str(raised.value) and message in str(raised.value)


def test_thresholds_column_is_optional_and_parsed(tmp_path):
    path = tmp_path / "u.csv"
    path.write_text(
        "entity_id,name,source,key,channel,thresholds\n"
        "fr,France,holidays,country:FR,,\n"
        'team,Team,ics,https://x.test/t.ics,#team,"1, 7"\n'
    )
    universe = load_universe(path, known_sources={"holidays", "ics"}, max_threshold=60)
    assert [e.thresholds for e in universe.entities] == [None, (1, 7)]
