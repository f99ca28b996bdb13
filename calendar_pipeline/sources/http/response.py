"""The response model: :class:`HttpResponse`, a complete answer, and how adapters read
its body (strict text, JSON, HTML detection) into :class:`InvalidResponse` errors."""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import httpx

from calendar_pipeline.sources.http.errors import InvalidResponse


@dataclass(frozen=True)
class HttpResponse:
    """A complete answer (a 304 carries the cached body and ``from_cache=True``)."""

    url: str  # as requested
    display_url: str  # redacted, for messages
    status: int
    headers: httpx.Headers
    body: bytes
    from_cache: bool = False
    charset: str | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")

    @property
    def last_modified(self) -> str | None:
        return self.headers.get("last-modified")

    @property
    def fingerprint(self) -> str:
        """``etag:…``, ``last-modified:…`` or ``sha256:…`` of the body, in that order."""
        if self.etag:
            return f"etag:{self.etag}"
        if self.last_modified:
            return f"last-modified:{self.last_modified}"
        return f"sha256:{hashlib.sha256(self.body).hexdigest()}"

    def invalid(self, problem: str) -> InvalidResponse:
        """An :class:`InvalidResponse` naming this URL and ``problem``."""
        return InvalidResponse(f"GET {self.display_url}: {problem}")

    def text(self) -> str:
        """The body decoded strictly: the declared charset, else UTF-8 (BOM tolerated)."""
        encoding = self.charset or "utf-8"
        try:
            codec = codecs.lookup(encoding)
        except LookupError:
            raise self.invalid(f"unknown charset {encoding!r}") from None
        name = "utf-8-sig" if codec.name == "utf-8" else codec.name
        try:
            return self.body.decode(name, errors="strict")
        except UnicodeDecodeError as exc:
            raise self.invalid(
                f"body is not valid {encoding} text ({exc.reason} at byte {exc.start})"
            ) from None

    def looks_like_html(self) -> bool:
        head = self.body[:512].lstrip().lower()
        return self.content_type in ("text/html", "application/xhtml+xml") or head.startswith(
            (b"<!doctype html", b"<html", b"<head", b"<body")
        )

    def html_summary(self) -> str:
        """The page's ``<title>`` (or its first words), for an error message."""
        text = self.body[:4096].decode("utf-8", errors="replace")
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        words = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
        return shorten(" ".join(words.split()), 80)

    def json(self) -> Any:
        """The body as JSON; an HTML page or malformed JSON raises InvalidResponse."""
        if self.looks_like_html():
            raise self.invalid(
                f"expected JSON, got an HTML page (Content-Type {self.content_type or 'none'}): "
                f"{self.html_summary()!r}"
            )
        text = self.text()
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise self.invalid(
                f"body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
