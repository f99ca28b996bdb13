"""Regenerate the bundled universe CSVs from the installed ``holidays`` package.

    python -m calendar_pipeline.universe.build

Countries use their default (public) categories; markets add ``half_day`` where
supported so early closes appear. The subdivision universe adds one row per subdivision.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from pathlib import Path

import holidays
from holidays.registry import COUNTRIES, FINANCIAL

HERE = Path(__file__).parent
SMALL_WORDS = {"and", "of", "the", "de", "da", "do", "del", "la", "y"}


def _readable(module_name: str) -> str:
    words = module_name.split("_")
    return " ".join(
        word if (i and word in SMALL_WORDS) else word[:1].upper() + word[1:]
        for i, word in enumerate(words)
    )


def _names(registry: dict[str, tuple[str, ...]]) -> dict[str, str]:
    return {codes[1]: _readable(module) for module, codes in registry.items()}


# One word of a CamelCase class name: an acronym (ICE in ICEFuturesEurope, SIX, NASDAQ),
# a capitalised word, or a lone capital before one (the Y of BolsasYMercados).
_CAMEL_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z][a-z]+|[A-Z]+|[a-z]+|\d+")


def market_name(class_names: tuple[str, ...]) -> str:
    """A market's display name from the ``holidays`` registry entry (its class name and
    aliases): the CamelCase name that keeps the most capitals (``ICEFuturesEurope`` over
    ``IceFuturesEurope``), split into words, acronyms kept, connecting words in lower
    case. ``("NewYorkStockExchange", "XNYS", "NYSE")`` -> ``New York Stock Exchange``.
    (The module names the registry is keyed by are abbreviated: ``ny_stock_exchange``.)"""
    camel = [name for name in class_names if any(c.islower() for c in name)]
    best = max(camel, key=lambda name: sum(c.isupper() for c in name)) if camel else class_names[0]
    words = _CAMEL_WORD.findall(best)
    return " ".join(
        word.lower() if i and word.lower() in SMALL_WORDS else word for i, word in enumerate(words)
    )


def _market_names() -> dict[str, str]:
    """Market name by every code of the market (``XNYS`` and ``NYSE`` alike)."""
    return {code: market_name(entry) for entry in FINANCIAL.values() for code in entry[1:]}


def universe_rows(with_subdivisions: bool) -> list[dict[str, str]]:
    country_names = _names(COUNTRIES)
    market_names = _market_names()
    rows: list[dict[str, str]] = []
    countries = holidays.list_supported_countries(include_aliases=False)
    for code in sorted(countries):
        name = country_names.get(code, code)
        rows.append(row(f"country-{code}", name, f"country:{code}"))
    for code in sorted(holidays.list_supported_financial(include_aliases=False)):
        rows.append(row(f"market-{code}", market_names.get(code, code), f"financial:{code}"))
    if with_subdivisions:
        for code in sorted(countries):
            for subdiv in countries[code]:
                rows.append(
                    row(
                        f"country-{code}-{_id_part(subdiv)}",
                        f"{country_names.get(code, code)} ({subdiv})",
                        f"country:{code}:{subdiv}",
                    )
                )
    return rows


def _id_part(text: str) -> str:
    """``São Paulo Capital`` -> ``Sao_Paulo_Capital``: safe inside an entity_id."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9]+", "_", ascii_text).strip("_")


def row(entity_id: str, name: str, key: str) -> dict[str, str]:
    return {"entity_id": entity_id, "name": name, "source": "holidays", "key": key, "channel": ""}


def render_csv(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=["entity_id", "name", "source", "key", "channel"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


BUNDLED = {
    "countries_and_markets.csv": False,
    "with_subdivisions.csv": True,
}


def main() -> None:
    for filename, with_subdivisions in BUNDLED.items():
        text = render_csv(universe_rows(with_subdivisions))
        (HERE / filename).write_text(text, encoding="utf-8", newline="")
        print(f"{filename}: {text.count(chr(10)) - 1} entities")


if __name__ == "__main__":
    main()
