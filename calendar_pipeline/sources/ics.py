"""iCalendar (RFC 5545) feeds: any ``http(s)://`` (or ``webcal://``) URL is an entity key.

Parsing is :mod:`icalendar`; recurrence expansion is :mod:`recurring_ical_events`
(RRULE, RDATE, EXDATE, RECURRENCE-ID overrides, ``X-WR-TIMEZONE``). What becomes an
event:

- every occurrence that starts inside the window, all-day or timed; ``STATUS:CANCELLED``
  occurrences (and cancelled overrides of one occurrence) are kept with
  ``details["status"] = "cancelled"``: never alerted, reported as cancelled by the change
  model (alerts/changes.py);
- a timed occurrence (a ``TZID``, UTC, or a zone named by ``X-WR-TIMEZONE``) is dated in
  ``default_timezone``, the pipeline's CALENDAR_TIMEZONE, in which alerts count days and
  show start times; floating times are taken as written;
- the event id is the ``UID`` for a one-off event, and ``UID/recurrence-id`` for an
  occurrence of a recurring one, where the recurrence id is the occurrence's *original*
  start (``20250120`` or ``20250120T090000Z``): a moved occurrence keeps its id.

``has_data`` is true for a feed that holds at least one usable event, whatever its date
(an empty calendar is a gap, a calendar with nothing in the window is quiet).

Hostile or broken feeds end as a clear error, never as a hang:

- not iCalendar at all (an HTML page, truncated, unterminated) → error;
- an event whose dates cannot be read is skipped with a warning (the feed's other
  events still count); a feed with no usable event left is an error;
- a recurrence whose expansion would cost more than ``max_rrule_candidates`` steps up to
  the window's end (``FREQ=SECONDLY`` without ``COUNT``, a minutely rule started years
  ago…) is refused before any expansion; more than ``max_occurrences`` occurrences in
  the window, or more than ``max_expand_seconds`` of expansion, stop the feed with an
  error. (The cost estimate is an upper bound for each rule's own steps; a rule whose
  filters can never match makes dateutil scan up to year 9999, a few seconds at most,
  after which the time limit applies.)

Why one module of almost 500 lines: the rules above (dating, ids, cancellations, the
limits that stop a hostile feed) are one contract, and ``IcsSource`` is a thin adapter
over them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import time
import zoneinfo
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import version as package_version

import icalendar
import recurring_ical_events

from calendar_pipeline.sources.http.client import HttpClient, Outcome
from calendar_pipeline.sources.http.response import HttpResponse
from calendar_pipeline.sources.http.session import HttpSession
from calendar_pipeline.sources.http.source import HttpSource
from calendar_pipeline.sources.model import Entity, Event, Window
from calendar_pipeline.sources.probe import ProbeTarget
from calendar_pipeline.text import shorten

log = logging.getLogger(__name__)

MAX_EVENT_ID = 400
MAX_TITLE = 500
# Properties without which an event cannot be placed in time.
DATE_PROPERTIES = ("DTSTART", "DTEND", "DURATION", "RRULE", "RDATE", "EXDATE", "RECURRENCE-ID")
# Length of one step of each frequency, shortest possible (for an upper bound of steps).
FREQ_SECONDS = {
    "SECONDLY": 1,
    "MINUTELY": 60,
    "HOURLY": 3_600,
    "DAILY": 86_400,
    "WEEKLY": 7 * 86_400,
    "MONTHLY": 28 * 86_400,
    "YEARLY": 365 * 86_400,
}
FREQ_ORDER = ("SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY")
DAYS_PER_STEP = {"WEEKLY": 7, "MONTHLY": 31, "YEARLY": 366}


class IcsError(ValueError):
    """A feed that cannot be turned into events; the message says why."""


@dataclass(frozen=True)
class IcsLimits:
    """Bounds that keep a hostile feed from hanging the run or eating memory."""

    max_occurrences: int = 10_000  # occurrences inside the window, per feed
    max_rrule_candidates: int = 500_000  # estimated expansion steps, per recurrence rule
    max_expand_seconds: float = 10.0  # wall-clock time of the expansion, per feed


DEFAULT_LIMITS = IcsLimits()


def feed_url(key: str) -> str:
    """The URL to fetch for an entity key: ``webcal://`` becomes ``https://``."""
    url = key.strip()
    if url.lower().startswith("webcal://"):
        url = "https://" + url[len("webcal://") :]
    if not url.lower().startswith(("http://", "https://")):
        raise IcsError(f"ics key must be an http(s):// or webcal:// URL, not {key[:80]!r}")
    return url


