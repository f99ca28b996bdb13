"""The Dagster instance the project's runs share: prepared once, and kept free of dead runs.

**Preparing a fresh ``DAGSTER_HOME``.** The first process to open a SQLite instance creates
its databases (``history/runs.db``, ``schedules/schedules.db``, ``storage/index.db``) and
stamps their schema version. Dagster does not serialise that between processes: several
runs started together on a new ``DAGSTER_HOME`` race on it, and the losers die (``table
already exists``) or leave two ``alembic_version`` rows, after which nothing can open the
instance (not even ``dagster instance migrate``). :func:`open_dagster_home` opens the
instance under an inter-process file lock, ``$DAGSTER_HOME/.calendar_pipeline.lock``, so one
process creates the storage and the others wait a moment and then find it made.
``calendar-pipeline`` opens its instance this way.

**Dead runs.** A run killed outright (SIGKILL, the OOM killer, a reboot) never reports its
end: it stays STARTED and keeps its pool slot (``calendar_upstream`` has one), so every
later run waits "Step blocked by limit for pool calendar_upstream". Dagster's monitoring
daemon cannot tell such a run from a slow one with the default run launcher (it has no
worker health check), so it ends it only after ``run_monitoring.max_runtime_seconds``, and
without the daemon nothing ever does. So the project does it itself, on the machine where
the run ran, from what Dagster records publicly:

- each run that uses the ``upstream`` resource (the ones that take the pool) tags itself
  with its machine, ``calendar_pipeline/host`` = ``{hostname}:{boot id}``;
- Dagster's own engine events of a run carry the pids of its processes (``Started process
  for run (pid: …)``, ``Executing steps in process (pid: …)``);
- a STARTED or STARTING run tagged with this machine whose every such process is gone
  (no such pid; a zombie; a pid reused by a process started after the event; or the
  machine rebooted since: another boot id) is dead. It is marked failed
  (``instance.report_run_failed``) and its pool slots are freed.

:func:`release_dead_runs` does that. It runs when ``calendar-pipeline`` starts, when a
run's resources are set up (before any step waits for the pool), every
``WATCH_INTERVAL_SECONDS`` in a run that is alive (so a run already waiting for the slot
of a run killed later gets it within seconds), and when a sensor using the ``upstream``
resource is evaluated. Runs of other machines are left to their own machine and to the
monitoring daemon's rules.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from filelock import FileLock

HOST_TAG = "calendar_pipeline/host"
LOCK_NAME = ".calendar_pipeline.lock"
WATCH_INTERVAL_SECONDS = 10.0
LOCK_TIMEOUT_SECONDS = 120.0
ALIVE_STATUSES = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]

Say = Callable[[str], None]


# -- preparing the instance ----------------------------------------------------------------


@contextlib.contextmanager
def open_dagster_home(say: Say | None = None) -> Iterator[dg.DagsterInstance]:
    """``DagsterInstance.get()`` for ``$DAGSTER_HOME``, created under an inter-process lock
    so that processes starting together on a fresh directory never race on its schema;
    then :func:`release_dead_runs`, telling ``say`` what it released.

    Raises ``SettingError`` naming ``DAGSTER_HOME`` when it is not a usable directory."""
    from calendar_pipeline.settings import SettingError

    home = os.environ.get("DAGSTER_HOME", "")
    if not os.path.isabs(home) or not os.path.isdir(home):
        raise SettingError(
            "DAGSTER_HOME",
            home,
            "must be an absolute path to an existing directory (create it and copy "
            "dagster.yaml into it)",
        )
    with _file_lock(Path(home)):
        instance = dg.DagsterInstance.get()  # creates the storage on a fresh home
    with instance:
        release_dead_runs(instance, say)
        yield instance


def _file_lock(directory: Path) -> FileLock:
    return FileLock(str(directory / LOCK_NAME), timeout=LOCK_TIMEOUT_SECONDS)


# -- which process a run is ------------------------------------------------------------------


def boot_id() -> str:
    """This boot of this machine (Linux); ``""`` where unknown."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def this_host() -> str:
    """The value of :data:`HOST_TAG` for runs of this machine in this boot."""
    return f"{socket.gethostname()}:{boot_id()}"


