"""The one polite HTTP client every HTTP adapter shares (httpx + aiolimiter + tenacity).

Politeness, per upstream host (``host:port``), so hosts never wait for each other:

- at most ``rate_limit`` requests per second, evenly spaced (an ``aiolimiter`` leaky
  bucket of capacity one: no bursts), retries included;
- at most ``max_concurrency`` requests in flight.

Robustness, per request:

- retries (``tenacity``) with exponential backoff and full jitter on connection errors,
  timeouts, 408, 429 and 5xx; ``Retry-After`` (seconds or HTTP date) is a floor for the
  wait, and a server asking for more than ``max_retry_after`` seconds is not retried;
  other 4xx are final; at most ``max_attempts`` attempts;
- ``timeout`` seconds for each attempt as a whole (a server dripping bytes slowly is
  cut off too), and the same value for each connect/read/write;
- the body is streamed and abandoned as soon as it passes ``max_response_bytes``
  (decoded size, so a compressed bomb is caught as well);
- conditional GET: the ``ETag`` / ``Last-Modified`` of each URL live in an
  :class:`~calendar_pipeline.sources.http_cache.HttpCache`; the next request sends
  ``If-None-Match`` / ``If-Modified-Since`` and a 304 reuses the stored body. A body is
  stored only after the adapter parsed it, so a broken answer is never replayed;
- an optional list of proxies, one ``httpx.AsyncClient`` each, used in rotation (a retry
  goes through the next proxy). Credentials never appear in a log line or an error:
  every message goes through :meth:`HttpClient.redact`.

Politeness state (limiters, semaphores, connections) lives in one :class:`HttpSession`
per batch; ``collect_events`` runs one source's batch after the other, so one run never
has two sessions talking to the same host at once.

Adapters are synchronous (``collect_events`` calls them from plain code): they describe
their work as coroutines and :meth:`HttpClient.run_batch` runs it with ``asyncio.run``
(in a helper thread when the calling thread already runs an event loop), with progress
logged every ``progress_every`` entities and at the end. :attr:`HttpClient.stats`
holds the running totals (entities done/failed, requests, retries, 304s, bytes).
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import datetime as dt
import email.utils
import hashlib
import itertools
import json
import logging
import math
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from aiolimiter import AsyncLimiter
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from calendar_pipeline import __version__
from calendar_pipeline.settings import SettingError, env, parse_positive_int
from calendar_pipeline.sources.http_cache import CachedResponse, HttpCache
from calendar_pipeline.sources.model import Entity, Event, Window

log = logging.getLogger(__name__)
T = TypeVar("T")

# Names the project and its version. A fork that talks to other people's servers should
# add a contact, e.g. f"calendar_pipeline/{__version__} (+mailto:ops@example.org)".
USER_AGENT = f"calendar_pipeline/{__version__} (Dagster calendar pipeline; httpx)"
MIB = 1024 * 1024
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
SPACING_SLACK = 1.02  # requests are spaced 2% wider than 1/rate: room for network jitter


# --- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpConfig:
    """How politely and how patiently the client talks to upstreams.

    The environment variables (see :meth:`from_env`) cover the first six fields; the
    backoff fields exist so tests can make retries fast.
    """

    rate_limit: float = 2.0  # requests per second, per host
    max_concurrency: int = 4  # requests in flight, per host
    max_attempts: int = 5  # attempts per request, the first included
    timeout: float = 20.0  # seconds per attempt (whole answer) and per connect/read
    max_response_bytes: int = 10 * MIB  # decoded body size at which a download is abandoned
    proxy_file: Path | None = None  # one proxy URL a line, used in rotation
    progress_every: int = 50  # log a progress line every N entities
    backoff_base: float = 0.5  # full-jitter backoff: random(0, base * 2**retry), capped
    backoff_max: float = 30.0  # longest backoff between two attempts
    max_retry_after: float = 120.0  # a longer Retry-After is not waited for

    def __post_init__(self) -> None:
        for name in ("rate_limit", "timeout", "backoff_max", "max_retry_after"):
            if not getattr(self, name) > 0:
                raise ValueError(f"HttpConfig.{name} must be positive, not {getattr(self, name)}")
        if self.backoff_base < 0:
            raise ValueError(f"HttpConfig.backoff_base must be >= 0, not {self.backoff_base}")
        for name in ("max_concurrency", "max_attempts", "max_response_bytes", "progress_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"HttpConfig.{name} must be a positive integer, not {value!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HttpConfig:
        """Read ``CALENDAR_RATE_LIMIT``, ``CALENDAR_MAX_CONCURRENCY``,
        ``CALENDAR_HTTP_MAX_ATTEMPTS``, ``CALENDAR_HTTP_TIMEOUT``,
        ``CALENDAR_MAX_RESPONSE_BYTES`` and ``CALENDAR_PROXY_FILE``; unset or blank means
        the default. Raises :class:`SettingError` naming the variable and the value.
        """
        default = cls()
        proxy_file_text = env("CALENDAR_PROXY_FILE", "", environ).strip()
        proxy_file = Path(proxy_file_text).expanduser() if proxy_file_text else None
        if proxy_file is not None:
            try:
                load_proxy_file(proxy_file)
            except ValueError as exc:
                raise SettingError("CALENDAR_PROXY_FILE", proxy_file_text, str(exc)) from None
        return cls(
            rate_limit=parse_positive_float(
                env("CALENDAR_RATE_LIMIT", str(default.rate_limit), environ),
                "CALENDAR_RATE_LIMIT",
            ),
            max_concurrency=parse_positive_int(
                env("CALENDAR_MAX_CONCURRENCY", str(default.max_concurrency), environ),
                "CALENDAR_MAX_CONCURRENCY",
            ),
            max_attempts=parse_positive_int(
                env("CALENDAR_HTTP_MAX_ATTEMPTS", str(default.max_attempts), environ),
                "CALENDAR_HTTP_MAX_ATTEMPTS",
            ),
            timeout=parse_positive_float(
                env("CALENDAR_HTTP_TIMEOUT", str(default.timeout), environ),
                "CALENDAR_HTTP_TIMEOUT",
            ),
            max_response_bytes=parse_positive_int(
                env("CALENDAR_MAX_RESPONSE_BYTES", str(default.max_response_bytes), environ),
                "CALENDAR_MAX_RESPONSE_BYTES",
            ),
            proxy_file=proxy_file,
        )


def parse_positive_float(value: str | float, name: str) -> float:
    """``"2.5"`` -> ``2.5``; raises :class:`SettingError` unless a finite number > 0."""
    try:
        number = float(str(value).strip())
    except ValueError:
        raise SettingError(name, value, "expected a positive number") from None
    if not math.isfinite(number) or number <= 0:
        raise SettingError(name, value, "expected a positive number")
    return number


def load_proxy_file(path: Path) -> tuple[str, ...]:
    """The proxy URLs of ``path``: one a line, blank lines and ``#`` comments skipped.

    Raises ValueError naming the line (never its credentials) when a line is not a
    proxy URL this installation can use.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ValueError(f"cannot read the proxy file ({reason})") from None
    proxies: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            url = httpx.URL(line)
        except httpx.InvalidURL:
            raise ValueError(f"line {number}: not a URL ({redact(line)!r})") from None
        if url.scheme not in PROXY_SCHEMES or not url.host:
            raise ValueError(
                f"line {number}: {redact(line)!r} is not a proxy URL "
                f"(expected {', '.join(PROXY_SCHEMES)}://[user:password@]host:port)"
            )
        if url.scheme.startswith("socks"):
            try:
                import socksio  # noqa: F401 - httpx needs it for SOCKS proxies
            except ImportError:
                raise ValueError(
                    f"line {number}: SOCKS proxies need the 'socksio' package "
                    "(pip install 'httpx[socks]')"
                ) from None
        proxies.append(line)
    if not proxies:
        raise ValueError("the proxy file lists no proxy")
    return tuple(proxies)


