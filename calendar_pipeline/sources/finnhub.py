"""Finnhub earnings calendar: ``GET {base}/api/v1/calendar/earnings?from=&to=[&symbol=]``.

The entity key is a ticker (``AAPL``). The token travels in the ``X-Finnhub-Token``
header: never in a URL, a log line or an error (the client redacts it everywhere).

As few calls as the API allows: a universe of more than ``per_ticker_max`` tickers is
served by one range call for the whole window (or one per ``max_range_days`` chunk),
filtered to the universe's tickers; a small universe uses the per-ticker path
(``&symbol=``), which returns far less. A failed range call fails every entity that
needed it, each with a message naming the ticker and the cause.

Records are validated at the edge (:class:`EarningsRecord`), but only those of watched
tickers: a malformed record of a ticker nobody watches cannot fail anything.

``has_data`` is true for every ticker Finnhub answered for (its calendar cannot tell an
unknown ticker from one without earnings in the window).

One event per (ticker, fiscal quarter): the id is ``earnings-{year}Q{quarter}``, free of
the date, so a moved earnings date keeps its id (and gets a new alert key).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlencode

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from calendar_pipeline.sources.http.client import FetchOne, HttpClient, Outcome
from calendar_pipeline.sources.http.errors import describe_exception
from calendar_pipeline.sources.http.response import HttpResponse
from calendar_pipeline.sources.http.session import HttpSession
from calendar_pipeline.sources.http.source import HttpSource
from calendar_pipeline.sources.model import Entity, Event, Window
from calendar_pipeline.sources.probe import ProbeTarget

DEFAULT_FINNHUB_BASE_URL = "https://finnhub.io"
DEFAULT_PER_TICKER_MAX = 20
HOUR_LABELS = {"bmo": "before market open", "amc": "after market close", "dmh": "during market"}


class FinnhubError(ValueError):
    """A ticker could not be served; the message names it and the cause."""


class EarningsRecord(BaseModel):
    """One record of ``earningsCalendar``; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    date: dt.date
    symbol: str = Field(min_length=1, max_length=50)
    hour: str | None = None
    quarter: int | None = Field(default=None, ge=1, le=4)
    year: int | None = Field(default=None, ge=1900, le=2200)
    eps_estimate: float | None = Field(default=None, alias="epsEstimate")
    revenue_estimate: float | None = Field(default=None, alias="revenueEstimate")


def parse_ticker_key(key: str) -> str:
    """``"aapl"`` -> ``"AAPL"``; raises FinnhubError naming a key that is not a ticker."""
    ticker = key.strip().upper()
    if not re.fullmatch(r"[A-Z0-9][A-Z0-9.\-:]{0,19}", ticker):
        raise FinnhubError(f"finnhub key {key!r}: expected a ticker symbol like AAPL")
    return ticker


def parse_calendar(response: HttpResponse) -> list[dict[str, Any]]:
    """The raw ``earningsCalendar`` records (dicts with a symbol); shape errors raise."""
    payload = response.json()
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
    if "earningsCalendar" not in payload:
        if "error" in payload:
            raise ValueError(f"Finnhub answered an error: {str(payload['error'])[:200]!r}")
        raise ValueError("the JSON object has no 'earningsCalendar' list")
    records = payload["earningsCalendar"]
    if records is None:
        return []
    if not isinstance(records, list):
        raise ValueError(f"'earningsCalendar' is a {type(records).__name__}, not a list")
    return [r for r in records if isinstance(r, dict) and isinstance(r.get("symbol"), str)]


def records_to_events(
    entity_id: str, ticker: str, records: Sequence[dict[str, Any]], window: Window, source: str
) -> list[Event]:
    """Validate ``ticker``'s records and turn those inside ``window`` into events."""
    events: dict[tuple[str, dt.date], Event] = {}
    for index, raw in enumerate(records):
        try:
            record = EarningsRecord.model_validate(raw)
        except ValidationError as exc:
            raise FinnhubError(
                f"finnhub {ticker}: record {index} ({raw.get('date')!r}) is invalid: "
                f"{describe_exception(exc)}"
            ) from None
        if record.date not in window:
            continue
        event = _event(entity_id, ticker, record, source)
        events.setdefault((event.event_id, event.event_date), event)
    return sorted(events.values(), key=lambda e: (e.event_date, e.event_id))


def _event(entity_id: str, ticker: str, record: EarningsRecord, source: str) -> Event:
    if record.year is not None and record.quarter is not None:
        event_id = f"earnings-{record.year}Q{record.quarter}"
        title = f"{ticker} earnings Q{record.quarter} {record.year}"
    else:  # no fiscal period: the month is the most stable id we have
        event_id = f"earnings-{record.date:%Y-%m}"
        title = f"{ticker} earnings"
    hour = (record.hour or "").strip().lower()
    if hour in HOUR_LABELS:
        title += f" ({HOUR_LABELS[hour]})"
    return Event(
        entity_id=entity_id,
        event_id=event_id,
        event_date=record.date,
        title=title,
        source=source,
        details={
            "symbol": record.symbol,
            "hour": hour or None,
            "quarter": record.quarter,
            "year": record.year,
            "eps_estimate": record.eps_estimate,
            "revenue_estimate": record.revenue_estimate,
        },
    )


