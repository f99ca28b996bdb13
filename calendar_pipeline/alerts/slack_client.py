"""Post rendered digests to Slack: retries, per-channel pacing, errors that say what to fix.

Retries are slack_sdk's own handlers, set from the project's one
:class:`~calendar_pipeline.retry_policy.RetryPolicy` (the HTTP client's too): HTTP 429
(sleeping ``Retry-After`` plus up to one second of jitter; a ``Retry-After`` over
``max_retry_after`` is not waited for), HTTP 5xx and connection errors (the policy's
full-jitter exponential backoff); ``retries`` counts them. Those sleeps happen inside
slack_sdk with ``time.sleep``; the injectable ``sleep``/``clock`` only drive our own
pacing. The ``WebClient`` s come from ``SlackSettings.get_client`` (the dagster-slack
resource), so overriding it points everything here at another Slack.

A post is different: when it fails *after* the request was sent (a dropped connection, a
read timeout, an HTTP 5xx), Slack may have posted it. slack_sdk would blindly send it
again; ``SlackPoster.post`` instead looks for the message's delivery id (sent as Slack
message metadata) in the channel's history (``conversations.history`` with
``include_all_metadata``; channel names resolved to ids with ``conversations.list``)
and returns the ``ts`` it finds, posting again only when the message is not there.
Without the history scopes it falls back to posting again (at least once) and says so
in ``history_warning``.

The bot token never appears in an exception message, a repr or a log line: ours are
built without it, and slack_sdk's log records pass through a redacting filter.

Why one module of almost 600 lines: the retry handlers, the history lookup and the error
mapping are three halves of one promise (a post is never repeated and never silently
lost); ``SlackPoster`` is most of it, and ``SlackWebhookPoster`` shares its errors.
"""

from __future__ import annotations

import datetime as dt
import functools
import http.client
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.error import HTTPError, URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.interval_calculator import RetryIntervalCalculator
from slack_sdk.http_retry.response import HttpResponse as RetryHttpResponse
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookClient

from calendar_pipeline.alerts.poster import HistoryUnavailable, key_digests
from calendar_pipeline.alerts.slack_format import SlackMessage
from calendar_pipeline.retry_policy import DEFAULT_RETRY_POLICY, RetryPolicy, parse_retry_after

logger = logging.getLogger(__name__)

DEFAULT_API_URL = "https://slack.com/api/"
# Slack message metadata on every digest: event_type names the kind, the payload holds the
# delivery id and, in ``keys``, a short digest of each alert key the message carries
# (poster.key_digest: 10 characters each, space-separated; a message holds at most about
# 330 alerts, so at most about 3.7 KB), from which a lost ledger is rebuilt
# (``posted_key_digests``). Visible to workspace members: nothing secret goes in it.
METADATA_EVENT_TYPE = "calendar_alert_digest_posted"
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{6,}")
# Slack documents these as "some aspect of the operation may have succeeded".
_AMBIGUOUS_ERRORS = frozenset({"internal_error", "fatal_error", "request_timeout"})

_TOKEN_ERRORS = frozenset({"invalid_auth", "not_authed", "account_inactive", "token_revoked"})
_TOKEN_SHAPE = re.compile(r"(?:xox[a-z]|xapp)-[A-Za-z0-9-]+")