# --- redaction ------------------------------------------------------------------------------

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


def _proxy_secrets(proxy: str) -> set[str]:
    """The password (and whole ``user:password``) of a proxy URL, raw and percent-decoded.
    (User names alone are not replaced in free text: the ``user:pass@`` pattern of
    :func:`redact` already hides them inside URLs.)"""
    match = re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://([^/@]+)@", proxy)
    if not match:
        return set()
    userinfo = match.group(1)
    found = {userinfo, userinfo.partition(":")[2], httpx.URL(proxy).password}
    return {s for s in found if s}


# --- errors ---------------------------------------------------------------------------------


class HttpFetchError(Exception):
    """A request that failed for good. ``str()`` names the (redacted) URL and the cause."""

    retryable = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.attempts = 1

    def __str__(self) -> str:
        if self.attempts > 1:
            return f"{self.message} (after {self.attempts} attempts)"
        return self.message


class HttpStatusError(HttpFetchError):
    """The server answered with an error status (or a 304 we cannot use)."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        retryable: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status
        self.retryable = retryable


class HttpTransportError(HttpFetchError):
    """No usable answer: connection refused or reset, protocol error, body cut short."""

    retryable = True


class HttpTimeout(HttpTransportError):
    """The answer did not arrive (completely) in time."""


class ResponseTooLarge(HttpFetchError):
    """The body passed the size cap; the download was abandoned."""


class InvalidResponse(HttpFetchError):
    """The server answered 2xx, but not with what the adapter can use (HTML instead of
    JSON, malformed JSON, the wrong shape, not UTF-8, a broken calendar…)."""


def is_retryable_status(status: int) -> bool:
    """408, 429 and 5xx are worth another attempt; other statuses are final."""
    return status in (408, 429) or 500 <= status <= 599


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


def describe_exception(exc: BaseException) -> str:
    """A one-line cause: pydantic errors as ``field: problem``, others as their text."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
            for error in exc.errors()[:5]
        )
    text = str(exc).strip()
    return text or type(exc).__name__


