"""The bucket rule, table-driven, and the catch-up behaviour it gives with the ledger."""

import datetime as dt

import pytest

from calendar_pipeline.alerts.due import bucket_for, compute_due_alerts, count_by_threshold
from calendar_pipeline.sources.model import Entity, Event

T = (1, 3, 7, 15, 30)


@pytest.mark.parametrize(
    ("days", "bucket"),
    [
        (-1, None),
        (0, 1),
        (1, 1),
        (2, 3),
        (3, 3),
        (4, 7),
        (7, 7),
        (8, 15),
        (15, 15),
        (16, 30),
        (30, 30),
        (31, None),
        (60, None),
    ],
)
def test_bucket_is_smallest_threshold_at_or_above(days, bucket):
    assert bucket_for(days, T) == bucket


def test_bucket_with_unusual_thresholds():
    assert bucket_for(0, (5,)) == 5
    assert bucket_for(6, (5,)) is None
    assert bucket_for(3, ()) is None


D = dt.date(2026, 11, 23)


def ev(days, event_id="e", entity_id="x"):
    return Event(
        entity_id=entity_id,
        event_id=event_id,
        event_date=D + dt.timedelta(days=days),
        title=f"in {days}",
        source="holidays",
    )


def test_due_alerts_cover_every_event_inside_the_largest_threshold():
    events = [ev(n, f"e{n}") for n in range(-2, 45)]
    entities = {"x": Entity(entity_id="x", name="X", source="holidays", key="k", channel="#c")}
    alerts = compute_due_alerts(events, D, T, entities)
    assert [a.days_until for a in alerts] == list(range(31))
    assert all(a.threshold_days == bucket_for(a.days_until, T) for a in alerts)
    assert all(a.channel == "#c" and a.entity_name == "X" for a in alerts)
    assert count_by_threshold(alerts, T) == {1: 2, 3: 2, 7: 4, 15: 8, 30: 15}


def simulate(first_seen_days: int, run_days: list[int]) -> list[str]:
    """Run the daily computation on the given days-before-event, with a ledger (a set),
    and return the buckets that fire, in order."""
    event_date = D + dt.timedelta(days=60)
    fired, ledger = [], set()
    for before in run_days:
        day = event_date - dt.timedelta(days=before)
        if before > first_seen_days:
            continue  # the event is not in the upstream yet
        event = Event(entity_id="x", event_id="e", event_date=event_date, title="t", source="s")
        for alert in compute_due_alerts([event], day, T, {}):
            if alert.dedup_key not in ledger:
                ledger.add(alert.dedup_key)
                fired.append(f"D-{alert.threshold_days}@{before}")
    return fired


def test_every_bucket_fires_once_when_run_daily():
    assert simulate(60, list(range(60, -1, -1))) == [
        "D-30@30",
        "D-15@15",
        "D-7@7",
        "D-3@3",
        "D-1@1",
    ]


def test_missed_days_are_caught_up_at_the_next_run():
    # The pipeline did not run between D-9 and D-5: D-7 fires late, at D-4.
    days = [d for d in range(60, -1, -1) if not 5 <= d <= 9]
    assert simulate(60, days) == ["D-30@30", "D-15@15", "D-7@4", "D-3@3", "D-1@1"]


def test_event_added_late_fires_its_current_bucket_at_once():
    assert simulate(10, list(range(60, -1, -1))) == ["D-15@10", "D-7@7", "D-3@3", "D-1@1"]


def test_moved_event_gets_new_keys():
    a = compute_due_alerts([ev(5)], D, T, {})[0]
    b = compute_due_alerts([ev(6)], D, T, {})[0]
    assert a.event_id == b.event_id and a.dedup_key != b.dedup_key
    assert a.dedup_key == f"x|e|{a.event_date}|D-7"
