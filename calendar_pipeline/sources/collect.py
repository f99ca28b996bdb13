"""Run every entity of a universe through its source adapter.

One entity that raises never fails the run: its exception becomes an
:class:`EntityError` (a dead-letter entry) and the others go on. The error budget is
judged later, by the asset checks.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from calendar_pipeline.sources.model import Entity, EntityError, Event, Source, Window
from calendar_pipeline.text import shorten

log = logging.getLogger(__name__)
MAX_ERROR_MESSAGE = 500


@dataclass
class CollectResult:
    events: list[Event] | list[dict] = field(default_factory=list)  # dicts once serialized
    errors: list[EntityError] = field(default_factory=list)
    entities_ok: int = 0
    entities_without_events: list[str] = field(default_factory=list)
    # without events AND without any data over the source's span: the error budget's count
    entities_missing: list[str] = field(default_factory=list)
    source_versions: dict[str, str] = field(default_factory=dict)

    @property
    def entities_failed(self) -> int:
        return len(self.errors)


def collect_events(
    entities: Sequence[Entity],
    window: Window,
    sources: Mapping[str, Source],
    on_progress: Callable[[int, int], None] | None = None,
) -> CollectResult:
    """Fetch ``window`` for every entity; events are sorted and de-duplicated.

    Entities are grouped by source; a source with ``fetch_many`` gets its whole group at
    once (HTTP adapters fetch concurrently), the others are called entity by entity.
    """
    result = CollectResult()
    seen: set[tuple[str, str, object]] = set()
    done = 0
    for outcome_entity, outcome in _fetch_all(entities, window, sources, result):
        if isinstance(outcome, Exception):
            result.errors.append(entity_error(outcome_entity, outcome))
            log.warning("entity %s failed: %s", outcome_entity.entity_id, result.errors[-1].message)
        else:
            kept = 0
            for event in outcome:
                identity = (event.entity_id, event.event_id, event.event_date)
                if event.entity_id != outcome_entity.entity_id or event.event_date not in window:
                    continue
                if identity not in seen:
                    seen.add(identity)
                    result.events.append(event)
                    kept += 1
            result.entities_ok += 1
            if kept == 0:
                result.entities_without_events.append(outcome_entity.entity_id)
        done += 1
        if on_progress is not None:
            on_progress(done, len(entities))
    result.events.sort(key=lambda e: (e.event_date, e.entity_id, e.event_id))
    return result


def _fetch_all(
    entities: Sequence[Entity],
    window: Window,
    sources: Mapping[str, Source],
    result: CollectResult,
) -> Iterator[tuple[Entity, list[Event] | Exception]]:
    groups: dict[str, list[Entity]] = {}
    for entity in entities:
        groups.setdefault(entity.source, []).append(entity)
    for name, members in groups.items():
        source = sources.get(name)
        if source is None:
            for entity in members:
                yield entity, LookupError(f"no adapter for source {name!r}")
            continue
        try:
            result.source_versions[name] = source.version()
        except Exception as exc:  # a broken version() must not hide the data
            result.source_versions[name] = f"unknown ({type(exc).__name__})"
        fetch_many = getattr(source, "fetch_many", None)
        if fetch_many is not None:
            answered: set[str] = set()
            try:
                for entity, outcome in fetch_many(members, window):
                    answered.add(entity.entity_id)
                    yield entity, outcome
            except Exception as exc:  # the batch itself broke: every unanswered entity fails
                for entity in members:
                    if entity.entity_id not in answered:
                        answered.add(entity.entity_id)
                        yield entity, exc
            for entity in members:  # an adapter that forgot one never loses it silently
                if entity.entity_id not in answered:
                    yield entity, RuntimeError(f"source {name!r} returned no answer")
            continue
        for entity in members:
            try:
                yield entity, source.fetch(entity, window)
            except Exception as exc:  # one entity never fails the run
                yield entity, exc


def entity_error(entity: Entity, exc: BaseException) -> EntityError:
    if isinstance(exc, ValidationError):
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    else:
        message = str(exc) or type(exc).__name__
    if len(message) > MAX_ERROR_MESSAGE:  # the whole text stays in the run log
        log.warning("entity %s: full error: %s", entity.entity_id, message)
        message = shorten(message, MAX_ERROR_MESSAGE)
    return EntityError(
        entity_id=entity.entity_id,
        source=entity.source,
        error_type=type(exc).__name__,
        message=message,
    )


SNAPSHOT_SCHEMA_VERSION = 1

# An entity's state in a snapshot's `entity_status` (quality/carry.py writes it).
FRESH, CARRIED, STOPPED = "fresh", "carried", "stopped"


def status_of(document: Mapping[str, Any], entity_id: str) -> dict[str, Any] | None:
    """An entity's `entity_status` entry in a stored snapshot document; None when the
    entity is not in that snapshot's universe. Snapshots written before statuses existed
    were accepted whole: an entity is fresh there unless its fetch failed."""
    recorded = document.get("entity_status")
    if recorded is not None:
        return recorded.get(entity_id)
    if entity_id not in {e["entity_id"] for e in document.get("entities", [])}:
        return None
    partition = str(document["partition"])
    if entity_id in {e["entity_id"] for e in document.get("errors", [])}:
        return {"state": STOPPED, "data_of": None, "broken_since": partition}
    return {"state": FRESH, "data_of": partition}


def snapshot_payload(
    partition: str,
    window: Window,
    result: CollectResult,
    universe_path: str,
    universe_sha256: str,
    entities: Sequence[Entity],
    generated_at: str,
) -> dict:
    """The JSON document written as ``raw_snapshot``: window, events, errors, counts."""
    return {
        "schema_version": SNAPSHOT_SCHEMA_VERSION,
        "partition": partition,
        "generated_at": generated_at,
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
        "universe": {"path": universe_path, "sha256": universe_sha256, "entities": len(entities)},
        "source_versions": dict(sorted(result.source_versions.items())),
        "counts": {
            "events": len(result.events),
            "entities": len(entities),
            "entities_ok": result.entities_ok,
            "entities_failed": result.entities_failed,
            "entities_without_events": len(result.entities_without_events),
            "entities_missing": len(result.entities_missing),
        },
        "events": [
            event if isinstance(event, dict) else event.model_dump(mode="json")
            for event in result.events
        ],
        "errors": [error.model_dump(mode="json") for error in result.errors],
        "entities_without_events": result.entities_without_events,
        "entities_missing": result.entities_missing,
        # names and channels travel with the snapshot, so due_alerts is a pure function of it
        "entities": [entity.model_dump(mode="json") for entity in entities],
    }


def split_by_window(
    union: CollectResult,
    entities: Sequence[Entity],
    windows: Sequence[Window],
    sources: Mapping[str, Source],
) -> list[CollectResult]:
    """One fetch over the union of ``windows``, cut into one result per window.

    A single day is a union of one window, so a day and a backfill range go through the
    same code and give the same snapshots. Every entity is fetched once for the whole
    range; events are serialized once and shared between the slices; errors and source
    versions apply to every window.
    """
    ordered = sorted(union.events, key=lambda e: (e.event_date, e.entity_id, e.event_id))
    dates = [event.event_date for event in ordered]
    dumped = [event.model_dump(mode="json") for event in ordered]
    failed = {error.entity_id for error in union.errors}
    expected = [e for e in entities if e.entity_id not in failed]
    results = []
    for window in windows:
        lo = bisect.bisect_left(dates, window.start)
        hi = bisect.bisect_right(dates, window.end)
        with_events = {ordered[i].entity_id for i in range(lo, hi)}
        quiet = [e for e in expected if e.entity_id not in with_events]
        results.append(
            CollectResult(
                events=dumped[lo:hi],
                errors=list(union.errors),
                entities_ok=union.entities_ok,
                entities_without_events=[e.entity_id for e in quiet],
                entities_missing=[
                    e.entity_id for e in quiet if not _has_data(sources.get(e.source), e, window)
                ],
                source_versions=dict(union.source_versions),
            )
        )
    return results


def _has_data(source: Source | None, entity: Entity, window: Window) -> bool:
    has_data = getattr(source, "has_data", None)
    if has_data is None:
        return False  # no way to tell a quiet calendar from a gap: count it as missing
    try:
        return bool(has_data(entity, window))
    except Exception:
        return False


class _SnapshotContent(BaseModel):
    """The parts of a snapshot that due_alerts needs, parsed and validated in one pass
    (pydantic parses the JSON text in Rust: several times faster than json.loads plus
    per-event validation)."""

    schema_version: int
    partition: str
    events: list[Event]
    entities: list[Entity] = []


def parse_snapshot_text(text: str) -> tuple[list[Event], dict[str, Entity]]:
    """(events, entities by id) of a snapshot's JSON text; ValueError naming the problem."""
    try:
        content = _SnapshotContent.model_validate_json(text)
    except ValidationError as exc:
        raise ValueError(
            f"snapshot is not valid: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}"
        ) from None
    if content.schema_version != SNAPSHOT_SCHEMA_VERSION:
        raise ValueError(
            f"snapshot schema_version {content.schema_version!r} is not {SNAPSHOT_SCHEMA_VERSION}"
        )
    return content.events, {entity.entity_id: entity for entity in content.entities}
