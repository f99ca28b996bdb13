"""Parsing and validating settings. Pure: strings in, typed values out.

Every error names the setting and the value, so a typo in ``.env`` is found in one read.
Each setting of a Dagster resource (``calendar_pipeline.defs.resources``) is declared once,
as one field annotated with a :class:`Setting`: its environment variable, what it is for,
its parser (one of the ``parse_*`` below: range, enum, list) and whether it is a secret.
``definitions.py`` reads the few settings needed at load time (timezone, start date, hour)
through :func:`load_time_settings`.
"""

from __future__ import annotations

import datetime as dt
import enum
import math
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx

DEFAULT_THRESHOLDS = (30, 15, 7, 3, 1)
DEFAULT_LOOKAHEAD_DAYS = 60
DEFAULT_TIMEZONE = "UTC"
DEFAULT_START_DATE = "2025-01-01"
DEFAULT_SCHEDULE_HOUR = 6


class AlertMode(enum.StrEnum):
    """What ``send_slack_alerts`` does with the day's new alerts (``CALENDAR_ALERT_MODE``)."""

    SEND = "send"  # post to Slack, record each key with its message ts
    DRY_RUN = "dry_run"  # write the digest to the outbox and the log; record nothing
    RECORD_ONLY = "record_only"  # record the keys as delivered without posting


class Deployment(enum.StrEnum):
    """Where runs execute (``CALENDAR_DEPLOYMENT``), which decides what storage may be."""

    AUTO = "auto"  # judged from the Dagster instance (storage and run launcher)
    LOCAL = "local"  # every process on this machine: ./data and SQLite are fine
    SHARED = "shared"  # runs may execute on other machines: shared lake and database


ALERT_MODES = tuple(mode.value for mode in AlertMode)
DEPLOYMENTS = tuple(mode.value for mode in Deployment)
DEFAULT_DATA_DIR = "./data"
BUNDLED_UNIVERSE_DIR = Path(__file__).parent / "universe"
DEFAULT_UNIVERSE = BUNDLED_UNIVERSE_DIR / "countries_and_markets.csv"


class SettingError(ValueError):
    """A setting has a value we cannot use. The message names both."""

    def __init__(self, name: str, value: object, problem: str) -> None:
        super().__init__(f"{name}={str(value)!r}: {problem}")
        self.setting = name
        self.problem = problem