# --- responses and statistics ---------------------------------------------------------------


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
        return _shorten(" ".join(words.split()), 80)

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


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class HttpStats:
    """Running totals of one :class:`HttpClient` (snapshots; subtract two for a delta)."""

    done: int = 0  # entities fetched successfully
    failed: int = 0  # entities that ended as an error
    requests: int = 0  # HTTP attempts sent (retries included)
    retried: int = 0  # attempts that were retries
    not_modified: int = 0  # 304 answers (body reused from the cache)
    bytes: int = 0  # response body bytes received over the wire

    def __sub__(self, other: HttpStats) -> HttpStats:
        mine, theirs = self.as_dict(), other.as_dict()
        return HttpStats(**{name: mine[name] - theirs[name] for name in mine})

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"{self.done} done, {self.failed} failed, {self.requests} requests, "
            f"{self.retried} retried, {self.not_modified} not modified (304), "
            f"{_human_bytes(self.bytes)}"
        )


def _human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"  # pragma: no cover


@dataclass(frozen=True)
class BatchProgress:
    """What :attr:`HttpClient.on_progress` receives every N entities and at the end."""

    source: str
    entities_done: int  # answered so far in this batch (ok or failed)
    entities_total: int
    stats: HttpStats  # the client's running totals
    final: bool


ProgressCallback = Callable[[BatchProgress], None]
Outcome = tuple[Entity, list[Event] | Exception]
FetchOne = Callable[["HttpSession", Entity], Awaitable[list[Event]]]


# --- the client -----------------------------------------------------------------------------


