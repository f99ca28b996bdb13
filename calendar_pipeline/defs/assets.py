"""The three daily-partitioned assets: raw_snapshot -> snapshot_index -> due_alerts.

Thin on purpose: each asset calls the pure packages and turns their results into
metadata (plotted across partitions by the UI) and check results.
"""

import datetime as dt
import hashlib
import json

import dagster as dg
from sqlalchemy.exc import SQLAlchemyError

from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.due import (
    compute_due_alerts,
    count_by_threshold,
    threshold_metadata_keys,
)
from calendar_pipeline.alerts.intent import span
from calendar_pipeline.defs.markdown import md_table, md_text
from calendar_pipeline.defs.partitions import daily_partitions
from calendar_pipeline.defs.resources import CalendarSettings
from calendar_pipeline.lake.atomic import StorageError
from calendar_pipeline.lake.index import SnapshotIndex, build_entry, index_path
from calendar_pipeline.lake.snapshots import (
    latest_snapshot,
    latest_snapshots,
    write_snapshot,
)
from calendar_pipeline.quality.freshness import FRESHNESS_WINDOW
from calendar_pipeline.quality.reconcile import (
    compare_buckets,
    expected_buckets,
    index_row_count_problem,
)
from calendar_pipeline.quality.volume import VolumeReport, find_baseline, volume_report
from calendar_pipeline.sources.collect import (
    collect_events,
    parse_snapshot_text,
    snapshot_payload,
    split_by_window,
)
from calendar_pipeline.sources.http_sources import http_stats
from calendar_pipeline.sources.model import Window
from calendar_pipeline.universe import UniverseError

GROUP = "calendar"
OWNERS = ["team:data-platform"]
PROGRESS_EVERY = 50

# What the three assets share: daily partitions, the `calendar` group, and single-run
# backfills (a range is one run; each asset handles the range in one pass).
DAILY = {
    "partitions_def": daily_partitions,
    "backfill_policy": dg.BackfillPolicy.single_run(),
    "group_name": GROUP,
    "owners": OWNERS,
}

