"""`snapshot_index`: `{data_dir}/index/snapshots.jsonl`, one line per partition
pointing at its newest raw_snapshot file; with its checks (index_consistent,
row_count_matches_snapshot, both blocking; index_history_consistent, a warning).
"""

import json

import dagster as dg

from calendar_pipeline.defs.asset_common import DAILY, logged, storage_failure
from calendar_pipeline.defs.raw_snapshot import raw_snapshot
from calendar_pipeline.defs.resources import CalendarSettings
from calendar_pipeline.lake.atomic import StorageError
from calendar_pipeline.lake.index import SnapshotIndex, build_entry
from calendar_pipeline.lake.snapshots import latest_snapshot, latest_snapshots
from calendar_pipeline.quality.reconcile import index_row_count_problem
from calendar_pipeline.text import first_ids


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
    rows: list[int] = []
    miscounted: list[str] = []

    def entries():  # built one at a time: a long range never holds every snapshot at once
        for partition in context.partition_keys:
            snapshot = latest_snapshot(calendar.data_path, partition)
            if snapshot is None:
                raise dg.Failure(
                    f"no snapshot for partition {partition} under "
                    f"{calendar.data_path / 'snapshots'}: materialize raw_snapshot for it first"
                )
            entry = build_entry(partition, snapshot, row_count=0, error_count=0)
            document = json.loads(entry["content_text"])
            counts = document.get("counts", {})
            entry["row_count"] = int(counts.get("events", 0))
            entry["error_count"] = int(counts.get("entities_failed", 0))
            if problem := index_row_count_problem(entry, document):
                miscounted.append(problem)
            rows.append(entry["row_count"])
            context.add_asset_metadata(
                {
                    "dagster/row_count": entry["row_count"],
                    "snapshot_sha256": entry["sha256"],
                    "snapshot_path": dg.MetadataValue.path(entry["path"]),
                },
                partition_key=partition,
            )
            yield entry

    index = SnapshotIndex.for_data_dir(calendar.data_path)
    try:
        if len(context.partition_keys) == 1:
            index.upsert(next(entries()))  # the daily case: an O(1) append for a new day
        else:
            index.upsert_sorted(entries())  # one streamed, atomic rewrite
    except StorageError as exc:
        raise storage_failure(exc, "the index") from None

    written = set(context.partition_keys)
    problems = index.problems(latest_snapshots(calendar.data_path), full_for=written)
    mine = [text for partition, text in problems if partition in written]
    drift = [(partition, text) for partition, text in problems if partition not in written]
    drifted = sorted({p for p, _ in drift if p is not None})
    partitions = index.partitions()
    return dg.MaterializeResult(
        metadata={
            "partitions_in_run": len(rows),
            "partitions_indexed": len(partitions),
            "index_bytes": index.path.stat().st_size,
            "index_path": dg.MetadataValue.path(str(index.path)),
        },
        check_results=logged(
            context,
            "snapshot_index",
            [
                dg.AssetCheckResult(
                    check_name="index_consistent",
                    passed=not mine,
                    metadata={"problems": len(mine), "partitions_in_run": len(written)},
                    description=(
                        "\n".join(mine[:20]) + "\nWhat to do: re-run these days." if mine else None
                    ),
                ),
                dg.AssetCheckResult(
                    check_name="row_count_matches_snapshot",
                    passed=not miscounted,
                    metadata={"rows": sum(rows)},
                    description=(
                        "\n".join(miscounted[:20]) + "\nWhat to do: the snapshot file was "
                        "changed or written by another program; re-run these days."
                        if miscounted
                        else None
                    ),
                ),
                dg.AssetCheckResult(
                    check_name="index_history_consistent",
                    passed=not drift,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"problems": len(drift), "partitions_with_drift": len(drifted)},
                    description=(
                        f"drift on {first_ids(drifted) or 'the index file'} (other days are not "
                        "blocked):\n"
                        + "\n".join(text for _, text in drift[:20])
                        + "\nWhat to do: re-run those days (RUNBOOK.md, Re-running a day)."
                        if drift
                        else None
                    ),
                ),
            ],
        ),
    )
