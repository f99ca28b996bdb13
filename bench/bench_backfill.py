"""Backfill speed, and the due-alert computation at scale.

    python bench/bench_backfill.py [--days 365] [--events 1000000]

1. As a user runs it: ``dagster asset materialize`` for one day, then for a
   ``--partition-range`` of ``--days`` days, each in a fresh process with a SQLite
   DAGSTER_HOME. Prints the ratio (target < 10x).
2. In-process: a ``--days`` backfill of daily_calendar_job on the embedded source (283 entities) in
   ONE run (single-run backfill policy), against one single-day run of the same job,
   both in-process on fresh data directories in this benchmark run. Prints the ratio
   (target < 10x; a run per partition would cost about ``--days`` x).
   Runs once on a SQLite instance (the default under DAGSTER_HOME) and once on Dagster's
   in-memory instance, which separates our work from Dagster's per-partition event
   writes (a planned and a materialization event per partition per asset).
3. The bucket computation for ``--events`` events against reading them from a
   snapshot file (parsed and validated into Event models). Prints the ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from calendar_pipeline.alerts.due import compute_due_alerts
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.sources.collect import parse_snapshot_text

REPO = Path(__file__).resolve().parents[1]

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
INSTANCES = {
    # what `dagster dev` uses by default: SQLite event storage under DAGSTER_HOME
    "sqlite instance": dg.instance_for_test,
    # Dagster's in-memory storage: the same run without the event-log writes to disk
    "in-memory instance": dg.DagsterInstance.ephemeral,
}


def run_job(kind: str, data_dir: Path, tags=None, partition=None) -> tuple[float, float]:
    """(wall seconds, seconds inside our three steps) of one in-process run."""
    calendar = CalendarSettings(data_dir=str(data_dir))
    defs = build_defs({"calendar": calendar, "slack": SlackSettings()})
    job = defs.resolve_job_def("daily_calendar_job")
    with INSTANCES[kind]() as instance:
        start = time.perf_counter()
        result = job.execute_in_process(
            partition_key=partition, tags=tags, instance=instance, run_config=QUIET
        )
        elapsed = time.perf_counter() - start
    assert result.success
    steps = sum(e.event_specific_data.duration_ms for e in result.get_step_success_events())
    return elapsed, steps / 1000


def bench_backfill(days: int) -> None:
    last = dt.date(2026, 11, 1)
    first = last - dt.timedelta(days=days - 1)
    tags = {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }
    for kind in INSTANCES:
        with tempfile.TemporaryDirectory() as tmp:
            run_job(kind, Path(tmp) / "warmup", partition=last.isoformat())  # imports, caches
            single, _ = run_job(kind, Path(tmp) / "single", partition=last.isoformat())
            ranged, in_steps = run_job(kind, Path(tmp) / "range", tags=tags)
        print(
            f"[{kind}] single-day run {single:.2f} s; {days}-day backfill in one run "
            f"{ranged:.2f} s ({in_steps:.2f} s inside the three steps, including Dagster "
            f"storing {3 * days} materialization events)"
        )
        print(
            f"[{kind}] ratio backfill_{days}d / single_day = {ranged / single:.2f}x "
            f"(target < 10x; one run per partition ~{days}x)"
        )


def cli_materialize(home: Path, data_dir: Path, partition_args: list[str]) -> float:
    """Wall time of `dagster asset materialize` in a fresh process, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALENDAR_", "SLACK_"))}
    env.update({"DAGSTER_HOME": str(home), "CALENDAR_DATA_DIR": str(data_dir)})
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    cmd = [
        sys.executable,
        "-m",
        "dagster",
        "asset",
        "materialize",
        "-m",
        "calendar_pipeline.definitions",
        "--select",
        "group:calendar",
        *partition_args,
    ]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def bench_cli(days: int) -> None:
    last = dt.date(2026, 11, 1)
    first = last - dt.timedelta(days=days - 1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        single = cli_materialize(root / "h1", root / "d1", ["--partition", last.isoformat()])
        ranged = cli_materialize(
            root / "h2", root / "d2", ["--partition-range", f"{first}...{last}"]
        )
    print(
        f"[CLI] dagster asset materialize, one day: {single:.2f} s; "
        f"--partition-range of {days} days: {ranged:.2f} s"
    )
    print(
        f"[CLI] ratio backfill_{days}d / single_day = {ranged / single:.2f}x "
        f"(target < 10x; one run per partition ~{days}x)"
    )


def bench_buckets(count: int) -> None:
    rng = random.Random(7)
    day = dt.date(2026, 11, 23)
    events = [
        {
            "entity_id": f"e{n % 5000}",
            "event_id": f"ev{n}",
            "event_date": (day + dt.timedelta(days=rng.randrange(0, 61))).isoformat(),
            "title": f"Event {n}",
            "source": "holidays",
            "details": {},
        }
        for n in range(count)
    ]
    payload = {"schema_version": 1, "partition": day.isoformat(), "events": events}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snapshot.json"
        path.write_text(json.dumps(payload))
        start = time.perf_counter()
        parsed, _ = parse_snapshot_text(path.read_text())
        read = time.perf_counter() - start
    start = time.perf_counter()
    due = compute_due_alerts(parsed, day, (1, 3, 7, 15, 30), {})
    compute = time.perf_counter() - start
    print(
        f"{count:,} events: read+validate {read:.2f} s, bucket computation {compute:.2f} s "
        f"({len(due):,} due)"
    )
    print(f"ratio buckets / read = {compute / read:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    bench_cli(args.days)
    bench_backfill(args.days)
    bench_buckets(args.events)


if __name__ == "__main__":
    main()
