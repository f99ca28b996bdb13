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


def test_every_variable_of_env_example_is_a_setting():
    """The other way round: .env.example documents no variable that nothing reads."""
    import re
    from pathlib import Path

    from calendar_pipeline.defs.resources import RESOURCES

    example = (Path(__file__).resolve().parents[1] / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", example, re.M))
    declared = {name for _, names, _ in RESOURCES.values() for name in names.values()}
    load_time = {"CALENDAR_TIMEZONE", "CALENDAR_START_DATE", "CALENDAR_SCHEDULE_HOUR"}
    assert documented == declared | load_time


def test_each_field_is_one_declaration_with_a_doc_the_ui_shows():
    """The variable, the parser and the doc of a field come from its one `Setting`: the
    name maps, the Dagster config schema's description and the typed value all derive
    from it."""
    from calendar_pipeline.defs.resources import RESOURCES, CalendarSettings

    for resource, names, declared in RESOURCES.values():
        schema = resource.to_config_schema().as_field().config_type.fields
        for field, setting in declared.items():
            assert names[field] == setting.env
            description = schema[field].description or ""
            assert description.startswith(f"{setting.env}: ") and len(description) > 30, field
    calendar = CalendarSettings(thresholds=" 7 , 1 ", max_failed_share="0.25")
    assert calendar.threshold_days == (1, 7)
    assert calendar.budgets.failed_share == 0.25
    assert CalendarSettings().lookahead == settings.DEFAULT_LOOKAHEAD_DAYS


def test_a_field_without_its_declaration_is_refused():
    from typing import Annotated

    import dagster as dg

    from calendar_pipeline.defs.resources.declared import Declared

    with pytest.raises(TypeError, match=r"Half\.loose is not declared"):  # at definition

        class Half(Declared, dg.ConfigurableResource):
            ok: Annotated[str, settings.Setting("CALENDAR_X_OK")] = ""
            loose: str = ""


def test_a_value_is_parsed_once_and_a_secret_never_shown():
    calls = []

    def parse(value, name):
        calls.append(value)
        return settings.parse_positive_float(value, name)

    rate = settings.Setting("CALENDAR_X_RATE", parse)
    assert rate.read("2.5") == rate.read("2.5") == 2.5
    assert calls == ["2.5"]
    with pytest.raises(SettingError, match=r"^CALENDAR_X_RATE='fast': expected a positive"):
        rate.read("fast")
    secret = settings.Setting("CALENDAR_X_KEY", settings.parse_positive_float, secret=True)
    with pytest.raises(SettingError) as info:
        secret.read("hunter22")
    assert str(info.value) == "CALENDAR_X_KEY='***': expected a positive number"


def test_dagster_gets_env_vars_and_the_cli_gets_values(monkeypatch):
    """`resources_from_env`: an `EnvVar` per variable set (the UI shows the variable,
    never a token's value); `resource_from_env`: the values, an int parsed and named."""
    import dagster as dg

    from calendar_pipeline.defs.resources import resource_from_env, resources_from_env

    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-never-shown-7")
    monkeypatch.setenv("CALENDAR_LOOKAHEAD_DAYS", "30")
    monkeypatch.setenv("CALENDAR_RATE_LIMIT", "0.5")
    monkeypatch.setenv("CALENDAR_THRESHOLDS", "   ")  # blank: the default
    monkeypatch.delenv("SLACK_CHANNEL", raising=False)
    dagster = resources_from_env()
    slack, calendar = dagster["slack"], dagster["calendar"]
    assert isinstance(slack.token, dg.EnvVar) and slack.token.env_var_name == "SLACK_BOT_TOKEN"
    assert calendar.lookahead_days.env_var_name == "CALENDAR_LOOKAHEAD_DAYS"  # EnvVar.int
    assert isinstance(dagster["upstream"].rate_limit, dg.EnvVar)
    assert not isinstance(calendar.thresholds, dg.EnvVar)
    assert not isinstance(slack.channel, dg.EnvVar)
    config = slack._convert_to_config_dictionary()  # what the UI shows of the resource
    assert config["token"] == {"env": "SLACK_BOT_TOKEN"}
    assert calendar._convert_to_config_dictionary()["lookahead_days"] == {
        "env": "CALENDAR_LOOKAHEAD_DAYS"
    }
    assert "xoxb-never-shown-7" not in repr(config)

    assert resource_from_env("calendar").lookahead == 30
    assert resource_from_env("upstream").http_config().rate_limit == 0.5
    assert resource_from_env("slack").mode is settings.AlertMode.SEND
    monkeypatch.setenv("CALENDAR_LOOKAHEAD_DAYS", "soon")
    with pytest.raises(SettingError, match="CALENDAR_LOOKAHEAD_DAYS='soon'"):
        resource_from_env("calendar")


def test_base_urls_are_validated_without_showing_credentials():
    assert settings.parse_base_url(" http://127.0.0.1:8080/ ", "NAGER_BASE_URL") == (
        "http://127.0.0.1:8080"
    )
    with pytest.raises(SettingError, match=r"NAGER_BASE_URL='date\.nager\.at'"):
        settings.parse_base_url("date.nager.at", "NAGER_BASE_URL")
    with pytest.raises(SettingError, match="FINNHUB_BASE_URL") as info:
        settings.parse_base_url("ftp://me:hunter22@finnhub.io", "FINNHUB_BASE_URL")
    assert "hunter22" not in str(info.value)
    with pytest.raises(SettingError) as info:
        settings.parse_webhook_url("http//hooks.example/T0/secret-9")
    assert "secret-9" not in str(info.value) and "SLACK_WEBHOOK_URL='***'" in str(info.value)
    assert settings.parse_webhook_url("  ") == ""
