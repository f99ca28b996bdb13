"""Last known good: an entity that is broken today keeps its newest accepted events.

An entity is *broken* on day D when its fetch failed (a dead-letter entry in the snapshot's
``errors``) or when the volume rule rejected what it returned (a truncated or emptied
feed, quality/volume.py). A broken entity never holds anyone else back: its fresh data (if
any) is set aside and replaced by the events of its newest accepted snapshot, found in the
index, as long as that data is at most ``stale_after`` days old (CALENDAR_STALE_AFTER_DAYS).
Past that age its alerts stop, and its status says so.

Every snapshot records, in ``entity_status``, one entry per entity of the universe:

- ``{"state": "fresh", "data_of": D}``: its events are today's;
- ``{"state": "carried", "data_of": P, "broken_since": S, "error": {...}}``: broken since
  day S; its events are those of partition P (the day they were last fetched well);
- ``{"state": "stopped", "data_of": P | None, "broken_since": S, "error": {...}}``: broken,
  and no accepted data at most ``stale_after`` days old: no events, so no alerts.

So ``snapshot_index`` and ``due_alerts`` stay pure functions of what is stored: a due alert
of a carried entity is marked from its snapshot alone ("feed unavailable since Tue; data of
Mon 2027-05-03"). The functions here are pure: the index is reached through a ``lookup``
callable (``SnapshotIndex.get``).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from calendar_pipeline.lake.history import History
from calendar_pipeline.quality.problems import describe_problem
from calendar_pipeline.quality.volume import VolumeReport
from calendar_pipeline.sources.collect import CARRIED, FRESH, STOPPED, status_of
from calendar_pipeline.text import weekday_date

DEFAULT_STALE_AFTER_DAYS = 3
# How far back the newest earlier status of an entity is looked for (to say since when it
# is broken), beyond the carry limit itself.
SINCE_LOOKBACK_DAYS = 31


def rejected_by_volume(volume: VolumeReport, payload: Mapping[str, Any]) -> dict[str, str]:
    """Entities whose answer the volume rule rejects, with the reason in words: each entity
    flagged alone, and every entity of a source flagged as a whole (the source is judged
    bad: all of it keeps its last known good)."""
    rejected = {d.name: d.describe() for d in volume.drops if d.kind == "entity"}
    sources = {d.name: d for d in volume.drops if d.kind == "source"}
    for entity in payload.get("entities", []):
        drop = sources.get(entity["source"])
        if drop is not None and entity["entity_id"] not in rejected:
            rejected[entity["entity_id"]] = (
                f"its source {drop.name} returned {drop.now} events where the baseline had "
                f"{drop.before}"
            )
    return rejected


def apply_last_known_good(
    payload: dict[str, Any],
    rejected: Mapping[str, str],
    history: History,
    stale_after: int,
) -> dict[str, Any]:
    """``payload`` (a snapshot document about to be written) with ``entity_status`` set for
    every entity and the events of its broken entities replaced by their last known good.

    ``rejected``: entity id -> why the volume rule refused its answer. Fetch failures come
    from ``payload["errors"]``. Returns the same dict, updated.
    """
    partition = str(payload["partition"])
    day = dt.date.fromisoformat(partition)
    window_start, window_end = payload["window"]["start"], payload["window"]["end"]
    failed = {e["entity_id"]: e for e in payload.get("errors", [])}
    source_of = {e["entity_id"]: e["source"] for e in payload.get("entities", [])}
    broken: dict[str, dict[str, Any]] = dict(failed)
    for entity_id, why in rejected.items():
        if entity_id not in broken:
            broken[entity_id] = {
                "entity_id": entity_id,
                "source": source_of.get(entity_id, "?"),
                "error_type": "VolumeDrop",
                "message": why,
            }
    status: dict[str, dict[str, Any]] = {}
    carried: list[dict[str, Any]] = []
    for entity_id in source_of:
        if entity_id not in broken:
            status[entity_id] = {"state": FRESH, "data_of": partition}
            continue
        entry, events = _last_known_good(
            entity_id, day, broken[entity_id], history, stale_after, window_start, window_end
        )
        status[entity_id] = entry
        carried.extend(events)
    kept = [e for e in payload["events"] if e["entity_id"] not in broken]
    events = sorted(
        kept + carried, key=lambda e: (str(e["event_date"]), e["entity_id"], e["event_id"])
    )
    payload["events"] = events
    payload["entity_status"] = status
    states = Counter(s["state"] for s in status.values())
    payload["counts"] = {
        **payload.get("counts", {}),
        "events": len(events),
        "events_carried": len(carried),
        "entities_fresh": states[FRESH],
        "entities_carried": states[CARRIED],
        "entities_stopped": states[STOPPED],
    }
    return payload


def _last_known_good(
    entity_id: str,
    day: dt.date,
    error: Mapping[str, Any],
    history: History,
    stale_after: int,
    window_start: str,
    window_end: str,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    partition = day.isoformat()
    document = history.newest_with(entity_id, partition, max(stale_after, SINCE_LOOKBACK_DAYS))
    entry: dict[str, Any] = {
        "state": STOPPED,
        "data_of": None,
        "broken_since": partition,
        "error": dict(error),
    }
    if document is None:
        return entry, []
    before = status_of(document, entity_id)  # not None: newest_with found it there
    assert before is not None
    if before["state"] != FRESH:
        entry["broken_since"] = before.get("broken_since") or str(document["partition"])
    data_of = before.get("data_of")
    entry["data_of"] = data_of
    if data_of is None or before["state"] == STOPPED:
        return entry, []
    if (day - dt.date.fromisoformat(data_of)).days > stale_after:
        return entry, []
    events = [
        e
        for e in document.get("events", [])
        if e["entity_id"] == entity_id and window_start <= str(e["event_date"]) <= window_end
    ]
    entry["state"] = CARRIED
    return entry, events


def broken_entities(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The broken entities of a stored snapshot, each with its name, source, channel and
    status, ordered by entity id (what the Slack notice and the run metadata list)."""
    entities = {e["entity_id"]: e for e in document.get("entities", [])}
    rows = []
    for entity_id, entry in sorted(document.get("entity_status", {}).items()):
        if entry.get("state", FRESH) == FRESH:
            continue
        entity = entities.get(entity_id, {})
        rows.append(
            {
                "entity_id": entity_id,
                "name": entity.get("name", entity_id),
                "source": entity.get("source", "?"),
                "channel": entity.get("channel"),
                **entry,
            }
        )
    return rows


