"""`Declared`: what a resource whose every field is a declared setting can do.

Each field is written once, with its type, its declaration, its default and its doc:

    thresholds: Annotated[str, Setting("CALENDAR_THRESHOLDS", settings.parse_thresholds)] = (
        "30,15,7,3,1"
    )
    '''Alert thresholds in days (positive, distinct), none above the lookahead.'''

(the resource's `model_config = ConfigDict(use_attribute_docstrings=True)` makes the
docstring the field's description), and from that one declaration come: the variable's
name (`env_names()`), the field's
description in the Dagster UI (`NAME: doc`), the resource built with `EnvVar`s for Dagster
(`with_env_vars()`) and with the values themselves for `calendar-pipeline`
(`with_env_values()`), the check of every value (`check_settings()`, one line
`NAME='value': problem` naming the variable, a secret's value never shown) and the
typed value (`parsed(field)`: a `float`, a tuple, an enum ..., parsed once per value).

Why the fields stay `str`/`int` with a parser rather than `float`/enum/tuple fields with
pydantic validators: Dagster (1.13) reads an environment variable only into a `str`,
`int` or `bool` field (`StringSource`, `IntSource`, `BoolSource`; there is no float,
enum or list source), and a field given an `EnvVar` reaches a pydantic validator as the
variable's *name* until the run resolves it. A validator's error is also a
`pydantic.ValidationError` of three lines (`1 validation error for ...`, the message, a
link) where the contract is one line; `setup_for_execution` raising `SettingError` keeps it.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, Self

import dagster as dg

from calendar_pipeline.settings import Setting


@cache
def _declarations(cls: type) -> dict[str, Setting]:
    found: dict[str, Setting] = {}
    for field, info in cls.model_fields.items():
        marks = [mark for mark in info.metadata if isinstance(mark, Setting)]
        if len(marks) != 1:
            raise TypeError(f"{cls.__name__}.{field} is not declared with one Setting")
        found[field] = marks[0]
    return found


class Declared:
    """Mixed into a `dg.ConfigurableResource` whose every field is
    `Annotated[str | int, Setting(...)] = default` (see the module's docstring)."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)  # type: ignore[misc]
        for field, setting in _declarations(cls).items():
            info = cls.model_fields[field]  # its docstring (use_attribute_docstrings)
            if not (info.description or "").startswith(f"{setting.env}: "):
                doc = " ".join((info.description or "").split())
                info.description = f"{setting.env}: {doc}".strip()

    @classmethod
    def declared(cls) -> dict[str, Setting]:
        """Each field's declaration, by field name."""
        return _declarations(cls)

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Each field's environment variable, by field name."""
        return {field: setting.env for field, setting in cls.declared().items()}

    @classmethod
    def _is_int(cls, field: str) -> bool:
        return cls.model_fields[field].annotation in (int, "int")

    @classmethod
    def with_env_vars(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The resource with `EnvVar(name)` (`EnvVar.int` for an `int` field) for each
        variable set and not blank, so the UI shows where each value came from and never a
        secret's value; an unset variable leaves the default. Dagster resolves the values
        when a run starts, and `setup_for_execution` checks them."""
        values: dict[str, Any] = {}
        for field, setting in cls.declared().items():
            if setting.text(environ) is not None:
                int_field = cls._is_int(field)
                values[field] = dg.EnvVar.int(setting.env) if int_field else dg.EnvVar(setting.env)
        return cls(**values)

    @classmethod
    def with_env_values(cls, environ: Mapping[str, str] | None = None) -> Self:
        """The resource with the environment's values themselves (not `EnvVar`s), for code
        that runs outside Dagster (`calendar-pipeline`). An `int` field's text is parsed
        here, so a bad one raises `SettingError` naming the variable; `check_settings`
        checks the rest."""
        values: dict[str, Any] = {}
        for field, setting in cls.declared().items():
            text = setting.text(environ)
            if text is not None:
                values[field] = setting.read(text) if cls._is_int(field) else text
        return cls(**values)

    def parsed(self, field: str) -> Any:
        """The typed value of `field` (its declaration's parser applied, once per value)."""
        return type(self).declared()[field].read(getattr(self, field))

    def check_settings(self) -> None:
        """Every field parsed and checked; `SettingError` naming the first bad one."""
        for field in type(self).declared():
            self.parsed(field)
