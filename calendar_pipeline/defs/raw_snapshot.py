"""``raw_snapshot``: each day's events for every entity of the universe, fetched from the
sources and written as a never-overwritten JSON snapshot; with its four blocking checks
(has_events, failed_entities_within_budget, missing_entities_within_budget,
volume_within_history).

The asset calls the pure packages (sources/, lake/, quality/) and turns their results into
metadata, plotted across partitions by the UI, and check results.
"""

import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg

from calendar_pipeline.alerts.intent import span
from calendar_pipeline.defs.asset_common import DAILY, first_ids, logged, storage_failure
from calendar_pipeline.defs.markdown import md_table, md_text
from calendar_pipeline.defs.resources import CalendarSettings, UpstreamSources
from calendar_pipeline.lake.atomic import StorageError
from calendar_pipeline.lake.index import SnapshotIndex, index_path
from calendar_pipeline.lake.snapshots import write_snapshot
from calendar_pipeline.quality.freshness import FRESHNESS_WINDOW
from calendar_pipeline.quality.volume import VolumeReport, find_baseline, volume_report
from calendar_pipeline.sources.collect import collect_events, snapshot_payload, split_by_window
from calendar_pipeline.sources.http_sources import http_stats
from calendar_pipeline.sources.model import Window
from calendar_pipeline.universe import UniverseError

if TYPE_CHECKING:
    from calendar_pipeline.sources.http import HttpStats

PROGRESS_EVERY = 50

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
def raw_snapshot(
    context: dg.AssetExecutionContext, calendar: CalendarSettings, upstream: UpstreamSources
):
    """Events dated D through D + lookahead for every entity of the universe, written to
    ``{data_dir}/snapshots/{D}/snapshot_{UTC timestamp}.json`` (never overwritten). An
    entity that fails becomes an error entry in the snapshot instead of failing the run.
    A range of partitions (a backfill) fetches every entity once for the whole range."""
    try:  # Dagster raises a bare CheckError for a range outside the partitions
        partitions = context.partition_keys
    except Exception as exc:  # the run's partition tags are wrong: a retry cannot help
        raise dg.Failure(str(exc).splitlines()[0], allow_retries=False) from None
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

    sources = upstream.sources(calendar.engine(), calendar.timezone, on_progress=http_progress)
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
            raise storage_failure(exc, "the snapshot") from None
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
    _add_http_metadata(context, partitions, http)

    failed = fetched.entities_failed
    missing_ids = {p: r.entities_missing for p, r in zip(partitions, results, strict=True)}
    missing = {p: len(ids) for p, ids in missing_ids.items()}
    quiet = [len(r.entities_without_events) for r in results]
    empty = [p for p, r in zip(partitions, results, strict=True) if not r.events]
    over_missing = [p for p, n in missing.items() if n > calendar.missing_budget]
    rows = [len(r.events) for r in results]
    dropped = [v for v in volumes if v.drops]
    flagged = first_ids([v.partition for v in dropped])
    return dg.MaterializeResult(
        # On every partition of the run: true of each day's snapshot, as the whole run
        # shares one fetch (the same universe, failed entities and source versions).
        # Nothing additive here: HTTP figures go through _add_http_metadata instead.
        metadata={
            "partitions_in_run": len(partitions),
            "entities": len(universe.entities),
            "entities_ok": fetched.entities_ok,
            "entities_failed": failed,
            "source_versions": dg.MetadataValue.json(fetched.source_versions),
            "errors": dg.MetadataValue.md(_errors_markdown(fetched.errors)),
        },
        check_results=logged(
            context,
            "raw_snapshot",
            [
                dg.AssetCheckResult(
                    check_name="has_events",
                    passed=not empty,
                    metadata={"events": sum(rows), "empty_partitions": len(empty)},
                    description=(
                        f"no events at all on {first_ids(empty)}. What to do: read the "
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
                        else first_ids([e.entity_id for e in fetched.errors])
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
                        f"over budget ({calendar.missing_budget}) on {first_ids(over_missing)};"
                        f" missing on {over_missing[0]}: "
                        f"{first_ids(missing_ids[over_missing[0]])}. What to do: check those "
                        "sources (a broken upstream often returns empty data) or raise "
                        "CALENDAR_MAX_MISSING_ENTITIES; then re-run these days."
                        if over_missing
                        else first_ids(results[-1].entities_missing)
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


def _add_http_metadata(
    context: dg.AssetExecutionContext, partitions: list[str], http: "HttpStats"
) -> None:
    """Put the run's HTTP figures where they mean something, and log them once.

    They are counted once per run: a range (a backfill) fetches every entity once for all
    its partitions. Metadata returned in the ``MaterializeResult`` lands on *every*
    partition's materialization, so a 365-day backfill would show the same run total on
    365 days in the UI's plots over partitions, and summing them would count it 365 times.
    Hence:

    - one partition (the daily run): ``http_done``, ``http_failed``, ``http_requests``,
      ``http_retried``, ``http_not_modified``, ``http_bytes`` on that partition. That run's
      fetch is the day's own fetch, so ``http_*`` plots as a per-day figure.
    - a range: no ``http_*`` on any partition (no day had a fetch of its own, and a share
      of the total would be invented). The run's totals go once onto the range's last
      partition as ``run_http_*`` (the materialization the asset page shows after the
      backfill; a prefix that cannot be mistaken for a day's figure; with
      ``partitions_in_run``, what they cover) and into the run log.
    """
    figures = http.as_dict()
    if http.requests:  # a universe of embedded sources only makes no HTTP request
        context.log.info(f"HTTP for {span(partitions)}, one fetch: {http.summary()}")
    prefix = "http_" if len(partitions) == 1 else "run_http_"
    context.add_asset_metadata(
        {f"{prefix}{name}": value for name, value in figures.items()},
        partition_key=partitions[-1],
    )


def _errors_markdown(errors, limit: int = 50) -> str:
    if not errors:
        return "No failed entities."
    rows = [
        (md_text(e.entity_id), md_text(e.source), md_text(e.error_type), md_text(e.message, 200))
        for e in errors[:limit]
    ]
    return md_table(("entity", "source", "error", "message"), rows, more=len(errors) - len(rows))
