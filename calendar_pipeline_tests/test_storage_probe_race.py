"""The start-up storage probe (``lake/atomic.py: check_writable``) run by many processes
at the same instant on one directory: every call passes, and what a killed probe leaves
behind never gets in the way. Real processes, synchronised on a barrier, on a real
directory; nothing is mocked."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import time
import traceback
from pathlib import Path

import pytest

from calendar_pipeline.lake import atomic

PROCESSES, ROUNDS = 4, 50


def _probe_rounds(directory: str, barrier, results) -> None:
    failures = []
    for round_ in range(ROUNDS):
        barrier.wait(timeout=60)  # every process calls check_writable at the same moment
        try:
            atomic.check_writable(Path(directory))
        except Exception:  # any failure is what the test counts
            failures.append(f"round {round_}: {traceback.format_exc(limit=1).strip()}")
    results.put((os.getpid(), failures))


def test_synchronised_probes_from_several_processes_all_pass(tmp_path):
    lake = tmp_path / "lake"
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    workers = [
        context.Process(target=_probe_rounds, args=(str(lake), barrier, results))
        for _ in range(PROCESSES)
    ]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    failures = [failure for _, fails in reports for failure in fails]
    calls = PROCESSES * ROUNDS
    print(
        f"{calls} synchronised calls in {time.monotonic() - started:.1f} s: {len(failures)} failed"
    )
    assert failures == []
    assert sorted(p.name for p in lake.iterdir()) == [".write_check.lock"]  # nothing left


def test_a_probe_left_by_a_killed_check_is_harmless_and_swept_when_stale(tmp_path):
    lake = tmp_path / "lake"
    lake.mkdir()
    old = time.time() - atomic.STALE_PROBE_SECONDS - 60
    stale = [
        ".write_check",  # the fixed names of earlier versions
        ".write_check.moved",
        ".write_check.4242.0123456789ab",
        ".write_check.4242.0123456789ab.moved",
        "..write_check.4242.0123456789ab.x1y2z3.tmp",
    ]
    for name in stale:
        (lake / name).write_bytes(b"created\n")
        os.utime(lake / name, (old, old))
    # a probe of a check running right now in another process: left alone
    live = lake / ".write_check.777.ba9876543210.moved"
    live.write_bytes(b"created\n")

    atomic.check_writable(lake)
    assert sorted(p.name for p in lake.iterdir()) == sorted([".write_check.lock", live.name])

    # a killed check's leftover, whatever its name, never fails the next one
    os.utime(live, (old, old))
    (lake / ".write_check").write_bytes(b"created\n")
    atomic.check_writable(lake)
    assert sorted(p.name for p in lake.iterdir()) == [".write_check", ".write_check.lock"]


def test_a_read_only_lake_is_refused_in_one_line_naming_it_once(tmp_path):
    """A real read-only mount (a tmpfs, where the machine lets the test mount one)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (mount / "lake").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        with pytest.raises(atomic.StorageError) as raised:
            atomic.check_writable(mount / "lake")
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
    message = str(raised.value)
    assert message == (
        f"cannot write {mount / 'lake'}: atomic create or rename failed: Read-only file "
        "system (file system tmpfs) [EROFS]"
    )
