"""Post rendered digests to Slack: retries, per-channel pacing, errors that say what to fix.

Retries are slack_sdk's own handlers: HTTP 429 (sleeping ``Retry-After`` plus up to one
second of jitter), HTTP 5xx and connection errors (exponential backoff from 0.5 s with
jitter); ``retries`` counts them. Those sleeps happen inside slack_sdk with
``time.sleep``; the injectable ``sleep``/``clock`` only drive our own pacing. A read
timeout is *not* retried: Slack may have posted the message already, and the delivery
ledger decides what happens next.

The bot token never appears in an exception message, a repr or a log line: ours are
built without it, and slack_sdk's log records pass through a redacting filter.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.webhook import WebhookClient

from calendar_pipeline.alerts.slack_format import SlackMessage

logger = logging.getLogger(__name__)

DEFAULT_API_URL = "https://slack.com/api/"

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
    """Slack could not be reached or kept failing after the retries; try again later."""

    def __init__(self, message: str, *, error: str, channel: str | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.channel = channel


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


def _retry_handlers(max_retries: int, on_retry: Callable[[], None]) -> list[RetryHandler]:
    return _counting(
        [
            RateLimitErrorRetryHandler(max_retry_count=max_retries),
            _AnyServerErrorRetryHandler(max_retry_count=max_retries),
            ConnectionErrorRetryHandler(max_retry_count=max_retries),
        ],
        on_retry,
    )


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
        max_retries: int = 4,
        min_interval_per_channel: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not api_url.endswith("/"):
            api_url += "/"
        self.api_url = api_url
        self.max_retries = max_retries
        self.min_interval_per_channel = min_interval_per_channel
        self._token = token
        self._sleep = sleep
        self._clock = clock
        self._last_post_at: dict[str, float] = {}
        self.retries = 0
        self._retries_lock = threading.Lock()
        self._client = WebClient(
            token=token,
            base_url=api_url,
            timeout=timeout,  # type: ignore[arg-type]  # slack_sdk annotates int; floats work
            logger=_SDK_LOGGER,
            retry_handlers=_retry_handlers(max_retries, self._count_retry),
        )

    def _count_retry(self) -> None:
        with self._retries_lock:
            self.retries += 1

    def __repr__(self) -> str:
        return f"SlackPoster(api_url={self.api_url!r}, token='***')"

    def post(self, message: SlackMessage) -> str:
        """Post one message and return its Slack ``ts``.

        Raises :class:`SlackConfigError` (fix the setup, do not retry) or
        :class:`SlackDeliveryError` (transient, retries exhausted).
        """
        channel = message.channel
        self._wait_for_turn(channel)
        try:
            response = self._call(
                channel,
                lambda: self._client.chat_postMessage(
                    channel=channel,
                    text=message.text,
                    blocks=message.blocks,
                    unfurl_links=False,
                    unfurl_media=False,
                ),
            )
        finally:
            self._last_post_at[channel] = self._clock()
        ts = response.get("ts")
        if not isinstance(ts, str) or not ts:
            raise SlackDeliveryError(
                f"Slack accepted the message for {channel} but returned no ts",
                error="missing_ts",
                channel=channel,
            )
        logger.debug("posted %d alerts to %s (ts=%s)", len(message.dedup_keys), channel, ts)
        return ts

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
        except (SlackClientError, OSError, ValueError) as exc:
            # OSError: URLError (refused, DNS), TimeoutError. ValueError: slack_sdk's
            # rate-limit handler cannot parse a Retry-After that is not an integer.
            error = type(exc).__name__
            error_type = SlackDeliveryError
            message = f"could not reach Slack at {self.api_url}{_for(channel)}: {error}: {exc}"
        raise error_type(self._redact(message), error=error, channel=channel) from None

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
                f"Slack kept rate-limiting us{where} after {self.max_retries} retries"
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
        max_retries: int = 4,
        min_interval_per_channel: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self.max_retries = max_retries
        self.min_interval = min_interval_per_channel
        self.retries = 0
        self._sleep = sleep
        self._clock = clock
        self._last_post_at: float | None = None
        self._posted = 0
        self._lock = threading.Lock()  # one webhook is one channel: one post at a time
        self._client = WebhookClient(
            url=url,
            timeout=int(max(1, timeout)),
            logger=_SDK_LOGGER,
            retry_handlers=_retry_handlers(max_retries, self._count_retry),
        )

    def _count_retry(self) -> None:
        self.retries += 1  # posts are serialized by self._lock

    def __repr__(self) -> str:
        return "SlackWebhookPoster(url='***')"

    def post(self, message: SlackMessage) -> str:
        with self._lock:
            return self._post(message)

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
