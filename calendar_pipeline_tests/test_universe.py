import csv
import re

import holidays
import pytest

from calendar_pipeline.settings import BUNDLED_UNIVERSE_DIR, DEFAULT_UNIVERSE
from calendar_pipeline.universe import UniverseError, load_universe
from calendar_pipeline.universe.build import BUNDLED, render_csv, universe_rows

KNOWN = {"holidays"}


def test_bundled_universe_covers_every_country_and_market():
    universe = load_universe(DEFAULT_UNIVERSE, KNOWN)
    countries = holidays.list_supported_countries(include_aliases=False)
    markets = holidays.list_supported_financial(include_aliases=False)
    keys = {e.key for e in universe.entities}
    assert len(universe.entities) == len(countries) + len(markets)
    assert {f"country:{c}" for c in countries} | {f"financial:{m}" for m in markets} == keys


def test_subdivision_universe_adds_every_subdivision():
    universe = load_universe(BUNDLED_UNIVERSE_DIR / "with_subdivisions.csv", KNOWN)
    countries = holidays.list_supported_countries(include_aliases=False)
    subdivisions = sum(len(subs) for subs in countries.values())
    markets = holidays.list_supported_financial(include_aliases=False)
    assert len(universe.entities) == len(countries) + len(markets) + subdivisions


@pytest.mark.parametrize(("filename", "with_subdivisions"), BUNDLED.items())
def test_bundled_csvs_match_the_generator(filename, with_subdivisions):
    """The committed CSVs are what build.py makes from the installed holidays package."""
    text = (BUNDLED_UNIVERSE_DIR / filename).read_text(encoding="utf-8")
    assert text == render_csv(universe_rows(with_subdivisions))


def write(tmp_path, text):
    path = tmp_path / "u.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_missing_column_named(tmp_path):
    path = write(tmp_path, "entity_id,name,source,key\nx,X,holidays,country:FR\n")
    with pytest.raises(UniverseError, match=r"missing column\(s\) channel") as info:
        load_universe(path, KNOWN)
    assert str(path) in str(info.value)


def test_duplicate_entity_id_names_both_lines(tmp_path):
    path = write(
        tmp_path,
        "entity_id,name,source,key,channel\nfr,France,holidays,country:FR,\n"
        "de,Germany,holidays,country:DE,\nfr,Again,holidays,country:FR,\n",
    )
    with pytest.raises(
        UniverseError, match=r"line 4: duplicate entity_id 'fr' \(first on line 2\)"
    ):
        load_universe(path, KNOWN)


def test_unknown_source_and_bad_id(tmp_path):
    path = write(tmp_path, "entity_id,name,source,key,channel\nfr,France,carrier-pigeon,x,\n")
    with pytest.raises(UniverseError, match="line 2: unknown source 'carrier-pigeon'"):
        load_universe(path, KNOWN)
    path = write(tmp_path, "entity_id,name,source,key,channel\nbad id!,France,holidays,x,\n")
    with pytest.raises(UniverseError, match="line 2: entity_id"):
        load_universe(path, KNOWN)


def test_empty_missing_and_binary_files(tmp_path):
    with pytest.raises(UniverseError, match="no entities"):
        load_universe(write(tmp_path, "entity_id,name,source,key,channel\n\n"), KNOWN)
    with pytest.raises(UniverseError, match="cannot read"):
        load_universe(tmp_path / "absent.csv", KNOWN)
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"entity_id,name\n\xff\xfe\x00")
    with pytest.raises(UniverseError, match="not UTF-8"):
        load_universe(binary, KNOWN)


def test_channel_blank_is_none_and_bom_tolerated(tmp_path):
    path = tmp_path / "u.csv"
    path.write_bytes(
        "\ufeffentity_id,name,source,key,channel\nfr,France,holidays,country:FR, \n"
        "us,US,holidays,country:US,#us\n".encode()
    )
    entities = load_universe(path, KNOWN).entities
    assert [e.channel for e in entities] == [None, "#us"]
    with path.open(newline="") as handle:
        assert len(list(csv.reader(handle))) == 3


def test_market_names_follow_the_holidays_class_names():
    """Every market's name comes from its class in the installed holidays package: the
    class's words, its acronyms kept (no "Ny Stock Exchange", "Sifma", "Ice Futures")."""
    from holidays.registry import FINANCIAL

    from calendar_pipeline.universe.build import market_name

    rows = {r["key"]: r["name"] for r in universe_rows(with_subdivisions=False)}
    for entry in FINANCIAL.values():
        class_name, code = entry[0], entry[1]
        name = rows[f"financial:{code}"]
        assert name == market_name(entry)
        # every acronym of the class name survives, every word of it is there
        for acronym in re.findall(r"[A-Z]{2,}(?=[A-Z][a-z]|$)", class_name):
            assert acronym in name.split(), (class_name, name)
        assert name.replace(" ", "").lower() in {n.lower() for n in entry if n[0].isupper()}
    assert rows["financial:XNYS"] == "New York Stock Exchange"
    assert rows["financial:XSIF"] == "SIFMA"
    assert rows["financial:IFEU"] == "ICE Futures Europe"
    assert rows["financial:XSWX"] == "SIX Swiss Exchange"
    assert rows["financial:XETR"] == "Germany Stock Exchange"
    assert rows["financial:XBUE"] == "Bolsas y Mercados Argentinos"