def process_alive(pid: int, since: float | None = None) -> bool:
    """Whether process ``pid`` lives on this machine (not a zombie) and, when ``since`` (a
    UNIX time) is given, started no later than that: a younger process only reuses the
    number of the one that was there then."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (command)"
    if fields[0] in ("Z", "X"):  # a zombie or dead: killed, not yet reaped by its parent
        return False
    if since is not None:
        started = _boot_time() + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        if started > since + 2.0:  # 2 s: clock-tick rounding
            return False
    return True


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


@dataclass(frozen=True)
class DeadRun:
    run_id: str
    job_name: str
    partition: str | None
    pids: tuple[int, ...]
    pools: tuple[str, ...]

    def describe(self) -> str:
        day = f" partition {self.partition}," if self.partition else ""
        pids = ", ".join(str(pid) for pid in self.pids)
        pools = f"; freed its slot in pool {', '.join(self.pools)}" if self.pools else ""
        return (
            f"released dead run {self.run_id} ({self.job_name},{day} process {pids} on "
            f"{socket.gethostname()} is gone): marked failed{pools}"
        )


def run_pids(instance: dg.DagsterInstance, run_id: str) -> dict[int, float]:
    """The processes Dagster's engine events name for a run: pid -> time of the first
    event naming it (``EngineEventData`` metadata ``pid``)."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=1000
    ).records
    pids: dict[int, float] = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.engine_event_data if event else None
        value = data.metadata.get("pid") if data else None
        if value is not None and str(value.value).isdigit():
            pids.setdefault(int(value.value), record.event_log_entry.timestamp)
    return pids


def _is_dead(instance: dg.DagsterInstance, run: dg.DagsterRun, host: str) -> dict[int, float]:
    """The pids of ``run`` if it ran on this machine and every one of them is gone, else {}."""
    tagged = run.tags.get(HOST_TAG)
    if not tagged or tagged.split(":", 1)[0] != host.split(":", 1)[0]:
        return {}  # another machine's run (or one that never set up its resources)
    pids = run_pids(instance, run.run_id)
    if not pids:
        return {}
    if tagged != host:  # this machine, an earlier boot: every process of it is gone
        return pids
    if any(process_alive(pid, since) for pid, since in pids.items()):
        return {}
    return pids


def _held_pools(instance: dg.DagsterInstance, run_id: str) -> tuple[str, ...]:
    # The pools' slots are read where the UI's "Concurrency" page reads them: the event log
    # storage (no DagsterInstance method lists the slots a run holds).
    storage = instance.event_log_storage
    pools = []
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        if any(slot.run_id == run_id for slot in info.claimed_slots):
            pools.append(pool)
    return tuple(pools)


def release_dead_runs(
    instance: dg.DagsterInstance, say: Say | None = None, *, exclude: str | None = None
) -> list[DeadRun]:
    """Mark failed every STARTED/STARTING run of this machine whose processes are all
    gone, and free its pool slots (see the module docstring). ``say`` gets one line per
    released run. Returns what it released."""
    host = this_host()
    candidates = [
        run
        for run in instance.get_runs(dg.RunsFilter(statuses=ALIVE_STATUSES))
        if run.run_id != exclude and HOST_TAG in run.tags
    ]
    if not candidates:
        return []
    released: list[DeadRun] = []
    root = Path(instance.root_directory)
    lock = _file_lock(root) if root.is_dir() else contextlib.nullcontext()
    with lock:  # one releaser at a time on this machine: each run is ended once
        for candidate in candidates:
            run = instance.get_run_by_id(candidate.run_id)
            if run is None or run.status not in ALIVE_STATUSES:
                continue  # ended meanwhile
            pids = _is_dead(instance, run, host)
            if not pids:
                continue
            dead = DeadRun(
                run.run_id,
                run.job_name,
                run.tags.get("dagster/partition"),
                tuple(sorted(pids)),
                _held_pools(instance, run.run_id),
            )
            instance.report_run_failed(
                run,
                message=(
                    f"Run ended by calendar_pipeline: its process ({', '.join(map(str, dead.pids))}"
                    f" on {socket.gethostname()}) is gone (killed, out of memory, or the "
                    "machine restarted); its pool slots are released."
                ),
            )
            # Dagster has no DagsterInstance method for this; the event log storage's
            # free_concurrency_slots_for_run is what its own monitoring daemon calls to
            # release the slots of an ended run (and what the RUNBOOK documented by hand).
            if instance.event_log_storage.supports_global_concurrency_limits:
                instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            released.append(dead)
            if say is not None:
                say(dead.describe())
    return released


# -- inside runs -------------------------------------------------------------------------------

_watchers: dict[str, threading.Event] = {}
_watchers_lock = threading.Lock()


