"""One batch's requests: politeness, retries, timeouts, the size cap, conditional GET
and proxies, in the :class:`HttpSession` bound to the batch's event loop.

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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import functools
import itertools
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx
from aiolimiter import AsyncLimiter
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from calendar_pipeline.retry_policy import parse_retry_after
from calendar_pipeline.sources.http.errors import (
    HttpFetchError,
    HttpStatusError,
    HttpTimeout,
    HttpTransportError,
    InvalidResponse,
    ResponseTooLarge,
    describe_exception,
    is_retryable_status,
)
from calendar_pipeline.sources.http.response import HttpResponse, shorten
from calendar_pipeline.sources.http_cache import CachedResponse

if TYPE_CHECKING:
    from calendar_pipeline.sources.http.client import HttpClient

log = logging.getLogger(__package__)  # the package's logger, as before the split
T = TypeVar("T")

SPACING_SLACK = 1.02  # requests are spaced 2% wider than 1/rate: room for network jitter
SPILL_BYTES = 1024 * 1024  # a body larger than this waits for the parser on disk


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


@dataclass
class _Answer:
    """A response on its way to the parser (see :meth:`HttpSession.fetch`)."""

    response: HttpResponse


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
        # ``in_thread`` parses run one at a time, always on the same thread. Parsing is
        # pure Python, so threads never ran two at once anyway (the GIL), but each held
        # its whole parse tree (an icalendar tree costs ~50x its feed) until done, and
        # the peak grew with every feed parsed alongside; and each thread of the default
        # pool has its own malloc arena, which keeps what a parse freed for that thread
        # alone. One thread, one at a time: the peak is that of the largest feed.
        self._parse_slot = asyncio.Semaphore(1)
        self._parse_thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="calendar-parse"
        )

    async def __aenter__(self) -> HttpSession:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await asyncio.gather(*(http.aclose() for http in self._clients))
        finally:
            self._parse_thread.shutdown(wait=False)

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
            self.client.count(not_modified=1)
            return HttpResponse(
                url, display_url, 304, response_headers, cached.body, from_cache=True
            )
        return HttpResponse(url, display_url, status, response_headers, body, charset=charset)

    def _before_retry(self, display_url: str, state: RetryCallState) -> None:
        self.client.count(retried=1)
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
            self.client.count(requests=1)
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
                self.client.count(bytes=downloaded)

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
            detail = shorten(" ".join(_error_text(snippet).split()), 120)
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
        naming the URL. ``in_thread`` runs ``parse`` off the event loop (CPU-heavy work),
        one such parse at a time per session (downloads go on meanwhile), so memory is
        bounded by the largest answer's parse, not by the number parsed together.
        """
        # held in a box, not a local: a large body waiting for the parser can then wait
        # on disk (_parse_turn), with no reference left to keep it in memory
        answer = _Answer(await self.get(url, headers=headers, max_attempts=max_attempts))
        try:
            value = await self._parse(answer, parse, in_thread)
        except InvalidResponse:
            if not answer.response.from_cache:
                raise
            # The stored copy no longer parses (the adapter got stricter, the row is
            # damaged): fetch a fresh one instead of failing on every run from now on.
            answer = _Answer(
                await self.get(url, headers=headers, conditional=False, max_attempts=max_attempts)
            )
            value = await self._parse(answer, parse, in_thread)
        response = answer.response
        if response.status == 200 and (response.etag or response.last_modified):
            await self._store(response)
        return value, response

    async def _parse(
        self, answer: _Answer, parse: Callable[[HttpResponse], T], in_thread: bool
    ) -> T:
        try:
            if not in_thread:
                return parse(answer.response)
            async with self._parse_turn(answer):
                call = functools.partial(contextvars.copy_context().run, parse, answer.response)
                return await asyncio.get_running_loop().run_in_executor(self._parse_thread, call)
        except HttpFetchError:
            raise
        except Exception as exc:
            cause = self.client.redact(describe_exception(exc))
            raise answer.response.invalid(cause) from exc

    @contextlib.asynccontextmanager
    async def _parse_turn(self, answer: _Answer) -> AsyncIterator[None]:
        """Hold the parse slot; while another answer is being parsed, a body over
        SPILL_BYTES waits in a temporary file (so the bodies downloaded meanwhile do not
        add up in memory either), and is read back once the slot is ours."""
        spill = None
        if self._parse_slot.locked() and len(answer.response.body) > SPILL_BYTES:
            spill = await self._spill(answer)
        try:
            async with self._parse_slot:
                if spill is not None:
                    spill.seek(0)
                    body = await asyncio.to_thread(spill.read)
                    answer.response = dataclasses.replace(answer.response, body=body)
                    del body
                yield
        finally:
            if spill is not None:
                spill.close()

    async def _spill(self, answer: _Answer) -> IO[bytes] | None:
        """Move ``answer``'s body to a temporary file; None (the body stays) when the
        file cannot be written."""
        spill = None
        try:
            spill = tempfile.TemporaryFile(prefix="calendar-body-")  # noqa: SIM115 - _parse_turn closes it
            await asyncio.to_thread(spill.write, answer.response.body)
        except OSError as exc:  # no room on disk: wait in memory instead
            log.debug("body of %s waits in memory: %s", answer.response.display_url, exc)
            if spill is not None:
                spill.close()
            return None
        answer.response = dataclasses.replace(answer.response, body=b"")
        return spill

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