INGEST_RETRY = dg.RetryPolicy(
    max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


@dg.asset(
    **DAILY,
    kinds={"python", "json"},
    pool="calendar_upstream",
    retry_policy=INGEST_RETRY,
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=FRESHNESS_WINDOW),
    check_specs=[
        dg.AssetCheckSpec(
            "has_events",
            asset="raw_snapshot",
            blocking=True,
            description="Every snapshot of the run holds at least one event.",
        ),
        dg.AssetCheckSpec(
            "failed_entities_within_budget",
            asset="raw_snapshot",
            blocking=True,
            description="Entities whose fetch failed <= CALENDAR_MAX_FAILED_ENTITIES.",
        ),
        dg.AssetCheckSpec(
            "missing_entities_within_budget",
            asset="raw_snapshot",
            blocking=True,
            description="Entities missing from the upstream (no event in the window and "
            "no data at all over the source's span, e.g. the calendar year) <= "
            "CALENDAR_MAX_MISSING_ENTITIES, in every partition of the run. A quiet calendar "
            "is not a gap: up to 121 of the 283 bundled entities have no holiday in some "
            "60-day windows.",
        ),
        dg.AssetCheckSpec(
            "volume_within_history",
            asset="raw_snapshot",
            blocking=True,
            description="No source and no entity returned far fewer events than in the last "
            "accepted snapshot of the same day or the 7 before it, counted over the dates "
            "both windows cover: under CALENDAR_MIN_VOLUME_RATIO (0.5) of the baseline, or "
            "an entity with data before and none now (a truncated feed, a dropped country). "
            "Names the partitions, sources and entities.",
        ),
    ],
)
def raw_snapshot(context: dg.AssetExecutionContext, calendar: CalendarSettings):
    """Events dated D through D + lookahead for every entity of the universe, written to
    ``{data_dir}/snapshots/{D}/snapshot_{UTC timestamp}.json`` (never overwritten). An
    entity that fails becomes an error entry in the snapshot instead of failing the run.
    A range of partitions (a backfill) fetches every entity once for the whole range."""
    partitions = context.partition_keys
    windows = [Window.ahead(dt.date.fromisoformat(p), calendar.lookahead) for p in partitions]
    try:
        universe = calendar.load_universe()
    except UniverseError as exc:  # configuration, not a transient fault: do not retry
        raise dg.Failure(str(exc), allow_retries=False) from None

    def progress(done: int, total: int) -> None:
        if done % PROGRESS_EVERY == 0 or done == total:
            context.log.info(f"fetched {done}/{total} entities")

    def http_progress(update) -> None:
        context.log.info(
            f"{update.source}: {update.entities_done}/{update.entities_total} "
            f"entities; {update.stats.summary()}"
        )

    sources = calendar.sources(on_progress=http_progress)
    before = http_stats(sources)
    union = Window(windows[0].start, windows[-1].end)
    fetched = collect_events(universe.entities, union, sources, on_progress=progress)
    http = http_stats(sources) - before
    for error in fetched.errors[:20]:
        context.log.warning(
            f"{error.entity_id} ({error.source}): {error.error_type}: {error.message}"
        )
    generated_at = dt.datetime.now(dt.UTC)
    results = split_by_window(fetched, universe.entities, windows, sources)
    index = SnapshotIndex(index_path(calendar.data_path))
    volumes: list[VolumeReport] = []
    for partition, window, result in zip(partitions, windows, results, strict=True):
        payload = snapshot_payload(
            partition=partition,
            window=window,
            result=result,
            universe_path=str(universe.path),
            universe_sha256=universe.sha256,
            entities=universe.entities,
            generated_at=generated_at.isoformat(),
        )
        try:
            path = write_snapshot(calendar.data_path, partition, payload, now=generated_at)
        except StorageError as exc:
            raise _storage_failure(exc, "the snapshot") from None
        volumes.append(
            volume_report(payload, find_baseline(index.get, partition), calendar.volume_ratio)
        )
        # per-day figures go on each day's materialization (the UI plots them by partition)
        context.add_asset_metadata(
            {
                "dagster/row_count": len(result.events),
                "entities_without_events": len(result.entities_without_events),
                "entities_missing": len(result.entities_missing),
                "window_start": window.start.isoformat(),
                "window_end": window.end.isoformat(),
                "path": dg.MetadataValue.path(str(path)),
            },
            partition_key=partition,
        )

    failed = fetched.entities_failed
    missing_ids = {p: r.entities_missing for p, r in zip(partitions, results, strict=True)}
    missing = {p: len(ids) for p, ids in missing_ids.items()}
    quiet = [len(r.entities_without_events) for r in results]
    empty = [p for p, r in zip(partitions, results, strict=True) if not r.events]
    over_missing = [p for p, n in missing.items() if n > calendar.missing_budget]
    rows = [len(r.events) for r in results]
    dropped = [v for v in volumes if v.drops]
    flagged = _first_ids([v.partition for v in dropped])
    return dg.MaterializeResult(
        metadata={  # what the whole run shares (one fetch for all its partitions)
            "partitions_in_run": len(partitions),
            "entities": len(universe.entities),
            "entities_ok": fetched.entities_ok,
            "entities_failed": failed,
            "source_versions": dg.MetadataValue.json(fetched.source_versions),
            "errors": dg.MetadataValue.md(_errors_markdown(fetched.errors)),
            **{f"http_{name}": value for name, value in http.as_dict().items()},
        },
        check_results=_logged(
            context,
            "raw_snapshot",
            [
                dg.AssetCheckResult(
                    check_name="has_events",
                    passed=not empty,
                    metadata={"events": sum(rows), "empty_partitions": len(empty)},
                    description=(
                        f"no events at all on {_first_ids(empty)}. What to do: read the "
                        "`errors` metadata, fix CALENDAR_UNIVERSE or the source, then re-run "
                        "these days."
                        if empty
                        else None
                    ),
                ),
                dg.AssetCheckResult(
                    check_name="failed_entities_within_budget",
                    passed=failed <= calendar.failed_budget,
                    metadata={"failed": failed, "budget": calendar.failed_budget},
                    description=(
                        f"{failed} entities failed, budget {calendar.failed_budget}: "
                        + "; ".join(
                            f"{e.entity_id} ({e.source} {e.error_type}: {e.message[:120]})"
                            for e in fetched.errors[:5]
                        )
                        + (f" and {failed - 5} more" if failed > 5 else "")
                        + f". What to do: fix their keys in {universe.path}, or raise "
                        "CALENDAR_MAX_FAILED_ENTITIES if the failures are expected; then "
                        f"re-run {span(partitions)}."
                        if failed > calendar.failed_budget
                        else _first_ids([e.entity_id for e in fetched.errors])
                    ),
                ),
                dg.AssetCheckResult(
                    check_name="missing_entities_within_budget",
                    passed=not over_missing,
                    metadata={
                        "missing": max(missing.values()),
                        "without_events": max(quiet),
                        "budget": calendar.missing_budget,
                    },
                    description=(
                        f"over budget ({calendar.missing_budget}) on {_first_ids(over_missing)};"
                        f" missing on {over_missing[0]}: "
                        f"{_first_ids(missing_ids[over_missing[0]])}. What to do: check those "
                        "sources (a broken upstream often returns empty data) or raise "
                        "CALENDAR_MAX_MISSING_ENTITIES; then re-run these days."
                        if over_missing
                        else _first_ids(results[-1].entities_missing)
                    ),
                ),
                dg.AssetCheckResult(
                    check_name="volume_within_history",
                    passed=not dropped,
                    metadata={
                        "partitions_judged": sum(v.judged for v in volumes),
                        "partitions_flagged": len(dropped),
                        "min_ratio": calendar.volume_ratio,
                    },
                    description=(
                        f"far fewer events than before on {flagged}:\n"
                        + "\n".join(v.describe() for v in dropped[:10])
                        + "\nWhat to do: check those upstreams (a truncated feed, a dropped "
                        "country). If the drop is real, re-run the days once with "
                        "CALENDAR_MIN_VOLUME_RATIO=0: the accepted snapshot becomes the new "
                        "baseline."
                        if dropped
                        else volumes[-1].describe()
                    ),
                ),
            ],
        ),
    )


