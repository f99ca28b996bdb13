"""The embedded default source: public holidays and market closures from the
``holidays`` package. Real data, no network.

Keys:
- ``country:FR`` a country with its default categories;
- ``country:US:CA`` a subdivision;
- ``financial:XNYS`` a market, with ``public`` closures and ``half_day`` early closes where
  the market has them.

One event per (entity, date, holiday name): a date with two holidays gives two events.
The event id is ``{slug of name}-{year}``, with ``-2``, ``-3``... for a name that recurs
within one calendar year (counted over the whole year, so the id does not depend on the
window). It never contains the day, so a holiday whose date moves keeps its id.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from functools import lru_cache

import holidays

from calendar_pipeline.sources.model import Entity, Event, Window

MARKET_CATEGORIES = ("public", "half_day")


class HolidayKeyError(ValueError):
    """The entity's key does not name a country, subdivision or market we know."""


def slugify(text: str) -> str:
    slug = re.sub(r"[^0-9a-z]+", "-", text.casefold()).strip("-")
    return slug or "holiday"


class HolidaysSource:
    name = "holidays"

    def version(self) -> str:
        return f"holidays {holidays.__version__}"

    def fetch(self, entity: Entity, window: Window) -> list[Event]:
        kind, code, subdiv = parse_key(entity.key)
        events: list[Event] = []
        for year in window.years:
            for day, title, category in _year_holidays(kind, code, subdiv, year):
                if day in window:
                    events.append(
                        Event(
                            entity_id=entity.entity_id,
                            event_id=title_ids(kind, code, subdiv, year)[(day, title)],
                            event_date=day,
                            title=title,
                            source=self.name,
                            details={
                                "kind": kind,
                                "code": code,
                                "subdiv": subdiv,
                                "category": category,
                            },
                        )
                    )
        return events

    def has_data(self, entity: Entity, window: Window) -> bool:
        """True when the entity has any holiday in the calendar years of ``window``."""
        kind, code, subdiv = parse_key(entity.key)
        return any(_year_holidays(kind, code, subdiv, year) for year in window.years)


def parse_key(key: str) -> tuple[str, str, str | None]:
    """``country:US:CA`` -> ``("country", "US", "CA")``; raises HolidayKeyError naming the key."""
    parts = key.split(":")
    kind = parts[0]
    if kind == "country" and len(parts) in (2, 3):
        code, subdiv = parts[1], (parts[2] if len(parts) == 3 else None)
        supported = holidays.list_supported_countries(include_aliases=True)
        if code not in supported:
            raise HolidayKeyError(f"key {key!r}: unknown country code {code!r}")
        if subdiv is not None and subdiv not in supported[code]:
            raise HolidayKeyError(f"key {key!r}: {code} has no subdivision {subdiv!r}")
        return kind, code, subdiv
    if kind == "financial" and len(parts) == 2:
        if parts[1] not in holidays.list_supported_financial(include_aliases=True):
            raise HolidayKeyError(f"key {key!r}: unknown market code {parts[1]!r}")
        return kind, parts[1], None
    raise HolidayKeyError(f"key {key!r}: expected country:CC, country:CC:SUBDIV or financial:MIC")


@lru_cache(maxsize=4096)
def _year_holidays(
    kind: str, code: str, subdiv: str | None, year: int
) -> tuple[tuple[dt.date, str, str], ...]:
    """Every (date, name, category) of one calendar year, sorted; cached per process."""
    found: list[tuple[dt.date, str, str]] = []
    if kind == "country":
        calendar = holidays.country_holidays(code, subdiv=subdiv, years=year)
        category = ",".join(sorted(calendar.categories))
        found = [(day, name, category) for day in calendar for name in calendar.get_list(day)]
    else:
        supported = holidays.financial_holidays(code, years=year).supported_categories
        for category in (c for c in MARKET_CATEGORIES if c in supported):
            calendar = holidays.financial_holidays(code, years=year, categories=(category,))
            found += [(day, name, category) for day in calendar for name in calendar.get_list(day)]
    return tuple(sorted(set(found)))


@lru_cache(maxsize=4096)
def title_ids(
    kind: str, code: str, subdiv: str | None, year: int
) -> dict[tuple[dt.date, str], str]:
    """Stable event ids for one year: slug-year, numbered when a name recurs that year."""
    seen: dict[str, int] = defaultdict(int)
    ids: dict[tuple[dt.date, str], str] = {}
    for day, title, _category in _year_holidays(kind, code, subdiv, year):
        base = f"{slugify(title)}-{year}"
        seen[base] += 1
        ids[(day, title)] = base if seen[base] == 1 else f"{base}-{seen[base]}"
    return ids
