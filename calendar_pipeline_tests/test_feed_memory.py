"""Memory is bounded per run, not per feed (issue 24, item 6).

An icalendar parse tree costs about 50x its feed; the events kept from it are a few
percent of that. Feeds are parsed one at a time, always on the same thread, so the
peak of a run is that of its largest feed, whatever the number of feeds.
(``bench/bench_feed_memory.py`` measures the real thing: 60,000-event feeds, RSS.)
"""

from __future__ import annotations

import datetime as dt
import gc
import random
import threading
import time
import tracemalloc

from calendar_pipeline.sources import ics
from calendar_pipeline.sources.collect import collect_events
from calendar_pipeline.sources.http import HttpClient, HttpConfig, session
from calendar_pipeline.sources.http.response import HttpResponse
from calendar_pipeline.sources.ics import IcsSource, read_feed
from calendar_pipeline.sources.model import Entity, Window
from calendar_pipeline_tests import upstream_server
from calendar_pipeline_tests.upstream_server import Reply

upstream = upstream_server.upstream  # fixture

WINDOW = Window(dt.date(2026, 11, 20), dt.date(2027, 1, 19))


def big_feed(n: int, events: int) -> bytes:
    """``events`` one-off events over two years (a few percent in WINDOW)."""
    rng = random.Random(n)
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:-//test_feed_memory//{n}//EN"]
    for k in range(events):
        day = dt.date(2026, 6, 1) + dt.timedelta(days=rng.randrange(730))
        lines += [
            "BEGIN:VEVENT",
            f"UID:f{n}-e{k}@test",
            "DTSTAMP:20260101T000000Z",
            f"DTSTART;VALUE=DATE:{day:%Y%m%d}",
            f"SUMMARY:Feed {n} item {k}",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return ("\r\n".join(lines) + "\r\n").encode()


def serve(upstream, feeds: int, events: int) -> list[Entity]:
    entities = []
    for n in range(feeds):
        body = big_feed(n, events)
        upstream.route(f"/feeds/{n}.ics", Reply(body=body, content_type="text/calendar"))
        url = f"{upstream.url}/feeds/{n}.ics"
        entities.append(Entity(entity_id=f"big-{n}", name=f"Big {n}", source="ics", key=url))
    return entities


def source() -> IcsSource:
    # every feed is downloaded at once: nothing but the parser can serialize them
    config = HttpConfig(rate_limit=1000.0, max_concurrency=16, max_attempts=1, timeout=60.0)
    return IcsSource(HttpClient(config))


def traced_peak(entities: list[Entity]) -> tuple[int, int]:
    """(tracemalloc peak of collecting ``entities`` in bytes, events kept)."""
    src = source()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = collect_events(entities, WINDOW, {"ics": src})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not result.errors, result.errors
    return peak, len(result.events)


def test_four_large_feeds_peak_at_most_one_and_a_half_times_one(upstream):
    entities = serve(upstream, 4, 1_500)
    one, one_events = traced_peak(entities[:1])
    four, four_events = traced_peak(entities)
    assert four_events > 3 * one_events > 0  # every feed's events are kept
    assert four <= 1.5 * one, f"4 feeds peak at {four / one:.2f}x one feed"


def test_feeds_are_parsed_one_at_a_time_on_one_thread(upstream, monkeypatch):
    entities = serve(upstream, 5, 50)
    lock = threading.Lock()
    busy = 0
    most = 0
    threads: set[int] = set()
    real = ics.read_feed

    def watched(*args, **kwargs):
        nonlocal busy, most
        with lock:
            busy += 1
            most = max(most, busy)
            threads.add(threading.get_ident())
        try:
            time.sleep(0.05)  # a slow parse: another download has time to finish
            return real(*args, **kwargs)
        finally:
            with lock:
                busy -= 1

    monkeypatch.setattr(ics, "read_feed", watched)
    result = collect_events(entities, WINDOW, {"ics": source()})
    assert not result.errors, result.errors
    assert result.entities_ok == 5
    assert most == 1, f"{most} feeds were parsed at the same time"
    assert len(threads) == 1, f"parses ran on {len(threads)} threads"
    assert threading.get_ident() not in threads  # still off the event loop's thread


def test_bodies_waiting_for_the_parser_wait_on_disk(upstream, monkeypatch):
    monkeypatch.setattr(session, "SPILL_BYTES", 2_000)  # these small feeds count as large
    entities = serve(upstream, 4, 200)
    held: list[int] = []
    real = ics.read_feed

    def watched(*args, **kwargs):
        time.sleep(0.1)  # a slow parse: the other feeds are downloaded meanwhile
        gc.collect()
        held.append(
            sum(1 for o in gc.get_objects() if isinstance(o, HttpResponse) and len(o.body) > 2_000)
        )
        return real(*args, **kwargs)

    monkeypatch.setattr(ics, "read_feed", watched)
    result = collect_events(entities, WINDOW, {"ics": source()})
    assert not result.errors, result.errors
    assert held and max(held) == 1, f"bodies in memory during each parse: {held}"
    # read back whole: the same events as parsing each feed directly
    expected = []
    for n, entity in enumerate(entities):
        text = big_feed(n, 200).decode()
        expected += read_feed(text, entity_id=entity.entity_id, window=WINDOW).events
    key = lambda e: (e.entity_id, e.event_id)  # noqa: E731
    assert sorted(result.events, key=key) == sorted(expected, key=key)
    assert len(expected) > 20
