"""The data lake (pure Python, no Dagster): snapshot files, the JSONL index, atomic writes.

- ``atomic``: write a file so that readers see the old or the new content, never a mix.
- ``snapshots``: one JSON file per run under ``{data_dir}/snapshots/{partition}/``,
  timestamped and never rewritten.
- ``index``: ``{data_dir}/index/snapshots.jsonl``, one line per partition, sorted, the
  newest last; appends in constant time and reads the newest line without scanning.
"""

from __future__ import annotations

from calendar_pipeline.lake.atomic import (
    atomic_create_bytes,
    atomic_replace,
    atomic_write_bytes,
    atomic_write_text,
    fsync_dir,
)
from calendar_pipeline.lake.index import (
    IndexCorruptError,
    SnapshotIndex,
    build_entry,
    encode_line,
    index_path,
)
from calendar_pipeline.lake.snapshots import (
    file_fingerprint,
    is_valid_partition,
    latest_snapshot,
    latest_snapshots,
    list_snapshot_partitions,
    list_snapshots,
    read_snapshot,
    sha256_file,
    validate_partition,
    write_snapshot,
)

__all__ = [
    "IndexCorruptError",
    "SnapshotIndex",
    "atomic_create_bytes",
    "atomic_replace",
    "atomic_write_bytes",
    "atomic_write_text",
    "build_entry",
    "encode_line",
    "file_fingerprint",
    "fsync_dir",
    "index_path",
    "is_valid_partition",
    "latest_snapshot",
    "latest_snapshots",
    "list_snapshot_partitions",
    "list_snapshots",
    "read_snapshot",
    "sha256_file",
    "validate_partition",
    "write_snapshot",
]
