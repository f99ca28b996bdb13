"""The accepted snapshot documents of the days around a partition, parsed once each.

Three rules look back through the index: the volume rule (its baseline, up to 7 days),
the carry rule (an entity's last known good data, quality/carry.py) and the change model
(up to 14 days, alerts/changes.py). A run reads each index line it needs once, through
:class:`History`, and a range run keeps what it computed for its own days (`keep`) so
that the next day compares with it without reading it back. `forget_before` bounds what a
long range holds.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from typing import Any

Lookup = Callable[[str], Mapping[str, Any] | None]  # SnapshotIndex.get: partition -> line


class History:
    """Snapshot documents by partition, read through ``lookup`` (an index's ``get``) once
    each. A damaged index line counts as no document (`verify` reports it)."""

    def __init__(self, lookup: Lookup) -> None:
        self._lookup = lookup
        self._documents: dict[str, dict[str, Any] | None] = {}
        self._ids: dict[str, set[str]] = {}

    def document(self, partition: str) -> dict[str, Any] | None:
        if partition not in self._documents:
            try:
                entry = self._lookup(partition)
                self._documents[partition] = (
                    json.loads(entry["content_text"]) if entry is not None else None
                )
            except ValueError:
                self._documents[partition] = None
        return self._documents[partition]

    def keep(self, partition: str, document: dict[str, Any]) -> None:
        """Use ``document`` for ``partition`` (a day this run computed) from now on."""
        self._documents[partition] = document
        self._ids.pop(partition, None)

    def forget_before(self, partition: str) -> None:
        """Drop the documents of the days before ``partition`` (a long range's memory)."""
        for old in [p for p in self._documents if p < partition]:
            del self._documents[old]
            self._ids.pop(old, None)

    def before(self, partition: str, days: int) -> list[dict[str, Any]]:
        """The documents of the ``days`` days before ``partition`` that exist, newest
        first."""
        day = dt.date.fromisoformat(partition)
        found = (
            self.document((day - dt.timedelta(days=n)).isoformat()) for n in range(1, days + 1)
        )
        return [document for document in found if document is not None]

    def newest_with(self, entity_id: str, partition: str, days: int) -> dict[str, Any] | None:
        """The newest document at or before ``partition`` (the day itself first: an earlier
        run of the same day), ``days`` back at most, whose universe holds ``entity_id``."""
        day = dt.date.fromisoformat(partition)
        for back in range(days + 1):
            key = (day - dt.timedelta(days=back)).isoformat()
            document = self.document(key)
            if document is None:
                continue
            if key not in self._ids:
                self._ids[key] = {e["entity_id"] for e in document.get("entities", [])}
            if entity_id in self._ids[key]:
                return document
        return None
