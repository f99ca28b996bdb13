"""The Dagster resources, one per system, each filled from the environment:

- `calendar` (`CalendarSettings`, `calendar.py`): the lake, the SQL database,
  the universe, the lookahead, the thresholds and the check budgets;
- `upstream` (`UpstreamSources`, `upstream.py`): the source adapters and the
  polite HTTP client they share;
- `slack` (`SlackSettings`, `slack.py`): tokens, channels, the alert mode.

Each field of the three is one setting, declared once with its variable, its parser,
its default and its doc (`declared.py`); everything else is derived from those
declarations: each field's variable (`RESOURCES`, `env_names()`), the resources for
Dagster (`resources_from_env`: a variable present in the environment is passed as
`EnvVar`, `EnvVar.int` for whole numbers, so the UI shows which variable a value came
from and never a secret's value; an absent one takes its default) and for
`calendar-pipeline` (`resource_from_env`: the values themselves). Values are checked when
a run starts, so a bad one fails with one line naming the variable and the value.
"""

from __future__ import annotations

from typing import NamedTuple

import dagster as dg

from calendar_pipeline import settings
from calendar_pipeline.defs.resources.calendar import (
    CalendarSettings,
    describe_instance,
    runs_on_this_machine,
)
from calendar_pipeline.defs.resources.declared import Declared
from calendar_pipeline.defs.resources.slack import SlackSettings
from calendar_pipeline.defs.resources.upstream import UpstreamSources
from calendar_pipeline.settings import Setting

__all__ = [
    "RESOURCES",
    "CalendarSettings",
    "SlackSettings",
    "UpstreamSources",
    "check_environment",
    "describe_instance",
    "resource_from_env",
    "resources_from_env",
    "runs_on_this_machine",
]


class Resource(NamedTuple):
    """A resource key's class, each field's variable and each field's declaration (the
    last two derived from the class)."""

    cls: type[Declared]
    env: dict[str, str]
    declared: dict[str, Setting]


RESOURCES = {
    key: Resource(cls, cls.env_names(), cls.declared())
    for key, cls in (
        ("calendar", CalendarSettings),
        ("upstream", UpstreamSources),
        ("slack", SlackSettings),
    )
}


def resource_from_env(key: str) -> dg.ConfigurableResource:
    """The resource `key` with the environment's values themselves (not `EnvVar`s), an
    `int` parsed here so a bad one raises `SettingError` naming the variable: for code
    that runs outside Dagster (`calendar-pipeline`)."""
    return RESOURCES[key].cls.with_env_values()


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
    """The three resources for Dagster, with an `EnvVar` for each variable set."""
    return {key: resource.cls.with_env_vars() for key, resource in RESOURCES.items()}
