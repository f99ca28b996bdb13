"""Shared fixtures: a real PostgreSQL server, SQL engines for both dialects, a small universe,
a temporary Dagster instance."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest

from calendar_pipeline.alerts import store
from calendar_pipeline_tests.dagster_dev import free_port
from calendar_pipeline_tests.postgres import as_postgres_user, pg_bin

pytest_plugins = ("calendar_pipeline_tests.slack_server",)  # the `slack_server` fixture

# Modules whose tests start daemons, a browser or a cluster, race processes, or measure
# how long something takes: with pytest-xdist (pyproject.toml) they run one after another
# on one worker, while the other worker runs everything else.
SERIAL = {
    "test_ui_e2e", "test_deployment", "test_slack_outage", "test_dead_runs",
    "test_kill_anywhere", "test_concurrent_first_runs", "test_table_creation_race",
    "test_storage_probe_race", "test_docs_commands", "test_readme", "test_one_instance",
}  # fmt: skip


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rpartition(".")[2] in SERIAL:
            item.add_marker(pytest.mark.xdist_group("serial"))


@pytest.fixture(scope="session")
def postgres_url():
    """Start a throwaway PostgreSQL on a free loopback port for this test session."""
    initdb, pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries (initdb, pg_ctl) not found; .ci/run installs them")
        pytest.skip("PostgreSQL is not installed")
    root = Path(tempfile.mkdtemp(prefix="calendar-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        as_postgres_user([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        as_postgres_user(
            [pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                store.make_engine(url).connect().close()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        subprocess.run(
            as_postgres_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    """A fresh database with our tables, on SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        eng = store.make_engine(f"sqlite:///{tmp_path / 'test.db'}")
        store.create_tables(eng)
        yield eng
        eng.dispose()
        return
    url = request.getfixturevalue("postgres_url")
    admin = store.make_engine(url)
    name = f"t{os.getpid()}_{time.monotonic_ns()}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    eng = store.make_engine(url.rsplit("/", 1)[0] + f"/{name}")
    store.create_tables(eng)
    yield eng
    eng.dispose()
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")  # pooled engines linger
    admin.dispose()


SMALL_UNIVERSE = """entity_id,name,source,key,channel
country-US,United States,holidays,country:US,#us-ops
country-FR,France,holidays,country:FR,
country-DE-BY,Germany (BY),holidays,country:DE:BY,
market-XNYS,New York Stock Exchange,holidays,financial:XNYS,#markets
"""


@pytest.fixture
def small_universe(tmp_path) -> Path:
    path = tmp_path / "universe.csv"
    path.write_text(SMALL_UNIVERSE, encoding="utf-8")
    return path


@pytest.fixture
def instance():
    """A temporary Dagster instance (its own storage), for one test."""
    with dg.instance_for_test() as inst:
        yield inst
