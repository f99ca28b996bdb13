"""A fake-but-real upstream for tests and benchmarks: threaded HTTP/1.1 on 127.0.0.1.

It serves routes (static replies or handler functions), answers conditional GETs
(``ETag`` / ``Last-Modified`` -> 304) the way real servers do, records every request
(arrival time, headers, status, bytes sent) and the peak number in flight, and plays
scripted faults::

    with UpstreamServer(latency=0.05) as server:
        server.route("/feed.ics", Reply(body=ics_bytes, content_type="text/calendar"))
        server.fail_next(Fault.status(429, retry_after="1"))
        server.fail_next(Fault.reset_mid_body(), path="/feed.ics")
        ... fetch server.url + "/feed.ics" ...
        assert [r.status for r in server.requests] == [429, 200, ...]

Faults: an error status (with ``Retry-After``), a connection reset half-way through the
body, a slow drip, a delay, a connection closed without an answer, or any other reply
(an HTML page with 200, malformed JSON, non-UTF-8 bytes, a huge body). ``chaos()``
injects faults at a rate with a seed, for tests that must not know which entity fails.

Also here: :class:`FakeProxy` (an HTTP forward proxy with Basic credentials, recording
what it forwards) and fake Nager.Date and Finnhub APIs (:func:`nager_api`,
:func:`finnhub_api`) that tests and ``bench/bench_http.py`` mount as routes.

Fixtures (``upstream``, ``upstream_factory``) are defined at the end; a test module
imports them explicitly. (PYTEST_DONT_REWRITE: no asserts here.)
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import email.utils
import hashlib
import http.client
import json
import random
import re
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from calendar_pipeline.sources.http_cache import CachedResponse
from calendar_pipeline_tests.loopback import LoopbackServer


@dataclass(frozen=True)
class Reply:
    """An answer. ``etag=True`` derives a strong ETag from the body (``False``: none)."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)
    etag: bool | str = True
    last_modified: str | None = None

    @classmethod
    def json(cls, payload: Any, **kwargs: Any) -> Reply:
        return cls(body=json.dumps(payload).encode("utf-8"), **kwargs)

    @property
    def etag_value(self) -> str | None:
        if isinstance(self.etag, str):
            return self.etag
        if self.etag and self.status == 200:
            return '"' + hashlib.sha256(self.body).hexdigest()[:20] + '"'
        return None


@dataclass(frozen=True)
class Fault:
    """A scripted misbehaviour (build one with the class methods)."""

    kind: str  # status | reset | drip | delay | close | reply
    status: int = 200
    retry_after: str | None = None
    seconds: float = 0.0
    reply: Reply | None = None

    @classmethod
    def status_code(cls, status: int, retry_after: str | None = None) -> Fault:
        """An error status with a small HTML body (and ``Retry-After`` when given)."""
        return cls("status", status=status, retry_after=retry_after)

    @classmethod
    def reset_mid_body(cls) -> Fault:
        """Headers and half the body, then a TCP reset."""
        return cls("reset")

    @classmethod
    def drip(cls, seconds_per_byte: float) -> Fault:
        """The real answer, one byte every ``seconds_per_byte`` seconds."""
        return cls("drip", seconds=seconds_per_byte)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """The real answer, after ``seconds``."""
        return cls("delay", seconds=seconds)

    @classmethod
    def close(cls) -> Fault:
        """Close the connection without answering."""
        return cls("close")

    @classmethod
    def instead(cls, reply: Reply) -> Fault:
        """Answer ``reply`` instead of the real thing (HTML with 200, broken JSON...)."""
        return cls("reply", reply=reply)