def sources_down(document: Mapping[str, Any], max_share: float) -> list[tuple[str, int, int]]:
    """``(source, broken, entities)`` for each source whose share of broken entities is
    over ``max_share`` (CALENDAR_MAX_FAILED_SHARE): the source as a whole is down."""
    return _over_share(document, (row["entity_id"] for row in broken_entities(document)), max_share)


def _over_share(
    document: Mapping[str, Any], entity_ids: Iterable[str], max_share: float
) -> list[tuple[str, int, int]]:
    source_of = {e["entity_id"]: e["source"] for e in document.get("entities", [])}
    totals = Counter(source_of.values())
    hits = Counter(source_of.get(entity_id, "?") for entity_id in entity_ids)
    return [
        (source, hits[source], totals[source])
        for source in sorted(hits)
        if totals[source] and hits[source] / totals[source] > max_share
    ]


def missing_over_share(document: Mapping[str, Any], max_share: float) -> list[tuple[str, int, int]]:
    """``(source, missing, entities)`` for each source whose share of entities the upstream
    knows nothing about is over ``max_share`` (CALENDAR_MAX_MISSING_SHARE)."""
    return _over_share(document, document.get("entities_missing", []), max_share)


def data_note(entry: Mapping[str, Any]) -> str | None:
    """What an alert line of a carried entity says about its data, or None when fresh:
    ``feed unavailable since Tue 2027-05-04; data of Mon 2027-05-03``."""
    if entry.get("state", FRESH) != CARRIED or not entry.get("data_of"):
        return None
    what = (
        "feed rejected (far fewer events)"
        if entry.get("error", {}).get("error_type") == "VolumeDrop"
        else "feed unavailable"
    )
    since, data_of = weekday_date(entry["broken_since"]), weekday_date(entry["data_of"])
    return f"{what} since {since}; data of {data_of}"


def describe_broken(row: Mapping[str, Any], stale_after: int) -> str:
    """One line for one broken entity (a row of :func:`broken_entities`): who, what failed
    in plain words, since when, what its alerts use now, and what to do."""
    problem = describe_problem(row.get("error", {}))
    since = weekday_date(row["broken_since"])
    if row["state"] == CARRIED:
        now = f"its alerts use its data of {weekday_date(row['data_of'])}"
    elif row.get("data_of"):
        newest = weekday_date(row["data_of"])
        now = (
            f"its alerts are stopped: its newest good data ({newest}) is more than "
            f"{stale_after} days old (CALENDAR_STALE_AFTER_DAYS)"
        )
    else:
        now = "no alerts: there is no earlier good data to use"
    return (
        f"{row['entity_id']} ({row['name']}, {row['source']}): {problem.what}, since {since}; "
        f"{now}. {problem.advice[:1].upper()}{problem.advice[1:]}."
    )


def problem_rows(document: Mapping[str, Any], stale_after: int) -> list[dict[str, Any]]:
    """The broken entities of a stored snapshot with the line that tells them
    (:func:`describe_broken`) and the note their alerts carry (:func:`data_note`)."""
    return [
        {**row, "line": describe_broken(row, stale_after), "note": data_note(row)}
        for row in broken_entities(document)
    ]
