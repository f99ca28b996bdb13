"""The Dagster resources, one per system, each filled from the environment:

- `calendar` (`CalendarSettings`, `calendar.py`): the lake, the SQL database,
  the universe, the lookahead, the thresholds and the check budgets;
- `upstream` (`UpstreamSources`, `upstream.py`): the source adapters and the
  polite HTTP client they share;
- `slack` (`SlackSettings`, `slack.py`): tokens, channels, the alert mode.

A setting present in the environment is passed as `EnvVar` (`EnvVar.int` for whole
numbers) so the UI shows which variable it came from (and never a secret's value); an
absent one takes its default. Values are validated by `calendar_pipeline.settings` when
a run starts, so a bad one fails with one line naming the variable and the value.
`CALENDAR_ENV`, `UPSTREAM_ENV` and `SLACK_ENV` map each field to its variable.
"""

from __future__ import annotations

import os

import dagster as dg

from calendar_pipeline import settings
from calendar_pipeline.defs.resources import calendar, upstream
from calendar_pipeline.defs.resources.calendar import (
    CALENDAR_ENV,
    CalendarSettings,
    describe_instance,
    runs_on_this_machine,
)
from calendar_pipeline.defs.resources.slack import SLACK_ENV, SlackSettings
from calendar_pipeline.defs.resources.upstream import UPSTREAM_ENV, UpstreamSources

__all__ = [
    "CALENDAR_ENV",
    "SLACK_ENV",
    "UPSTREAM_ENV",
    "CalendarSettings",
    "SlackSettings",
    "UpstreamSources",
    "check_environment",
    "describe_instance",
    "resource_from_env",
    "resources_from_env",
    "runs_on_this_machine",
]

# Each resource key: its class, the variable of each field, the least value of each
# whole-number field (0: the rule it sets may be "none").
RESOURCES = {
    "calendar": (CalendarSettings, CALENDAR_ENV, calendar.INT_MINIMUMS),
    "upstream": (UpstreamSources, UPSTREAM_ENV, upstream.INT_MINIMUMS),
    "slack": (SlackSettings, SLACK_ENV, {}),
}


def _is_set(name: str) -> bool:
    return bool(os.environ.get(name, "").strip())


def _is_int(resource: type[dg.ConfigurableResource], field: str) -> bool:
    return resource.model_fields[field].annotation in (int, "int")


def _from_env(resource: type[dg.ConfigurableResource], names: dict[str, str]):
    """`resource` with `EnvVar(name)` (`EnvVar.int` for an `int` field) for each
    variable set and not blank, so the UI shows where each value came from and never a
    secret's value; an unset variable leaves the field's default. Values are resolved and
    validated when a run starts."""
    values = {}
    for field, name in names.items():
        if _is_set(name):
            values[field] = dg.EnvVar.int(name) if _is_int(resource, field) else dg.EnvVar(name)
    return resource(**values)


def resource_from_env(key: str) -> dg.ConfigurableResource:
    """The resource `key` with the environment's values themselves (not `EnvVar`s),
    each `int` parsed here so a bad one raises `SettingError` naming the variable: for
    code that runs outside Dagster (`calendar-pipeline`)."""
    resource, names, minimums = RESOURCES[key]
    values: dict[str, object] = {}
    for field, name in names.items():
        if not _is_set(name):
            continue
        text = os.environ[name].strip()
        if _is_int(resource, field):
            allow_zero = minimums.get(field, 1) == 0
            values[field] = settings.parse_positive_int(text, name, allow_zero=allow_zero)
        else:
            values[field] = text
    return resource(**values)


def check_environment(writable: bool = True) -> dict[str, dg.ConfigurableResource]:
    """Every setting of the environment parsed and checked, before anything runs: the
    values, the universe file and (``writable``) the storage: the data dir takes a write
    and the database answers within seconds, or is named unusable. Raises `SettingError`
    or `UniverseError` with a one-line message. `calendar-pipeline` calls this first
    (`verify` without `--repair` only reads: it asks for no write); Dagster runs check
    the same at run start."""
    settings.load_time_settings()
    resources = {key: resource_from_env(key) for key in RESOURCES}
    for resource in resources.values():
        resource.validate()
    resources["calendar"].load_universe()
    if writable:
        resources["calendar"].check_storage()
    return resources


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    return {key: _from_env(cls, names) for key, (cls, names, _) in RESOURCES.items()}
