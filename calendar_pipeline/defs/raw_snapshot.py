"""`raw_snapshot`: each day's events for every entity of the universe, fetched from the
sources and written as a never-overwritten JSON snapshot; with its checks (`has_events`
blocks the day; `failed_entities_within_budget`, `missing_entities_within_budget` and
`volume_within_history` judge each source and entity and warn).

A broken entity (fetch failed, or answer rejected by the volume rule) never holds the
others back: it keeps its last known good events (quality/carry.py). The asset calls the
pure packages (sources/, lake/, quality/) and turns their results into metadata, plotted
across partitions by the UI, and check results.
"""

import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg

from calendar_pipeline.alerts.intent import span
from calendar_pipeline.defs.asset_common import DAILY, check_result, logged, storage_failure
from calendar_pipeline.defs.markdown import md_table, md_text
from calendar_pipeline.defs.resources import CalendarSettings, UpstreamSources
from calendar_pipeline.lake.atomic import StorageError
from calendar_pipeline.lake.history import History
from calendar_pipeline.lake.index import SnapshotIndex
from calendar_pipeline.lake.snapshots import write_snapshot
from calendar_pipeline.quality import snapshot_checks
from calendar_pipeline.quality.carry import (
    apply_last_known_good,
    describe_broken,
    rejected_by_volume,
)
from calendar_pipeline.quality.judge import Budgets
from calendar_pipeline.quality.problems import describe_problem
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
    check_specs=[
        dg.AssetCheckSpec(
            "has_events",
            asset="raw_snapshot",
            blocking=True,
            description="Every snapshot of the run holds at least one event (fresh or "
            "carried). The one check that holds the day back: with no event at all there is "
            "nothing to post.",
        ),
        dg.AssetCheckSpec(
            "failed_entities_within_budget",
            asset="raw_snapshot",
            description="Per source: the share of its entities that are broken today (fetch "
            "failed, or answer rejected by `volume_within_history`) is at most "
            "CALENDAR_MAX_FAILED_SHARE (0.5). Over it, the source is down: the check warns "
            "and names it. Never holds anyone back: a broken entity keeps its last known "
            "good events (at most CALENDAR_STALE_AFTER_DAYS old, marked in each alert) and "
            "every other entity is posted as usual.",
        ),
        dg.AssetCheckSpec(
            "missing_entities_within_budget",
            asset="raw_snapshot",
            description="Per source: the share of its entities the upstream knows nothing "
            "about (no event in the window and no data over the source's span, e.g. the "
            "calendar year) is at most CALENDAR_MAX_MISSING_SHARE (0.5) in every partition "
            "of the run. A quiet calendar is not a gap. Warns; never holds anyone back.",
        ),
        dg.AssetCheckSpec(
            "volume_within_history",
            asset="raw_snapshot",
            description="No source and no entity returned far fewer events than in the last "
            "accepted snapshot of the same day or the 7 before it, counted over the dates "
            "both windows cover: under CALENDAR_MIN_VOLUME_RATIO (0.5) of the baseline, or "
            "an entity with data before and none now (a truncated feed, a dropped country). "
            "What it flags is set aside: those entities (all of a flagged source) keep their "
            "last known good events. Warns; never holds anyone else back.",
        ),
    ],
)
def raw_snapshot(
    context: dg.AssetExecutionContext, calendar: CalendarSettings, upstream: UpstreamSources
):
    """Events dated D through D + lookahead for every entity of the universe, written to
    `{data_dir}/snapshots/{D}/snapshot_{UTC timestamp}.json` (never overwritten). An entity
    whose fetch fails, or whose answer the volume rule rejects, is *broken*: it keeps the
    events of its newest accepted snapshot for up to CALENDAR_STALE_AFTER_DAYS days
    (`entity_status` in the snapshot says fresh, carried or stopped, and from which day).
    A range of partitions (a backfill) fetches every entity once for the whole range."""
    partitions = _partitions(context)
    windows = [Window.ahead(dt.date.fromisoformat(p), calendar.lookahead) for p in partitions]
    try:
        universe = calendar.load_universe()
    except UniverseError as exc:  # configuration, not a transient fault: do not retry
        raise dg.Failure(str(exc), allow_retries=False) from None
    fetched, results, http = _fetch(context, calendar, upstream, universe, windows)
    generated_at = dt.datetime.now(dt.UTC)
    history = History(SnapshotIndex.for_data_dir(calendar.data_path).get)
    budgets = calendar.budgets
    volumes: list[VolumeReport] = []
    days: list[snapshot_checks.Day] = []  # what the checks need of each day written
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
        volume, day = _write_day(context, calendar, budgets, history, payload, generated_at)
        volumes.append(volume)
        days.append(day)
    _add_http_metadata(context, partitions, http)
    for row in days[-1].broken:  # one line per broken entity, no stack trace
        context.log.warning(describe_broken(row, calendar.stale_after_days))
    return dg.MaterializeResult(
        # On every partition of the run: true of each day's snapshot, as the whole run
        # shares one fetch (the same universe, failed entities and source versions).
        # Nothing additive here: HTTP figures go through _add_http_metadata instead.
        metadata={
            "partitions_in_run": len(partitions),
            "entities": len(universe.entities),
            "entities_ok": fetched.entities_ok,
            "entities_failed": fetched.entities_failed,
            "source_versions": dg.MetadataValue.json(fetched.source_versions),
            "errors": dg.MetadataValue.md(_errors_markdown(fetched.errors)),
        },
        check_results=logged(
            context,
            "raw_snapshot",
            [check_result(v) for v in snapshot_checks.judge(days, volumes, budgets)],
        ),
    )


