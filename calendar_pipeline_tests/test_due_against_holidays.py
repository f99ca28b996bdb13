"""due_alerts for the whole bundled universe, compared row by row per threshold with an
independent computation straight from the ``holidays`` package."""

import datetime as dt
from collections import Counter

import dagster as dg
import holidays
import pytest

from calendar_pipeline.alerts import store
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.settings import DEFAULT_UNIVERSE
from calendar_pipeline.universe import load_universe

THRESHOLDS = [30, 15, 7, 3, 1]


def expected_rows(day: dt.date) -> Counter:
    rows: Counter = Counter()
    for entity in load_universe(DEFAULT_UNIVERSE, {"holidays"}).entities:
        kind, code, *sub = entity.key.split(":")
        years = range(day.year, day.year + 2)
        if kind == "country":
            calendars = [
                holidays.country_holidays(code, subdiv=sub[0] if sub else None, years=years)
            ]
        else:
            supported = holidays.financial_holidays(code).supported_categories
            calendars = [
                holidays.financial_holidays(code, years=years, categories=(category,))
                for category in ("public", "half_day")
                if category in supported
            ]
        seen = set()
        for calendar in calendars:
            for date, names in calendar.items():
                days = (date - day).days
                if not 0 <= days <= max(THRESHOLDS):
                    continue
                threshold = min(t for t in THRESHOLDS if t >= days)
                for name in names.split("; "):
                    if (date, name) not in seen:
                        seen.add((date, name))
                        rows[(entity.entity_id, date, name, threshold)] += 1
    return rows


@pytest.mark.parametrize("day", ["2025-12-24", "2025-03-28", "2026-01-01"])
def test_due_alerts_match_an_independent_computation(tmp_path, day):
    calendar = CalendarSettings(data_dir=str(tmp_path / "data"))
    defs = build_defs({"calendar": calendar, "slack": SlackSettings()})
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("daily_calendar_job").execute_in_process(
            partition_key=day, instance=instance
        )
    assert result.success
    partition = dt.date.fromisoformat(day)
    actual = Counter(
        (a.entity_id, a.event_date, a.title, a.threshold_days)
        for a in store.read_due_alerts(calendar.engine(), partition)
    )
    expected = expected_rows(partition)
    for threshold in THRESHOLDS:
        got = {k for k in actual if k[3] == threshold}
        want = {k for k in expected if k[3] == threshold}
        assert got == want, f"D-{threshold}: missing {want - got}, extra {got - want}"
    assert actual == expected
    assert sum(actual.values()) > 50