@dataclass(frozen=True)
class IcsFeed:
    """A parsed feed: its events in the window and what it held overall."""

    events: list[Event]
    vevents: int  # usable VEVENT components, whatever their dates
    broken: int  # VEVENT components skipped because their dates could not be read


def read_feed(
    text: str,
    *,
    entity_id: str,
    window: Window,
    source: str = "ics",
    default_timezone: str = "UTC",
    limits: IcsLimits = DEFAULT_LIMITS,
) -> IcsFeed:
    """Every occurrence of the feed ``text`` that starts inside ``window``, as events,
    with the counts of usable and broken events of the feed."""
    calendar = _parse_calendar(text)
    broken = _drop_broken_events(calendar)
    usable = calendar.walk("VEVENT")
    if broken and not usable:
        raise IcsError(f"no usable event: {_broken_summary(broken)}")
    if broken:
        log.warning("%s: skipped %s", entity_id, _broken_summary(broken))

    calendar_tz = _zone(str(calendar.get("X-WR-TIMEZONE", "")).strip())
    fallback_tz = _zone(default_timezone) or dt.UTC
    _refuse_runaway_rules(calendar, window, limits)
    recurring_uids = {
        _uid(c)
        for c in calendar.walk("VEVENT")
        if any(name in c for name in ("RRULE", "RDATE", "RECURRENCE-ID"))
    }
    # A day of margin on each side: a time zone can move a start across the date line.
    span_start = dt.datetime.combine(window.start - dt.timedelta(days=1), dt.time(), dt.UTC)
    span_stop = dt.datetime.combine(window.end + dt.timedelta(days=2), dt.time(), dt.UTC)
    deadline = time.monotonic() + limits.max_expand_seconds
    try:
        query = recurring_ical_events.of(calendar, skip_bad_series=True)
    except Exception as exc:  # the library's own validation of the whole calendar
        raise IcsError(f"cannot expand the calendar: {type(exc).__name__}: {exc}") from None

    events: dict[tuple[str, dt.date], Event] = {}
    seen = 0
    # ``CalendarQuery.between`` builds the whole list first; walking the series lazily
    # lets the occurrence cap and the deadline stop a runaway feed early.
    for series in query.series:
        _check_deadline(deadline, limits)
        try:
            for occurrence in series.between(span_start, span_stop):
                seen += 1
                if seen > limits.max_occurrences:
                    raise IcsError(
                        f"more than {limits.max_occurrences:,} occurrences between "
                        f"{window.start} and {window.end}; refusing the feed"
                    )
                if seen % 256 == 0:
                    _check_deadline(deadline, limits)
                component = occurrence.as_component(False)
                event = _to_event(
                    component, entity_id, source, window, calendar_tz, fallback_tz, recurring_uids
                )
                if event is not None:
                    events.setdefault((event.event_id, event.event_date), event)
        except IcsError:
            raise
        except Exception as exc:  # one broken series: skip it, keep the others
            cause = f"{type(exc).__name__}: {exc}"
            log.warning("%s: skipped a broken recurrence (%s)", entity_id, cause)
    ordered = sorted(events.values(), key=lambda e: (e.event_date, e.event_id))
    return IcsFeed(ordered, vevents=len(usable), broken=len(broken))


