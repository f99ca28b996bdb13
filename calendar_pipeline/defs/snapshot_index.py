"""`snapshot_index`: `{data_dir}/index/snapshots.jsonl`, one line per partition
pointing at its newest raw_snapshot file; with its checks (index_consistent,
row_count_matches_snapshot, both blocking; index_history_consistent, a warning), whose
judgements and words are in quality/index_checks.py.
"""

import json
from collections.abc import Iterator

import dagster as dg

from calendar_pipeline.defs.asset_common import DAILY, check_result, logged, storage_failure
from calendar_pipeline.defs.raw_snapshot import raw_snapshot
from calendar_pipeline.defs.resources import CalendarSettings
from calendar_pipeline.lake.atomic import StorageError
from calendar_pipeline.lake.index import SnapshotIndex, build_entry
from calendar_pipeline.lake.snapshots import latest_snapshot, latest_snapshots
from calendar_pipeline.quality import index_checks


@dg.asset(
    **DAILY,
    kinds={"python", "jsonl"},
    deps=[raw_snapshot],
    check_specs=[
        dg.AssetCheckSpec(
            "index_consistent",
            asset="snapshot_index",
            blocking=True,
            description="Each partition this run wrote has one line, in order, pointing at "
            "its newest snapshot, with a matching sha256. Other days are not judged here: a "
            "failed day never blocks another day.",
        ),
        dg.AssetCheckSpec(
            "row_count_matches_snapshot",
            asset="snapshot_index",
            blocking=True,
            description="Each line this run wrote has the row count of the snapshot it "
            "embeds: its events, counted again, equal the line's row_count and the "
            "snapshot's own counts.",
        ),
        dg.AssetCheckSpec(
            "index_history_consistent",
            asset="snapshot_index",
            blocking=False,
            description="Warns about drift on days this run did not write (a snapshot "
            "without an index line, a line pointing at an older snapshot, a changed file), "
            "naming the partitions. The next successful run of such a day repairs it.",
        ),
    ],
)
def snapshot_index(context: dg.AssetExecutionContext, calendar: CalendarSettings):
    """`{data_dir}/index/snapshots.jsonl`: one line per partition pointing at its newest
    snapshot, sorted by partition, so the newest partition is the last line.
    Re-materializing D replaces D's line; a range is one atomic rewrite."""
    partitions = context.partition_keys
    counts = index_checks.RowCounts()  # what row_count_matches_snapshot judges
    lines = _lines(context, calendar, counts)
    index = SnapshotIndex.for_data_dir(calendar.data_path)
    try:
        if len(partitions) == 1:
            index.upsert(next(lines))  # the daily case: an O(1) append for a new day
        else:
            index.upsert_sorted(lines)  # one streamed, atomic rewrite
    except StorageError as exc:
        raise storage_failure(exc, "the index") from None

    snapshots = latest_snapshots(calendar.data_path)
    problems = index.problems(snapshots, full_for=partitions)
    indexed = index.partitions()
    other_days = (set(indexed) | set(snapshots)) - set(partitions)
    verdicts = index_checks.judge(problems, set(partitions), counts, other_days)
    return dg.MaterializeResult(
        metadata={
            "partitions_in_run": len(counts.rows),
            "partitions_indexed": len(indexed),
            "index_bytes": index.path.stat().st_size,
            "index_path": dg.MetadataValue.path(str(index.path)),
        },
        check_results=logged(context, "snapshot_index", [check_result(v) for v in verdicts]),
    )


def _lines(
    context: dg.AssetExecutionContext, calendar: CalendarSettings, counts: index_checks.RowCounts
) -> Iterator[dict]:
    """The index line of each partition of the run, pointing at its newest snapshot, built
    one at a time (a long range never holds every snapshot at once); each counted into
    ``counts`` and its figures put on its partition's materialization."""
    for partition in context.partition_keys:
        snapshot = latest_snapshot(calendar.data_path, partition)
        if snapshot is None:
            raise dg.Failure(
                f"no snapshot for partition {partition} under "
                f"{calendar.data_path / 'snapshots'}: materialize raw_snapshot for it first"
            )
        entry = build_entry(partition, snapshot, row_count=0, error_count=0)
        document = json.loads(entry["content_text"])
        document_counts = document.get("counts", {})
        entry["row_count"] = int(document_counts.get("events", 0))
        entry["error_count"] = int(document_counts.get("entities_failed", 0))
        counts.add(entry, document)
        context.add_asset_metadata(
            {
                "dagster/row_count": entry["row_count"],
                "snapshot_sha256": entry["sha256"],
                "snapshot_path": dg.MetadataValue.path(entry["path"]),
            },
            partition_key=partition,
        )
        yield entry