class _RedactTokensFilter(logging.Filter):
    """Rewrites any record whose text contains something shaped like a Slack token."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _TOKEN_SHAPE.search(message):
            record.msg, record.args = _TOKEN_SHAPE.sub("xox?-***", message), None
        return True


# slack_sdk logs each request and response at DEBUG. It redacts the Authorization header
# itself, but logs response bodies verbatim; this child of its logger (same handlers,
# same levels) also redacts anything token-shaped, whatever a server echoes back.
_SDK_LOGGER = logging.getLogger("slack_sdk.web.base_client.redacted")
_SDK_LOGGER.addFilter(_RedactTokensFilter())


class SlackConfigError(RuntimeError):
    """Slack refused us for a reason a human must fix (token, channel, membership).

    Retrying does not help; the message says what to change.
    """

    def __init__(self, message: str, *, error: str, channel: str | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.channel = channel


class SlackDeliveryError(RuntimeError):
    """Slack could not be reached or kept failing after the retries; try again later.

    ``ambiguous``: the request was sent and no answer came back (Slack may have acted).
    """

    def __init__(
        self, message: str, *, error: str, channel: str | None = None, ambiguous: bool = False
    ) -> None:
        super().__init__(message)
        self.error = error
        self.channel = channel
        self.ambiguous = ambiguous


class _PolicyBackoff(RetryIntervalCalculator):
    """slack_sdk's sleep between two retries of a 5xx or a connection error, from our
    :class:`RetryPolicy` (the same full-jitter backoff as the HTTP client's)."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def calculate_sleep_duration(self, current_attempt: int) -> float:
        return self.policy.backoff(current_attempt)


class _RateLimitRetryHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (sleep ``Retry-After`` plus up to one second of jitter),
    but a ``Retry-After`` over the policy's ``max_retry_after`` is not waited for, and one
    that is not a whole number of seconds is read too, as seconds or an HTTP date
    (`parse_retry_after`; slack_sdk would raise)."""

    def __init__(self, policy: RetryPolicy) -> None:
        super().__init__(max_retry_count=policy.max_retries)
        self.policy = policy

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        if response is None or response.status_code != 429:
            return False
        wait = _retry_after(response)
        return wait is None or wait <= self.policy.max_retry_after

    def prepare_for_next_attempt(self, *, state, request, response=None, error=None) -> None:
        wait = _retry_after(response) if response is not None else None
        state.next_attempt_requested = True
        time.sleep((1.0 if wait is None else wait) + random.random())
        state.increment_current_attempt()


def _retry_after(response: RetryHttpResponse) -> float | None:
    """The seconds of a response's ``Retry-After`` header; ``None`` when absent or unreadable."""
    for name, values in response.headers.items():
        if name.lower() == "retry-after":
            value = values[0] if isinstance(values, list) and values else values
            return parse_retry_after(str(value))
    return None


class _AnyServerErrorRetryHandler(ServerErrorRetryHandler):
    """slack_sdk retries only 500 and 503; a 502 or 504 from a proxy is as transient."""

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        return response is not None and 500 <= response.status_code < 600


def _counting(handlers: list[RetryHandler], on_retry: Callable[[], None]) -> list[RetryHandler]:
    """Wrap each handler so every retry it grants is counted."""
    for handler in handlers:
        original = handler.prepare_for_next_attempt

        def prepare(*args: Any, _original=original, **kwargs: Any) -> None:
            on_retry()
            _original(*args, **kwargs)

        handler.prepare_for_next_attempt = prepare  # type: ignore[method-assign]
    return handlers


class _NeverSentRetryHandler(ConnectionErrorRetryHandler):
    """Retries only a request that never left (refused, unresolvable): a plain URLError.
    A reset or closed connection after sending is left to ``SlackPoster.post``."""

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:
        return isinstance(error, URLError) and not isinstance(error, HTTPError)


def _retry_handlers(policy: RetryPolicy) -> list[RetryHandler]:
    """For reads (history, list, auth.test): retry 429, 5xx and connection errors."""
    backoff = _PolicyBackoff(policy)
    return [
        _RateLimitRetryHandler(policy),
        _AnyServerErrorRetryHandler(policy.max_retries, interval_calculator=backoff),
        ConnectionErrorRetryHandler(policy.max_retries, interval_calculator=backoff),
    ]


def _post_retry_handlers(policy: RetryPolicy) -> list[RetryHandler]:
    """For chat.postMessage: retry only what Slack surely did not act on (429, not sent)."""
    return [
        _RateLimitRetryHandler(policy),
        _NeverSentRetryHandler(policy.max_retries, interval_calculator=_PolicyBackoff(policy)),
    ]


def web_client(
    token: str,
    api_url: str = DEFAULT_API_URL,
    timeout: float = 10.0,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    for_posting: bool = False,
) -> WebClient:
    """A ``WebClient`` for ``api_url`` with our retry handlers (``for_posting``: those of
    chat.postMessage, see ``_post_retry_handlers``) and redacting logger."""
    handlers = (_post_retry_handlers if for_posting else _retry_handlers)(retry_policy)
    return WebClient(
        token=token,
        base_url=api_url if api_url.endswith("/") else api_url + "/",
        timeout=timeout,  # type: ignore[arg-type]  # slack_sdk annotates int; floats work
        logger=_SDK_LOGGER,
        retry_handlers=handlers,
    )


# What builds the poster's clients: ``SlackSettings.get_client`` (``for_posting``: the
# client that sends chat.postMessage, with the narrower retry handlers).
ClientFactory = Callable[..., WebClient]


class SlackPoster:
    """Posts :class:`SlackMessage` digests with one bot token, politely.

    At most one message per ``min_interval_per_channel`` seconds goes to each channel
    (Slack allows about one per second per channel); different channels do not wait
    for each other. Threads may share a poster as long as each channel is posted to by
    one thread at a time (``deliver`` gives each channel its own thread).
    """

    def __init__(
        self,
        token: str,
        api_url: str = DEFAULT_API_URL,
        timeout: float = 10.0,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        min_interval_per_channel: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        client_factory: ClientFactory | None = None,
    ) -> None:
        """``client_factory(for_posting=...)`` builds the two ``WebClient`` s (reads, and
        chat.postMessage): ``SlackSettings.get_client`` in the pipeline; by default
        ``web_client`` for ``api_url`` with ``token``, ``timeout`` and ``retry_policy``.
        ``token`` is still needed to keep it out of our errors; ``retry_policy`` also
        paces the poster's own repeats of a post whose reply was lost."""
        if client_factory is None:
            client_factory = functools.partial(web_client, token, api_url, timeout, retry_policy)
        self.retry_policy = retry_policy
        self.min_interval_per_channel = min_interval_per_channel
        self._token = token
        self._sleep = sleep
        self._clock = clock
        self._last_post_at: dict[str, float] = {}
        self.retries = 0
        self.found_after_lost_reply = 0
        self.history_warning: str | None = None
        self._retries_lock = threading.Lock()
        self._channel_ids: dict[str, str] = {}
        self._client = client_factory(for_posting=False)
        self._post_client = client_factory(for_posting=True)
        for client in (self._client, self._post_client):
            _counting(client.retry_handlers, self._count_retry)
        self.api_url = self._client.base_url  # where the clients go, for our errors

    @property
    def max_retries(self) -> int:
        return self.retry_policy.max_retries

    def _count_retry(self) -> None:
        with self._retries_lock:
            self.retries += 1

    def __repr__(self) -> str:
        return f"SlackPoster(api_url={self.api_url!r}, token='***')"

    def post(self, message: SlackMessage, delivery_id: str = "") -> str:
        """Post one message and return its Slack ``ts``; exactly once when ``delivery_id``
        is given and the token may read the channel's history (see the module doc).

        Raises :class:`SlackConfigError` (fix the setup, do not retry) or
        :class:`SlackDeliveryError` (transient, retries exhausted).
        """
        channel = message.channel
        extra: dict[str, Any] = {}
        if delivery_id:
            extra["metadata"] = {
                "event_type": METADATA_EVENT_TYPE,
                "event_payload": {
                    "delivery_id": delivery_id,
                    "alerts": len(message.dedup_keys),
                    "keys": key_digests(message.dedup_keys),
                },
            }
        if message.thread_ts:
            extra["thread_ts"] = message.thread_ts
        first_try = dt.datetime.now(dt.UTC)
        for attempt in range(self.max_retries + 1):
            self._wait_for_turn(channel)
            try:
                response = self._call(
                    channel,
                    lambda: self._post_client.chat_postMessage(
                        channel=channel,
                        text=message.text,
                        blocks=message.blocks,
                        unfurl_links=False,
                        unfurl_media=False,
                        **extra,
                    ),
                )
                break
            except SlackDeliveryError as exc:
                if not (exc.ambiguous and delivery_id):
                    raise  # without an id to look for, a blind repeat could post it twice
                ts = self._settle_lost_reply(
                    channel, delivery_id, first_try, exc, thread_ts=message.thread_ts
                )
                if ts is not None:
                    return ts
                if attempt == self.max_retries:
                    raise
                self._count_retry()
                self._sleep(self.retry_policy.backoff(attempt))
            finally:
                self._last_post_at[channel] = self._clock()
        ts = response.get("ts")
        if not isinstance(ts, str) or not ts:
            raise SlackDeliveryError(
                f"Slack accepted the message for {channel} but returned no ts",
                error="missing_ts",
                channel=channel,
            )
        if isinstance(response.get("channel"), str):
            self._channel_ids.setdefault(channel, response["channel"])
        logger.debug("posted %d alerts to %s (ts=%s)", len(message.dedup_keys), channel, ts)
        return ts

    def _settle_lost_reply(
        self,
        channel: str,
        delivery_id: str,
        since: dt.datetime,
        error: SlackDeliveryError,
        thread_ts: str | None = None,
    ) -> str | None:
        """After an unanswered post: the ``ts`` if Slack has it, ``None`` to post again.

        A failed lookup (Slack still down) raises ``error``: posting blind could repeat it.
        """
        try:
            oldest = since - dt.timedelta(minutes=1)
            ts = self.find_delivery(channel, delivery_id, oldest, thread_ts=thread_ts)
        except HistoryUnavailable as exc:
            if self.history_warning is None:
                self.history_warning = str(exc)
                logger.warning("%s", exc)
            return None
        except SlackDeliveryError:
            raise error from None
        if ts is not None:
            with self._retries_lock:
                self.found_after_lost_reply += 1
        return ts

    def find_delivery(
        self, channel: str, delivery_id: str, oldest: dt.datetime, thread_ts: str | None = None
    ) -> str | None:
        """The ``ts`` of our message with ``delivery_id`` in ``channel`` since ``oldest``
        (in the thread of ``thread_ts`` when given: replies are not in the history).

        Raises :class:`HistoryUnavailable` when the token lacks the scopes to look.
        """
        for ts, payload in self._our_messages(channel, oldest, thread_ts):
            if payload.get("delivery_id") == delivery_id:
                return ts
        return None

    def _our_messages(
        self, channel: str, oldest: dt.datetime, thread_ts: str | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(``ts``, metadata payload) of each message this pipeline posted to ``channel``
        since ``oldest`` (in the thread of ``thread_ts`` when given), newest first, page by
        page as the caller reads them; errors mapped as in ``_history_call``."""
        channel_id = self._channel_id(channel)
        method = (
            self._client.conversations_history
            if thread_ts is None
            else functools.partial(self._client.conversations_replies, ts=thread_ts)
        )
        pages = self._pages(
            channel,
            lambda: method(
                channel=channel_id,
                oldest=f"{oldest.timestamp():.6f}",
                include_all_metadata=True,
                limit=200,
            ),
        )
        for page in pages:
            for message in page.get("messages") or []:
                metadata = message.get("metadata") or {}
                if metadata.get("event_type") == METADATA_EVENT_TYPE:
                    yield message.get("ts"), metadata.get("event_payload") or {}

    def posted_key_digests(
        self, channels: Iterable[str], oldest: dt.datetime
    ) -> dict[str, tuple[str, str]]:
        """Every alert key digest (``poster.key_digest``) in the metadata of our messages
        posted to ``channels`` since ``oldest``: digest -> (channel, ``ts``), the newest
        message first. What rebuilds a lost ledger (``deliver.LedgerRecovery``).

        A channel Slack does not know, or the bot is not in, holds none of our messages.
        Raises :class:`HistoryUnavailable` (a short reason) when the token may not read
        history or list channels (``missing_scope``).
        """
        found: dict[str, tuple[str, str]] = {}
        for channel in channels:
            try:
                for ts, payload in self._our_messages(channel, oldest):
                    keys = payload.get("keys")
                    if isinstance(keys, str) and isinstance(ts, str):
                        for digest in keys.split():
                            found.setdefault(digest, (channel, ts))
            except HistoryUnavailable as exc:
                if "missing_scope" in str(exc):
                    raise HistoryUnavailable(
                        "the Slack token cannot read channel history (missing_scope: add "
                        "channels:history, groups:history, channels:read, groups:read)"
                    ) from None
                continue  # not listed by conversations.list: nothing of ours is there
            except SlackConfigError as exc:
                if exc.error in ("channel_not_found", "not_in_channel"):
                    continue
                raise
        return found

    def _channel_id(self, channel: str) -> str:
        """Slack's id for ``channel`` (``conversations.history`` takes ids, not names)."""
        if _CHANNEL_ID.fullmatch(channel):
            return channel
        if channel not in self._channel_ids:
            pages = self._pages(
                channel,
                lambda: self._client.conversations_list(
                    types="public_channel,private_channel", exclude_archived=True, limit=1000
                ),
            )
            for page in pages:
                for found in page.get("channels") or []:
                    self._channel_ids.setdefault(f"#{found.get('name')}", found.get("id"))
                    self._channel_ids.setdefault(str(found.get("name")), found.get("id"))
                if channel in self._channel_ids:
                    break
        if channel not in self._channel_ids:
            raise HistoryUnavailable(
                f"cannot look up Slack channel {channel} (conversations.list does not list "
                "it): a message whose reply was lost may be posted twice"
            )
        return self._channel_ids[channel]

    def _pages(self, channel: str, first: Callable[[], SlackResponse]) -> Iterator[SlackResponse]:
        """Each page of a cursor-paginated read that starts with ``first()``, fetched only
        when the caller asks for it: slack_sdk's own paging (iterating a ``SlackResponse``
        requests the page after ``response_metadata.next_cursor``, through the client's
        retry handlers), with the errors of every request mapped as in ``_history_call``.

        Not a bare ``for page in first()``: each next page is requested inside ``next()``,
        whose ``SlackApiError`` must become ours as well. Each page is the same
        ``SlackResponse``, holding the latest answer: read it before asking for the next.
        (A next page whose failed answer is not JSON, an HTML 502 from a proxy, surfaces
        as a ``JSONDecodeError``: still a ``SlackDeliveryError``, without the status.)
        """
        pages = iter(self._history_call(channel, first))
        while (page := self._history_call(channel, lambda: next(pages, None))) is not None:
            yield page

    def _history_call(self, channel: str, request: Callable[[], Any]) -> Any:
        try:
            return self._call(channel, request)
        except SlackConfigError as exc:
            if exc.error != "missing_scope":
                raise
            raise HistoryUnavailable(
                "the Slack token cannot read channel history (missing_scope): add "
                "channels:history, groups:history, channels:read and groups:read to the "
                "Slack app for exactly-once delivery; until then a message whose reply was "
                "lost is posted again (at least once)"
            ) from None

    def auth_test(self) -> dict[str, Any]:
        """Call ``auth.test``: who the token belongs to (``user_id``, ``team``, ``url``...)."""
        response = self._call(None, self._client.auth_test)
        return dict(response.data) if isinstance(response.data, dict) else {}

    # --- internals -------------------------------------------------------------------

    def _wait_for_turn(self, channel: str) -> None:
        """Sleep until ``min_interval_per_channel`` has passed since this channel's last post."""
        last = self._last_post_at.get(channel)
        if last is None:
            return
        wait = last + self.min_interval_per_channel - self._clock()
        if wait > 0:
            logger.debug("pacing: waiting %.2f s before posting to %s", wait, channel)
            self._sleep(wait)

    def _call(self, channel: str | None, request: Callable[[], Any]) -> Any:
        """Run one slack_sdk call and turn its failures into our two exception types.

        Our exceptions are raised ``from None`` and built from the error code, the HTTP
        status and the channel only: slack_sdk's exception holds the whole request,
        headers included, and must not travel with ours.
        """
        try:
            return request()
        except SlackApiError as exc:
            response = exc.response
            body = response.data if isinstance(response.data, dict) else {}
            status = response.status_code
            error = self._redact(str(body.get("error") or f"http_{status}"))[:100]
            error_type, message = self._explain(channel, error, status)
            ambiguous = status >= 500 or error in _AMBIGUOUS_ERRORS
        except (SlackClientError, OSError, ValueError, http.client.HTTPException) as exc:
            # OSError: URLError (refused, DNS: never sent), a reset or closed connection,
            # TimeoutError (sent, no answer). HTTPException: an answer cut short. ValueError:
            # slack_sdk's rate-limit handler cannot parse a non-integer Retry-After.
            error = type(exc).__name__
            error_type = SlackDeliveryError
            message = f"could not reach Slack at {self.api_url}{_for(channel)}: {error}: {exc}"
            never_sent = isinstance(exc, URLError) and not isinstance(exc, HTTPError)
            ambiguous = isinstance(exc, OSError | http.client.HTTPException) and not never_sent
        if error_type is SlackConfigError:
            raise SlackConfigError(self._redact(message), error=error, channel=channel) from None
        raise SlackDeliveryError(
            self._redact(message), error=error, channel=channel, ambiguous=ambiguous
        ) from None

    def _explain(
        self, channel: str | None, error: str, status: int
    ) -> tuple[type[SlackConfigError] | type[SlackDeliveryError], str]:
        """Which exception a Slack error code deserves, and a message saying what to do."""
        if error in _TOKEN_ERRORS:
            return (
                SlackConfigError,
                f"Slack rejected the bot token ({error}): check SLACK_BOT_TOKEN",
            )
        if error == "not_in_channel":
            return SlackConfigError, (
                f"the bot is not a member of {channel} ({error}): invite the bot to {channel}"
            )
        if error == "channel_not_found":
            return SlackConfigError, (
                f"Slack channel {channel} not found ({error}): check the channel name or ID "
                "in the universe CSV or the default channel; for a private channel, invite "
                "the bot to it first"
            )
        if error == "is_archived":
            return SlackConfigError, (
                f"Slack channel {channel} is archived ({error}): unarchive it or route these "
                "alerts to another channel"
            )
        if error == "missing_scope":
            return SlackConfigError, (
                f"the bot token lacks a scope ({error}): add chat:write to the Slack app, "
                "reinstall it and update SLACK_BOT_TOKEN"
            )
        where = _for(channel)
        if status == 429:
            return SlackDeliveryError, (
                f"Slack kept rate-limiting us{where} (HTTP 429; retried at most "
                f"{self.max_retries} times, and not when asked to wait over "
                f"{self.retry_policy.max_retry_after:g} s)"
            )
        if status >= 500:
            retried = f" after {self.max_retries} retries"
            return SlackDeliveryError, f"Slack returned HTTP {status}{where}{retried}"
        return SlackDeliveryError, f"Slack refused the request{where}: {error} (HTTP {status})"

    def _redact(self, text: str) -> str:
        """Hide the token, and anything shaped like a Slack token, in ``text``."""
        if self._token:
            text = text.replace(self._token, "***")
        return _TOKEN_SHAPE.sub("xox?-***", text)


def _for(channel: str | None) -> str:
    return f" for {channel}" if channel else ""


# Incoming-webhook answers (plain text bodies) that retrying will not fix.
_WEBHOOK_CONFIG_ERRORS = {
    "invalid_token": "the webhook URL is no longer valid: check SLACK_WEBHOOK_URL",
    "no_service": "the webhook was removed or disabled: check SLACK_WEBHOOK_URL",
    "no_team": "the webhook's workspace is gone: check SLACK_WEBHOOK_URL",
    "team_disabled": "the webhook's workspace is disabled: check SLACK_WEBHOOK_URL",
    "action_prohibited": "an admin restricted this webhook: check SLACK_WEBHOOK_URL",
    "channel_not_found": "the webhook's channel is gone: create a new webhook",
    "channel_is_archived": "the webhook's channel is archived: unarchive it or make a new webhook",
}


class SlackWebhookPoster:
    """Posts digests through an incoming webhook (``SLACK_WEBHOOK_URL``) instead of a bot.

    A webhook posts to the one channel it was created for, whatever the message's
    channel says, and returns no ``ts``: the ledger records ``webhook:<n>`` instead.
    The URL is a secret (it carries the credential): it never appears in errors.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        min_interval_per_channel: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self.max_retries = retry_policy.max_retries
        self.min_interval = min_interval_per_channel
        self.retries = 0
        self.found_after_lost_reply = 0  # a webhook cannot read history
        self.history_warning: str | None = None
        self._sleep = sleep
        self._clock = clock
        self._last_post_at: float | None = None
        self._posted = 0
        self._lock = threading.Lock()  # one webhook is one channel: one post at a time
        self._client = WebhookClient(
            url=url,
            timeout=int(max(1, timeout)),
            logger=_SDK_LOGGER,
            retry_handlers=_counting(_retry_handlers(retry_policy), self._count_retry),
        )

    def _count_retry(self) -> None:
        self.retries += 1  # posts are serialized by self._lock

    def __repr__(self) -> str:
        return "SlackWebhookPoster(url='***')"

    def post(self, message: SlackMessage, delivery_id: str = "") -> str:
        """Post through the webhook (which takes no metadata: ``delivery_id`` is unused)."""
        with self._lock:
            return self._post(message)

    def find_delivery(
        self, channel: str, delivery_id: str, oldest: dt.datetime, thread_ts: str | None = None
    ) -> str | None:
        raise HistoryUnavailable(
            "an incoming webhook cannot read channel history: a message whose reply was "
            "lost may be posted twice (use SLACK_BOT_TOKEN for exactly-once delivery)"
        )

    def posted_key_digests(
        self, channels: Iterable[str], oldest: dt.datetime
    ) -> dict[str, tuple[str, str]]:
        raise HistoryUnavailable("an incoming webhook (SLACK_WEBHOOK_URL) cannot read history")

    def _post(self, message: SlackMessage) -> str:
        if self._last_post_at is not None:
            wait = self._last_post_at + self.min_interval - self._clock()
            if wait > 0:
                self._sleep(wait)
        try:
            response = self._client.send(
                text=message.text,
                blocks=message.blocks,
                unfurl_links=False,
                unfurl_media=False,
            )
        except (SlackClientError, OSError, ValueError) as exc:
            raise SlackDeliveryError(
                self._redact(f"could not reach the Slack webhook: {type(exc).__name__}: {exc}"),
                error=type(exc).__name__,
            ) from None
        finally:
            self._last_post_at = self._clock()
        body = (response.body or "").strip()
        if response.status_code == 200 and body == "ok":
            self._posted += 1
            return f"webhook:{self._posted}"
        error = self._redact(body or f"http_{response.status_code}")[:100]
        if error in _WEBHOOK_CONFIG_ERRORS:
            raise SlackConfigError(
                f"Slack webhook refused the message ({error}): {_WEBHOOK_CONFIG_ERRORS[error]}",
                error=error,
            )
        raise SlackDeliveryError(
            f"Slack webhook answered HTTP {response.status_code} ({error})"
            f" after {self.max_retries} retries"
            if response.status_code == 429 or response.status_code >= 500
            else f"Slack webhook refused the message: {error} (HTTP {response.status_code})",
            error=error,
        )

    def _redact(self, text: str) -> str:
        text = text.replace(self._url, "***")
        return _TOKEN_SHAPE.sub(
            "xox?-***", re.sub(r"hooks\.slack\.com/\S+", "hooks.slack.com/***", text)
        )
