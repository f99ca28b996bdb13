"""Runs that may execute on other machines: what they refuse before touching anything.

- On a Dagster instance that is not the single-machine default (runs in PostgreSQL, or a
  launcher other than the local one), a run refuses the per-machine defaults of
  CALENDAR_DATA_DIR (./data) and CALENDAR_DB_URL (a SQLite file in it), a relative data
  dir and a SQLite database, with one message saying why; CALENDAR_DEPLOYMENT overrides
  the judgement both ways. Nothing is fetched or written before the refusal.
- The storage check at every run's start proves what a shared lake must do: an atomic
  create through a hard link, an atomic replace, and an ``flock`` that keeps another
  process out. A file system that accepts ``flock`` and ignores it (some FUSE mounts of
  object stores) or refuses hard links fails the run, naming the directory and the file
  system type. (Those file systems cannot be mounted here: the refusal is injected.)
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import create_engine, make_url

from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.lake import atomic
from calendar_pipeline.settings import SettingError, shared_storage_problem
from calendar_pipeline_tests.test_storage_faults import failure

DAY = "2025-12-18"
CELERY = {
    "module": "dagster_celery.launcher",
    "class": "CeleryRunLauncher",
    # the launcher connects only when it launches: this address is never used here
    "config": {"broker": "redis://127.0.0.1:9/0", "backend": "redis://127.0.0.1:9/1"},
}


def run_day(instance, **calendar) -> dg.ExecuteInProcessResult:
    defs = build_defs({"calendar": CalendarSettings(**calendar), "slack": SlackSettings()})
    return defs.resolve_job_def("daily_calendar_job").execute_in_process(
        partition_key=DAY, instance=instance, raise_on_error=False
    )


@pytest.fixture
def databases(postgres_url):
    """Two fresh PostgreSQL databases: the Dagster instance's (psycopg2, as in
    deploy/dagster.yaml) and the project's (CALENDAR_DB_URL)."""
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    names = [f"{kind}_{os.getpid()}_{time.monotonic_ns()}" for kind in ("dagster", "calendar")]
    with admin.connect() as conn:
        for name in names:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    base = make_url(postgres_url)
    yield (
        base.set(drivername="postgresql+psycopg2", database=names[0]).render_as_string(False),
        base.set(database=names[1]).render_as_string(False),
    )
    with admin.connect() as conn:
        for name in names:
            conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    admin.dispose()


def test_a_postgres_instance_refuses_the_per_machine_defaults(databases, tmp_path, monkeypatch):
    dagster_pg_url, db_url = databases
    monkeypatch.chdir(tmp_path)
    overrides = {"storage": {"postgres": {"postgres_url": dagster_pg_url}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        refused = run_day(instance)
        assert not refused.success
        message = failure(refused)
        assert "CALENDAR_DATA_DIR and CALENDAR_DB_URL must be set explicitly" in message
        assert "PostgresRunStorage" in message and "CALENDAR_DEPLOYMENT=local" in message
        assert not (tmp_path / "data").exists()  # nothing written to the per-machine default

        # A relative data dir resolves per machine too.
        relative = run_day(instance, data_dir="lake", db_url=db_url)
        assert "is relative" in failure(relative) and not (tmp_path / "lake").exists()

        # Explicit, absolute and shared: the run goes ahead.
        ok = run_day(instance, data_dir=str(tmp_path / "shared"), db_url=db_url)
        assert ok.success, failure(ok)
        assert list((tmp_path / "shared" / "snapshots" / DAY).glob("snapshot_*.json"))


def test_a_celery_launcher_means_shared_and_local_turns_the_check_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with dg.instance_for_test(overrides={"run_launcher": CELERY}) as instance:
        sqlite_url = f"sqlite:///{tmp_path / 'calendar.db'}"
        refused = run_day(instance, data_dir=str(tmp_path / "lake"), db_url=sqlite_url)
        message = failure(refused)
        assert "SQLite" in message and "CeleryRunLauncher" in message, message
        assert not (tmp_path / "lake" / "snapshots").exists()

        # Everything on this one machine after all: the operator says so.
        local = run_day(instance, deployment="local")
        assert local.success, failure(local)
        assert (tmp_path / "data" / "snapshots" / DAY).is_dir()


def test_calendar_deployment_shared_on_a_sqlite_instance(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with dg.instance_for_test() as instance:
        assert run_day(instance).success  # the default instance: the defaults are fine
        refused = run_day(instance, deployment="shared", data_dir=str(tmp_path / "other"))
        message = failure(refused)
        assert "CALENDAR_DB_URL must be set explicitly" in message
        assert "CALENDAR_DEPLOYMENT=shared" in message
        assert not (tmp_path / "other").exists()


@pytest.mark.parametrize("value", ["cloud", "SHARED!", "1"])
def test_a_bad_calendar_deployment_is_named(value):
    with pytest.raises(SettingError, match=rf"CALENDAR_DEPLOYMENT={value!r}.*auto, local, shared"):
        CalendarSettings(deployment=value).validate()


def test_shared_storage_problem_rules():
    url = "postgresql+psycopg://u@db/calendar"
    assert shared_storage_problem("/mnt/lake", url) is None
    assert "CALENDAR_DATA_DIR must" in shared_storage_problem("", url)
    assert "CALENDAR_DB_URL must" in shared_storage_problem("/mnt/lake", "")
    assert "relative" in shared_storage_problem("./data", url)
    assert "SQLite" in shared_storage_problem("/mnt/lake", "sqlite:////mnt/lake/c.db")


# -- the storage check --------------------------------------------------------------------


def test_the_storage_check_passes_on_a_local_disk_and_leaves_nothing(tmp_path):
    atomic.check_writable(tmp_path / "lake")
    assert sorted(p.name for p in (tmp_path / "lake").iterdir()) == [".write_check.lock"]
    assert atomic.filesystem_type(tmp_path) != "unknown"


def test_a_lock_that_does_not_exclude_fails_the_run(tmp_path, monkeypatch):
    """As on a file system that accepts flock and ignores it: this process's lock is not
    really taken, so the probe process gets it."""
    monkeypatch.setattr(atomic.fcntl, "flock", lambda fd, op: None)
    with pytest.raises(atomic.StorageError, match="locking is a no-op") as raised:
        atomic.check_writable(tmp_path / "lake")
    assert str(tmp_path / "lake") in str(raised.value)
    assert f"file system {atomic.filesystem_type(tmp_path)}" in str(raised.value)

    with dg.instance_for_test() as instance:
        result = run_day(instance, data_dir=str(tmp_path / "lake"))
    assert not result.success
    assert "CALENDAR_DATA_DIR=" in failure(result) and "locking is a no-op" in failure(result)
    assert not (tmp_path / "lake" / "snapshots").exists()


def test_a_file_system_without_hard_links_fails_clearly(tmp_path, monkeypatch):
    def no_link(src, dst):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(atomic.os, "link", no_link)
    with pytest.raises(atomic.StorageError) as raised:
        atomic.check_writable(tmp_path / "lake")
    message = str(raised.value)
    assert "atomic create or rename failed" in message and "Operation not permitted" in message
    assert "file system" in message and str(tmp_path / "lake") in message
    assert [p.name for p in Path(tmp_path / "lake").iterdir() if p.name.endswith(".tmp")] == []
