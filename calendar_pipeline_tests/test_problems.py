"""The words of a broken entity's problem (quality/problems.py) and of carried data
(quality/carry.py), pure functions tested on their own; test_broken_feeds.py runs them
through the pipeline."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from calendar_pipeline.lake.history import History
from calendar_pipeline.quality.carry import (
    CARRIED,
    FRESH,
    STOPPED,
    apply_last_known_good,
    data_note,
)
from calendar_pipeline.quality.problems import AUTH, KEY, NETWORK, OTHER, SERVER, describe_problem
from calendar_pipeline.text import shorten


@pytest.mark.parametrize(
    ("error_type", "message", "kind", "what"),
    [
        ("HttpStatusError", "GET https://feeds.example.com/t.ics: HTTP 500 Internal", SERVER,
         "HTTP 500 from feeds.example.com"),
        ("HttpStatusError", "GET https://x.test/a: HTTP 429 Too Many (after 5 attempts)", SERVER,
         "HTTP 429 from x.test"),
        ("HttpStatusError", "GET https://x.test/a: HTTP 404 Not Found", KEY,
         "HTTP 404 (not found) from x.test"),
        ("HttpStatusError", "GET https://x.test/a: HTTP 403 Forbidden", AUTH,
         "HTTP 403 from x.test"),
        ("HttpTimeout", "GET https://x.test/a: no complete answer within 20 s", NETWORK,
         "timeout from x.test"),
        ("HttpTransportError", "GET https://x.test/a: ConnectError: refused", NETWORK,
         "x.test unreachable (ConnectError: refused)"),
        ("IcsError", "not an iCalendar feed: line 1 is 'hello', not BEGIN:VCALENDAR", KEY,
         "not an iCalendar feed: line 1 is 'hello', not BEGIN:VCALENDAR"),
        ("HolidayKeyError", "key 'country:ZZ': unknown country code 'ZZ'", OTHER,
         "key 'country:ZZ': unknown country code 'ZZ'"),
        ("RuntimeError", "", OTHER, "RuntimeError"),
    ],
)  # fmt: skip
def test_each_cause_has_its_own_words_and_advice(error_type, message, kind, what):
    problem = describe_problem({"error_type": error_type, "message": message})
    assert (problem.kind, problem.what) == (kind, what)
    retry = "next run tries again" in problem.advice
    assert retry == (kind in (SERVER, NETWORK))  # only upstream faults promise a retry
    assert ("key" in problem.advice) == (kind in (KEY, AUTH))


def test_shorten_cuts_at_a_word_boundary_and_never_mid_word():
    text = "the feed at https://example.com/very/long/path answered with a page " * 5
    short = shorten(text, 80)
    assert len(short) <= 80 and short.endswith("…")
    assert text.startswith(short[:-1])
    assert text[len(short) - 1] == " "  # the next character was a space: a whole word cut
    assert shorten("short", 80) == "short"
    assert shorten("a\nb\tc", 80) == "a b c"  # one line
    assert shorten("x" * 100, 10) == "x" * 9 + "…"  # one long word: a hard cut, still bounded


def _document(day: str, events: list[dict], status: dict | None = None, errors=()) -> dict:
    document = {
        "partition": day,
        "window": {"start": day, "end": "2027-07-01"},
        "entities": [{"entity_id": "t", "name": "T", "source": "ics", "channel": None}],
        "events": events,
        "errors": list(errors),
    }
    if status is not None:
        document["entity_status"] = status
    return document


def _event(day: str) -> dict:
    return {"entity_id": "t", "event_id": "e", "event_date": day, "title": "x", "source": "ics"}


def test_carry_keeps_the_newest_good_data_then_stops_after_the_limit():
    stored = {"2027-05-03": _document("2027-05-03", [_event("2027-05-03"), _event("2027-05-20")])}

    def lookup(day):
        document = stored.get(day)
        return None if document is None else {"content_text": json.dumps(document)}

    error = {"entity_id": "t", "source": "ics", "error_type": "HttpStatusError", "message": "m"}
    for day, state in (("2027-05-04", CARRIED), ("2027-05-06", CARRIED), ("2027-05-07", STOPPED)):
        payload = _document(day, [], errors=[error])
        apply_last_known_good(payload, {}, History(lookup), stale_after=3)
        entry = payload["entity_status"]["t"]
        assert entry["state"] == state and entry["data_of"] == "2027-05-03"
        assert entry["broken_since"] == "2027-05-04"  # the first day it failed, kept
        # only events still ahead are carried (the Monday event has passed)
        expected = [_event("2027-05-20")] if state == CARRIED else []
        assert payload["events"] == expected
        stored[day] = payload
        if day == "2027-05-04":
            assert data_note(entry) == (
                "feed unavailable since Tue 2027-05-04; data of Mon 2027-05-03"
            )
    assert stored["2027-05-07"]["entity_status"]["t"]["broken_since"] == "2027-05-04"
    fresh = _document("2027-05-08", [_event("2027-05-20")])
    apply_last_known_good(fresh, {}, History(lookup), stale_after=3)
    assert fresh["entity_status"]["t"] == {"state": FRESH, "data_of": "2027-05-08"}
    assert data_note(fresh["entity_status"]["t"]) is None


def test_a_damaged_index_line_is_skipped_not_fatal():
    def lookup(day):
        return {"content_text": "{not json"}

    payload = _document(
        "2027-05-04",
        [],
        errors=[{"entity_id": "t", "source": "ics", "error_type": "X", "message": "m"}],
    )
    apply_last_known_good(payload, {}, History(lookup), stale_after=3)
    assert payload["entity_status"]["t"]["state"] == STOPPED
    assert dt.date.fromisoformat(payload["entity_status"]["t"]["broken_since"])