def guard_run(context: dg.InitResourceContext) -> None:
    """At a run's (or a sensor's) resource set-up: release dead runs at once, and in a run,
    tag it with this machine and keep releasing them every ``WATCH_INTERVAL_SECONDS``
    while it lives (a step waiting for the pool gets a dead run's slot within seconds)."""
    instance, run_id = context.instance, _run_id(context)
    if instance is None:
        return
    log = context.log

    def say(line: str) -> None:
        if log is not None:
            log.warning(line)

    run = instance.get_run_by_id(run_id) if run_id else None
    if run is None:  # a sensor's evaluation, or resources built outside a run
        release_dead_runs(instance, say)
        return
    if run.tags.get(HOST_TAG) != this_host():
        instance.add_run_tags(run_id, {HOST_TAG: this_host()})
    release_dead_runs(instance, say, exclude=run_id)
    with _watchers_lock:
        if run_id in _watchers:
            return
        stop = _watchers[run_id] = threading.Event()
    threading.Thread(
        target=_watch, args=(instance, run_id, say, stop), name="dead-runs", daemon=True
    ).start()


def _run_id(context: dg.InitResourceContext) -> str | None:
    run = context.run
    return run.run_id if run is not None else None


def unguard_run(context: dg.InitResourceContext) -> None:
    """At the resource's teardown: stop the run's watcher."""
    with _watchers_lock:
        stop = _watchers.pop(_run_id(context) or "", None)
    if stop is not None:
        stop.set()


def _watch(instance: dg.DagsterInstance, run_id: str, say: Say, stop: threading.Event) -> None:
    while not stop.wait(WATCH_INTERVAL_SECONDS):
        with contextlib.suppress(Exception):  # a busy database: the next pass retries
            release_dead_runs(instance, say, exclude=run_id)
            assign_lost_slots(instance, say)


def assign_lost_slots(instance: dg.DagsterInstance, say: Say | None = None) -> list[str]:
    """Hand a free pool slot to the oldest waiting step when nobody did.

    On a SQLite instance, runs started together sometimes lose the hand-over: the holder
    frees its slot while another run enqueues its step, the step is never assigned, and it
    waits "Step still blocked by limit for pool" with the pool empty, forever (seen in 1
    of 6 trials of 4 simultaneous runs). A step is handed the slot only when the pool has
    room (claimed and assigned-but-unclaimed below its limit) and it has waited longer
    than a watcher interval. Returns the pools it unblocked."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    unblocked = []
    now = time.time()
    root = Path(instance.root_directory)
    lock = _file_lock(root) if root.is_dir() else contextlib.nullcontext()
    with lock:
        for pool in sorted(storage.get_concurrency_keys()):
            info = storage.get_concurrency_info(pool)
            assigned = [s for s in info.pending_steps if s.assigned_timestamp is not None]
            waiting = [
                s
                for s in info.pending_steps
                if s.assigned_timestamp is None
                and now - s.enqueued_timestamp.timestamp() > WATCH_INTERVAL_SECONDS
            ]
            if not waiting or len(info.claimed_slots) + len(assigned) >= info.slot_count:
                continue
            # As above, no DagsterInstance method: the storage's assign_pending_steps is
            # what Dagster calls itself when a slot is freed.
            storage.assign_pending_steps([pool])
            unblocked.append(pool)
            if say is not None:
                say(f"pool {pool} had a free slot no waiting step was given: handed it on")
    return unblocked


def cli_instance() -> contextlib.AbstractContextManager[dg.DagsterInstance]:
    """The instance at DAGSTER_HOME, created under a lock when the directory is fresh
    (runs started together never race on its schema), with the runs of this machine whose
    process is gone marked failed and their pool slots freed (above); else a
    throwaway one."""
    if os.environ.get("DAGSTER_HOME"):
        return open_dagster_home(
            say=lambda line: print(f"calendar-pipeline: {line}", file=sys.stderr)
        )
    return dg.DagsterInstance.ephemeral()


def root_causes(result) -> list[str]:
    """The first line of the innermost error of each failure event of `result`."""
    causes: list[str] = []
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if error is None:  # step failures, resource init failures, run failures
            continue
        while error.cause is not None:
            error = error.cause
        line = (error.message or "").strip().splitlines()[0] if error.message else ""
        prefix, _, rest = line.partition(": ")
        if error.cls_name and prefix.endswith(error.cls_name) and rest:
            line = rest  # "pkg.module.SettingError: X=…" -> "X=…"
        if line and line not in causes:
            causes.append(line)
    return causes
