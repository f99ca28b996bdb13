"""The data contracts every source adapter speaks: entities in, events or errors out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENTITY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"


class Entity(BaseModel):
    """One row of the universe CSV: something whose calendar we watch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity_id: str = Field(pattern=ENTITY_ID_PATTERN, max_length=200)
    name: str = Field(min_length=1, max_length=500)
    source: str = Field(min_length=1)
    key: str = Field(min_length=1)
    channel: str | None = None
    thresholds: tuple[int, ...] | None = None
    """Its own alert thresholds (the universe's optional `thresholds` column, `7,1`),
    sorted ascending; None: CALENDAR_THRESHOLDS."""

    @field_validator("thresholds", mode="before")
    @classmethod
    def _parse_thresholds(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        parts = value.split(",") if isinstance(value, str) else list(value)  # type: ignore[arg-type]
        numbers = []
        for part in parts:
            text = str(part).strip()
            if not text.isdigit() or int(text) <= 0:
                raise ValueError(
                    f"{text!r} is not a positive whole number of days (expected a list like 7,1)"
                )
            numbers.append(int(text))
        if len(set(numbers)) != len(numbers):
            raise ValueError("a threshold is listed twice")
        return tuple(sorted(numbers))

    @field_validator("channel", mode="before")
    @classmethod
    def _blank_channel_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value


class Event(BaseModel):
    """One dated event of one entity. ``event_id`` is stable across runs and excludes the
    date's day, so a moved event keeps its id and gets a new dedup key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity_id: str
    event_id: str = Field(min_length=1, max_length=500)
    event_date: dt.date
    title: str = Field(min_length=1)
    source: str
    details: dict[str, str | int | float | bool | None] = Field(default_factory=dict)


class EntityError(BaseModel):
    """A dead-letter entry: an entity whose fetch failed, kept in the snapshot."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity_id: str
    source: str
    error_type: str
    message: str


@dataclass(frozen=True)
class Window:
    """Inclusive date window ``start``..``end``."""

    start: dt.date
    end: dt.date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"window end {self.end} is before its start {self.start}")

    @classmethod
    def ahead(cls, start: dt.date, lookahead_days: int) -> Window:
        return cls(start, start + dt.timedelta(days=lookahead_days))

    def __contains__(self, day: object) -> bool:
        return isinstance(day, dt.date) and self.start <= day <= self.end

    @property
    def years(self) -> range:
        return range(self.start.year, self.end.year + 1)


class Source(Protocol):
    """What an adapter implements. ``fetch`` raises on failure; the caller turns the
    exception into an :class:`EntityError` so one entity never fails the run."""

    name: str

    def version(self) -> str:
        """A string that changes when the adapter's data may have changed."""
        ...

    def fetch(self, entity: Entity, window: Window) -> list[Event]:
        """Every event of ``entity`` dated inside ``window``."""
        ...


class CoverageSource(Source, Protocol):
    """An adapter that can tell "no data for this entity at all" from "no event in this
    window". A quiet calendar is not a data gap: many countries have no public holiday
    in a given 60-day window. Without this method, an entity with no event in the
    window counts as missing."""

    def has_data(self, entity: Entity, window: Window) -> bool:
        """Whether the upstream knows any event of ``entity`` over its natural span
        around ``window`` (e.g. the calendar years it touches)."""
        ...


class BatchSource(Source, Protocol):
    """An adapter that fetches many entities at once (concurrently, or with one range
    call). ``collect_events`` prefers ``fetch_many`` when a source has it."""

    def fetch_many(
        self, entities: Sequence[Entity], window: Window
    ) -> Iterator[tuple[Entity, list[Event] | Exception]]:
        """Yield each entity once, with its events or the exception that failed it."""
        ...