class FinnhubSource(HttpSource):
    """Upcoming earnings dates of the universe's tickers."""

    name = "finnhub"

    def __init__(
        self,
        client: HttpClient,
        base_url: str = DEFAULT_FINNHUB_BASE_URL,
        token: str | None = None,
        *,
        per_ticker_max: int = DEFAULT_PER_TICKER_MAX,
        max_range_days: int | None = None,
    ) -> None:
        super().__init__(client)
        self.base_url = base_url.rstrip("/")
        self.token = (token or "").strip() or None
        self.per_ticker_max = per_ticker_max
        self.max_range_days = max_range_days
        client.add_secret(self.token)

    def version(self) -> str:
        return f"finnhub api v1 at {self.client.redact(self.base_url)}"

    def url(self, start: dt.date, end: dt.date, symbol: str | None = None) -> str:
        query = {"from": start.isoformat(), "to": end.isoformat()}
        if symbol is not None:
            query["symbol"] = symbol
        return f"{self.base_url}/api/v1/calendar/earnings?{urlencode(query)}"

    @property
    def _headers(self) -> dict[str, str]:
        return {"X-Finnhub-Token": self.token or ""}

    def _chunks(self, window: Window) -> list[tuple[dt.date, dt.date]]:
        """The window, cut into ranges of at most ``max_range_days`` days."""
        if not self.max_range_days:
            return [(window.start, window.end)]
        step = dt.timedelta(days=self.max_range_days)
        chunks, start = [], window.start
        while start <= window.end:
            end = min(start + step - dt.timedelta(days=1), window.end)
            chunks.append((start, end))
            start = end + dt.timedelta(days=1)
        return chunks

    def fetch_many(self, entities: Sequence[Entity], window: Window) -> Iterator[Outcome]:
        """Per-ticker calls for a small universe, range calls for a large one."""
        if self.token is None:
            problem = FinnhubError("FINNHUB_TOKEN is not set: Finnhub needs an API token")
            return iter([(entity, problem) for entity in entities])
        if len(entities) <= self.per_ticker_max:
            return iter(self.client.run_batch(self.name, entities, self._per_ticker(window)))
        return iter(self.client.run_batch(self.name, entities, self._from_range(window)))

    def _per_ticker(self, window: Window) -> FetchOne:
        async def fetch_one(session: HttpSession, entity: Entity) -> list[Event]:
            ticker = parse_ticker_key(entity.key)
            records: list[dict[str, Any]] = []
            for start, end in self._chunks(window):
                found, _ = await session.fetch(
                    self.url(start, end, ticker), parse_calendar, headers=self._headers
                )
                records += [r for r in found if r["symbol"].upper() == ticker]
            events = records_to_events(entity.entity_id, ticker, records, window, self.name)
            self._answered[entity.entity_id] = True  # Finnhub answered for this ticker
            return events

        return fetch_one

    def _from_range(self, window: Window) -> FetchOne:
        """``fetch_one`` that awaits one shared range download (started on first use)."""
        shared: dict[str, asyncio.Task[dict[str, list[dict[str, Any]]]]] = {}

        async def download(session: HttpSession) -> dict[str, list[dict[str, Any]]]:
            by_symbol: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for start, end in self._chunks(window):
                records, _ = await session.fetch(
                    self.url(start, end), parse_calendar, headers=self._headers
                )
                for record in records:
                    by_symbol[record["symbol"].upper()].append(record)
            return by_symbol

        async def fetch_one(session: HttpSession, entity: Entity) -> list[Event]:
            ticker = parse_ticker_key(entity.key)
            if "range" not in shared:
                shared["range"] = asyncio.ensure_future(download(session))
            try:
                by_symbol = await asyncio.shield(shared["range"])
            except Exception as exc:
                raise FinnhubError(f"finnhub {ticker}: range call failed: {exc}") from exc
            events = records_to_events(
                entity.entity_id, ticker, by_symbol.get(ticker, []), window, self.name
            )
            # A range answer cannot tell an unknown ticker from a quiet one: an answer
            # counts as data, as on the per-ticker path.
            self._answered[entity.entity_id] = True
            return events

        return fetch_one

    def probe_targets(self, entities: Sequence[Entity], window: Window) -> list[ProbeTarget]:
        """The range call(s) of the run's range path over the window, whatever the number
        of tickers (one unless FINNHUB caps ranges); raises without a token."""
        if self.token is None:
            raise FinnhubError("FINNHUB_TOKEN is not set: Finnhub needs an API token")
        return [
            ProbeTarget(
                self.name,
                f"earnings {start}..{end}",
                self.url(start, end),
                check=parse_calendar,
                headers=self._headers,
            )
            for start, end in self._chunks(window)
        ]
