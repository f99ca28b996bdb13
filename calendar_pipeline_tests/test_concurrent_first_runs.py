"""Runs started together on a fresh DAGSTER_HOME, set up exactly as the README says (a new
directory holding a copy of the repository's ``dagster.yaml``, SQLite storage): every
``calendar-pipeline run`` succeeds, the instance's databases hold one schema version each,
and ``dagster run list`` works afterwards. Real processes, started at the same moment.

Before ``calendar_pipeline/instance.py`` prepared the instance under a lock, 2 of 4 runs
of a trial died in Dagster's schema creation and ``schedules.db`` kept two
``alembic_version`` rows (then every later command failed)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS, TRIALS = 4, 2


def test_simultaneous_first_runs_on_a_fresh_dagster_home(tmp_path, small_universe):
    for trial in range(TRIALS):
        home = tmp_path / f"dagster_home{trial}"
        home.mkdir()  # the README: a directory holding a copy of dagster.yaml
        shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CALENDAR_", "SLACK_"))}
        env.update(
            DAGSTER_HOME=str(home),
            CALENDAR_DATA_DIR=str(tmp_path / f"data{trial}"),
            CALENDAR_UNIVERSE=str(small_universe),
        )
        started = time.monotonic()
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "calendar_pipeline.cli", "run", "--mode", "dry_run"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(RUNS)
        ]
        results = [(proc, *proc.communicate(timeout=300)) for proc in procs]
        elapsed = time.monotonic() - started
        codes = [proc.returncode for proc, _, _ in results]
        print(f"trial {trial}: {RUNS} simultaneous runs in {elapsed:.1f} s, exit codes {codes}")
        for _, _, err in results:
            assert "Traceback" not in err, err[-3000:]
        assert codes == [0] * RUNS, [err[-2000:] for _, _, err in results]

        for database in (home / "history" / "runs.db", home / "schedules" / "schedules.db"):
            with sqlite3.connect(database) as db:
                versions = db.execute("SELECT count(*) FROM alembic_version").fetchone()[0]
            assert versions == 1, database
        listed = subprocess.run(
            [sys.executable, "-m", "dagster", "run", "list", "--limit", "50"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert listed.returncode == 0, listed.stderr[-3000:]
        assert listed.stdout.count("daily_calendar_job") == codes.count(0)
