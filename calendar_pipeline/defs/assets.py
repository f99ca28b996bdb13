"""The three daily-partitioned assets, in data-flow order: raw_snapshot -> snapshot_index
-> due_alerts. Each lives in the module named after it, with its check specs:

    defs/raw_snapshot.py    fetch every entity, write the day's JSON snapshot
    defs/snapshot_index.py  the JSONL index: one line per day, its newest snapshot
    defs/due_alerts.py      the SQL rows the bucket rule gives for the day
    defs/asset_common.py    what they share: DAILY (partitions, single-run backfills,
                            group, owners), logged check results, storage failures

Thin on purpose: each asset calls the pure packages and turns their results into
metadata (plotted across partitions by the UI) and check results.
"""

from calendar_pipeline.defs.due_alerts import due_alerts
from calendar_pipeline.defs.raw_snapshot import raw_snapshot
from calendar_pipeline.defs.snapshot_index import snapshot_index

__all__ = ["due_alerts", "raw_snapshot", "snapshot_index"]