def _where(text: str, detail: str) -> str:
    """`` at line N`` when the parser's message quotes a line of ``text`` (icalendar quotes
    the content line it could not parse), else ``""``."""
    quoted = re.search(r"'([^']{4,})'", detail)
    if quoted:
        at = text.find(quoted.group(1))
        if at >= 0:
            return f" at line {text.count(chr(10), 0, at) + 1}"
    return ""


def _parse_calendar(text: str) -> icalendar.Calendar:
    head = text.lstrip("\ufeff \t\r\n")[:200]
    if not head.upper().startswith("BEGIN:VCALENDAR"):
        if head.startswith("<"):
            raise IcsError("not an iCalendar feed: the server sent an HTML/XML page")
        first = shorten(head.splitlines()[0], 60) if head else ""
        raise IcsError(
            f"not an iCalendar feed: line 1 is {first!r}, not BEGIN:VCALENDAR"
            if first
            else "not an iCalendar feed: the body is empty"
        )
    if not re.search(r"^END:VCALENDAR\s*$", text[-4096:], re.IGNORECASE | re.MULTILINE):
        raise IcsError("incomplete iCalendar feed: no END:VCALENDAR (truncated download?)")
    try:
        calendar = icalendar.Calendar.from_ical(text)
    except RecursionError:
        raise IcsError("cannot parse iCalendar: components nested too deeply") from None
    except Exception as exc:
        raise IcsError(
            f"cannot parse iCalendar{_where(text, str(exc))}: {shorten(str(exc), 160)}"
        ) from None
    if not isinstance(calendar, icalendar.Calendar):
        raise IcsError("not an iCalendar feed: no VCALENDAR component")
    return calendar


def _drop_broken_events(calendar: icalendar.Calendar) -> list[tuple[str, str]]:
    """Remove the top-level VEVENTs whose dates cannot be read; returns (uid, problem)."""
    broken: list[tuple[str, str]] = []
    kept = []
    for component in calendar.subcomponents:
        problem = _event_problem(component) if component.name == "VEVENT" else None
        if problem is None:
            kept.append(component)
        else:
            broken.append((_uid(component), problem))
    calendar.subcomponents = kept
    return broken


def _event_problem(event: icalendar.cal.Component) -> str | None:
    for name, message in getattr(event, "errors", ()) or ():
        if name in DATE_PROPERTIES:
            return f"{name}: {message}"
    if "DTSTART" not in event:
        return "no DTSTART"
    try:
        start = event.decoded("DTSTART")
        for name in ("DTEND", "RECURRENCE-ID"):
            if name in event:
                event.decoded(name)
    except Exception as exc:
        return f"unreadable date ({type(exc).__name__}: {' '.join(str(exc).split())[:100]})"
    if not isinstance(start, dt.date):
        return f"DTSTART is a {type(start).__name__}, not a date"
    return None


def _broken_summary(broken: Sequence[tuple[str, str]]) -> str:
    shown = "; ".join(f"UID {uid[:60]!r}: {problem}" for uid, problem in broken[:3])
    more = f" (and {len(broken) - 3} more)" if len(broken) > 3 else ""
    return f"{len(broken)} broken event(s): {shown}{more}"


def _refuse_runaway_rules(calendar: icalendar.Calendar, window: Window, limits: IcsLimits) -> None:
    """Raise IcsError for a rule whose expansion up to the window's end is too costly."""
    horizon = dt.datetime.combine(window.end + dt.timedelta(days=2), dt.time())
    for event in calendar.walk("VEVENT"):
        rules = event.get("RRULE")
        if rules is None:
            continue
        start = _naive(event.decoded("DTSTART"))
        for rule in rules if isinstance(rules, list) else [rules]:
            cost = rrule_cost(rule, start, horizon)
            if cost > limits.max_rrule_candidates:
                text = rule.to_ical().decode(errors="replace")[:120]
                raise IcsError(
                    f"event UID {_uid(event)[:60]!r}: RRULE {text} would take about "
                    f"{cost:,} expansion steps up to {window.end} (limit "
                    f"{limits.max_rrule_candidates:,}); refusing a runaway recurrence"
                )


