"""Nager.Date public holidays: ``GET {base}/api/v3/PublicHolidays/{year}/{countryCode}``.

The entity key is an ISO 3166-1 alpha-2 country code (``FR``). One request per year the
window touches (two when it crosses new year), each a conditional GET. Every record is
validated at the edge (:class:`NagerHoliday`); a record that does not fit fails the
entity with a message naming the record and the field.

One event per (date, English name): Nager lists a holiday once per date, but a
duplicate (same date and name, e.g. split by counties) is merged. The event id is
``{slug of the English name}-{year}``, numbered ``-2``, ``-3``… when a name recurs within
the year (counted over the whole year's answer, so the id does not depend on the
window), exactly like the ``holidays`` adapter; it never contains the day, so a holiday
whose date moves keeps its id.

``has_data`` is true when Nager listed holidays for every year fetched: an empty list
means the country is not covered, a non-empty one with nothing in the window is a quiet
calendar.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from calendar_pipeline.sources.holidays_source import slugify
from calendar_pipeline.sources.http.client import HttpClient, Outcome
from calendar_pipeline.sources.http.response import HttpResponse
from calendar_pipeline.sources.http.session import HttpSession
from calendar_pipeline.sources.http.source import HttpSource
from calendar_pipeline.sources.model import Entity, Event, Window
from calendar_pipeline.sources.probe import ProbeTarget

DEFAULT_NAGER_BASE_URL = "https://date.nager.at"

# The countries the public Nager.Date API serves (its ``/api/v3/AvailableCountries``),
# written down without network access: the list the v3 API has answered for years,
# checked against the providers registered in nager/Nager.Date's ``HolidaySystem.cs``
# (every code below has one). Nager has been adding countries since; an entity for a
# code missing here still works, it is only not in the bundled universe. Regenerate the
# CSV with ``python -m calendar_pipeline.sources.nager``.
NAGER_COUNTRIES: dict[str, str] = {
    "AD": "Andorra",
    "AL": "Albania",
    "AM": "Armenia",
    "AR": "Argentina",
    "AT": "Austria",
    "AU": "Australia",
    "AX": "Åland Islands",
    "BA": "Bosnia and Herzegovina",
    "BB": "Barbados",
    "BE": "Belgium",
    "BG": "Bulgaria",
    "BJ": "Benin",
    "BO": "Bolivia",
    "BR": "Brazil",
    "BS": "Bahamas",
    "BW": "Botswana",
    "BY": "Belarus",
    "BZ": "Belize",
    "CA": "Canada",
    "CD": "DR Congo",
    "CG": "Republic of the Congo",
    "CH": "Switzerland",
    "CL": "Chile",
    "CN": "China",
    "CO": "Colombia",
    "CR": "Costa Rica",
    "CU": "Cuba",
    "CY": "Cyprus",
    "CZ": "Czechia",
    "DE": "Germany",
    "DK": "Denmark",
    "DO": "Dominican Republic",
    "EC": "Ecuador",
    "EE": "Estonia",
    "EG": "Egypt",
    "ES": "Spain",
    "FI": "Finland",
    "FO": "Faroe Islands",
    "FR": "France",
    "GA": "Gabon",
    "GB": "United Kingdom",
    "GD": "Grenada",
    "GE": "Georgia",
    "GG": "Guernsey",
    "GH": "Ghana",
    "GI": "Gibraltar",
    "GL": "Greenland",
    "GM": "Gambia",
    "GR": "Greece",
    "GT": "Guatemala",
    "GY": "Guyana",
    "HK": "Hong Kong",
    "HN": "Honduras",
    "HR": "Croatia",
    "HT": "Haiti",
    "HU": "Hungary",
    "ID": "Indonesia",
    "IE": "Ireland",
    "IM": "Isle of Man",
    "IS": "Iceland",
    "IT": "Italy",
    "JE": "Jersey",
    "JM": "Jamaica",
    "JP": "Japan",
    "KE": "Kenya",
    "KR": "South Korea",
    "KZ": "Kazakhstan",
    "LI": "Liechtenstein",
    "LS": "Lesotho",
    "LT": "Lithuania",
    "LU": "Luxembourg",
    "LV": "Latvia",
    "MA": "Morocco",
    "MC": "Monaco",
    "MD": "Moldova",
    "ME": "Montenegro",
    "MG": "Madagascar",
    "MK": "North Macedonia",
    "MN": "Mongolia",
    "MS": "Montserrat",
    "MT": "Malta",
    "MX": "Mexico",
    "MZ": "Mozambique",
    "NA": "Namibia",
    "NE": "Niger",
    "NG": "Nigeria",
    "NI": "Nicaragua",
    "NL": "Netherlands",
    "NO": "Norway",
    "NZ": "New Zealand",
    "PA": "Panama",
    "PE": "Peru",
    "PG": "Papua New Guinea",
    "PH": "Philippines",
    "PL": "Poland",
    "PR": "Puerto Rico",
    "PT": "Portugal",
    "PY": "Paraguay",
    "RO": "Romania",
    "RS": "Serbia",
    "RU": "Russia",
    "SE": "Sweden",
    "SG": "Singapore",
    "SI": "Slovenia",
    "SJ": "Svalbard and Jan Mayen",
    "SK": "Slovakia",
    "SM": "San Marino",
    "SR": "Suriname",
    "SV": "El Salvador",
    "TN": "Tunisia",
    "TR": "Türkiye",
    "UA": "Ukraine",
    "US": "United States",
    "UY": "Uruguay",
    "VA": "Vatican City",
    "VE": "Venezuela",
    "VN": "Vietnam",
    "ZA": "South Africa",
    "ZW": "Zimbabwe",
}


class NagerKeyError(ValueError):
    """The entity's key is not a country code."""


