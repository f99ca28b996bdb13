import datetime as dt

import pytest

from calendar_pipeline import settings
from calendar_pipeline.settings import SettingError


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30,15,7,3,1", (1, 3, 7, 15, 30)), (" 7 , 1 ", (1, 7)), ("5", (5,))],
)
def test_thresholds_parse_sorted(text, expected):
    assert settings.parse_thresholds(text) == expected


@pytest.mark.parametrize("bad", ["30,x", "0,1", "-3", "1,,2", "", "7,7", "1.5"])
def test_bad_thresholds_name_setting_and_value(bad):
    with pytest.raises(SettingError) as info:
        settings.parse_thresholds(bad)
    assert "CALENDAR_THRESHOLDS" in str(info.value)
    assert repr(bad) in str(info.value)


def test_timezone():
    assert settings.parse_timezone("Europe/Paris") == "Europe/Paris"
    with pytest.raises(SettingError, match=r"CALENDAR_TIMEZONE='Mars/Olympus'"):
        settings.parse_timezone("Mars/Olympus")


@pytest.mark.parametrize(
    ("value", "has_token", "expected"),
    [
        (None, True, "send"),
        ("", False, "dry_run"),
        ("record-only", True, "record_only"),
        ("DRY_RUN", True, "dry_run"),
    ],
)
def test_alert_mode(value, has_token, expected):
    assert settings.parse_alert_mode(value, has_token) == expected


def test_bad_alert_mode():
    with pytest.raises(SettingError, match="CALENDAR_ALERT_MODE='loud'"):
        settings.parse_alert_mode("loud", True)


def test_load_time_settings_defaults_and_errors():
    assert settings.load_time_settings({}) == ("UTC", dt.date(2025, 1, 1), 6)
    env = {
        "CALENDAR_TIMEZONE": "Asia/Tokyo",
        "CALENDAR_START_DATE": "2026-02-03",
        "CALENDAR_SCHEDULE_HOUR": "23",
    }
    assert settings.load_time_settings(env) == ("Asia/Tokyo", dt.date(2026, 2, 3), 23)
    with pytest.raises(SettingError, match="CALENDAR_SCHEDULE_HOUR='24'"):
        settings.load_time_settings({"CALENDAR_SCHEDULE_HOUR": "24"})
    with pytest.raises(SettingError, match="CALENDAR_START_DATE='yesterday'"):
        settings.load_time_settings({"CALENDAR_START_DATE": "yesterday"})


def test_every_setting_is_read_by_a_resource_and_documented():
    """Each resource field has its variable, and each variable is in .env.example and the
    README: a new setting cannot be added without its documentation."""
    from pathlib import Path

    from calendar_pipeline.defs.resources import RESOURCES, resources_from_env

    assert set(resources_from_env()) == set(RESOURCES) == {"calendar", "upstream", "slack"}
    for resource, names, _ in RESOURCES.values():
        assert set(names) == set(resource.model_fields), resource.__name__
    repo = Path(__file__).resolve().parents[1]
    example = (repo / ".env.example").read_text()
    readme = (repo / "README.md").read_text()
    load_time = ["CALENDAR_TIMEZONE", "CALENDAR_START_DATE", "CALENDAR_SCHEDULE_HOUR"]
    every = [name for _, names, _ in RESOURCES.values() for name in names.values()]
    assert len(every) == len(set(every))
    for name in [*every, *load_time]:
        assert f"\n{name}=" in example, name
        assert f"`{name}`" in readme, name