def rrule_cost(rule: icalendar.vRecur, start: dt.datetime, horizon: dt.datetime) -> int:
    """An upper bound of the steps dateutil takes to expand ``rule`` from ``start`` up to
    ``horizon``: steps of the frequency, times the values of finer BY-rules."""
    freq = str((rule.get("FREQ") or ["DAILY"])[0]).upper()
    if freq not in FREQ_SECONDS:
        return 1  # the library rejects an unknown frequency itself
    interval = max(1, int((rule.get("INTERVAL") or [1])[0]))
    end = horizon
    until = rule.get("UNTIL")
    if until:
        end = min(end, _naive(until[0]))
    span = (end - start).total_seconds()
    if span <= 0:
        return 1
    steps = int(span // (FREQ_SECONDS[freq] * interval)) + 1
    rank = FREQ_ORDER.index(freq)
    factor = 1
    for by, finer_than in (("BYSECOND", 0), ("BYMINUTE", 1), ("BYHOUR", 2)):
        if rank > finer_than and rule.get(by):
            factor *= len(rule[by])
    day_filters = ("BYDAY", "BYMONTHDAY", "BYYEARDAY", "BYWEEKNO", "BYMONTH")
    if freq in DAYS_PER_STEP and any(rule.get(by) for by in day_filters):
        factor *= DAYS_PER_STEP[freq]
    count = rule.get("COUNT")
    if count and factor == 1 and not any(rule.get(by) for by in day_filters):
        steps = min(steps, int(count[0]))
    return steps * factor


def _naive(value: dt.date | dt.datetime) -> dt.datetime:
    """A date or datetime as a naive UTC-ish datetime, for rough comparisons."""
    if not isinstance(value, dt.datetime):
        return dt.datetime.combine(value, dt.time())
    if value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _check_deadline(deadline: float, limits: IcsLimits) -> None:
    if time.monotonic() > deadline:
        raise IcsError(
            f"expanding the recurrences took more than {limits.max_expand_seconds:g} s; "
            "refusing the feed"
        )


def _zone(name: str) -> dt.tzinfo | None:
    if not name:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def _uid(component: icalendar.cal.Component) -> str:
    uid = " ".join(str(component.get("UID", "")).split())
    if uid:
        return uid
    # No UID (allowed by old exporters): a stable stand-in from the title and start.
    start = component.get("DTSTART")
    blob = f"{component.get('SUMMARY', '')}|{start.to_ical() if start is not None else ''}"
    return "no-uid-" + hashlib.sha256(blob.encode("utf-8", "replace")).hexdigest()[:16]


def _recurrence_id(value: dt.date | dt.datetime) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        return value.strftime("%Y%m%dT%H%M%S")
    return value.strftime("%Y%m%d")


def _event_id(uid: str, recurrence: str | None) -> str:
    event_id = uid if recurrence is None else f"{uid}/{recurrence}"
    if len(event_id) <= MAX_EVENT_ID:
        return event_id
    digest = hashlib.sha256(event_id.encode()).hexdigest()[:16]
    return f"{event_id[: MAX_EVENT_ID - 17]}~{digest}"


def _local_date(
    start: dt.date | dt.datetime, calendar_tz: dt.tzinfo | None, fallback_tz: dt.tzinfo
) -> dt.date:
    if not isinstance(start, dt.datetime):
        return start
    if start.tzinfo is None:
        return start.date()  # floating time: as written
    # An instant: dated in CALENDAR_TIMEZONE, the zone the alerts count days and show
    # times in, so a 23:30 New York meeting is on the next day for a UTC pipeline.
    return start.astimezone(fallback_tz).date()


def _to_event(
    component: icalendar.cal.Component,
    entity_id: str,
    source: str,
    window: Window,
    calendar_tz: dt.tzinfo | None,
    fallback_tz: dt.tzinfo,
    recurring_uids: set[str],
) -> Event | None:
    cancelled = str(component.get("STATUS", "")).strip().upper() == "CANCELLED"
    start = component.decoded("DTSTART")
    day = _local_date(start, calendar_tz, fallback_tz)
    if day not in window:
        return None
    uid = _uid(component)
    recurrence = None
    if uid in recurring_uids:
        original = component.get("RECURRENCE-ID")
        recurrence = _recurrence_id(original.dt if original is not None else start)
    title = " ".join(str(component.get("SUMMARY", "")).split())[:MAX_TITLE] or "(no title)"
    location = " ".join(str(component.get("LOCATION", "")).split())[:200] or None
    return Event(
        entity_id=entity_id,
        event_id=_event_id(uid, recurrence),
        event_date=day,
        title=title,
        source=source,
        details={
            "uid": uid[:200],
            "start": start.isoformat(),
            "all_day": not isinstance(start, dt.datetime),
            "location": location,
            # kept, not dropped: the change model reports it (alerts/changes.py), and
            # due_alerts never alerts on it
            **({"status": "cancelled"} if cancelled else {}),
        },
    )


def content_fingerprint(body: bytes) -> str:
    """sha256 of a feed without its ``DTSTAMP`` lines (many servers stamp every export
    with the current time, which would make every probe look like a change)."""
    stable = re.sub(rb"(?im)^DTSTAMP[:;].*\r?\n", b"", body)
    return hashlib.sha256(stable).hexdigest()[:16]


class IcsSource(HttpSource):
    """Events of iCalendar feeds, one feed URL per entity."""

    name = "ics"

    def __init__(
        self,
        client: HttpClient,
        *,
        default_timezone: str = "UTC",
        limits: IcsLimits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__(client)
        self.default_timezone = default_timezone
        self.limits = limits

    def version(self) -> str:
        return (
            f"ics (icalendar {package_version('icalendar')}, "
            f"recurring-ical-events {package_version('recurring-ical-events')})"
        )

    def fetch_many(self, entities: Sequence[Entity], window: Window) -> Iterator[Outcome]:
        """Every feed concurrently (politely per host); parsing runs off the event loop."""

        async def fetch_one(session: HttpSession, entity: Entity) -> list[Event]:
            url = feed_url(entity.key)

            def parse(response: HttpResponse) -> IcsFeed:
                return read_feed(
                    response.text(),
                    entity_id=entity.entity_id,
                    window=window,
                    source=self.name,
                    default_timezone=self.default_timezone,
                    limits=self.limits,
                )

            feed, _ = await session.fetch(url, parse, in_thread=True)
            self._answered[entity.entity_id] = feed.vevents > 0
            return feed.events

        return iter(self.client.run_batch(self.name, entities, fetch_one))

    def probe_targets(self, entities: Sequence[Entity], window: Window) -> list[ProbeTarget]:
        """One target per feed (sources/probe.py): an answer must be an iCalendar
        document; its fingerprint ignores ``DTSTAMP`` churn."""
        targets = []
        for entity in entities:
            try:
                url = feed_url(entity.key)
            except IcsError:
                continue  # a bad key fails the entity in the run, with its own message
            targets.append(
                ProbeTarget(
                    self.name, entity.entity_id, url, check=_is_calendar, stable=content_fingerprint
                )
            )
        return targets


def _is_calendar(response: HttpResponse) -> None:
    if not response.text().lstrip("\ufeff \t\r\n")[:15].upper().startswith("BEGIN:VCALENDAR"):
        raise IcsError("not an iCalendar feed")
