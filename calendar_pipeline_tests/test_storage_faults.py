"""Storage faults through the Dagster layer: a full disk and a read-only data dir at each
write (the snapshot, the index line, the due_alerts replacement), a database that goes
away in the middle of the replacement, an unusable database URL.

The disk is a real one where the machine allows it: a 2 MiB tmpfs mounted for the test
(root with CAP_SYS_ADMIN, as on this project's CI), filled with a filler file and
remounted read-only. Elsewhere the same tests inject the fault at the file-writing layer
(``tempfile.mkstemp`` and ``os.open`` of the lake raise the same ``OSError``); each test
prints which one it used. Each write is faulted alone by running only its asset.

Every time: the run fails with one clear message naming the file or the database, what was
stored before is intact (``verify`` passes, the previous rows are there), and the next run
after the fault is gone succeeds."""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import event, text

from calendar_pipeline.alerts import store
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.lake import atomic
from calendar_pipeline.lake.index import SnapshotIndex, index_path
from calendar_pipeline.verify import verify
from calendar_pipeline_tests.flows import cli_process

DAY1, DAY2 = "2025-12-18", "2025-12-19"
ASSETS = ("raw_snapshot", "snapshot_index", "due_alerts")


class Disk:
    """A small disk for the data dir: a real tmpfs when it can be mounted, else faults
    injected where the lake creates files (``mode`` says which)."""

    def __init__(self, path: Path, monkeypatch: pytest.MonkeyPatch, mode: str):
        self.path, self.monkeypatch = path, monkeypatch
        path.mkdir()
        if mode == "tmpfs":
            mounted = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)], capture_output=True
            )
            if mounted.returncode != 0:
                mode = "injected"  # no privilege to mount here: the fault is injected
        self.mode = mode
        self.fault: int | None = None
        if self.mode == "injected":
            self._inject()
        print(f"storage faults: {self.mode}")

    def _inject(self) -> None:
        real_mkstemp, real_open = atomic.tempfile.mkstemp, os.open

        def refuse(target: str) -> None:
            if self.fault is None or not str(target).startswith(str(self.path)):
                return
            if self.fault == errno.ENOSPC and ".write_check" in str(target):
                return  # a full disk still takes the 3-byte probe (its page is free)
            raise OSError(self.fault, os.strerror(self.fault))

        def mkstemp(*args, **kwargs):
            refuse(os.path.join(kwargs.get("dir", ""), kwargs.get("prefix", "")))
            return real_mkstemp(*args, **kwargs)

        def open_(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR):
                refuse(path)
            return real_open(path, flags, *args, **kwargs)

        self.monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
        self.monkeypatch.setattr(os, "open", open_)

    def fill(self) -> None:
        """Leave no room for a snapshot or an index line (one page stays free)."""
        if self.mode == "injected":
            self.fault = errno.ENOSPC
            return
        with contextlib.suppress(OSError), open(self.path / "filler", "wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
                os.fsync(filler.fileno())
        os.truncate(self.path / "filler", max(0, os.path.getsize(self.path / "filler") - 4096))

    def read_only(self) -> None:
        if self.mode == "injected":
            self.fault = errno.EROFS
            return
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def heal(self) -> None:
        self.fault = None
        if self.mode == "tmpfs":
            subprocess.run(["mount", "-o", "remount,rw", str(self.path)], check=True)
            (self.path / "filler").unlink(missing_ok=True)

    def close(self) -> None:
        if self.mode == "tmpfs":
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture(params=["tmpfs", "injected"])
def disk(request, tmp_path, monkeypatch):
    disk = Disk(tmp_path / "disk", monkeypatch, request.param)
    yield disk
    disk.close()


COUNTRIES = "US FR DE GB IT ES PT NL BE AT CH PL CZ SE NO DK FI IE CA MX BR AR JP KR AU NZ IN"


@pytest.fixture
def pipeline(tmp_path, disk):
    """The data dir on the small disk (snapshots of some 30 KB, more than the page the
    filler leaves); the database elsewhere (its own faults below)."""
    universe = tmp_path / "universe.csv"
    universe.write_text(
        "entity_id,name,source,key,channel\n"
        + "".join(f"country-{c},{c},holidays,country:{c},\n" for c in COUNTRIES.split())
    )
    calendar = CalendarSettings(
        data_dir=str(disk.path / "data"),
        universe=str(universe),
        db_url=f"sqlite:///{tmp_path / 'calendar.db'}",
    )
    defs = build_defs({"calendar": calendar, "slack": SlackSettings()})
    with dg.instance_for_test() as instance:
        yield defs, calendar, instance


def run(defs, instance, day: str, *assets: str):
    return defs.resolve_job_def("daily_calendar_job").execute_in_process(
        partition_key=day,
        instance=instance,
        asset_selection=[dg.AssetKey(a) for a in assets or ASSETS],
        raise_on_error=False,
    )


def failure(result) -> str:
    """The innermost error message of the failed run (what the user reads)."""
    messages = []
    for event_ in result.all_events:
        error = getattr(event_.event_specific_data, "error", None)
        while error is not None and error.cause is not None:
            error = error.cause
        if error is not None:
            messages.append(error.message)
    return "\n".join(messages)


def intact(calendar: CalendarSettings) -> None:
    """What was stored before the fault is all there and consistent."""
    report = verify(
        calendar.data_path,
        calendar.engine(),
        calendar.threshold_days,
        calendar.claim_timeout,
        calendar.budgets,
    )
    assert report.ok, report.to_text()
    assert SnapshotIndex(index_path(calendar.data_path)).get(DAY1) is not None
    assert store.read_due_alerts(calendar.engine(), dt.date.fromisoformat(DAY1))


@pytest.mark.parametrize("fault", ["fill", "read_only"])
def test_each_write_refused_by_the_disk_fails_clearly_and_keeps_what_was_stored(
    pipeline, disk, fault
):
    defs, calendar, instance = pipeline
    assert run(defs, instance, DAY1).success
    reason = "No space left on device [ENOSPC]" if fault == "fill" else "[EROFS]"
    data = calendar.data_path

    # the snapshot write (or, read-only, the data dir check before any fetch)
    getattr(disk, fault)()
    result = run(defs, instance, DAY2, "raw_snapshot")
    assert not result.success
    message = failure(result)
    assert reason in message and str(data) in message, message
    assert "Traceback" not in message
    disk.heal()
    intact(calendar)

    # the index write: the snapshot is stored, then the disk refuses the index line
    assert run(defs, instance, DAY2, "raw_snapshot").success
    before = index_path(data).read_bytes()
    getattr(disk, fault)()
    result = run(defs, instance, DAY2, "snapshot_index", "due_alerts")
    assert not result.success and reason in failure(result)
    if fault == "fill":
        assert f"cannot write {index_path(data)}" in failure(result)
    disk.heal()
    assert index_path(data).read_bytes() == before  # not a byte changed
    intact(calendar)

    # after the fault, the next run of the day succeeds and nothing is left over
    assert run(defs, instance, DAY2).success
    intact(calendar)
    assert list(data.rglob("*.tmp")) == []


def test_a_database_refusing_the_replacement_keeps_the_previous_rows(
    tmp_path, small_universe, postgres_url
):
    """A real PostgreSQL whose connection is terminated in the middle of replacing a
    partition's rows: the step fails naming the database, the partition keeps its previous
    rows (one transaction), and the next run replaces them."""
    name = f"gone{os.getpid()}_{time.monotonic_ns()}"
    admin = store.make_engine(postgres_url)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    calendar = CalendarSettings(
        data_dir=str(tmp_path / "data"), universe=str(small_universe), db_url=url
    )
    defs = build_defs({"calendar": calendar, "slack": SlackSettings()})
    engine = calendar.engine()
    day = dt.date.fromisoformat(DAY1)
    with dg.instance_for_test() as instance:
        assert run(defs, instance, DAY1).success
        before = store.read_due_alerts(engine, day)

        def terminate(conn, cursor, statement, parameters, context, executemany):
            if statement.startswith("INSERT INTO due_alerts"):
                with admin.connect() as other:  # the server drops this connection
                    pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                    other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        event.listen(engine, "before_cursor_execute", terminate)
        try:
            result = run(defs, instance, DAY1, "due_alerts")
        finally:
            event.remove(engine, "before_cursor_execute", terminate)
        message = failure(result)
        assert not result.success
        assert f"could not replace the due_alerts rows of {DAY1}" in message
        assert f"/{name}" in message and "the previous rows are kept" in message
        assert store.read_due_alerts(engine, day) == before
        assert run(defs, instance, DAY1, "due_alerts").success
    assert store.read_due_alerts(engine, day) == before
    engine.dispose()
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
    admin.dispose()


@pytest.mark.parametrize(
    "url, expected",
    [
        ("mysql://calendar:hunter2@127.0.0.1/calendar", "unsupported database URL"),
        ("postgresql+psycopg://calendar:hunter2@127.0.0.1:9/calendar", "cannot use the database"),
        ("not a url", "unsupported database URL"),
    ],
)
def test_an_unusable_database_url_fails_in_seconds_named_without_its_password(
    tmp_path, url, expected
):
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CALENDAR_", "SLACK_"))}
    environ.pop("DAGSTER_HOME", None)
    environ.update(CALENDAR_DATA_DIR=str(tmp_path / "data"), CALENDAR_DB_URL=url)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "calendar_pipeline.cli", "run", "--mode", "dry_run"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 2 and elapsed < 20, (elapsed, output[-2000:])
    assert done.stderr.startswith("calendar-pipeline: CALENDAR_DB_URL=") and expected in done.stderr
    assert done.stderr.count("\n") == 1 and done.stdout == ""  # one line, nothing ran
    assert "hunter2" not in output
    assert not (tmp_path / "data" / "snapshots").exists()  # stopped before any fetch


def test_a_database_failing_in_the_slack_step_is_one_line_and_repeats_nothing(
    tmp_path, small_universe, slack_server
):
    """Issue 24, item 8: the ledger's database refuses to record what was just posted (the
    error SQLite gives on a full disk, raised where the rows are written). The step fails
    in one line naming the database, with no traceback; once the database is back, the
    next run settles what was posted from its claims: no alert twice, none lost."""
    import sqlite3
    from collections import Counter

    from calendar_pipeline_tests.flows import posted_lines
    from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN

    db = tmp_path / "calendar.db"
    calendar = CalendarSettings(
        data_dir=str(tmp_path / "data"), universe=str(small_universe), db_url=f"sqlite:///{db}"
    )
    slack = SlackSettings(token=DEFAULT_TOKEN, api_url=slack_server.url)
    defs = build_defs({"calendar": calendar, "slack": slack})
    send = {"ops": {"send_slack_alerts": {"config": {"mode": "send"}}}}
    engine = calendar.engine()

    def full(conn, cursor, statement, parameters, context, executemany):
        # the write that records a posted message as sent (mark_delivered: it sets slack_ts)
        if statement.lstrip().startswith("UPDATE alert_deliveries") and "slack_ts" in statement:
            raise sqlite3.OperationalError("database or disk is full")

    with dg.instance_for_test() as instance:
        assert run(defs, instance, DAY1).success
        slack_job = defs.resolve_job_def("slack_alert_job")
        event.listen(engine, "before_cursor_execute", full)
        try:  # (the op's one retry, 15 s later, meets the same full disk)
            down = slack_job.execute_in_process(
                partition_key=DAY1, instance=instance, run_config=send, raise_on_error=False
            )
        finally:
            event.remove(engine, "before_cursor_execute", full)
        assert not down.success
        message = failure(down)
        prefix = "dagster._core.definitions.events.Failure: "
        lines = {line.removeprefix(prefix) for line in message.splitlines() if line.strip()}
        assert len(lines) == 1, lines  # one line, the same for the step and its retry
        (line,) = lines
        assert line.startswith(f"the database sqlite:///{db} failed during the Slack step: ")
        assert "database or disk is full" in line
        assert "Traceback" not in message
        assert slack_server.messages  # it had posted before the database refused

        back = slack_job.execute_in_process(
            partition_key=DAY1, instance=instance, run_config=send, raise_on_error=False
        )
        assert back.success
    due_keys = store.read_due_alerts(engine, dt.date.fromisoformat(DAY1))
    counts = Counter(posted_lines(slack_server))  # (entity, title, date, bucket)
    assert len(counts) == len(due_keys) and set(counts.values()) == {1}, counts
    states = {r["state"] for r in store.ledger_rows(engine)}
    assert states == {"sent"}, states


def test_verify_audits_a_read_only_lake_and_only_repair_asks_for_writes(tmp_path, small_universe):
    """Issue 24, item 8: `calendar-pipeline verify` on a lake mounted read-only (a restored
    backup, a replica) audits it, changing nothing; `--repair` says in one line that it
    needs the writes."""
    disk = tmp_path / "lake"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("a read-only mount needs root (CAP_SYS_ADMIN), as on this project's CI")
    settings = {"CALENDAR_DATA_DIR": str(disk / "data"), "CALENDAR_UNIVERSE": str(small_universe)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return cli_process(tmp_path, *args, **settings)

    try:
        ran = cli("run", "--date", DAY1)
        assert ran.returncode == 0, ran.stderr[-2000:]
        files = {p: p.read_bytes() for p in disk.rglob("*") if p.is_file()}
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)

        audit = cli("verify")
        assert audit.returncode == 0, audit.stdout[-2000:] + audit.stderr[-2000:]
        assert "Traceback" not in audit.stderr
        assert {p: p.read_bytes() for p in disk.rglob("*") if p.is_file()} == files

        repair = cli("verify", "--repair")
        assert repair.returncode == 2, repair.stdout + repair.stderr
        (line,) = repair.stderr.strip().splitlines()
        assert line.startswith(f"calendar-pipeline: CALENDAR_DATA_DIR='{disk / 'data'}': ")
        assert "Read-only file system" in line or "EROFS" in line, line
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
