"""The universe: the entities whose calendars we watch, one CSV row each.

Columns: `entity_id,name,source,key,channel`, and optionally `thresholds`. `source`
picks the adapter, `key` is that adapter's id for the entity, `channel` optionally routes
its alerts to a Slack channel, `thresholds` (`7,1`) replaces CALENDAR_THRESHOLDS for it.
Two universes are bundled (see `build.py`, which regenerates them):

- ``countries_and_markets.csv``: every country and financial market the ``holidays``
  package supports (the default);
- ``with_subdivisions.csv``: the same plus every country subdivision.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from calendar_pipeline.sources.model import Entity

REQUIRED_COLUMNS = ("entity_id", "name", "source", "key", "channel")
OPTIONAL_COLUMNS = ("thresholds",)


class UniverseError(ValueError):
    """The universe file cannot be used; the message names the file and the row."""


@dataclass(frozen=True)
class Universe:
    path: Path
    sha256: str
    entities: tuple[Entity, ...]


def load_universe(
    path: str | Path, known_sources: Collection[str], max_threshold: int | None = None
) -> Universe:
    """Read and validate a universe CSV.

    Structural problems (missing file or column, duplicate ``entity_id``, an unknown
    source, an invalid row, a `thresholds` value that is not a list of days or, with
    `max_threshold` (the lookahead), goes beyond it) fail here with a message naming the
    file and line: they are configuration errors, not per-entity upstream faults.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UniverseError(f"universe {path}: cannot read ({exc.strerror or exc})") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UniverseError(
            f"universe {path}: not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc

    reader = csv.DictReader(text.splitlines())
    columns = [name.strip() for name in reader.fieldnames or []]
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise UniverseError(
            f"universe {path}: missing column(s) {', '.join(missing)}; "
            f"expected header {','.join(REQUIRED_COLUMNS)} (found {','.join(columns) or 'none'})"
        )

    entities: list[Entity] = []
    first_line: dict[str, int] = {}
    for line_number, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if not any(row.values()):
            continue  # blank line
        try:
            present = [name for name in OPTIONAL_COLUMNS if name in row]
            entity = Entity(**{name: row.get(name, "") for name in (*REQUIRED_COLUMNS, *present)})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise UniverseError(f"universe {path} line {line_number}: {problems}") from None
        if entity.source not in known_sources:
            raise UniverseError(
                f"universe {path} line {line_number}: unknown source {entity.source!r} "
                f"for entity {entity.entity_id!r} (known: {', '.join(sorted(known_sources))})"
            )
        if (
            entity.thresholds
            and max_threshold is not None
            and entity.thresholds[-1] > max_threshold
        ):
            raise UniverseError(
                f"universe {path} line {line_number}: thresholds {entity.thresholds[-1]} days "
                f"is beyond the lookahead of {max_threshold} days (CALENDAR_LOOKAHEAD_DAYS)"
            )
        if entity.entity_id in first_line:
            raise UniverseError(
                f"universe {path} line {line_number}: duplicate entity_id {entity.entity_id!r} "
                f"(first on line {first_line[entity.entity_id]})"
            )
        first_line[entity.entity_id] = line_number
        entities.append(entity)

    if not entities:
        raise UniverseError(f"universe {path}: no entities")
    return Universe(path=path, sha256=hashlib.sha256(raw).hexdigest(), entities=tuple(entities))
