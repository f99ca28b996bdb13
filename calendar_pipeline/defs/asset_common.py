"""What the four assets (raw_snapshot, snapshot_index, due_alerts, calendar_feed) share: the `DAILY`
definition arguments and the helpers their check results and failures go through."""

import dagster as dg

from calendar_pipeline.defs.partitions import daily_partitions
from calendar_pipeline.lake.atomic import StorageError
from calendar_pipeline.quality.verdict import Verdict

GROUP = "calendar"
OWNERS = ["team:data-platform"]

# What the four assets share: daily partitions, the `calendar` group, and single-run
# backfills (a range is one run; each asset handles the range in one pass).
DAILY = {
    "partitions_def": daily_partitions,
    "backfill_policy": dg.BackfillPolicy.single_run(),
    "group_name": GROUP,
    "owners": OWNERS,
}


def logged(
    context: dg.AssetExecutionContext, asset: str, results: list[dg.AssetCheckResult]
) -> list[dg.AssetCheckResult]:
    """Say each failed check in the run log too (the terminal shows it): ERROR for a
    blocking failure, WARNING for a WARN one; then return them."""
    for result in results:
        if not result.passed:
            warn = result.severity == dg.AssetCheckSeverity.WARN
            (context.log.warning if warn else context.log.error)(
                f"check {asset}:{result.check_name} {'WARN' if warn else 'FAILED'}: "
                f"{result.description or ''}"
            )
    return results


def storage_failure(exc: StorageError, what: str) -> dg.Failure:
    """A write the file system refused: name the file, keep what is stored, no retry (a
    retry in seconds would fetch everything again onto the same full or read-only disk)."""
    return dg.Failure(
        f"{exc} while writing {what}. Nothing stored before is changed. Free space or make "
        "CALENDAR_DATA_DIR writable, then re-run the day (`calendar-pipeline verify` lists "
        "what is left over).",
        allow_retries=False,
    )


def check_result(verdict: Verdict) -> dg.AssetCheckResult:
    """A check's verdict (quality/) as Dagster's check result: a WARN check never blocks."""
    return dg.AssetCheckResult(
        check_name=verdict.name,
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.WARN if verdict.warn else dg.AssetCheckSeverity.ERROR,
        metadata=verdict.metadata,
        description=verdict.description,
    )
