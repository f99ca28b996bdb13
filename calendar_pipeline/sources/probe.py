"""Probing the upstreams cheaply: is each source reachable, and did its data change?

A source may implement ``probe(entities) -> str``: a fingerprint that changes when its
data may have changed (an ETag, a content hash, a package version). Sources without
one are fingerprinted by their ``version()``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from calendar_pipeline.sources.model import Entity, Source


@dataclass(frozen=True)
class ProbeReport:
    fingerprints: dict[str, str]
    unreachable: dict[str, str]
    universe_sha256: str

    @property
    def reachable(self) -> bool:
        return not self.unreachable

    @property
    def fingerprint(self) -> str:
        """One hash over the universe and every source's fingerprint."""
        blob = json.dumps([self.universe_sha256, sorted(self.fingerprints.items())])
        return hashlib.sha256(blob.encode()).hexdigest()


def probe_sources(
    entities: Sequence[Entity], sources: Mapping[str, Source], universe_sha256: str
) -> ProbeReport:
    by_source: dict[str, list[Entity]] = {}
    for entity in entities:
        by_source.setdefault(entity.source, []).append(entity)
    fingerprints: dict[str, str] = {}
    unreachable: dict[str, str] = {}
    for name, members in sorted(by_source.items()):
        source = sources.get(name)
        if source is None:
            unreachable[name] = "no adapter"
            continue
        try:
            probe = getattr(source, "probe", None)
            fingerprints[name] = probe(members) if probe else source.version()
        except Exception as exc:  # an unreachable upstream is a reason to skip, not a crash
            unreachable[name] = f"{type(exc).__name__}: {exc}"[:300]
    return ProbeReport(fingerprints, unreachable, universe_sha256)
