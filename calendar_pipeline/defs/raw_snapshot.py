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
from calendar_pipeline.defs.asset_common import DAILY, first_ids, logged, storage_failure
from calendar_pipeline.defs.markdown import md_table, md_text
from calendar_pipeline.defs.resources import CalendarSettings, UpstreamSources
from calendar_pipeline.lake.atomic import StorageError
from calendar_pipeline.lake.history import History
from calendar_pipeline.lake.index import SnapshotIndex, index_path
from calendar_pipeline.lake.snapshots import write_snapshot
from calendar_pipeline.quality.carry import (
    CARRIED,
    STOPPED,
    apply_last_known_good,
    broken_entities,
    describe_broken,
    missing_over_share,
    rejected_by_volume,
    sources_down,
)
from calendar_pipeline.quality.freshness import FRESHNESS_WINDOW
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
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=FRESHNESS_WINDOW),
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
    generated_at = dt.datetime.now(dt.UTC)
    results = split_by_window(fetched, universe.entities, windows, sources)
    index = SnapshotIndex(index_path(calendar.data_path))
    history = History(index.get)
    volumes: list[VolumeReport] = []
    payloads: list[dict] = []
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
        baseline = find_baseline(history.document, partition)
        volume = volume_report(payload, baseline, calendar.volume_ratio)
        payload = apply_last_known_good(
            payload, rejected_by_volume(volume, payload), history, calendar.stale_after_days
        )
        try:
            path = write_snapshot(calendar.data_path, partition, payload, now=generated_at)
        except StorageError as exc:
            raise storage_failure(exc, "the snapshot") from None
        volumes.append(volume)
        payloads.append(_summary(payload))
        # per-day figures go on each day's materialization (the UI plots them by partition)
        context.add_asset_metadata(
            {
                "dagster/row_count": len(payload["events"]),
                "entities_without_events": len(result.entities_without_events),
                "entities_missing": len(result.entities_missing),
                "entities_carried": payload["counts"]["entities_carried"],
                "entities_stopped": payload["counts"]["entities_stopped"],
                "events_carried": payload["counts"]["events_carried"],
                "broken_entities": _broken_table(payloads[-1]["broken"], calendar),
                "window_start": window.start.isoformat(),
                "window_end": window.end.isoformat(),
                "path": dg.MetadataValue.path(str(path)),
            },
            partition_key=partition,
        )
    _add_http_metadata(context, partitions, http)
    for row in payloads[-1]["broken"]:  # one line per broken entity, no stack trace
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
            _check_results(partitions, payloads, volumes, calendar),
        ),
    )


def _partitions(context: dg.AssetExecutionContext) -> list[str]:
    try:  # Dagster raises a bare CheckError for a range outside the partitions
        return context.partition_keys
    except Exception as exc:  # the run's partition tags are wrong: a retry cannot help
        raise dg.Failure(str(exc).splitlines()[0], allow_retries=False) from None


def _summary(payload: dict) -> dict:
    """What the checks need of a written snapshot (the events themselves are not kept)."""
    return {
        "partition": payload["partition"],
        "events": len(payload["events"]),
        "broken": broken_entities(payload),
        "down": sources_down(payload, 0.0),  # every source with a broken entity
        "entities": payload["entities"],
        "entities_missing": payload["entities_missing"],
    }


def _check_results(
    partitions: list[str],
    payloads: list[dict],
    volumes: list[VolumeReport],
    calendar: CalendarSettings,
) -> list[dg.AssetCheckResult]:
    empty = [p["partition"] for p in payloads if not p["events"]]
    last = payloads[-1]
    down = [
        (source, n, total) for source, n, total in last["down"] if n / total > calendar.failed_share
    ]
    missing = {p["partition"]: missing_over_share(p, calendar.missing_share) for p in payloads}
    over_missing = [p for p, over in missing.items() if over]
    missing_ids = {p["partition"]: p["entities_missing"] for p in payloads}
    dropped = [v for v in volumes if v.drops]
    judged = sum(v.judged for v in volumes)
    stale = calendar.stale_after_days
    broken_lines = [describe_broken(row, stale) for row in last["broken"]]
    return [
        dg.AssetCheckResult(
            check_name="has_events",
            passed=not empty,
            metadata={"events": sum(p["events"] for p in payloads), "empty_partitions": len(empty)},
            description=(
                f"no events at all on {first_ids(empty)}, and no earlier data to carry. What "
                "to do: read the `errors` metadata, fix CALENDAR_UNIVERSE or the source, then "
                "re-run these days."
                if empty
                else None
            ),
        ),
        dg.AssetCheckResult(
            check_name="failed_entities_within_budget",
            passed=not down,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "broken": len(last["broken"]),
                "carried": sum(r["state"] == CARRIED for r in last["broken"]),
                "stopped": sum(r["state"] == STOPPED for r in last["broken"]),
                "sources_down": len(down),
                "max_share": calendar.failed_share,
            },
            description=(
                (
                    "source down: "
                    + "; ".join(f"{s} ({n} of {t} entities broken)" for s, n, t in down)
                    + f" (over CALENDAR_MAX_FAILED_SHARE={calendar.failed_share:g}). "
                    "Healthy entities are posted as usual.\n"
                    if down
                    else f"{len(broken_lines)} broken entities, within the budget.\n"
                )
                + "\n".join(broken_lines[:20])
                + (f"\n… and {len(broken_lines) - 20} more" if len(broken_lines) > 20 else "")
                if broken_lines
                else "No broken entity."
            ),
        ),
        dg.AssetCheckResult(
            check_name="missing_entities_within_budget",
            passed=not over_missing,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "missing": max(len(p["entities_missing"]) for p in payloads),
                "max_share": calendar.missing_share,
            },
            description=(
                f"on {over_missing[0]}: "
                + "; ".join(
                    f"{s}: the upstream knows nothing of {n} of its {t} entities"
                    for s, n, t in missing[over_missing[0]]
                )
                + f" ({first_ids(missing_ids[over_missing[0]], 10)}). What to do: check "
                "those keys and sources (a broken upstream often returns empty data)."
                if over_missing
                else first_ids(last["entities_missing"])
            ),
        ),
        dg.AssetCheckResult(
            check_name="volume_within_history",
            passed=not dropped,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "partitions_judged": judged,
                "partitions_flagged": len(dropped),
                "min_ratio": calendar.volume_ratio,
            },
            description=(
                f"far fewer events than before on {first_ids([v.partition for v in dropped])}:"
                "\n"
                + "\n".join(v.describe() for v in dropped[:10])
                + "\nThose entities keep their last known good events (marked in their "
                "alerts). If the drop is real, re-run the days once with "
                "CALENDAR_MIN_VOLUME_RATIO=0: the accepted snapshot becomes the new baseline."
                if dropped
                else volumes[-1].describe()
                + ("" if judged else " (nothing judged: this check passed without a baseline)")
            ),
        ),
    ]


def _broken_table(rows: list[dict], calendar: CalendarSettings) -> dg.MetadataValue:
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
