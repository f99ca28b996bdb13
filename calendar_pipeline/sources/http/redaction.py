"""Keeping credentials out of messages and logs: :func:`redact`, and a filter that
scrubs the records of httpx/httpcore (which log request URLs)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

import httpx

_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@]+@")
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&](?:token|api_?key|apikey|key|access_token|secret|password|passwd|sig|"
    r"signature|auth)=)[^&#\s]+",
    re.IGNORECASE,
)
_PRIVATE_PATH = re.compile(r"/private-[0-9A-Za-z]+/")  # Google Calendar secret addresses
REDACTED = "***"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without credentials: ``user:password@`` of any URL, secret-looking query
    parameters, Google's ``/private-…/`` feed segments, and every string in ``secrets``."""
    text = _USERINFO.sub(rf"\g<scheme>{REDACTED}@", text)
    text = _SECRET_QUERY.sub(rf"\g<name>{REDACTED}", text)
    text = _PRIVATE_PATH.sub(f"/private-{REDACTED}/", text)
    for secret in sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class _RedactingFilter(logging.Filter):
    """Scrubs credentials from the records of httpx/httpcore, which log request URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True


_LOG_FILTER = _RedactingFilter()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_LOG_FILTER)


def hide_from_logs(secret: str) -> None:
    """Scrub ``secret`` from every httpx/httpcore log record from now on."""
    _LOG_FILTER.secrets.add(secret)


def proxy_secrets(proxy: str) -> set[str]:
    """The password (and whole ``user:password``) of a proxy URL, raw and percent-decoded.
    (User names alone are not replaced in free text: the ``user:pass@`` pattern of
    :func:`redact` already hides them inside URLs.)"""
    match = re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://([^/@]+)@", proxy)
    if not match:
        return set()
    userinfo = match.group(1)
    found = {userinfo, userinfo.partition(":")[2], httpx.URL(proxy).password}
    return {s for s in found if s}
