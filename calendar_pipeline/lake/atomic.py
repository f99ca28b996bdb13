"""Atomic file writes: a reader sees the old file or the new one, never a mix of both.

The recipe (POSIX):

1. write the new content to a uniquely named temporary file *in the target's directory*
   (``.{target name}.{random}.tmp``, so the final rename never crosses a filesystem);
2. flush it and ``os.fsync`` it, so its bytes are on disk before its name is;
3. ``os.replace`` it onto the target, an atomic rename;
4. ``fsync`` the directory, so the rename itself survives a power cut.

A process killed at any instant leaves either the old target or the new one, plus at worst
a stray temporary file; the target is never half written. Any exception raised while
writing removes the temporary file and leaves the target untouched. Writers that share a
directory serialise on :func:`writer_lock`, which also sweeps the temporary files killed
writers left behind (under the lock, no live writer has one open).

A write that the file system refuses (a full disk, a read-only mount, a permission)
raises :class:`StorageError`: an ``OSError`` with the same ``errno`` whose message names
the file, e.g. ``cannot write /data/snapshots/2026-03-10/snapshot_….json: No space left
on device [ENOSPC]``.

``mkstemp`` creates files readable by their owner only; the new file instead takes the
mode of the file it replaces, or ``DEFAULT_FILE_MODE`` when there is none, so the data
stays readable by whoever could read it before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

try:
    import fcntl
except ImportError:  # pragma: no cover - exercised on Windows only
    fcntl = None  # type: ignore[assignment]

DEFAULT_FILE_MODE = 0o644
TEMP_SUFFIX = ".tmp"


class StorageError(OSError):
    """The file system refused a write; the message names the file and the reason."""

    def __init__(self, path: Path, cause: OSError) -> None:
        code = errno.errorcode.get(cause.errno or 0, "")
        reason = cause.strerror or str(cause)
        super().__init__(
            cause.errno, f"cannot write {path}: {reason}" + (f" [{code}]" if code else "")
        )
        self.path = Path(path)

    def __str__(self) -> str:
        return str(self.strerror)


@contextlib.contextmanager
def storage_errors(path: Path) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into a :class:`StorageError` naming
    ``path`` (a ``FileExistsError`` or another ``StorageError`` passes through)."""
    try:
        yield
    except (StorageError, FileExistsError, FileNotFoundError):
        raise
    except OSError as exc:
        raise StorageError(path, exc) from exc


@contextlib.contextmanager
def writer_lock(
    directory: Path, lock_name: str, temp_prefixes: tuple[str, ...] = ("",)
) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory/lock_name`` (across threads and
    processes); on entry, delete the temporary files (``{prefix}…{TEMP_SUFFIX}``, names
    starting with ``.``) that killed writers left in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    with storage_errors(directory / lock_name), open(directory / lock_name, "ab") as lock_file:
        if fcntl is not None:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            remove_temp_files(directory, temp_prefixes)
        yield