def _logged(
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
    """``{data_dir}/index/snapshots.jsonl``: one line per partition pointing at its newest
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

    index = SnapshotIndex(index_path(calendar.data_path))
    try:
        if len(context.partition_keys) == 1:
            index.upsert(next(entries()))  # the daily case: an O(1) append for a new day
        else:
            index.upsert_sorted(entries())  # one streamed, atomic rewrite
    except StorageError as exc:
        raise _storage_failure(exc, "the index") from None

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
        check_results=_logged(
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
                        f"drift on {_first_ids(drifted) or 'the index file'} (other days are not "
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


@dg.asset(
    **DAILY,
    kinds={"python", "sql"},
    deps=[snapshot_index],
    check_specs=[
        dg.AssetCheckSpec(
            "rows_match_bucket_rule",
            asset="due_alerts",
            blocking=True,
            description="The stored rows of each partition of the run are exactly the "
            "events of its indexed snapshot that the bucket rule puts in a threshold, "
            "re-derived inside the check (quality/reconcile.py): none missing, none extra.",
        ),
    ],
)
def due_alerts(context: dg.AssetExecutionContext, calendar: CalendarSettings):
    """Rows of the SQL table ``due_alerts`` for partition D: every event whose days-until
    falls in a threshold bucket (the smallest threshold >= days until). A pure function
    of D's indexed snapshot, replaced per partition in one transaction (a range: one
    transaction for all its partitions)."""
    index = SnapshotIndex(index_path(calendar.data_path))
    thresholds = calendar.threshold_days
    partitions = context.partition_keys
    expected: dict[dt.date, dict[str, int]] = {}  # the rule re-derived, until checked
    counts: dict[dt.date, tuple[dict[int, int], str]] = {}  # per day: per bucket, preview
    wrong: list = []
    rows = 0

    def batches():  # one partition at a time: a long range never holds every snapshot
        seen = set()
        lines = (
            [index.get(partitions[0])] if len(partitions) == 1 else index.entries_for(partitions)
        )
        for entry in lines:
            if entry is None:
                break
            partition, content = entry["partition"], entry["content_text"]
            if hashlib.sha256(content.encode("utf-8")).hexdigest() != entry["sha256"]:
                raise dg.Failure(
                    f"index line for {partition} in {index.path}: content does not match its sha256"
                )
            try:
                events, entities = parse_snapshot_text(content)
            except ValueError as exc:
                raise dg.Failure(f"index line for {partition} in {index.path}: {exc}") from None
            day = dt.date.fromisoformat(partition)
            alerts = compute_due_alerts(events, day, thresholds, entities)
            expected[day] = expected_buckets(json.loads(content), day, thresholds)
            counts[day] = (count_by_threshold(alerts, thresholds), _alerts_markdown(alerts))
            seen.add(partition)
            yield day, alerts
        missing = [p for p in partitions if p not in seen]
        if missing:  # raised inside the transaction: nothing of the range is replaced
            raise dg.Failure(
                f"partition {span(missing)} is not in {index.path}: materialize snapshot_index"
            )

    keys = threshold_metadata_keys(thresholds)

    def check(day: dt.date, stored: dict[str, int]) -> None:
        nonlocal rows
        rows += len(stored)
        diff = compare_buckets(str(day), stored, expected.pop(day))
        if not diff.ok:
            wrong.append(diff)
        per_threshold, preview = counts.pop(day)
        context.add_asset_metadata(
            {
                "dagster/row_count": len(stored),
                **{keys[threshold]: count for threshold, count in per_threshold.items()},
                "preview": dg.MetadataValue.md(preview),
            },
            partition_key=day.isoformat(),
        )

    engine = calendar.engine()
    try:
        store.replace_due_alerts_streamed(engine, batches(), on_stored=check)
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        raise dg.Failure(
            f"could not replace the due_alerts rows of {span(partitions)} in "
            f"{engine.url.render_as_string(hide_password=True)}: "
            f"{cause}. Nothing was half replaced (one transaction): the previous rows are "
            "kept. Re-run the day once the database answers."
        ) from None
    return dg.MaterializeResult(
        metadata={"partitions_in_run": len(partitions)},
        check_results=_logged(
            context,
            "due_alerts",
            [
                dg.AssetCheckResult(
                    check_name="rows_match_bucket_rule",
                    passed=not wrong,
                    metadata={
                        "rows": rows,
                        "partitions_wrong": len(wrong),
                    },
                    description=(
                        "\n".join(diff.describe() for diff in wrong[:10])
                        + "\nWhat to do: nothing reaches Slack for these days. Look for "
                        "another writer of the due_alerts table or a change to alerts/due.py; "
                        "re-run the days."
                        if wrong
                        else None
                    ),
                )
            ],
        ),
    )


def _storage_failure(exc: StorageError, what: str) -> dg.Failure:
    """A write the file system refused: name the file, keep what is stored, no retry (a
    retry in seconds would fetch everything again onto the same full or read-only disk)."""
    return dg.Failure(
        f"{exc} while writing {what}. Nothing stored before is changed. Free space or make "
        "CALENDAR_DATA_DIR writable, then re-run the day (`calendar-pipeline verify` lists "
        "what is left over).",
        allow_retries=False,
    )


def _first_ids(ids: list[str], limit: int = 20) -> str | None:
    if not ids:
        return None
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def _errors_markdown(errors, limit: int = 50) -> str:
    if not errors:
        return "No failed entities."
    rows = [
        (md_text(e.entity_id), md_text(e.source), md_text(e.error_type), md_text(e.message, 200))
        for e in errors[:limit]
    ]
    return md_table(("entity", "source", "error", "message"), rows, more=len(errors) - len(rows))


def _alerts_markdown(alerts, limit: int = 30) -> str:
    if not alerts:
        return "Nothing due."
    ordered = sorted(alerts, key=lambda a: (a.days_until, a.entity_name))[:limit]
    rows = [
        (f"D\\-{a.threshold_days}", a.event_date, a.days_until, md_text(a.entity_name, 100),
         md_text(a.title, 200))
        for a in ordered
    ]  # fmt: skip
    return md_table(
        ("bucket", "date", "days", "entity", "event"), rows, more=len(alerts) - len(rows)
    )
