"""Probing the upstreams: did any source's data change since we last looked?

``upstream_availability_sensor`` calls :func:`probe_upstreams` on every tick. Each source
lists its *probe targets* (``probe_targets(entities, window)``): every iCalendar feed, every
Nager.Date country-year the window needs, one Finnhub range call. A source without that
method (the embedded ``holidays`` package) is one target fingerprinted by its
``version()``.

Politeness and cost:

- Every HTTP target is one conditional GET through the sources' shared client: the
  per-host rate limit and concurrency apply, and an unchanged document with an ``ETag`` or
  ``Last-Modified`` costs a ``304 Not Modified``. The answer is stored in the HTTP cache,
  so the run the sensor starts gets a 304 for it too.
- A tick stops at its time budget (``CALENDAR_PROBE_BUDGET_SECONDS``, 45 s: Dagster gives a
  sensor tick 60 s). Targets left over are probed first on the next tick (the least
  recently probed go first), so every target is visited every few ticks whatever the
  universe's size. One host at the default 2 requests/s serves about 90 probes per tick.

What counts as a change: a target's *content* fingerprint (the ICS body without its
``DTSTAMP`` lines, which many servers set to the export time; a JSON body's sha256)
differs from the one stored in the sensor's cursor. A changed ``ETag`` over the same
content is not a change; a failing target keeps its last fingerprint (a failure is not a
change, and recovering with the same data is not one either). A target seen for the
first time (a new year entering the window, today's Finnhub range) becomes the baseline
for the next ticks without starting a run, unless the universe itself changed.

The cursor holds only hashes (a private feed URL is a secret): 16 hex digits of the
URL's sha256 as the key, 16 of the content's as the value.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from calendar_pipeline.sources.http.client import HttpClient
from calendar_pipeline.sources.http.errors import describe_exception
from calendar_pipeline.sources.http.response import HttpResponse
from calendar_pipeline.sources.http.session import HttpSession
from calendar_pipeline.sources.model import Entity, Source, Window

PROBE_ATTEMPTS = 2  # per target and tick: a second chance for a dropped connection
CURSOR_VERSION = 2


def sha16(data: bytes | str) -> str:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class ProbeTarget:
    """One upstream document to look at (or, for a non-HTTP source, its version)."""

    source: str
    label: str  # what reports name: entity ids, "FR 2026"; never the URL (it may hold a secret)
    url: str | None = None
    check: Callable[[HttpResponse], object] | None = None  # raises on an unusable answer
    stable: Callable[[bytes], str] = sha16  # the content's fingerprint
    headers: Mapping[str, str] = field(default_factory=dict)
    version: str | None = None  # non-HTTP targets: the fingerprint's source

    @property
    def key(self) -> str:
        return sha16(self.url) if self.url else f"{self.source}:version"


@dataclass(frozen=True)
class ProbeOutcome:
    target: ProbeTarget
    fingerprint: str | None  # None when the probe failed
    error: str | None = None


@dataclass
class ProbeState:
    """The sensor's cursor: per target key, its last content fingerprint (least recently
    probed first), and the universe the last tick saw."""

    fingerprints: dict[str, str] = field(default_factory=dict)
    universe_sha256: str | None = None

    @classmethod
    def from_cursor(cls, cursor: str | None) -> ProbeState:
        try:
            data = json.loads(cursor) if cursor else {}
        except ValueError:
            data = {}
        if data.get("v") != CURSOR_VERSION:
            return cls()  # an older cursor: start again (the universe counts as changed)
        return cls(dict(data.get("fingerprints", {})), data.get("universe_sha256"))

    def to_cursor(self, **extra: Any) -> str:
        return json.dumps(
            {
                "v": CURSOR_VERSION,
                "universe_sha256": self.universe_sha256,
                "fingerprints": self.fingerprints,
                **extra,
            }
        )


@dataclass
class ProbeReport:
    """What one tick saw, per target, and whether a run should start."""

    outcomes: list[ProbeOutcome]
    unprobed: list[ProbeTarget]
    changed: list[ProbeTarget]
    new: list[ProbeTarget]
    universe_changed: bool
    state: ProbeState
    seconds: float
    budget: float

    @property
    def failing(self) -> list[ProbeOutcome]:
        return [o for o in self.outcomes if o.fingerprint is None]

    @property
    def should_run(self) -> bool:
        return self.universe_changed or bool(self.changed)

    @property
    def unreachable(self) -> bool:
        """Every target probed this tick failed."""
        return bool(self.outcomes) and len(self.failing) == len(self.outcomes)

    @property
    def unreachable_sources(self) -> list[str]:
        """Sources every probe of which failed this tick."""
        return sorted(
            source
            for source, counts in self.per_source().items()
            if counts["failing"] and counts["failing"] == counts.total() - counts["not probed yet"]
        )

    @property
    def fingerprint(self) -> str:
        """One hash over the universe and every target's last fingerprint."""
        blob = json.dumps([self.state.universe_sha256, sorted(self.state.fingerprints.items())])
        return hashlib.sha256(blob.encode()).hexdigest()

    def per_source(self) -> dict[str, Counter[str]]:
        changed = {t.key for t in self.changed}
        new = {t.key for t in self.new}
        counts: dict[str, Counter[str]] = {}
        for outcome in self.outcomes:
            key = outcome.target.key
            state = (
                "failing"
                if outcome.fingerprint is None
                else "changed"
                if key in changed
                else "new"
                if key in new
                else "unchanged"
            )
            counts.setdefault(outcome.target.source, Counter())[state] += 1
        for target in self.unprobed:
            counts.setdefault(target.source, Counter())["not probed yet"] += 1
        return counts

    def summary(self, limit: int = 5) -> str:
        """One line per source: ``ics: 300 probed: 1 changed (team-a), 299 unchanged``."""
        lines = []
        for source, counts in sorted(self.per_source().items()):
            probed = sum(n for state, n in counts.items() if state != "not probed yet")
            parts = [f"{n} {state}" for state, n in sorted(counts.items())]
            named = [t.label for t in self.changed if t.source == source][:limit]
            failing = [
                f"{o.target.label}: {o.error}" for o in self.failing if o.target.source == source
            ][:limit]
            line = f"{source}: {probed} probed: " + ", ".join(parts)
            if named:
                line += f"; changed: {', '.join(named)}"
            if failing:
                line += f"; failing: {'; '.join(failing)}"
            lines.append(line)
        if self.unprobed:
            lines.append(
                f"{len(self.unprobed)} targets left for the next tick (time budget "
                f"{self.budget:g} s reached after {self.seconds:.1f} s)"
            )
        return "\n".join(lines)

    def changed_labels(self, limit: int = 10) -> str:
        labels = [f"{t.source}:{t.label}" for t in self.changed]
        more = f" and {len(labels) - limit} more" if len(labels) > limit else ""
        return ", ".join(labels[:limit]) + more


