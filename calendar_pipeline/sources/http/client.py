"""The client every HTTP adapter of a run shares: configuration, cache, secrets and
statistics, and running the adapters' async work from their synchronous code.

Adapters are synchronous (``collect_events`` calls them from plain code): they describe
their work as coroutines and :meth:`HttpClient.run_batch` runs it with ``asyncio.run``
(in a helper thread when the calling thread already runs an event loop), with progress
logged every ``progress_every`` entities and at the end. :attr:`HttpClient.stats`
holds the running totals (entities done/failed, requests, retries, 304s, bytes).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from calendar_pipeline.sources.http.config import USER_AGENT, HttpConfig, load_proxy_file
from calendar_pipeline.sources.http.errors import HttpFetchError
from calendar_pipeline.sources.http.redaction import hide_from_logs, proxy_secrets, redact
from calendar_pipeline.sources.http.session import HttpSession
from calendar_pipeline.sources.http.stats import BatchProgress, HttpStats, ProgressCallback
from calendar_pipeline.sources.http_cache import HttpCache
from calendar_pipeline.sources.model import Entity, Event

log = logging.getLogger(__package__)  # the package's logger, as before the split
T = TypeVar("T")

Outcome = tuple[Entity, list[Event] | Exception]
FetchOne = Callable[["HttpSession", Entity], Awaitable[list[Event]]]


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
            for secret in proxy_secrets(proxy):
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

    def count(self, **increments: int) -> HttpStats:
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
            hide_from_logs(secret.strip())

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
            stats = self.count(failed=1) if failed else self.count(done=1)
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
