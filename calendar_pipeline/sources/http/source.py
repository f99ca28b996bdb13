"""The base the HTTP adapters share: :class:`HttpSource`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from calendar_pipeline.sources.http.client import HttpClient, Outcome
from calendar_pipeline.sources.model import Entity, Event, Window


class HttpSource:
    """Base of the HTTP adapters: ``fetch`` is ``fetch_many`` of one entity."""

    name = "http"

    def __init__(self, client: HttpClient) -> None:
        self.client = client
        self._answered: dict[str, bool] = {}  # entity_id -> the upstream had data for it

    def has_data(self, entity: Entity, window: Window) -> bool:
        """Whether the last fetch of ``entity`` got real data from the upstream (a quiet
        calendar, not a gap): lets ``collect`` tell "no event in the window" from
        "nothing known". What counts as data is each adapter's call."""
        return self._answered.get(entity.entity_id, False)

    def fetch_many(self, entities: Sequence[Entity], window: Window) -> Iterator[Outcome]:
        raise NotImplementedError

    def fetch(self, entity: Entity, window: Window) -> list[Event]:
        """Every event of ``entity`` in ``window``; raises what failed it."""
        [(_, outcome)] = list(self.fetch_many([entity], window))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