@dataclass(frozen=True)
class Setting:
    """The declaration of one setting, written once as the metadata of its resource field
    (``thresholds: Annotated[str, Setting("CALENDAR_THRESHOLDS", parse_thresholds)] = ...``
    followed by its docstring, which the Dagster UI shows).

    ``env`` is its environment variable; ``parse`` turns the field's value (the ``str`` or
    ``int`` Dagster reads from the environment) into the typed value and checks it (range,
    enum, list), raising ``SettingError(env, value, problem)``; None: the text is the
    value. A ``secret``'s value is shown as ``***`` in every error.
    """

    env: str
    parse: Callable[[Any, str], Any] | None = None
    secret: bool = False

    def read(self, value: Any) -> Any:
        """The typed value of ``value``, parsed once per distinct value and process."""
        if self.parse is None:
            return value
        try:
            return _parse_once(self.parse, self.env, value)
        except SettingError as exc:
            if self.secret:
                raise SettingError(self.env, "***", exc.problem) from None
            raise

    def text(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The variable's value in the environment, stripped; None when unset or blank."""
        value = (os.environ if environ is None else environ).get(self.env, "").strip()
        return value or None


@lru_cache(maxsize=1024)
def _parse_once(parse: Callable[[Any, str], Any], name: str, value: Any) -> Any:
    return parse(value, name)  # an error is not cached: the same bad value raises again


def parse_thresholds(value: str, name: str = "CALENDAR_THRESHOLDS") -> tuple[int, ...]:
    """``"30,15,7,3,1"`` -> ``(1, 3, 7, 15, 30)``: positive integers, sorted, distinct."""
    parts = [part.strip() for part in str(value).split(",")]
    if not parts or any(not part for part in parts):
        raise SettingError(name, value, "expected a comma-separated list like 30,15,7,3,1")
    numbers: list[int] = []
    for part in parts:
        if not part.isdigit() or int(part) <= 0:
            raise SettingError(name, value, f"{part!r} is not a positive integer")
        numbers.append(int(part))
    if len(set(numbers)) != len(numbers):
        raise SettingError(name, value, "a threshold is listed twice")
    return tuple(sorted(numbers))


def parse_positive_int(value: str | int, name: str, *, allow_zero: bool = False) -> int:
    text = str(value).strip()
    floor = 0 if allow_zero else 1
    if not text.lstrip("-").isdigit() or int(text) < floor:
        kind = "a non-negative integer" if allow_zero else "a positive integer"
        raise SettingError(name, value, f"expected {kind}")
    return int(text)


def parse_non_negative_int(value: str | int, name: str) -> int:
    return parse_positive_int(value, name, allow_zero=True)


def parse_positive_float(value: str | float, name: str) -> float:
    """``"2.5"`` -> ``2.5``; raises :class:`SettingError` unless a finite number > 0."""
    try:
        number = float(str(value).strip())
    except ValueError:
        raise SettingError(name, value, "expected a positive number") from None
    if not math.isfinite(number) or number <= 0:
        raise SettingError(name, value, "expected a positive number")
    return number


def parse_ratio(value: str | float, name: str) -> float:
    """A number from 0 to 1 (``0.5``); 0 turns the rule it controls off."""
    try:
        ratio = float(str(value).strip())
    except ValueError:
        ratio = -1.0
    if not 0 <= ratio <= 1:
        raise SettingError(name, value, "expected a number from 0 to 1, like 0.5 (0 turns it off)")
    return ratio


def parse_timezone(value: str, name: str = "CALENDAR_TIMEZONE") -> str:
    """An IANA time zone name such as ``UTC`` or ``Europe/Paris``."""
    try:
        zoneinfo.ZoneInfo(str(value).strip())
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingError(name, value, "unknown time zone (use an IANA name)") from exc
    return str(value).strip()


def parse_date(value: str, name: str = "CALENDAR_START_DATE") -> dt.date:
    try:
        return dt.date.fromisoformat(str(value).strip())
    except ValueError as exc:
        raise SettingError(name, value, "expected a date as YYYY-MM-DD") from exc


def parse_hour(value: str | int, name: str = "CALENDAR_SCHEDULE_HOUR") -> int:
    hour = parse_positive_int(value, name, allow_zero=True)
    if hour > 23:
        raise SettingError(name, value, "expected an hour 0-23")
    return hour


def parse_alert_mode(
    value: str | None, has_token: bool, name: str = "CALENDAR_ALERT_MODE"
) -> AlertMode:
    """Explicit mode if given, else ``send`` with a Slack token and ``dry_run`` without."""
    if value is None or not str(value).strip():
        return AlertMode.SEND if has_token else AlertMode.DRY_RUN
    try:
        return AlertMode(str(value).strip().lower().replace("-", "_"))
    except ValueError:
        raise SettingError(name, value, f"expected one of {', '.join(ALERT_MODES)}") from None


def parse_alert_mode_setting(value: str, name: str = "CALENDAR_ALERT_MODE") -> AlertMode | None:
    """CALENDAR_ALERT_MODE as written: an `AlertMode`, or None when blank (the mode then
    depends on whether Slack can be posted to: :func:`parse_alert_mode`)."""
    if not str(value).strip():
        return None
    return parse_alert_mode(value, has_token=True, name=name)


def parse_deployment(value: str | None, name: str = "CALENDAR_DEPLOYMENT") -> Deployment:
    """``auto`` (the default: judged from the Dagster instance), ``local`` or ``shared``."""
    try:
        return Deployment(str(value or "auto").strip().lower() or "auto")
    except ValueError:
        raise SettingError(name, value, f"expected one of {', '.join(DEPLOYMENTS)}") from None


def parse_base_url(value: str, name: str) -> str:
    """An ``http(s)://host[/path]`` base URL without its trailing slash; raises
    :class:`SettingError` naming the variable (the value is shown without credentials)."""
    text = str(value).strip()
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        from calendar_pipeline.sources.http.redaction import redact

        raise SettingError(name, redact(text), "expected an http:// or https:// base URL")
    return text.rstrip("/")


def parse_webhook_url(value: str, name: str = "SLACK_WEBHOOK_URL") -> str:
    """An incoming-webhook URL (blank: none). A secret: an error never shows it."""
    if not str(value).strip():
        return ""
    try:
        return parse_base_url(value, name)
    except SettingError:
        raise SettingError(name, "***", "expected an https:// incoming-webhook URL") from None


_ADDRESS = re.compile(
    r"\[(?P<v6>[0-9A-Fa-f:.]+)\]:(?P<p1>\d{1,5})|(?P<host>[^:\s/\[\]]+):(?P<p2>\d{1,5})"
)


def parse_address(value: str, name: str = "CALENDAR_FEEDS_ADDRESS") -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:8765` for IPv6; port 0: any free port) -> (host, port);
    `SettingError` naming the variable otherwise."""
    text = str(value).strip()
    match = _ADDRESS.fullmatch(text)
    if not match:
        raise SettingError(name, value, "expected HOST:PORT, e.g. 127.0.0.1:8765 or [::1]:8765")
    host = match["v6"] or match["host"]
    port = int(match["p1"] or match["p2"])
    if port > 65535:
        raise SettingError(name, value, f"port {port} is not between 0 and 65535")
    return host, port


def parse_path(value: str, name: str) -> Path | None:
    """A file or directory path, ``~`` expanded; None when blank (the default applies)."""
    text = str(value).strip()
    return Path(text).expanduser() if text else None


def check_thresholds_within_lookahead(thresholds: tuple[int, ...], lookahead: int) -> None:
    """Refuse a threshold beyond the lookahead: the snapshots hold events at most
    ``lookahead`` days ahead, so a longer alert could never be posted that early."""
    beyond = [days for days in thresholds if days > lookahead]
    if beyond:
        raise SettingError(
            "CALENDAR_THRESHOLDS",
            ",".join(str(days) for days in sorted(thresholds, reverse=True)),
            f"{beyond[-1]} days is beyond CALENDAR_LOOKAHEAD_DAYS={lookahead} (each snapshot "
            f"holds events up to {lookahead} days ahead); raise CALENDAR_LOOKAHEAD_DAYS to at "
            f"least {beyond[-1]} or drop that threshold",
        )


def shared_storage_problem(data_dir: str, db_url: str) -> str | None:
    """Why ``CALENDAR_DATA_DIR`` and ``CALENDAR_DB_URL`` cannot serve a deployment whose
    runs execute on several machines, or ``None`` when they can.

    Their defaults (``./data`` and a SQLite file in it) resolve on each machine to a
    directory and a file of its own: every worker would write a lake and a ledger nobody
    else reads, and alerts would be posted once per machine instead of once.
    """
    unset = [n for n, v in (("CALENDAR_DATA_DIR", data_dir), ("CALENDAR_DB_URL", db_url)) if not v]
    if unset:
        return (
            f"{' and '.join(unset)} must be set explicitly when runs execute on several "
            "machines: the defaults (./data and a SQLite file in it) would give every "
            "worker a lake and an alert ledger of its own"
        )
    if not Path(data_dir).expanduser().is_absolute():
        return (
            f"CALENDAR_DATA_DIR={data_dir!r} is relative: each process would resolve it "
            "against its own working directory; use the absolute path of the shared mount"
        )
    if db_url.strip().lower().startswith("sqlite"):
        return (
            "CALENDAR_DB_URL is a SQLite file: other machines cannot share it (SQLite's "
            "locking does not work over network file systems); use PostgreSQL"
        )
    return None


def env(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    """The environment value of ``name``, or ``default`` when unset or blank."""
    value = (os.environ if environ is None else environ).get(name, "")
    return value if value.strip() else default


def load_time_settings(environ: Mapping[str, str] | None = None) -> tuple[str, dt.date, int]:
    """Settings Dagster needs when it loads the definitions: (timezone, start date, hour).

    This is the only place ``CALENDAR_TIMEZONE`` is read: the partitions, the schedule,
    the resources and the CLI all take the time zone of ``defs.partitions``.
    """
    timezone = parse_timezone(env("CALENDAR_TIMEZONE", DEFAULT_TIMEZONE, environ))
    start = parse_date(env("CALENDAR_START_DATE", DEFAULT_START_DATE, environ))
    hour = parse_hour(env("CALENDAR_SCHEDULE_HOUR", str(DEFAULT_SCHEDULE_HOUR), environ))
    return timezone, start, hour


def today_in(timezone: str, now: dt.datetime | None = None) -> dt.date:
    """The date it is in ``timezone`` (at ``now``, default the clock): today's partition."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(zoneinfo.ZoneInfo(timezone)).date()
