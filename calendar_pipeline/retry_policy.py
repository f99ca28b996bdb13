"""How patiently the pipeline retries a request that failed for a transient reason: one
:class:`RetryPolicy` for the upstream HTTP client (``sources/http``) and for Slack
(``alerts/slack_client``), and how both read a server's ``Retry-After``. Imports nothing of
the project, so both can use it."""

from __future__ import annotations

import datetime as dt
import email.utils
import random
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``max_attempts`` attempts per request (the first included); between two,
    a full-jitter exponential backoff, ``random(0, backoff_base * 2**retry)`` capped at
    ``backoff_max`` seconds, but never less than a server's ``Retry-After``; a server
    asking for more than ``max_retry_after`` seconds is not waited for."""

    max_attempts: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 120.0

    def __post_init__(self) -> None:
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be a positive integer, not {self.max_attempts!r}")
        if not self.backoff_base >= 0:
            raise ValueError(f"backoff_base must be >= 0, not {self.backoff_base}")
        for name in ("backoff_max", "max_retry_after"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, not {getattr(self, name)}")

    @property
    def max_retries(self) -> int:
        """Retries after the first attempt."""
        return self.max_attempts - 1

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2.0 ** min(retry, 60)))


# The policy of the HTTP client (``HttpConfig``'s defaults) and of Slack (``web_client``).
DEFAULT_RETRY_POLICY = RetryPolicy()


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: a number of seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())