class HttpClient:
    """Shared, thread-safe configuration, cache, secrets and statistics.

    One client is shared by every HTTP adapter of a run so the statistics add up. Each
    batch opens an :class:`HttpSession` (the httpx clients, limiters and semaphores of
    one event loop) through :meth:`run` / :meth:`run_batch`.
    """

    def __init__(
        self,
        config: HttpConfig | None = None,
        cache: HttpCache | None = None,
        *,
        secrets: Iterable[str] = (),
        user_agent: str = USER_AGENT,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.config = config or HttpConfig()
        self.cache = cache
        self.user_agent = user_agent
        self.on_progress = on_progress
        self.proxies: tuple[str, ...] = (
            load_proxy_file(self.config.proxy_file) if self.config.proxy_file else ()
        )
        self._secrets: set[str] = set()
        for proxy in self.proxies:
            for secret in _proxy_secrets(proxy):
                self.add_secret(secret)
        for secret in secrets:
            self.add_secret(secret)
        self._lock = threading.Lock()
        self._stats = HttpStats()

    # statistics

    @property
    def stats(self) -> HttpStats:
        """A snapshot of the running totals."""
        with self._lock:
            return self._stats

    def _count(self, **increments: int) -> HttpStats:
        """Add ``increments`` to the totals atomically; returns the new totals."""
        with self._lock:
            current = self._stats.as_dict()
            self._stats = HttpStats(**{k: v + increments.get(k, 0) for k, v in current.items()})
            return self._stats

    # secrets

    def add_secret(self, secret: str | None) -> None:
        """Never show ``secret`` in a message or a log line of this client."""
        if secret and secret.strip():
            self._secrets.add(secret.strip())
            _LOG_FILTER.secrets.add(secret.strip())

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    # running async work from synchronous code

    def run(self, work: Callable[[HttpSession], Awaitable[T]]) -> T:
        """Run ``work(session)`` to completion in a fresh event loop and return its result.

        Works from any thread; from a thread whose event loop is already running (a
        notebook, an async caller) the loop is started in a helper thread instead.
        """

        async def main() -> T:
            async with HttpSession(self) as session:
                return await work(session)

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(main())
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, main()).result()

    def run_batch(
        self,
        source: str,
        entities: Sequence[Entity],
        fetch_one: FetchOne,
    ) -> list[Outcome]:
        """``fetch_one`` for every entity concurrently (politeness is the session's job).

        Returns ``(entity, events | exception)`` for every entity, in input order; one
        failing entity never affects the others. Progress is logged (and sent to
        :attr:`on_progress`) every ``progress_every`` entities and at the end.
        """
        total = len(entities)
        answered = 0

        async def one(session: HttpSession, entity: Entity) -> list[Event] | Exception:
            nonlocal answered
            try:
                outcome: list[Event] | Exception = await fetch_one(session, entity)
            except Exception as exc:  # one entity never fails the batch
                outcome = self._scrubbed(exc)
            failed = isinstance(outcome, Exception)
            stats = self._count(failed=1) if failed else self._count(done=1)
            answered += 1
            if answered % self.config.progress_every == 0 and answered < total:
                self._report(BatchProgress(source, answered, total, stats, final=False))
            return outcome

        async def work(session: HttpSession) -> list[list[Event] | Exception]:
            return list(await asyncio.gather(*(one(session, entity) for entity in entities)))

        outcomes = self.run(work) if entities else []
        self._report(BatchProgress(source, total, total, self.stats, final=True))
        return list(zip(entities, outcomes, strict=True))

    def _scrubbed(self, exc: Exception) -> Exception:
        """``exc`` itself when its text holds no secret, else a redacted copy."""
        text = str(exc)
        clean = self.redact(text)
        if clean == text:
            return exc
        replacement = HttpFetchError(clean)
        replacement.__cause__ = None
        return replacement

    def _report(self, progress: BatchProgress) -> None:
        stats = progress.stats
        log.info(
            "%s: %d/%d entities%s; totals: %s",
            progress.source,
            progress.entities_done,
            progress.entities_total,
            " (batch finished)" if progress.final else "",
            stats.summary(),
        )
        if self.on_progress is not None:
            self.on_progress(progress)


class _RetryAfterOrBackoff(wait_base):
    """Full-jitter exponential backoff, but never less than the server's Retry-After."""

    def __init__(self, backoff: wait_base) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = self.backoff(retry_state)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, HttpFetchError) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        return wait