class NagerHoliday(BaseModel):
    """One record of ``/api/v3/PublicHolidays``; unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    date: dt.date
    local_name: str | None = Field(default=None, alias="localName")
    name: str = Field(min_length=1, max_length=500)
    country_code: str = Field(alias="countryCode", min_length=2, max_length=2)
    fixed: bool | None = None
    global_: bool | None = Field(default=None, alias="global")
    counties: list[str] | None = None
    launch_year: int | None = Field(default=None, alias="launchYear")
    types: list[str] | None = None


_HOLIDAY_LIST = TypeAdapter(list[NagerHoliday])


def parse_country_key(key: str) -> str:
    """``"fr"`` -> ``"FR"``; raises NagerKeyError naming the key."""
    code = key.strip().upper()
    if not re.fullmatch(r"[A-Z]{2}", code):
        raise NagerKeyError(f"nager key {key!r}: expected a two-letter country code like FR")
    return code


def parse_public_holidays(response: HttpResponse, country: str) -> list[NagerHoliday]:
    """Validate one year's answer; raises ValueError naming the record and the field."""
    payload = response.json()
    if not isinstance(payload, list):
        raise ValueError(f"expected a JSON list of holidays, got {type(payload).__name__}")
    holidays = _HOLIDAY_LIST.validate_python(payload)
    for index, holiday in enumerate(holidays):
        if holiday.country_code.upper() != country:
            raise ValueError(
                f"record {index} is for country {holiday.country_code!r}, not {country}"
            )
    return holidays


