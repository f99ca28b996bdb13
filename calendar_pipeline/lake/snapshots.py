"""Snapshot files: one JSON file per run, per partition, never rewritten.

Layout::

    {data_dir}/snapshots/{partition}/snapshot_{YYYYMMDDTHHMMSSffffffZ}.json

``partition`` is an ISO date (``YYYY-MM-DD``) and the timestamp is the run's UTC time to
the microsecond, so names sort lexicographically in time order and the newest snapshot
of a partition is simply the greatest name. A snapshot is created atomically (temp file,
fsync, hard link) and an existing file is never overwritten. Writers of one partition
serialise on ``{partition}/.write.lock``; entering it removes the temporary files
(``.snapshot_….json.….tmp``) of writes that were killed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, TypeGuard

from calendar_pipeline.lake.atomic import atomic_create_bytes, temp_files, writer_lock

SNAPSHOTS_DIR = "snapshots"
WRITE_LOCK = ".write.lock"
SNAPSHOT_TEMP_PREFIX = ".snapshot_"
TIMESTAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"
SNAPSHOT_NAME_RE = re.compile(r"^snapshot_\d{8}T\d{12}Z\.json$")
HASH_CHUNK_SIZE = 1024 * 1024

_PARTITION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def is_valid_partition(partition: object) -> TypeGuard[str]:
    """Whether ``partition`` is a real calendar date written ``YYYY-MM-DD``."""
    if not isinstance(partition, str) or not _PARTITION_RE.fullmatch(partition):
        return False
    try:
        dt.date.fromisoformat(partition)
    except ValueError:
        return False
    return True


def validate_partition(partition: object) -> str:
    """Return ``partition`` if it is an ISO date ``YYYY-MM-DD``; raise ``ValueError`` if not.

    Partitions become directory names, so anything else (``2024-1-5``, ``20240105``,
    ``../etc``) is refused rather than normalised.
    """
    if not is_valid_partition(partition):
        raise ValueError(f"partition must be an ISO date YYYY-MM-DD, got {partition!r}")
    return partition


def snapshot_dir(data_dir: Path, partition: str) -> Path:
    """The directory holding every snapshot of ``partition``."""
    return Path(data_dir) / SNAPSHOTS_DIR / validate_partition(partition)


def snapshot_name(now: dt.datetime) -> str:
    """The file name of a snapshot taken at ``now`` (a timezone-aware datetime)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got naive {now.isoformat()}")
    return f"snapshot_{now.astimezone(dt.UTC).strftime(TIMESTAMP_FORMAT)}.json"


def write_snapshot(
    data_dir: Path,
    partition: str,
    payload: dict[str, Any],
    now: dt.datetime | None = None,
) -> Path:
    """Write ``payload`` as a new snapshot of ``partition`` and return its path.

    The JSON is UTF-8, compact and keeps the payload's key order. ``now`` (default: the
    current time) must be timezone-aware and names the file. The file is created
    atomically and never overwrites anything: if a snapshot with the same timestamp
    already exists, ``FileExistsError`` is raised and that file is left as it was.
    """
    directory = snapshot_dir(data_dir, partition)
    path = directory / snapshot_name(now if now is not None else dt.datetime.now(dt.UTC))
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    with writer_lock(directory, WRITE_LOCK, (SNAPSHOT_TEMP_PREFIX,)):
        atomic_create_bytes(path, text.encode("utf-8"))
    return path


def snapshot_temp_files(data_dir: Path) -> list[Path]:
    """Temporary files of snapshot writes that were killed (the next write of the same
    partition, or ``verify --repair``, removes them)."""
    root = Path(data_dir) / SNAPSHOTS_DIR
    try:
        partitions = sorted(name for name in os.listdir(root) if is_valid_partition(name))
    except FileNotFoundError:
        return []
    return [p for name in partitions for p in temp_files(root / name, (SNAPSHOT_TEMP_PREFIX,))]


def remove_snapshot_temp_files(data_dir: Path, partition: str) -> list[Path]:
    """Remove ``partition``'s stray temporary files under its writer lock."""
    directory = snapshot_dir(data_dir, partition)
    found = temp_files(directory, (SNAPSHOT_TEMP_PREFIX,))
    if found:
        with writer_lock(directory, WRITE_LOCK, (SNAPSHOT_TEMP_PREFIX,)):
            pass  # entering the lock swept them
    return found


def list_snapshots(data_dir: Path, partition: str) -> list[Path]:
    """Every snapshot of ``partition``, oldest first (temp files and strays are ignored)."""
    directory = snapshot_dir(data_dir, partition)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return [directory / name for name in sorted(names) if SNAPSHOT_NAME_RE.fullmatch(name)]


def latest_snapshot(data_dir: Path, partition: str) -> Path | None:
    """The newest snapshot of ``partition``, or ``None`` if it has none."""
    snapshots = list_snapshots(data_dir, partition)
    return snapshots[-1] if snapshots else None


def latest_snapshots(data_dir: Path) -> dict[str, Path]:
    """Partition -> newest snapshot path, for every partition that has a snapshot.

    This is the shape ``SnapshotIndex.problems`` takes to cross-check the index.
    """
    root = Path(data_dir) / SNAPSHOTS_DIR
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return {}
    newest: dict[str, Path] = {}
    for name in names:
        if is_valid_partition(name) and (root / name).is_dir():
            path = latest_snapshot(data_dir, name)
            if path is not None:
                newest[name] = path
    return newest


def sha256_file(path: Path, chunk_size: int = HASH_CHUNK_SIZE) -> str:
    """The hex SHA-256 of a file, read in ``chunk_size`` pieces (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
