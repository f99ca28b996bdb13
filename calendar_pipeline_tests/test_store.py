"""The due_alerts table and the delivery ledger, on SQLite and on a real PostgreSQL."""

import datetime as dt
import multiprocessing

import pytest
from sqlalchemy import event, select

from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.claims import claim_rows
from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.alerts.threads import create_thread_tables, thread_notices

D = dt.date(2026, 11, 23)
TIMEOUT = dt.timedelta(minutes=15)


def alert(n: int, partition=D, threshold=7) -> DueAlert:
    return DueAlert(
        partition,
        f"ent{n}",
        f"Entity {n}",
        "holidays",
        f"ev{n}",
        partition + dt.timedelta(days=5),
        f"Title {n}",
        5,
        threshold,
        None,
    )


def test_replace_due_alerts_is_idempotent_per_partition(engine):
    store.replace_due_alerts_many(engine, {D: [alert(1), alert(2)]})
    other = D + dt.timedelta(days=1)
    store.replace_due_alerts_many(engine, {other: [alert(9, other)]})
    store.replace_due_alerts_many(engine, {D: [alert(1), alert(3)]})
    assert [a.entity_id for a in store.read_due_alerts(engine, D)] == ["ent1", "ent3"]
    assert [a.entity_id for a in store.read_due_alerts(engine, other)] == ["ent9"]
    assert store.stored_buckets_many(engine, [D]) == {
        D: {alert(1).dedup_key: alert(1).threshold_days, alert(3).dedup_key: 7}
    }


def test_replace_with_duplicate_keys_fails_and_keeps_previous_rows(engine):
    store.replace_due_alerts_many(engine, {D: [alert(1)]})
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        store.replace_due_alerts_many(engine, {D: [alert(2), alert(2)]})
    assert [a.entity_id for a in store.read_due_alerts(engine, D)] == ["ent1"]


def test_replace_rejects_rows_of_another_partition(engine):
    with pytest.raises(ValueError, match="partition 2026-11-23"):
        store.replace_due_alerts_many(engine, {D: [alert(1, D + dt.timedelta(days=1))]})


def test_claim_is_exclusive_and_released_claims_return(engine):
    alerts = [alert(1), alert(2)]
    assert store.claim(engine, alerts, "run-a", TIMEOUT) == alerts
    assert store.claim(engine, alerts, "run-b", TIMEOUT) == []
    assert store.mark_failed(engine, [alerts[1].dedup_key], "run-a", "HTTP 503") == 1
    assert store.mark_failed(engine, [alerts[1].dedup_key], "run-a", "again") == 0  # not claimed
    assert store.claim(engine, alerts, "run-b", TIMEOUT) == [alerts[1]]
    row = next(r for r in store.ledger_rows(engine) if r["dedup_key"] == alerts[1].dedup_key)
    assert (row["state"], row["attempts"], row["error"]) == ("claimed", 2, "HTTP 503")
    assert store.mark_delivered(engine, [alerts[0].dedup_key], "run-a", "sent", "#c", "1.2") == 1
    assert store.delivered_keys(engine, [a.dedup_key for a in alerts]) == {alerts[0].dedup_key}
    # a sent key is never claimable again, even after the timeout
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    assert store.claim(engine, [alerts[0]], "run-c", TIMEOUT, now=later) == []


def test_stale_claim_is_taken_over(engine):
    a = alert(1)
    store.claim(engine, [a], "dead-run", TIMEOUT)
    assert store.claim(engine, [a], "new-run", TIMEOUT) == []
    later = dt.datetime.now(dt.UTC) + TIMEOUT + dt.timedelta(minutes=1)
    assert store.claim(engine, [a], "new-run", TIMEOUT, now=later) == [a]
    # the dead run can no longer mark it
    assert store.mark_delivered(engine, [a.dedup_key], "dead-run", "sent", "#c", "1") == 0
    assert store.mark_delivered(engine, [a.dedup_key], "new-run", "sent", "#c", "2") == 1
    with engine.connect() as conn:
        row = conn.execute(select(store.alert_deliveries)).one()
    assert (row.state, row.slack_ts, row.run_id) == ("sent", "2", "new-run")


