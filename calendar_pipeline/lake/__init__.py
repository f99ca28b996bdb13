"""The data lake (pure Python, no Dagster): snapshot files, the JSONL index, atomic writes.

- ``atomic``: write a file so that readers see the old or the new content, never a mix.
- ``snapshots``: one JSON file per run under ``{data_dir}/snapshots/{partition}/``,
  timestamped and never rewritten.
- ``index``: ``{data_dir}/index/snapshots.jsonl``, one line per partition, sorted, the
  newest last; appends in constant time and reads the newest line without scanning.
- ``history``: the accepted snapshot documents of the days around a partition, read once.

Import from the module that holds a name (``from calendar_pipeline.lake.index import
SnapshotIndex``): this package re-exports nothing.
"""