def probe_targets(
    entities: Sequence[Entity], sources: Mapping[str, Source], window: Window
) -> tuple[list[ProbeTarget], list[ProbeOutcome]]:
    """Every target of every source the universe uses, and the sources that cannot be
    probed at all (no adapter, a version() that raises, targets that cannot be listed)."""
    by_source: dict[str, list[Entity]] = {}
    for entity in entities:
        by_source.setdefault(entity.source, []).append(entity)
    targets: list[ProbeTarget] = []
    broken: list[ProbeOutcome] = []
    for name, members in sorted(by_source.items()):
        source = sources.get(name)
        if source is None:
            broken.append(ProbeOutcome(ProbeTarget(name, name), None, "no adapter"))
            continue
        lister = getattr(source, "probe_targets", None)
        try:
            if lister is not None:
                targets.extend(lister(members, window))
            else:
                targets.append(ProbeTarget(name, name, version=source.version()))
        except Exception as exc:  # e.g. Finnhub without a token: report it, probe the rest
            broken.append(ProbeOutcome(ProbeTarget(name, name), None, describe_exception(exc)))
    unique = {target.key: target for target in targets}  # two entities, one feed: one probe
    return list(unique.values()), broken


def probe_upstreams(
    targets: Sequence[ProbeTarget],
    state: ProbeState,
    universe_sha256: str,
    client: HttpClient | None,
    budget_seconds: float,
    broken: Sequence[ProbeOutcome] = (),
) -> ProbeReport:
    """Probe ``targets`` (least recently probed first) until done or out of time; compare
    each fingerprint with ``state``; return the report and the state to store."""
    started = time.monotonic()
    order = _least_recent_first(targets, state)
    outcomes: list[ProbeOutcome] = [
        ProbeOutcome(t, sha16(t.version or "")) for t in order if t.url is None
    ]
    http_targets = [t for t in order if t.url is not None]
    if http_targets:
        if client is None:
            raise ValueError("HTTP probe targets need an HttpClient")
        remaining = max(0.1, budget_seconds - (time.monotonic() - started))
        outcomes += client.run(lambda session: _probe_all(session, http_targets, remaining))
    done = {o.target.key for o in outcomes}
    unprobed = [t for t in order if t.key not in done]

    fingerprints = {k: v for k, v in state.fingerprints.items() if k in {t.key for t in order}}
    changed, new = [], []
    for outcome in outcomes:
        key = outcome.target.key
        if outcome.fingerprint is None:
            continue
        before = fingerprints.pop(key, None)
        if before is None:
            new.append(outcome.target)
        elif before != outcome.fingerprint:
            changed.append(outcome.target)
        fingerprints[key] = outcome.fingerprint  # to the end: most recently probed
    for outcome in outcomes:  # a failed probe keeps its fingerprint but moves back too
        if outcome.fingerprint is None and outcome.target.key in fingerprints:
            fingerprints[outcome.target.key] = fingerprints.pop(outcome.target.key)
    report = ProbeReport(
        outcomes=[*broken, *outcomes],
        unprobed=unprobed,
        changed=changed,
        new=new,
        universe_changed=state.universe_sha256 != universe_sha256,
        state=ProbeState(fingerprints, universe_sha256),
        seconds=time.monotonic() - started,
        budget=budget_seconds,
    )
    if report.unreachable:  # no run now: keep the universe change for a tick that can run
        report.state.universe_sha256 = state.universe_sha256
    return report


