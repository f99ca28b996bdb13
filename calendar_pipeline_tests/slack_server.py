"""A small fake-but-real Slack Web API for tests: a real HTTP server on 127.0.0.1.

It speaks enough of the Web API for slack_sdk's ``WebClient``: ``chat.postMessage``,
``auth.test``, ``conversations.list`` and ``conversations.history``, JSON or form bodies,
``Authorization: Bearer`` checked against one token. Like Slack, it keeps every posted
message in its channel's history under a channel id (``C…``): a post may name the
channel or give its id, history takes only the id, and message metadata comes back only
with ``include_all_metadata``. A token lacks the scopes removed from ``scopes`` (answer:
``missing_scope``). It enforces the Block Kit limits Slack enforces, records every call,
and can be told to fail (``fail_next``), to accept a post and then lose the answer
(``drop_after_accepting``, ``fail_after_accepting``) or to be slow (``latency``)::

    with FakeSlackServer(token="xoxb-test") as slack:
        slack.fail_next(status=429, retry_after=1)
        client = WebClient(token="xoxb-test", base_url=slack.url)
        ...
        assert slack.messages[0].channel == "#alerts"

Tests get one per test from the ``slack_server`` fixture below: import it, or list this
module in ``pytest_plugins``. (PYTEST_DONT_REWRITE: this module has no asserts, and the
marker lets pytest load it as a plugin after a test module has imported it.)
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from calendar_pipeline_tests.loopback import LoopbackServer

DEFAULT_TOKEN = "xoxb-fake-0000-test-token"

# Limits Slack enforces on chat.postMessage (the last one is observed, not documented).
MAX_BLOCKS = 50
MAX_HEADER_CHARS = 150
MAX_TEXT_OBJECT_CHARS = 3_000
MAX_MESSAGE_TEXT_CHARS = 40_000
MAX_BLOCKS_TEXT_CHARS = 12_000

_AUTH_TEST_IDENTITY = {
    "ok": True,
    "url": "https://fake.slack.test/",
    "team": "Fake",
    "user": "calendar-bot",
    "team_id": "T0FAKE",
    "user_id": "U0BOT",
    "bot_id": "B0BOT",
}


@dataclass(frozen=True)
class RecordedCall:
    """One request as the server saw it, and what it answered."""

    method: str  # "chat.postMessage"
    received_at: float  # time.monotonic() on arrival
    headers: dict[str, str]
    params: dict[str, Any]  # the body, JSON or form; ``blocks`` decoded to Python
    status: int
    response: dict[str, Any]

    @property
    def channel(self) -> str | None:
        return self.params.get("channel")

    @property
    def text(self) -> str | None:
        return self.params.get("text")

    @property
    def blocks(self) -> list[dict] | None:
        return self.params.get("blocks")

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok"))


@dataclass(frozen=True)
class _Scripted:
    status: int
    error: str
    retry_after: int | None
    method: str | None


# What each method needs, as Slack documents it (a bot reading public and private channels).
SCOPES_NEEDED = {
    "chat.postMessage": "chat:write",
    "conversations.history": "channels:history,groups:history",
    "conversations.replies": "channels:history,groups:history",
    "conversations.list": "channels:read,groups:read",
}
ALL_SCOPES = frozenset(
    {"chat:write", "channels:history", "groups:history", "channels:read", "groups:read"}
)


class FakeSlackServer(LoopbackServer):
    """A threaded HTTP server playing Slack's Web API at :attr:`url`."""

    def __init__(self, token: str = DEFAULT_TOKEN, latency: float = 0.0) -> None:
        self.token = token
        self.latency = latency  # seconds to wait before answering each request
        self._slow_posts: deque[float] = deque()  # extra seconds for the next posts
        self.scopes: set[str] = set(ALL_SCOPES)  # remove some to play a narrower token
        self._calls: list[RecordedCall] = []
        self._scripted: deque[_Scripted] = deque()
        self._drops = 0  # accepted posts whose connection is then cut without an answer
        self._fail_after: deque[int] = deque()  # accepted posts then answered with a 5xx
        self._channel_ids: dict[str, str] = {}  # name without '#' -> id
        self._history: dict[str, list[dict[str, Any]]] = {}  # id -> messages, oldest first
        self._replies: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        self.webhook_path = "/services/T000/B000/webhooksecret123"
        self._lock = threading.Lock()
        self._last_ts_micros = 0
        # channel name (without '#') or id -> the error every post to it gets:
        # "channel_not_found", "is_archived" or "not_in_channel"
        self.bad_channels: dict[str, str] = {}
        # a whole-Slack outage: None, "http_500" (every request) or "invalid_auth"
        # (see also go_down("refuse"): nothing listens on the port)
        self.outage: str | None = None
        self._listen(_make_handler(self))

    def go_down(self, kind: str = "http_500") -> None:
        """Slack down until :meth:`come_back`: ``http_500`` answers every request with
        HTTP 500, ``invalid_auth`` refuses the token, ``refuse`` closes the port (the
        connection is refused, the request never sent)."""
        if kind not in ("http_500", "invalid_auth", "refuse"):
            raise ValueError(f"unknown outage {kind!r}")
        self.outage = kind
        if kind == "refuse":
            self._port = self._httpd.server_address[1]
            self.stop()

    def come_back(self) -> None:
        """End the outage (a closed port listens again, on the same port)."""
        if self.outage == "refuse":
            handler = self._httpd.RequestHandlerClass
            self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
            self._httpd.daemon_threads = True
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        self.outage = None

    def stop(self) -> None:
        if self.outage == "refuse" and not self._thread.is_alive():
            return  # already closed by go_down("refuse")
        super().stop()

    @property
    def url(self) -> str:
        """The Web API base URL, e.g. ``http://127.0.0.1:54321/api/``."""
        return f"http://{self.address}/api/"

    # --- what tests look at and script -------------------------------------------------

    @property
    def calls(self) -> list[RecordedCall]:
        """Every request received, in arrival order (a copy)."""
        with self._lock:
            return list(self._calls)

    @property
    def messages(self) -> list[RecordedCall]:
        """The ``chat.postMessage`` calls that were accepted."""
        return [c for c in self.calls if c.method == "chat.postMessage" and c.ok]

    def calls_to(self, method: str) -> list[RecordedCall]:
        return [c for c in self.calls if c.method == method]

    def fail_next(
        self,
        *,
        status: int = 200,
        error: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        method: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests (to ``method``, or to any) with a failure.

        ``status=429`` answers "ratelimited" with ``Retry-After``; ``status=503`` answers
        a server error; ``status=200, error="not_in_channel"`` is an API error.
        """
        if error is None:
            error = {429: "ratelimited"}.get(status, "internal_error" if status >= 500 else "")
        if not error:
            raise ValueError("fail_next needs an error code for a 200/4xx answer")
        with self._lock:
            for _ in range(times):
                self._scripted.append(_Scripted(status, error, retry_after, method))

    def drop_after_accepting(self, times: int = 1) -> None:
        """Accept (record) the next ``times`` posts, then cut the connection unanswered:
        Slack received the message but the client never learns it."""
        with self._lock:
            self._drops += times

    def slow_next_post(self, seconds: float) -> None:
        """Accept (record) the next post, then wait ``seconds`` before answering it."""
        with self._lock:
            self._slow_posts.append(seconds)

    def fail_after_accepting(self, status: int = 503, times: int = 1) -> None:
        """Accept (record) the next ``times`` posts, then answer them with HTTP ``status``:
        Slack acted on the request but the client sees a server error."""
        with self._lock:
            self._fail_after.extend([status] * times)

    def _take_fail_after(self) -> int | None:
        with self._lock:
            return self._fail_after.popleft() if self._fail_after else None

    def channel_id(self, channel: str) -> str:
        """The id of channel ``#name`` (created on first use, as if it existed)."""
        if channel in self._history:
            return channel
        name = channel.lstrip("#")
        with self._lock:
            if name not in self._channel_ids:
                self._channel_ids[name] = f"C{len(self._channel_ids) + 1:08d}"
                self._history[self._channel_ids[name]] = []
            return self._channel_ids[name]

    def history(self, channel: str) -> list[dict[str, Any]]:
        """The messages posted to ``channel`` (name or id), oldest first."""
        channel_id = self.channel_id(channel)  # takes the lock itself (not reentrant)
        with self._lock:
            return list(self._history.get(channel_id, []))

    def _take_drop(self) -> bool:
        with self._lock:
            if self._drops:
                self._drops -= 1
                return True
            return False

    @property
    def webhook_url(self) -> str:
        """An incoming-webhook URL served by this server (answers ``ok`` as text)."""
        return f"http://{self.address}{self.webhook_path}"

    # --- request handling (called from the handler threads) -----------------------------

    def _handle(
        self, method: str, headers: dict[str, str], params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        received_at = time.monotonic()
        if method == "chat.postMessage" and isinstance(params.get("channel"), str):
            self.channel_id(params["channel"])  # the channel exists, whatever we answer
        status, body, extra_headers = self._answer(method, headers, params)
        call = RecordedCall(method, received_at, headers, params, status, body)
        with self._lock:
            self._calls.append(call)
        delay = self.latency
        if method == "chat.postMessage":
            with self._lock:
                delay += self._slow_posts.popleft() if self._slow_posts else 0.0
        if delay:
            time.sleep(delay)
        return status, body, extra_headers

    def _answer_webhook(self, headers: dict[str, str], params: dict[str, Any]):
        received_at = time.monotonic()
        scripted = self._pop_scripted("webhook")
        if scripted is not None:
            status, body = scripted.status, scripted.error
        else:
            status, body = 200, "ok"
            error = _validate_message({"channel": "(the webhook's)", **params})
            if error:
                status, body = 400, error
        call = RecordedCall("webhook", received_at, headers, params, status, {"ok": body == "ok"})
        with self._lock:
            self._calls.append(call)
        return status, body, {}

    def _answer(
        self, method: str, headers: dict[str, str], params: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.outage == "http_500":
            return 500, {"ok": False, "error": "internal_error"}, {}
        if self.outage == "invalid_auth":
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        scripted = self._pop_scripted(method)
        if scripted is not None:
            extra = (
                {} if scripted.retry_after is None else {"Retry-After": str(scripted.retry_after)}
            )
            return scripted.status, {"ok": False, "error": scripted.error}, extra
        auth = _header(headers, "authorization")
        if not auth:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if auth != f"Bearer {self.token}":
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        if method == "auth.test":
            return 200, dict(_AUTH_TEST_IDENTITY), {}
        needed = SCOPES_NEEDED.get(method)
        if needed and not any(scope in self.scopes for scope in needed.split(",")):
            provided = ",".join(sorted(self.scopes))
            return 200, {"ok": False, "error": "missing_scope", "needed": needed,
                         "provided": provided}, {}  # fmt: skip
        if method == "chat.postMessage":
            return self._post_message(params)
        if method == "conversations.history":
            return self._conversations_history(params)
        if method == "conversations.replies":
            return self._conversations_replies(params)
        if method == "conversations.list":
            return self._conversations_list(params)
        return 200, {"ok": False, "error": "unknown_method"}, {}

    def _post_message(self, params: dict[str, Any]):
        error = _validate_message(params) or self.bad_channels.get(
            str(params["channel"]).lstrip("#")
        )
        if error:
            return 200, {"ok": False, "error": error}, {}
        channel_id = self.channel_id(params["channel"])
        message = {
            "type": "message",
            "user": _AUTH_TEST_IDENTITY["user_id"],
            "bot_id": _AUTH_TEST_IDENTITY["bot_id"],
            "text": params.get("text", ""),
            "ts": self._next_ts(),
        }
        if "blocks" in params:
            message["blocks"] = params["blocks"]
        if isinstance(params.get("metadata"), dict):
            message["metadata"] = params["metadata"]
        thread_ts = params.get("thread_ts")
        if thread_ts:  # a reply: in its thread, not in the channel's history (as Slack)
            if not any(m["ts"] == thread_ts for m in self._history.get(channel_id, [])):
                return 200, {"ok": False, "error": "thread_not_found"}, {}
            message["thread_ts"] = thread_ts
        with self._lock:
            if thread_ts:
                self._replies[(channel_id, thread_ts)].append(message)
            else:
                self._history[channel_id].append(message)
        shown = {k: v for k, v in message.items() if k != "metadata"}
        return 200, {"ok": True, "channel": channel_id, "ts": message["ts"], "message": shown}, {}

    def _conversations_history(self, params: dict[str, Any]):
        channel = str(params.get("channel", ""))
        with self._lock:
            messages = self._history.get(channel)
        if messages is None:  # a name, or an unknown id: Slack wants an existing id
            return 200, {"ok": False, "error": "channel_not_found"}, {}
        oldest = float(params.get("oldest") or 0)
        with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        found = [m for m in reversed(messages) if float(m["ts"]) > oldest]  # newest first
        start = int(params.get("cursor") or 0)
        limit = min(int(params.get("limit") or 100), 999)
        page = found[start : start + limit]
        if not with_metadata:
            page = [{k: v for k, v in m.items() if k != "metadata"} for m in page]
        more = start + limit < len(found)
        body = {"ok": True, "messages": page, "has_more": more}
        body["response_metadata"] = {"next_cursor": str(start + limit) if more else ""}
        return 200, body, {}

    def _conversations_replies(self, params: dict[str, Any]):
        """The parent message and its replies, oldest first (as Slack)."""
        channel, ts = str(params.get("channel", "")), str(params.get("ts", ""))
        with self._lock:
            parent = [m for m in self._history.get(channel, []) if m["ts"] == ts]
            replies = list(self._replies.get((channel, ts), []))
        if not parent:
            return 200, {"ok": False, "error": "thread_not_found"}, {}
        oldest = float(params.get("oldest") or 0)
        with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        found = parent + [m for m in replies if float(m["ts"]) > oldest]
        if not with_metadata:
            found = [{k: v for k, v in m.items() if k != "metadata"} for m in found]
        body = {"ok": True, "messages": found, "has_more": False}
        body["response_metadata"] = {"next_cursor": ""}
        return 200, body, {}

    def replies(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The replies posted in the thread of ``thread_ts`` in ``channel`` (a name or id)."""
        channel_id = self.channel_id(channel)  # takes the lock itself
        with self._lock:
            return list(self._replies.get((channel_id, thread_ts), []))

    def _conversations_list(self, params: dict[str, Any]):
        with self._lock:
            channels = [
                {"id": cid, "name": name, "is_channel": True, "is_private": False,
                 "is_archived": False}
                for name, cid in sorted(self._channel_ids.items())
            ]  # fmt: skip
        start = int(params.get("cursor") or 0)
        limit = int(params.get("limit") or 100)
        more = start + limit < len(channels)
        body = {"ok": True, "channels": channels[start : start + limit]}
        body["response_metadata"] = {"next_cursor": str(start + limit) if more else ""}
        return 200, body, {}

    def _pop_scripted(self, method: str) -> _Scripted | None:
        with self._lock:
            for i, scripted in enumerate(self._scripted):
                if scripted.method in (None, method):
                    del self._scripted[i]
                    return scripted
        return None

    def _next_ts(self) -> str:
        """Slack-style ``"1700000000.000001"``: the server's clock (as Slack's: a test that
        moves the clock moves it here too), unique and increasing."""
        with self._lock:
            micros = max(int(time.time() * 1_000_000), self._last_ts_micros + 1)
            self._last_ts_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _validate_message(params: dict[str, Any]) -> str | None:
    """The Slack error code this chat.postMessage would get, or None if it is fine."""
    if not params.get("channel"):
        return "channel_not_found"
    text, blocks = params.get("text"), params.get("blocks")
    if not text and not blocks:
        return "no_text"
    if text and len(text) > MAX_MESSAGE_TEXT_CHARS:
        return "msg_too_long"
    if blocks is None:
        return None
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        return "invalid_blocks"
    total = 0
    for block in blocks:
        texts = [block["text"]] if "text" in block else list(block.get("elements", []))
        for text_object in texts:
            value = text_object.get("text", "")
            limit = MAX_HEADER_CHARS if block.get("type") == "header" else MAX_TEXT_OBJECT_CHARS
            if not value or len(value) > limit:
                return "invalid_blocks"
            if block.get("type") == "header" and text_object.get("type") != "plain_text":
                return "invalid_blocks"
            total += len(value)
    if total > MAX_BLOCKS_TEXT_CHARS:
        return "msg_blocks_too_long"
    return None


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _parse_body(content_type: str, raw: bytes, query: str) -> dict[str, Any]:
    """Parse a Web API request body as slack_sdk sends it: JSON or form-encoded."""
    params: dict[str, Any] = dict(parse_qsl(query))
    if raw and content_type.startswith("application/json"):
        params.update(json.loads(raw))
    elif raw:
        params.update(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        if isinstance(params.get("blocks"), str):
            params["blocks"] = json.loads(params["blocks"])
    return params


def _make_handler(fake: FakeSlackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == fake.webhook_path:
                self._webhook()
                return
            if not parts.path.startswith("/api/"):
                self._send(404, {"ok": False, "error": "not_found"}, {})
                return
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                params = _parse_body(self.headers.get("Content-Type", ""), raw, parts.query)
            except ValueError:
                self._send(200, {"ok": False, "error": "invalid_json"}, {})
                return
            headers = dict(self.headers.items())
            method = parts.path.removeprefix("/api/")
            answer = fake._handle(method, headers, params)
            if method == "chat.postMessage" and answer[1].get("ok"):
                if fake._take_drop():
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status = fake._take_fail_after()
                if status is not None:
                    answer = (status, {"ok": False, "error": "internal_error"}, {})
            self._send(*answer)

        def _webhook(self) -> None:
            """An incoming webhook: JSON body in, ``ok`` (text/plain) out."""
            length = int(self.headers.get("Content-Length") or 0)
            params = json.loads(self.rfile.read(length) or b"{}")
            status, body, _ = fake._answer_webhook(dict(self.headers.items()), params)
            payload = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _send(self, status: int, body: dict[str, Any], extra: dict[str, str]) -> None:
            payload = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            # The client may have given up already (its timeout); nothing to answer then.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler


@pytest.fixture
def slack_server() -> Iterator[FakeSlackServer]:
    """A fresh fake Slack Web API for one test, stopped afterwards."""
    with FakeSlackServer() as server:
        yield server