def _fetch(context, calendar: CalendarSettings, upstream: UpstreamSources, universe, windows):
    """Every entity fetched once for the union of the run's windows, then split per day:
    (what was fetched, each day's events, the run's HTTP figures), with progress logged."""

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
    return fetched, split_by_window(fetched, universe.entities, windows, sources), http


def _write_day(
    context: dg.AssetExecutionContext,
    calendar: CalendarSettings,
    budgets: Budgets,
    history: History,
    payload: dict,
    generated_at: dt.datetime,
) -> tuple[VolumeReport, snapshot_checks.Day]:
    """One day's snapshot: judged against its baseline (the volume rule), broken entities
    given their last known good events, written, and its figures put on its partition's
    materialization (the UI plots them by partition)."""
    partition, window = payload["partition"], payload["window"]
    without_events, missing = (
        payload["counts"]["entities_without_events"],
        payload["counts"]["entities_missing"],
    )  # as fetched, before any carrying
    baseline = find_baseline(history.document, partition)
    volume = volume_report(payload, baseline, calendar.volume_ratio)
    payload = apply_last_known_good(
        payload, rejected_by_volume(volume, payload), history, calendar.stale_after_days
    )
    try:
        path = write_snapshot(calendar.data_path, partition, payload, now=generated_at)
    except StorageError as exc:
        raise storage_failure(exc, "the snapshot") from None
    day = snapshot_checks.summarize(payload, budgets)
    counts = payload["counts"]
    context.add_asset_metadata(
        {
            "dagster/row_count": len(payload["events"]),
            "entities_without_events": without_events,
            "entities_missing": missing,
            "entities_carried": counts["entities_carried"],
            "entities_stopped": counts["entities_stopped"],
            "events_carried": counts["events_carried"],
            "broken_entities": _broken_table(day.broken),
            "window_start": window["start"],
            "window_end": window["end"],
            "path": dg.MetadataValue.path(str(path)),
        },
        partition_key=partition,
    )
    return volume, day


def _partitions(context: dg.AssetExecutionContext) -> list[str]:
    try:  # Dagster raises a bare CheckError for a range outside the partitions
        return context.partition_keys
    except Exception as exc:  # the run's partition tags are wrong: a retry cannot help
        raise dg.Failure(str(exc).splitlines()[0], allow_retries=False) from None


def _broken_table(rows: list[dict]) -> dg.MetadataValue:
    """The broken entities as a table in the UI (one row per entity)."""
    return dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "entity_id": row["entity_id"],
                    "name": row["name"],
                    "source": row["source"],
                    "state": row["state"],
                    "since": row["broken_since"],
                    "data_of": row.get("data_of") or "",
                    "problem": describe_problem(row.get("error", {})).what,
                }
            )
            for row in rows
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn(name)
                for name in ("entity_id", "name", "source", "state", "since", "data_of", "problem")
            ]
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