def _least_recent_first(targets: Sequence[ProbeTarget], state: ProbeState) -> list[ProbeTarget]:
    position = {key: n for n, key in enumerate(state.fingerprints)}
    return sorted(targets, key=lambda t: position.get(t.key, -1))  # never probed: -1, first


async def _probe_all(
    session: HttpSession, targets: Sequence[ProbeTarget], budget: float
) -> list[ProbeOutcome]:
    """Every target concurrently (the session spaces requests per host); whatever is not
    done when ``budget`` seconds are up is cancelled and left for the next tick."""
    tasks = [asyncio.ensure_future(_probe_one(session, target)) for target in targets]
    done, pending = await asyncio.wait(tasks, timeout=budget)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return [task.result() for task in tasks if task in done]


async def _probe_one(session: HttpSession, target: ProbeTarget) -> ProbeOutcome:
    assert target.url is not None
    check = target.check or (lambda response: None)
    try:
        _, response = await session.fetch(
            target.url, check, headers=target.headers, max_attempts=PROBE_ATTEMPTS
        )
    except Exception as exc:  # a failing upstream is a finding, not a crash
        # the label names the target; the URL stays out (a private feed's URL is a secret)
        display = session.client.redact(target.url)
        text = describe_exception(exc).replace(f"GET {display}: ", "").replace(display, "<url>")
        return ProbeOutcome(target, None, session.client.redact(text)[:200])
    return ProbeOutcome(target, target.stable(response.body))
