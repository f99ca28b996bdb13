"""What went wrong with one entity, in plain words, with advice that fits the cause.

An entity's fetch fails for reasons that call for different actions: a server error or a
timeout is the upstream's problem (nothing to fix here; the next day's run tries again),
a 404 or a feed that does not parse is a problem with the entity's key or its feed (check
the key in the universe CSV). :func:`describe_problem` turns a dead-letter entry of the
snapshot (``errors``) into that sentence; the Slack notice, the run metadata and the
terminal all use it, so they say the same thing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from calendar_pipeline.text import shorten

# kinds of problem, from the most to the least actionable for the person who owns the key
KEY = "key"  # 404/410, a feed that is not a calendar: the key (URL, code) is wrong
AUTH = "auth"  # 401/403: credentials or access
SERVER = "server"  # 5xx, 429: the upstream failed; it is retried on the next run
NETWORK = "network"  # timeout, refused, reset: the upstream is unreachable
REJECTED = "rejected"  # answered, but far fewer events than before (a truncated feed)
OTHER = "other"


@dataclass(frozen=True)
class Problem:
    kind: str
    what: str  # plain words: "HTTP 500 from feeds.example.com"
    advice: str  # what to do: "nothing to fix here: the next run tries again"

    def sentence(self) -> str:
        return f"{self.what}; {self.advice}"


_STATUS = re.compile(r"\bHTTP (\d{3})\b")
_URL = re.compile(r"\b(?:GET|POST) (\S+?):? ")


def _host(message: str) -> str:
    match = _URL.search(message)
    if not match:
        return "the upstream"
    host = urlsplit(match.group(1)).hostname
    return host or "the upstream"


def describe_problem(error: Mapping[str, Any]) -> Problem:
    """The problem of one ``errors`` entry of a snapshot (``EntityError`` as a dict)."""
    message = str(error.get("message", ""))
    error_type = str(error.get("error_type", ""))
    host = _host(message)
    status_match = _STATUS.search(message)
    status = int(status_match.group(1)) if status_match else None
    if error_type == "VolumeDrop":
        return Problem(
            REJECTED,
            shorten(message, 200),
            "its data was not used; check the feed (a truncated or emptied calendar)",
        )
    if status is not None:
        if status >= 500 or status == 429:
            return Problem(
                SERVER,
                f"HTTP {status} from {host}",
                "the server failed, nothing to fix here: the next run tries again",
            )
        if status in (401, 403):
            return Problem(
                AUTH,
                f"HTTP {status} from {host}",
                "access refused: check the API key or the feed's sharing settings",
            )
        if status in (404, 410):
            return Problem(
                KEY,
                f"HTTP {status} (not found) from {host}",
                "check the entity's key in the universe CSV (the URL or code may have moved)",
            )
        return Problem(OTHER, f"HTTP {status} from {host}", "check the entity's key and source")
    if error_type in ("HttpTimeout",) or "timed out" in message or "no complete answer" in message:
        return Problem(
            NETWORK,
            f"timeout from {host}",
            "the server did not answer in time: the next run tries again",
        )
    if error_type in ("HttpTransportError", "HttpFetchError") and host != "the upstream":
        return Problem(
            NETWORK,
            f"{host} unreachable ({shorten(message.split(': ', 1)[-1], 100)})",
            "the next run tries again",
        )
    if error_type in ("IcsError", "InvalidResponse", "ValidationError"):
        what = message.split(": ", 1)[-1] if message.startswith("GET ") else message
        return Problem(
            KEY,
            shorten(what, 200),
            "the feed answered with something that is not a usable calendar: check the "
            "feed or the entity's key",
        )
    return Problem(OTHER, shorten(message or error_type, 200), "see the run log for details")