def temp_files(directory: Path, prefixes: tuple[str, ...] = ("",)) -> list[Path]:
    """The temporary files of atomic writes in ``directory`` (not recursive)."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [
        directory / name
        for name in sorted(names)
        if name.startswith(".")
        and name.endswith(TEMP_SUFFIX)
        and any(name.startswith("." + p.lstrip(".")) for p in prefixes)
    ]


def remove_temp_files(directory: Path, prefixes: tuple[str, ...] = ("",)) -> list[Path]:
    """Delete :func:`temp_files`; call it only under :func:`writer_lock`. Returns them."""
    found = temp_files(directory, prefixes)
    for path in found:
        path.unlink(missing_ok=True)
    return found


def temp_prefix(target: Path) -> str:
    """The name prefix of the temporary files written next to ``target``."""
    return f".{Path(target).name}."


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (files created, renamed or removed in it) to disk.

    A no-op on Windows, where a directory cannot be opened for fsync.
    """
    if os.name == "nt":  # pragma: no cover - exercised on Windows only
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mode_for(target: Path) -> int:
    """Permission bits for a file about to replace ``target``."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return DEFAULT_FILE_MODE


@contextlib.contextmanager
def _temp_file_beside(target: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """Create a unique temporary file next to ``target`` and yield it open for writing.

    When the ``with`` block ends normally the file is flushed, fsynced, given its final
    permission bits and closed; it stays under its temporary name for the caller to link
    or rename. When the block raises, the file is removed.
    """
    with storage_errors(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(
            dir=target.parent, prefix=temp_prefix(target), suffix=TEMP_SUFFIX
        )
    temp_path = Path(temp_name)
    try:
        with storage_errors(target):
            with os.fdopen(fd, "wb") as handle:
                yield handle, temp_path
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp_path, _mode_for(target))
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_replace(target: Path) -> Iterator[BinaryIO]:
    """Yield a binary file whose content atomically replaces ``target`` when the block ends.

    Use it to stream large content without holding it in memory. If the block raises, the
    temporary file is removed and ``target`` is left exactly as it was.
    """
    target = Path(target)
    with _temp_file_beside(target) as (handle, temp_path):
        yield handle
    try:
        with storage_errors(target):
            os.replace(temp_path, target)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    with storage_errors(target):
        fsync_dir(target.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, replacing any existing file; create parents."""
    with atomic_replace(Path(path)) as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (see ``atomic_write_bytes``)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_create_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a *new* file at ``path`` atomically; never replace an existing one.

    The content is written and fsynced under a temporary name, then hard-linked to
    ``path``. ``os.link`` refuses to overwrite, so this raises ``FileExistsError`` if
    ``path`` exists, including when another process created it a moment earlier; the
    existing file is left untouched either way.
    """
    path = Path(path)
    with _temp_file_beside(path) as (handle, temp_path):
        handle.write(data)
    try:
        with storage_errors(path):
            os.link(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)
    with storage_errors(path):
        fsync_dir(path.parent)


# Run in another process while this one holds the lock: exit 0 when the lock keeps it out.
# (On NFS, Linux emulates flock with POSIX record locks, which exclude other processes
# and other machines but not a second descriptor in the same process: hence a process.)
_LOCK_PROBE = """
import fcntl, sys
with open(sys.argv[1], "ab") as handle:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit(0)
sys.exit(3)
"""


PROBE_PREFIX = ".write_check"
PROBE_LOCK = f"{PROBE_PREFIX}.lock"
# A probe file older than this is a leftover of a killed check (a check takes well under a
# second); younger ones may belong to a check running in another process and are left alone.
STALE_PROBE_SECONDS = 3600


def check_writable(directory: Path) -> None:
    """Create ``directory`` if needed and prove it takes what the lake needs, as a
    shared mount must too (NFS, EFS, a ReadWriteMany volume):

    - an atomic create: a temporary file, ``fsync``, a hard link to the final name;
    - an atomic rename (``os.replace``), then a directory ``fsync``;
    - an ``flock`` that really excludes: while this process holds it, another process
      cannot take it (some FUSE mounts of object stores accept ``flock`` and ignore it).

    The probe files have a name of their own per call (``.write_check.{pid}.{random}``),
    so processes that start together never meet on a name, and a probe left by a killed
    check is never in anyone's way (those older than an hour are swept under the lock).

    Raises :class:`StorageError` naming the directory, the failed step and the file
    system type (read-only, full, no permission, no hard links, no locking)."""
    directory = Path(directory)
    token = f"{os.getpid()}.{secrets.token_hex(6)}"
    probe = directory / f"{PROBE_PREFIX}.{token}"
    moved = directory / f"{PROBE_PREFIX}.{token}.moved"
    with storage_errors(directory):
        directory.mkdir(parents=True, exist_ok=True)
    try:
        try:
            atomic_create_bytes(probe, b"created\n")
            with storage_errors(moved):
                os.replace(probe, moved)  # the rename the index rewrite relies on
                fsync_dir(directory)
        except StorageError as exc:
            raise StorageError(
                directory, _with_fs(exc, directory, "atomic create or rename")
            ) from exc
        with writer_lock(directory, PROBE_LOCK, temp_prefixes=()):
            if fcntl is not None:
                _check_lock_excludes(directory / PROBE_LOCK)
            remove_stale_probes(directory)
    finally:
        for path in (probe, moved):
            with contextlib.suppress(OSError):
                path.unlink()


def stale_probes(directory: Path, max_age: float = STALE_PROBE_SECONDS) -> list[Path]:
    """Probe files of :func:`check_writable` (and their temporary files) older than
    ``max_age`` seconds: left by checks that were killed."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    now, found = time.time(), []
    for name in sorted(names):
        probe = name == PROBE_PREFIX or (name.startswith(f"{PROBE_PREFIX}.") and name != PROBE_LOCK)
        if not (probe or name.startswith(f".{PROBE_PREFIX}.")):  # ..write_check.….tmp
            continue
        with contextlib.suppress(OSError):
            if now - os.lstat(directory / name).st_mtime > max_age:
                found.append(directory / name)
    return found


def remove_stale_probes(directory: Path, max_age: float = STALE_PROBE_SECONDS) -> list[Path]:
    """Delete :func:`stale_probes` (best effort: a read-only directory keeps them)."""
    found = stale_probes(directory, max_age)
    for path in found:
        with contextlib.suppress(OSError):
            path.unlink()
    return found


def _check_lock_excludes(lock_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-S", "-c", _LOCK_PROBE, str(lock_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode == 0:
        return
    detail = (
        "another process took the same flock while this one held it: locking is a no-op"
        if result.returncode == 3
        else (result.stderr.strip().splitlines() or ["the lock probe failed"])[-1]
    )
    raise StorageError(
        lock_path.parent,
        OSError(errno.ENOLCK, f"{detail} (file system {filesystem_type(lock_path.parent)})"),
    )


def _with_fs(exc: OSError, directory: Path, step: str) -> OSError:
    # the bare reason: a StorageError's own text already names the probe file and the errno,
    # which the directory-level error repeats ("cannot write DIR: …: … [EROFS]" once)
    reason = os.strerror(exc.errno) if exc.errno else exc.strerror
    return OSError(exc.errno, f"{step} failed: {reason} (file system {filesystem_type(directory)})")


def filesystem_type(path: Path) -> str:
    """The type of the file system holding ``path`` (``ext4``, ``nfs4``, ``fuse.s3fs``),
    from ``/proc/self/mountinfo``; ``unknown`` where that file does not exist."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    for line in lines:
        fields = line.split(" - ", 1)
        if len(fields) != 2:
            continue
        mount_point = fields[0].split()[4].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, kind = mount_point, fields[1].split()[0]
    return kind