class HttpSession:
    """The event-loop-bound half of the client: httpx clients, limiters, semaphores."""

    def __init__(self, client: HttpClient) -> None:
        self.client = client
        self.config = client.config
        config = client.config
        timeout = httpx.Timeout(config.timeout)
        common: dict[str, Any] = {
            "timeout": timeout,
            "follow_redirects": True,
            "headers": {"User-Agent": client.user_agent},
            "limits": httpx.Limits(max_connections=None, max_keepalive_connections=20),
        }
        if client.proxies:
            self._clients = [httpx.AsyncClient(proxy=proxy, **common) for proxy in client.proxies]
        else:
            self._clients = [httpx.AsyncClient(**common)]
        self._rotation: Iterator[httpx.AsyncClient] = itertools.cycle(self._clients)
        self._limiters: dict[str, AsyncLimiter] = {}
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    async def __aenter__(self) -> HttpSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.gather(*(http.aclose() for http in self._clients))

    def _politeness(self, url: httpx.URL) -> tuple[asyncio.Semaphore, AsyncLimiter]:
        host = f"{url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
        if host not in self._limiters:
            # capacity 1, one token every 1/rate seconds (plus a little slack): evenly
            # spaced, never a burst, so no one-second window at the server ever holds
            # more than ``rate_limit`` requests even when the network jitters
            spacing = SPACING_SLACK / self.config.rate_limit
            self._limiters[host] = AsyncLimiter(1, spacing)
            self._semaphores[host] = asyncio.Semaphore(self.config.max_concurrency)
        return self._semaphores[host], self._limiters[host]

    async def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        conditional: bool = True,
        max_attempts: int | None = None,
    ) -> HttpResponse:
        """GET ``url`` politely, with retries; a 304 answers the cached body.

        Raises :class:`HttpFetchError` (its subclasses) naming the redacted URL.
        """
        display_url = self.client.redact(url)
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise HttpFetchError(f"GET {display_url}: invalid URL ({exc})") from None
        if parsed.scheme not in ("http", "https"):
            raise HttpFetchError(f"GET {display_url}: only http and https URLs can be fetched")
        cached = await self._cached(url, display_url) if conditional else None
        request_headers = dict(headers or {})
        if cached is not None:
            if cached.etag:
                request_headers["If-None-Match"] = cached.etag
            if cached.last_modified:
                request_headers["If-Modified-Since"] = cached.last_modified

        retrying = AsyncRetrying(
            stop=stop_after_attempt(max_attempts or self.config.max_attempts),
            wait=_RetryAfterOrBackoff(
                wait_random_exponential(
                    multiplier=self.config.backoff_base, max=self.config.backoff_max
                )
            ),
            retry=retry_if_exception(lambda exc: getattr(exc, "retryable", False)),
            before_sleep=lambda state: self._before_retry(display_url, state),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    status, response_headers, body, charset = await self._attempt(
                        parsed, display_url, request_headers
                    )
        except HttpFetchError as exc:
            exc.attempts = retrying.statistics.get("attempt_number", 1)
            raise

        if status == 304:
            if cached is None:
                raise HttpStatusError(
                    f"GET {display_url}: 304 Not Modified, but nothing is cached for it",
                    status=304,
                    retryable=False,
                )
            self.client._count(not_modified=1)
            return HttpResponse(
                url, display_url, 304, response_headers, cached.body, from_cache=True
            )
        return HttpResponse(url, display_url, status, response_headers, body, charset=charset)

    def _before_retry(self, display_url: str, state: RetryCallState) -> None:
        self.client._count(retried=1)
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.debug(
            "retrying GET %s in %.2f s (attempt %d failed: %s)",
            display_url,
            wait,
            state.attempt_number,
            self.client.redact(str(exc)),
        )

    async def _attempt(
        self, url: httpx.URL, display_url: str, headers: Mapping[str, str]
    ) -> tuple[int, httpx.Headers, bytes, str | None]:
        """One request: wait for a slot and a token, then read the answer in time."""
        semaphore, limiter = self._politeness(url)
        cap = self.config.max_response_bytes
        async with semaphore:
            await limiter.acquire()
            http = next(self._rotation)
            self.client._count(requests=1)
            downloaded = 0
            try:
                async with asyncio.timeout(self.config.timeout):
                    async with http.stream("GET", url, headers=headers) as response:
                        try:
                            return await self._read(response, display_url, cap)
                        finally:
                            downloaded = response.num_bytes_downloaded
            except TimeoutError:
                raise HttpTimeout(
                    f"GET {display_url}: no complete answer within {self.config.timeout:g} s"
                ) from None
            except httpx.TimeoutException as exc:
                raise HttpTimeout(
                    f"GET {display_url}: timed out ({type(exc).__name__}) "
                    f"after {self.config.timeout:g} s"
                ) from None
            except httpx.UnsupportedProtocol as exc:
                raise HttpFetchError(f"GET {display_url}: {self.client.redact(str(exc))}") from None
            except httpx.TransportError as exc:
                cause = self.client.redact(describe_exception(exc))
                raise HttpTransportError(
                    f"GET {display_url}: {type(exc).__name__}: {cause}"
                ) from None
            except httpx.HTTPError as exc:  # too many redirects, decoding errors…
                cause = self.client.redact(describe_exception(exc))
                raise HttpFetchError(f"GET {display_url}: {type(exc).__name__}: {cause}") from None
            finally:
                self.client._count(bytes=downloaded)

    async def _read(
        self, response: httpx.Response, display_url: str, cap: int
    ) -> tuple[int, httpx.Headers, bytes, str | None]:
        status = response.status_code
        if status == 304:
            return status, response.headers, b"", None
        if not 200 <= status < 300:
            snippet = await _read_prefix(response, 2048)
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            retryable = is_retryable_status(status)
            message = f"GET {display_url}: HTTP {status} {response.reason_phrase}".rstrip()
            detail = _shorten(" ".join(_error_text(snippet).split()), 120)
            if detail:
                message += f": {self.client.redact(detail)!r}"
            if retryable and retry_after is not None and retry_after > self.config.max_retry_after:
                retryable = False
                message += (
                    f" (the server asks to retry after {retry_after:.0f} s, longer than the "
                    f"{self.config.max_retry_after:g} s we wait)"
                )
            raise HttpStatusError(
                message, status=status, retryable=retryable, retry_after=retry_after
            )
        declared = response.headers.get("content-length", "")
        if (
            declared.isdigit()
            and int(declared) > cap
            and not response.headers.get("content-encoding")
        ):
            raise ResponseTooLarge(
                f"GET {display_url}: body of {int(declared):,} bytes is larger than the "
                f"{cap:,}-byte cap (CALENDAR_MAX_RESPONSE_BYTES)"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > cap:
                raise ResponseTooLarge(
                    f"GET {display_url}: body passed the {cap:,}-byte cap "
                    "(CALENDAR_MAX_RESPONSE_BYTES); download abandoned"
                )
            chunks.append(chunk)
        return status, response.headers, b"".join(chunks), response.charset_encoding

    async def fetch(
        self,
        url: str,
        parse: Callable[[HttpResponse], T],
        *,
        headers: Mapping[str, str] | None = None,
        in_thread: bool = False,
        max_attempts: int | None = None,
    ) -> tuple[T, HttpResponse]:
        """GET ``url`` and ``parse`` the answer; store it for conditional GET only once
        ``parse`` accepted it. Any parse failure becomes :class:`InvalidResponse`
        naming the URL. ``in_thread`` runs ``parse`` off the event loop (CPU-heavy work).
        """
        response = await self.get(url, headers=headers, max_attempts=max_attempts)
        try:
            value = await self._parse(response, parse, in_thread)
        except InvalidResponse:
            if not response.from_cache:
                raise
            # The stored copy no longer parses (the adapter got stricter, the row is
            # damaged): fetch a fresh one instead of failing on every run from now on.
            response = await self.get(
                url, headers=headers, conditional=False, max_attempts=max_attempts
            )
            value = await self._parse(response, parse, in_thread)
        if response.status == 200 and (response.etag or response.last_modified):
            await self._store(response)
        return value, response

    async def _parse(
        self, response: HttpResponse, parse: Callable[[HttpResponse], T], in_thread: bool
    ) -> T:
        try:
            return await asyncio.to_thread(parse, response) if in_thread else parse(response)
        except HttpFetchError:
            raise
        except Exception as exc:
            cause = self.client.redact(describe_exception(exc))
            raise response.invalid(cause) from exc

    async def _cached(self, url: str, display_url: str) -> CachedResponse | None:
        """The stored answer for ``url``; a cache that fails only costs the saving."""
        cache = self.client.cache
        if cache is None:
            return None
        try:
            return await asyncio.to_thread(cache.get, url)
        except Exception as exc:
            log.warning("HTTP cache read failed for %s: %s", display_url, type(exc).__name__)
            return None

    async def _store(self, response: HttpResponse) -> None:
        cache = self.client.cache
        if cache is None:
            return
        try:
            await asyncio.to_thread(
                cache.put,
                response.url,
                etag=response.etag,
                last_modified=response.last_modified,
                body=response.body,
            )
        except Exception as exc:
            log.warning(
                "HTTP cache write failed for %s: %s", response.display_url, type(exc).__name__
            )


def _error_text(raw: bytes) -> str:
    """Bytes of an error body as text for a message (undecodable bytes replaced)."""
    return raw.decode("utf-8", errors="replace")


async def _read_prefix(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` bytes of an (error) body, without reading the rest."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except httpx.HTTPError:
        pass  # the status is the message; a broken error body adds nothing
    return b"".join(chunks)[:limit]


# --- what HTTP adapters share ---------------------------------------------------------------


class HttpSource:
    """Base of the HTTP adapters: ``fetch`` is ``fetch_many`` of one entity."""

    name = "http"

    def __init__(self, client: HttpClient) -> None:
        self.client = client
        self._answered: dict[str, bool] = {}  # entity_id -> the upstream had data for it

    def has_data(self, entity: Entity, window: Window) -> bool:
        """Whether the last fetch of ``entity`` got real data from the upstream (a quiet
        calendar, not a gap): lets ``collect`` tell "no event in the window" from
        "nothing known". What counts as data is each adapter's call."""
        return self._answered.get(entity.entity_id, False)

    def fetch_many(self, entities: Sequence[Entity], window: Window) -> Iterator[Outcome]:
        raise NotImplementedError

    def fetch(self, entity: Entity, window: Window) -> list[Event]:
        """Every event of ``entity`` in ``window``; raises what failed it."""
        [(_, outcome)] = list(self.fetch_many([entity], window))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