def test_claim_and_settle_more_keys_than_one_in_takes(engine):
    """1,200 keys: every claim and settle statement names at most ``IN_CHUNK`` of them,
    and each call still acts on all of them (or none: another run's keys stay out)."""
    alerts = [alert(n) for n in range(1200)]
    keys = [a.dedup_key for a in alerts]
    widest: list[int] = []

    def count_parameters(_conn, _cursor, statement, parameters, _context, executemany):
        if not executemany and "alert_deliveries" in statement:
            widest.append(len(parameters))

    event.listen(engine, "before_cursor_execute", count_parameters)
    try:
        assert store.claim(engine, alerts[:700], "run-b", TIMEOUT) == alerts[:700]
        assert store.mark_failed(engine, keys[:700], "run-b", "HTTP 503") == 700
        assert store.claim(engine, alerts, "run-a", TIMEOUT) == alerts
        assert store.claim(engine, alerts, "run-b", TIMEOUT) == []  # a live claim holds
        assert store.mark_attempt(engine, keys, "run-a", "delivery-1", "#c") == 1200
        assert store.mark_delivered(engine, keys, "run-b", "sent", "#c", "1.1") == 0
        assert store.mark_delivered(engine, keys[:1100], "run-a", "sent", "#c", "1.2") == 1100
        assert store.mark_failed(engine, keys, "run-a", "HTTP 500") == 100
    finally:
        event.remove(engine, "before_cursor_execute", count_parameters)
    assert widest and max(widest) <= store.IN_CHUNK + 10, max(widest)
    rows = {r["dedup_key"]: r for r in store.ledger_rows(engine)}
    assert len(rows) == 1200
    assert {r["delivery_id"] for r in rows.values()} == {"delivery-1"}
    assert [(r["state"], r["slack_ts"]) for k in keys[:1100] for r in [rows[k]]] == [
        ("sent", "1.2")
    ] * 1100
    assert {(rows[k]["state"], rows[k]["error"]) for k in keys[1100:]} == {("failed", "HTTP 500")}
    assert {rows[k]["attempts"] for k in keys[:700]} == {2}
    assert {rows[k]["attempts"] for k in keys[700:]} == {1}
    assert store.delivered_keys(engine, keys) == set(keys[:1100])
    assert store.claim(engine, alerts, "run-c", TIMEOUT) == alerts[1100:]  # failed: again


def test_claim_rows_of_more_keys_than_one_in_takes(engine):
    """The small tables' claim (claims.claim_rows) follows the same rule: 1,200 keys, at
    most ``IN_CHUNK`` per statement, each key owned by exactly one run."""
    create_thread_tables(engine)
    keys = [
        {"dedup_key": f"k{n}", "partition_date": D, "channel": "#c", "thread_ts": "1.0"}
        for n in range(1200)
    ]
    widest: list[int] = []

    def count_parameters(_conn, _cursor, statement, parameters, _context, executemany):
        if not executemany and "thread_notices" in statement:
            widest.append(len(parameters))

    event.listen(engine, "before_cursor_execute", count_parameters)
    try:
        first = claim_rows(engine, thread_notices, keys[:700], "run-a", TIMEOUT)
        second = claim_rows(engine, thread_notices, keys, "run-b", TIMEOUT)
    finally:
        event.remove(engine, "before_cursor_execute", count_parameters)
    assert widest and max(widest) <= store.IN_CHUNK + 10, max(widest)
    assert sorted(row["dedup_key"] for row in first) == sorted(k["dedup_key"] for k in keys[:700])
    assert sorted(row["dedup_key"] for row in second) == sorted(k["dedup_key"] for k in keys[700:])
    assert {row["state"] for row in first + second} == {"new"}  # as they were before


def test_prune_by_event_age(engine):
    old, new = alert(1, D - dt.timedelta(days=500)), alert(2)
    store.claim(engine, [old, new], "r", TIMEOUT)
    assert store.prune_deliveries(engine, D - dt.timedelta(days=400)) == 1
    assert [r["dedup_key"] for r in store.ledger_rows(engine)] == [new.dedup_key]


def test_mark_delivered_rejects_unknown_state(engine):
    with pytest.raises(ValueError, match="state must be one of"):
        store.mark_delivered(engine, ["k"], "r", "maybe")


def _claimer(url: str, run_id: str, queue) -> None:
    engine = store.make_engine(url)
    won = store.claim(engine, [alert(n) for n in range(200)], run_id, TIMEOUT)
    queue.put([a.dedup_key for a in won])


def test_two_processes_never_claim_the_same_key(engine):
    url = engine.url.render_as_string(hide_password=False)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, f"run-{i}", queue)) for i in range(2)]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert not set(results[0]) & set(results[1])
    assert len(results[0]) + len(results[1]) == 200
