"""A 365-day backfill against one day: on SQLite (one machine) and on the PostgreSQL
deployment of deploy/ (docs/SCALING.md), in the same benchmark run.

    python bench/bench_deploy.py [--days 365] [--repeat 1]

Each setup runs daily_calendar_job in-process (the code a Celery worker runs for a run) on
the Dagster instance of its dagster.yaml, with the project's own tables where that setup
keeps them:

- ``sqlite``: the repository's dagster.yaml under a fresh DAGSTER_HOME; the lake and a
  SQLite calendar.db in a local data dir.
- ``postgres direct``: deploy/dagster.yaml, but DAGSTER_PG_PORT and CALENDAR_DB_URL aimed at
  PostgreSQL itself (no pooler).
- ``postgres + pgbouncer``: deploy/dagster.yaml and deploy/.env.example as shipped: every
  connection through PgBouncer (deploy/pgbouncer.ini).

PostgreSQL 15 (fsync on, scram-sha-256 passwords over TCP) and PgBouncer are started from
docs/SCALING.md's steps, as calendar_pipeline_tests/test_deployment.py does. For each
setup: one warm-up day, one day, then the range in ONE run (single-run backfill policy).
Prints both times and the ratio range/day per setup, then each PostgreSQL ratio against
SQLite's (target <= 1.0x: a backfill on the deployment costs no more, relative to one day,
than on one machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402

from calendar_pipeline.definitions import build_defs  # noqa: E402
from calendar_pipeline.defs.resources import resources_from_env  # noqa: E402
from calendar_pipeline_tests.daemons import wait_for  # noqa: E402
from calendar_pipeline_tests.deployment import (  # noqa: E402
    Deployment,
    new_root,
    port_open,
)
from calendar_pipeline_tests.flows import range_tags  # noqa: E402

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
LAST = dt.date(2026, 11, 1)


def run(partition: str | None = None, first: dt.date | None = None) -> float:
    """Wall seconds of one in-process run on the instance of $DAGSTER_HOME."""
    defs = build_defs(resources_from_env())
    job = defs.resolve_job_def("daily_calendar_job")
    tags = range_tags(first, LAST) if first is not None else None
    with dg.DagsterInstance.get() as instance:
        start = time.perf_counter()
        result = job.execute_in_process(
            partition_key=partition, tags=tags, instance=instance, run_config=QUIET
        )
        elapsed = time.perf_counter() - start
    assert result.success
    return elapsed


def cli(env: dict[str, str], *partition_args: str) -> float:
    """Wall seconds of ``dagster asset materialize`` in a fresh process, as a user runs it."""
    cmd = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize"]
    cmd += ["-m", "calendar_pipeline.definitions", "--select", "group:calendar", *partition_args]
    start = time.perf_counter()
    subprocess.run(cmd, env={**os.environ, **env}, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def measure(name: str, env: dict[str, str], days: int, how: str) -> tuple[float, float]:
    first = LAST - dt.timedelta(days=days - 1)
    day = (LAST - dt.timedelta(days=days)).isoformat()  # not in the range
    if how == "cli":
        single = cli(env, "--partition", day)
        ranged = cli(env, "--partition-range", f"{first}...{LAST}")
    else:
        saved = dict(os.environ)
        os.environ.update(env)
        try:
            run(partition=(first - dt.timedelta(days=2)).isoformat())  # warm-up
            single = run(partition=day)
            ranged = run(first=first)
        finally:
            os.environ.clear()
            os.environ.update(saved)
    per_partition = (ranged - single) / (days - 1) * 1000
    print(
        f"[{how}, {name}] one day {single:.2f} s; {days}-day backfill in one run "
        f"{ranged:.2f} s; ratio {ranged / single:.2f}x; {per_partition:.0f} ms per extra day",
        flush=True,
    )
    return single, ranged


def connect_costs(d: Deployment, settings: dict[str, str], count: int = 300) -> None:
    """Milliseconds per new connection (connect, then close), as dagster-postgres pays
    for nearly every event it stores."""
    import psycopg2  # dagster-postgres' driver, from the [deploy] extra

    login = {"user": settings["DAGSTER_PG_USERNAME"], "dbname": settings["DAGSTER_PG_DB"]}
    password = settings["DAGSTER_PG_PASSWORD"]
    ways = {
        "PostgreSQL over TCP, SCRAM": {"host": "127.0.0.1", "port": d.ports["postgres"]},
        "PgBouncer over TCP, SCRAM": {"host": "127.0.0.1", "port": d.ports["pgbouncer"]},
        "PgBouncer's Unix socket (deploy/)": {
            "host": settings["PGHOST"],
            "port": d.ports["pgbouncer"],
        },
    }
    for name, where in ways.items():
        start = time.perf_counter()
        for _ in range(count):
            psycopg2.connect(**login, **where, password=password).close()
        print(f"[connect] {name}: {(time.perf_counter() - start) / count * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument(
        "--how",
        choices=["cli", "in-process"],
        nargs="*",
        default=["cli", "in-process"],
        help="cli: `dagster asset materialize` in a fresh process per run (as a user runs "
        "it, the issue's measure); in-process: what a Celery worker executes for a run",
    )
    args = parser.parse_args()

    root = new_root()
    d = Deployment(
        root, slack_url="http://127.0.0.1:9/api/", fsync=os.environ.get("BENCH_FSYNC", "on") == "on"
    )
    try:
        d.prepare()
        d.run_step("database", extra_env={"PGPASSWORD": d.superuser_password})
        d.start_step("pgbouncer", as_postgres=True)
        wait_for("pgbouncer", lambda: port_open(d.ports["pgbouncer"]), 30, diagnose=d.logs)
        deployed = d.settings()
        connect_costs(d, deployed)
        base = {"CALENDAR_ALERT_MODE": "dry_run", "SLACK_BOT_TOKEN": ""}

        sqlite_home = root / "sqlite_home"
        sqlite_home.mkdir()
        shutil.copy(REPO / "dagster.yaml", sqlite_home / "dagster.yaml")
        setups = {
            "sqlite": {
                **base,
                "DAGSTER_HOME": str(sqlite_home),
                "CALENDAR_DATA_DIR": str(root / "sqlite_lake"),
                "CALENDAR_DB_URL": "",
            },
        }
        user = deployed["DAGSTER_PG_USERNAME"]
        password = deployed["DAGSTER_PG_PASSWORD"]
        direct = d.ports["postgres"]
        for name, database, overrides in (
            # PostgreSQL itself over TCP, a SCRAM password exchange per connection
            (
                "postgres direct",
                "direct",
                {
                    "DAGSTER_PG_HOST": "127.0.0.1",
                    "DAGSTER_PG_PORT": str(direct),
                    "CALENDAR_DB_URL": (
                        f"postgresql+psycopg://{user}:{password}@127.0.0.1:{direct}/direct_cal"
                    ),
                },
            ),
            # as shipped: the local PgBouncer's Unix socket (deploy/.env.example)
            (
                "postgres + pgbouncer",
                "pooled",
                {
                    "CALENDAR_DB_URL": deployed["CALENDAR_DB_URL"].replace(
                        "/calendar", "/pooled_cal"
                    )
                },
            ),
        ):
            home = root / database
            home.mkdir()
            shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
            d.psql(f"CREATE DATABASE {database} OWNER {user}")
            d.psql(f"CREATE DATABASE {database}_cal OWNER {user}")
            setups[name] = {
                **deployed,
                **base,
                "DAGSTER_HOME": str(home),
                "DAGSTER_PG_DB": database,
                "CALENDAR_DATA_DIR": str(root / f"{database}_lake"),
                **overrides,
            }
        results = {}
        for how in args.how:
            for name, env in setups.items():
                suffix = how.replace("-", "_")
                fresh = {**env, "CALENDAR_DATA_DIR": env["CALENDAR_DATA_DIR"] + f"_{suffix}"}
                if name != "sqlite":  # a fresh lake needs fresh tables
                    fresh["CALENDAR_DB_URL"] = env["CALENDAR_DB_URL"] + f"_{suffix}"
                    d.psql(f"CREATE DATABASE {env['DAGSTER_PG_DB']}_cal_{suffix} OWNER {user}")
                results[how, name] = measure(name, fresh, args.days, how)
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)

    for how in args.how:
        single, ranged = results[how, "sqlite"]
        sqlite_ratio = ranged / single
        for name in ("postgres direct", "postgres + pgbouncer"):
            s, r = results[how, name]
            print(
                f"[{how}, {name}] ratio {r / s:.2f}x against SQLite's {sqlite_ratio:.2f}x: "
                f"{(r / s) / sqlite_ratio:.2f}x; time of the backfill against SQLite's: "
                f"{r / ranged:.2f}x"
            )


if __name__ == "__main__":
    main()