def holidays_to_events(
    entity_id: str, holidays: Sequence[NagerHoliday], year: int, window: Window, source: str
) -> list[Event]:
    """Events of one year's holidays inside ``window``, with stable date-free ids."""
    merged: dict[tuple[dt.date, str], NagerHoliday] = {}
    counties: dict[tuple[dt.date, str], set[str]] = defaultdict(set)
    for holiday in holidays:
        identity = (holiday.date, holiday.name)
        merged.setdefault(identity, holiday)
        counties[identity].update(holiday.counties or ())
    seen: dict[str, int] = defaultdict(int)
    events: list[Event] = []
    for (day, name), holiday in sorted(merged.items()):
        base = f"{slugify(name)}-{year}"
        seen[base] += 1
        event_id = base if seen[base] == 1 else f"{base}-{seen[base]}"
        if day not in window:
            continue
        events.append(
            Event(
                entity_id=entity_id,
                event_id=event_id,
                event_date=day,
                title=name,
                source=source,
                details={
                    "local_name": holiday.local_name,
                    "country_code": holiday.country_code,
                    "fixed": holiday.fixed,
                    "global": holiday.global_,
                    "counties": ",".join(sorted(counties[(day, name)])) or None,
                    "launch_year": holiday.launch_year,
                    "types": ",".join(holiday.types or ()) or None,
                },
            )
        )
    return events


class NagerSource(HttpSource):
    """Public holidays from a Nager.Date server (the public one by default)."""

    name = "nager"

    def __init__(self, client: HttpClient, base_url: str = DEFAULT_NAGER_BASE_URL) -> None:
        super().__init__(client)
        self.base_url = base_url.rstrip("/")

    def version(self) -> str:
        return f"nager.date api v3 at {self.client.redact(self.base_url)}"

    def url(self, year: int, country: str) -> str:
        return f"{self.base_url}/api/v3/PublicHolidays/{year}/{country}"

    def fetch_many(self, entities: Sequence[Entity], window: Window) -> Iterator[Outcome]:
        """Each entity's holidays for every year of ``window``, concurrently."""

        async def fetch_one(session: HttpSession, entity: Entity) -> list[Event]:
            country = parse_country_key(entity.key)
            years = await asyncio.gather(
                *(self._year(session, country, year) for year in window.years)
            )
            self._answered[entity.entity_id] = all(years)  # Nager lists every covered year
            return [
                event
                for year, holidays in zip(window.years, years, strict=True)
                for event in holidays_to_events(entity.entity_id, holidays, year, window, self.name)
            ]

        return iter(self.client.run_batch(self.name, entities, fetch_one))

    async def _year(
        self, session: HttpSession, country: str, year: int, *, max_attempts: int | None = None
    ) -> list[NagerHoliday]:
        holidays, _ = await session.fetch(
            self.url(year, country),
            lambda response: parse_public_holidays(response, country),
            max_attempts=max_attempts,
        )
        return holidays

    def probe_targets(self, entities: Sequence[Entity], window: Window) -> list[ProbeTarget]:
        """One target per country-year the window needs, the URLs ``fetch_many`` uses
        (so a probe's answer is a cache hit for the run)."""
        countries = sorted({c for e in entities if (c := _country_or_none(e.key))})
        return [
            ProbeTarget(
                self.name,
                f"{country} {year}",
                self.url(year, country),
                check=lambda response, country=country: parse_public_holidays(response, country),
            )
            for country in countries
            for year in window.years
        ]


def _country_or_none(key: str) -> str | None:
    try:
        return parse_country_key(key)
    except NagerKeyError:
        return None


def nager_universe_csv() -> str:
    """The bundled ``nager_countries.csv``: one ``nager`` entity per covered country."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["entity_id", "name", "source", "key", "channel"])
    for code, name in sorted(NAGER_COUNTRIES.items()):
        writer.writerow([f"nager-{code}", name, "nager", code, ""])
    return buffer.getvalue()


def main() -> None:
    """Write ``calendar_pipeline/universe/nager_countries.csv``."""
    from calendar_pipeline.settings import BUNDLED_UNIVERSE_DIR

    path = BUNDLED_UNIVERSE_DIR / "nager_countries.csv"
    path.write_text(nager_universe_csv(), encoding="utf-8", newline="")
    print(f"{path.name}: {len(NAGER_COUNTRIES)} entities")


if __name__ == "__main__":
    main()
