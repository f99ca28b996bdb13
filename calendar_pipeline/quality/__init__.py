"""Data-quality rules behind the asset checks. Pure: snapshots and rows in, findings out.

Each asset's checks, judgement and words (a :class:`.verdict.Verdict` each, turned into
Dagster's check result by `defs/asset_common.check_result`): :mod:`.snapshot_checks`
(raw_snapshot), :mod:`.index_checks` (snapshot_index), :mod:`.due_checks` (due_alerts).

- :mod:`.volume`: did an upstream return far fewer events than it did for the last
  accepted day (a truncated feed, a dropped country)? ``raw_snapshot:volume_within_history``.
- :mod:`.reconcile`: does each step hold what the step before it implies? The index line's
  row count against its snapshot (``snapshot_index:row_count_matches_snapshot``), the
  ``due_alerts`` rows against the bucket rule re-applied to the indexed snapshot
  (``due_alerts:rows_match_bucket_rule``).
"""