@dataclass(frozen=True)
class Request:
    """What a route handler sees."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it, and how it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    arrived_at: float  # time.monotonic() when the request line was read
    status: int  # 0 when the connection was closed without an answer
    bytes_sent: int  # status line + headers + body actually written
    fault: str | None

    def header(self, name: str) -> str | None:
        return Request(self.method, self.path, self.query, self.headers).header(name)


Handler = Callable[[Request], Reply]


class UpstreamServer(LoopbackServer):
    """A threaded HTTP/1.1 server at :attr:`url` with routes, faults and a request log."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency  # seconds before each answer
        self._routes: dict[str, Reply | Handler] = {}
        self._prefix_routes: list[tuple[str, Handler]] = []
        self._faults: deque[tuple[str | None, Fault]] = deque()
        self._chaos: tuple[float, list[Fault], random.Random] | None = None
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self.max_in_flight = 0
        self._listen(_make_handler(self))

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    # scripting

    def route(self, path: str, answer: Reply | Handler) -> None:
        """Serve ``path`` (exact, without query) with a fixed reply or a handler."""
        self._routes[path] = answer

    def route_prefix(self, prefix: str, handler: Handler) -> None:
        """Serve every path starting with ``prefix`` with ``handler``."""
        self._prefix_routes.append((prefix, handler))

    def fail_next(self, fault: Fault, *, times: int = 1, path: str | None = None) -> None:
        """Play ``fault`` for the next ``times`` requests (to ``path``, or to any)."""
        with self._lock:
            self._faults.extend((path, fault) for _ in range(times))

    def chaos(self, rate: float, faults: list[Fault], seed: int = 0) -> None:
        """From now on, each request meets one of ``faults`` with probability ``rate``."""
        self._chaos = (rate, faults, random.Random(seed))

    def calm(self) -> None:
        self._chaos = None

    def reset_log(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=2.0)
            self._requests.clear()
            self.max_in_flight = 0

    # what tests look at

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request so far, in arrival order. A client can hold its answer before
        the handler thread has logged it: wait (briefly) for the handlers to finish."""
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout=2.0)
            return sorted(self._requests, key=lambda r: r.arrived_at)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    @property
    def bytes_sent(self) -> int:
        return sum(r.bytes_sent for r in self.requests)

    # handling (called from handler threads)

    def _next_fault(self, path: str) -> Fault | None:
        with self._lock:
            for index, (wanted, fault) in enumerate(self._faults):
                if wanted in (None, path):
                    del self._faults[index]
                    return fault
            if self._chaos is not None:
                rate, faults, rng = self._chaos
                if rng.random() < rate:
                    return rng.choice(faults)
        return None

    def _answer(self, request: Request) -> Reply:
        try:
            return self._route(request)
        except Exception as exc:  # a broken handler is a 500, like a real server
            body = f"<html><title>500 {type(exc).__name__}</title></html>".encode()
            return Reply(500, body, "text/html", etag=False)

    def _route(self, request: Request) -> Reply:
        answer = self._routes.get(request.path)
        if answer is None:
            for prefix, handler in self._prefix_routes:
                if request.path.startswith(prefix):
                    answer = handler
                    break
        if answer is None:
            return Reply(404, b'{"error": "not found"}', etag=False)
        return answer(request) if callable(answer) else answer

    def _enter(self) -> None:
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self, record: RecordedRequest) -> None:
        with self._idle:
            self._in_flight -= 1
            self._requests.append(record)
            self._idle.notify_all()


def _not_modified(request: Request, reply: Reply) -> bool:
    if reply.status != 200:
        return False
    etag = reply.etag_value
    if_none_match = request.header("If-None-Match")
    if etag and if_none_match:
        return etag in [tag.strip() for tag in if_none_match.split(",")] or if_none_match == "*"
    since = request.header("If-Modified-Since")
    if reply.last_modified and since:
        try:
            return email.utils.parsedate_to_datetime(
                reply.last_modified
            ) <= email.utils.parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
    return False


class _CountingWriter:
    """Wraps the handler's ``wfile`` to count the bytes written."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.count = 0

    def write(self, data: bytes) -> int:
        written = self.raw.write(data)
        self.count += len(data)
        return written

    def flush(self) -> None:
        self.raw.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def _make_handler(server: UpstreamServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # headers and body go out in separate writes: without this, Nagle's algorithm
            # and the client's delayed ACK add ~40 ms to every answer
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.wfile = _CountingWriter(self.wfile)

        def handle(self) -> None:
            # a client that gives up (its timeout, a size cap) resets the connection
            with contextlib.suppress(ConnectionError, OSError):
                super().handle()

        def do_GET(self) -> None:
            arrived = time.monotonic()
            parts = urlsplit(self.path)
            request = Request(
                "GET", parts.path, dict(parse_qsl(parts.query)), dict(self.headers.items())
            )
            server._enter()
            self.wfile.count = 0
            status, fault = 0, None
            try:
                status, fault = self._serve(request)
            finally:
                server._leave(
                    RecordedRequest(
                        request.method,
                        request.path,
                        request.query,
                        request.headers,
                        arrived,
                        status,
                        self.wfile.count,
                        fault,
                    )
                )

        def _serve(self, request: Request) -> tuple[int, str | None]:
            fault = server._next_fault(request.path)
            if server.latency:
                time.sleep(server.latency)
            if fault is not None and fault.kind == "delay":
                time.sleep(fault.seconds)
            if fault is not None and fault.kind == "close":
                self._abort()
                return 0, fault.kind
            if fault is not None and fault.kind == "status":
                page = (
                    f"<html><head><title>{fault.status} Upstream trouble</title></head>"
                    f"<body><h1>{fault.status}</h1></body></html>"
                ).encode()
                extra = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                reply = Reply(fault.status, page, "text/html", extra, etag=False)
                self._send(reply)
                return reply.status, fault.kind
            reply = fault.reply if fault is not None and fault.reply else server._answer(request)
            if _not_modified(request, reply):
                headers = {"ETag": reply.etag_value} if reply.etag_value else {}
                if reply.last_modified:
                    headers["Last-Modified"] = reply.last_modified
                self._send(Reply(304, b"", None, headers, etag=False), body=False)
                return 304, fault.kind if fault else None
            if fault is not None and fault.kind == "reset":
                self._send_headers(reply)
                self._write(reply.body[: max(1, len(reply.body) // 2)])
                self._abort()
                return reply.status, fault.kind
            if fault is not None and fault.kind == "drip":
                self._send_headers(reply)
                for index in range(len(reply.body)):
                    if not self._write(reply.body[index : index + 1]):
                        break
                    time.sleep(fault.seconds)
                self.close_connection = True
                return reply.status, fault.kind
            self._send(reply)
            return reply.status, fault.kind if fault else None

        def _send_headers(self, reply: Reply) -> None:
            self.send_response(reply.status)
            if reply.content_type:
                self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            if reply.etag_value:
                self.send_header("ETag", reply.etag_value)
            if reply.last_modified:
                self.send_header("Last-Modified", reply.last_modified)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()

        def _send(self, reply: Reply, body: bool = True) -> None:
            try:
                if body:
                    self._send_headers(reply)
                else:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                self.wfile.write(reply.body if body else b"")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _write(self, data: bytes) -> bool:
            try:
                self.wfile.write(data)
                self.wfile.flush()
                return True
            except (BrokenPipeError, ConnectionResetError, OSError):
                self.close_connection = True
                return False

        def _abort(self) -> None:
            """Close with a TCP reset (SO_LINGER 0) instead of an orderly shutdown."""
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.wfile.flush()
            with contextlib.suppress(OSError):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()

        def finish(self) -> None:
            with contextlib.suppress(OSError):
                super().finish()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


# --- a forward proxy ------------------------------------------------------------------------


class FakeProxy(LoopbackServer):
    """An HTTP forward proxy for ``http://`` targets, with optional Basic credentials.

    ``forwarded`` lists the absolute URLs it relayed; a request with wrong or missing
    credentials gets ``407``.
    """

    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        self.username = username
        self.password = password
        self.forwarded: list[str] = []
        self.rejected = 0
        self._lock = threading.Lock()
        self._listen(_make_proxy_handler(self))

    @property
    def url(self) -> str:
        """The proxy URL, with the credentials when it has them."""
        if self.username is None:
            return f"http://{self.address}"
        return f"http://{self.username}:{self.password}@{self.address}"


def _make_proxy_handler(proxy: FakeProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle(self) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                super().handle()

        def do_GET(self) -> None:
            if proxy.username is not None:
                expected = base64.b64encode(f"{proxy.username}:{proxy.password}".encode()).decode()
                if self.headers.get("Proxy-Authorization") != f"Basic {expected}":
                    with proxy._lock:
                        proxy.rejected += 1
                    body = b"<html><title>407 Proxy Authentication Required</title></html>"
                    self.send_response(407)
                    self.send_header("Proxy-Authenticate", 'Basic realm="fake"')
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
            target = urlsplit(self.path)
            with proxy._lock:
                proxy.forwarded.append(self.path)
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("proxy-authorization", "proxy-connection", "connection")
            }
            conn = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
            try:
                path = target.path + (f"?{target.query}" if target.query else "")
                conn.request("GET", path, headers=headers)
                upstream = conn.getresponse()
                body = upstream.read()
                self.send_response(upstream.status)
                for name, value in upstream.getheaders():
                    if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            finally:
                conn.close()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


# --- fake APIs -----------------------------------------------------------------------------

_NAGER_PATH = re.compile(r"^/api/v3/PublicHolidays/(?P<year>\d{4})/(?P<country>[A-Za-z]{2})$")
NAGER_FIXED = [  # (month, day, local name, English name, types)
    (1, 1, "Neujahr", "New Year's Day", ["Public"]),
    (1, 6, "Heilige Drei Könige", "Epiphany", ["Public"]),
    (5, 1, "Tag der Arbeit", "Labour Day", ["Public"]),
    (8, 15, "Mariä Himmelfahrt", "Assumption Day", ["Public"]),
    (10, 3, "Tag der Deutschen Einheit", "German Unity Day", ["Public"]),
    (10, 31, "Reformationstag", "Reformation Day", ["Public"]),
    (11, 1, "Allerheiligen", "All Saints' Day", ["Public"]),
    (12, 24, "Heiliger Abend", "Christmas Eve", ["Bank", "Optional"]),
    (12, 25, "Erster Weihnachtstag", "Christmas Day", ["Public"]),
    (12, 26, "Zweiter Weihnachtstag", "St. Stephen's Day", ["Public"]),
    (12, 31, "Silvester", "New Year's Eve", ["Bank", "Optional"]),
]


def nager_holidays(year: int, country: str) -> list[dict[str, Any]]:
    """A realistic Nager.Date answer (Germany-like, with counties and types)."""
    records = []
    for month, day, local, name, types in NAGER_FIXED:
        counties = ["DE-BW", "DE-BY", "DE-ST"] if name in ("Epiphany", "All Saints' Day") else None
        records.append(
            {
                "date": dt.date(year, month, day).isoformat(),
                "localName": local,
                "name": name,
                "countryCode": country.upper(),
                "fixed": True,
                "global": counties is None,
                "counties": counties,
                "launchYear": None,
                "types": types,
            }
        )
    return records


def nager_api(
    countries: set[str] | None = None, last_modified: str | None = None
) -> Callable[[Request], Reply]:
    """A handler for ``/api/v3/PublicHolidays/{year}/{cc}``: 404 for unknown countries."""

    def handle(request: Request) -> Reply:
        match = _NAGER_PATH.match(request.path)
        if match is None:
            return Reply(404, b"", etag=False)
        country = match["country"].upper()
        if countries is not None and country not in countries:
            return Reply(404, b'{"title":"Not Found","status":404}', etag=False)
        payload = nager_holidays(int(match["year"]), country)
        return Reply.json(payload, last_modified=last_modified)

    return handle


def earnings_records(symbols: list[str], start: dt.date, days: int) -> list[dict[str, Any]]:
    """One upcoming earnings record per symbol, spread over ``days`` from ``start``."""
    records = []
    for index, symbol in enumerate(symbols):
        day = start + dt.timedelta(days=index % days)
        records.append(
            {
                "date": day.isoformat(),
                "epsActual": None,
                "epsEstimate": round(0.5 + index * 0.01, 4),
                "hour": ["bmo", "amc", "dmh", ""][index % 4],
                "quarter": 1 + (day.month - 1) // 3,
                "revenueActual": None,
                "revenueEstimate": 1_000_000_000 + index * 1_000,
                "symbol": symbol,
                "year": day.year,
            }
        )
    return records


def finnhub_api(records: list[dict[str, Any]], token: str) -> Callable[[Request], Reply]:
    """A handler for ``/api/v1/calendar/earnings``: checks ``X-Finnhub-Token``, filters by
    ``from``/``to`` and ``symbol`` like the real API."""

    def handle(request: Request) -> Reply:
        if request.header("X-Finnhub-Token") != token or "token" in request.query:
            return Reply(401, b'{"error":"Invalid API key"}', etag=False)
        try:
            start = dt.date.fromisoformat(request.query["from"])
            end = dt.date.fromisoformat(request.query["to"])
        except (KeyError, ValueError):
            return Reply(422, b'{"error":"Wrong date format"}', etag=False)
        symbol = request.query.get("symbol")

        def wanted(record: Any) -> bool:
            if not isinstance(record, dict):
                return symbol is None  # garbage passes through, like a buggy upstream
            try:
                inside = start <= dt.date.fromisoformat(record["date"]) <= end
            except (KeyError, TypeError, ValueError):
                inside = True
            return inside and symbol in (None, record.get("symbol"))

        return Reply.json({"earningsCalendar": [r for r in records if wanted(r)]})

    return handle


# --- test doubles -------------------------------------------------------------------------


class MemoryCache:
    """An in-memory ``HttpCache`` (the SQL one has its own tests)."""

    def __init__(self) -> None:
        self.entries: dict[str, CachedResponse] = {}

    def get(self, url: str) -> CachedResponse | None:
        return self.entries.get(url)

    def put(
        self, url: str, *, etag: str | None, last_modified: str | None, body: bytes
    ) -> CachedResponse:
        digest = hashlib.sha256(body).hexdigest()
        entry = CachedResponse(url, etag, last_modified, body, digest, dt.datetime.now(dt.UTC))
        self.entries[url] = entry
        return entry


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    """A fresh fake upstream for one test, stopped afterwards."""
    with UpstreamServer() as server:
        yield server


@pytest.fixture
def upstream_factory() -> Iterator[Callable[..., UpstreamServer]]:
    """Start extra upstreams (``upstream_factory(latency=0.05)``); all stopped afterwards."""
    started: list[UpstreamServer] = []

    def start(**kwargs: Any) -> UpstreamServer:
        server = UpstreamServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
