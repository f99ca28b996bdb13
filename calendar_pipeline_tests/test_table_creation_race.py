"""Runs started together on a new database race to create the same tables (`CREATE
TABLE` after each saw the table missing). Real processes released together on a barrier,
each opening the database as a run does (`CalendarSettings.engine()`): none may fail."""

from __future__ import annotations

import multiprocessing as mp

from sqlalchemy import inspect

from calendar_pipeline.alerts import store

PROCESSES = 6
ROUNDS = 5


def _open(url: str, data_dir: str, barrier, results) -> None:
    from calendar_pipeline.defs.resources import CalendarSettings

    barrier.wait()
    try:
        CalendarSettings(data_dir=data_dir, db_url=url).engine()
        results.put("ok")
    except Exception as exc:  # the test reports what failed
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_database_together_all_succeed(tmp_path):
    context = mp.get_context("spawn")
    failures = []
    for n in range(ROUNDS):
        url = f"sqlite:///{tmp_path / f'race{n}.db'}"
        barrier, results = context.Barrier(PROCESSES), context.Queue()
        workers = [
            context.Process(target=_open, args=(url, str(tmp_path / "data"), barrier, results))
            for _ in range(PROCESSES)
        ]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=60)
        failures += [o for o in outcomes if o != "ok"]
        tables = set(inspect(store.make_engine(url)).get_table_names())
        assert {"due_alerts", "alert_deliveries", "event_changes", "thread_notices"} <= tables
    assert failures == []
