"""`SlackSettings`, the `slack` resource: how alerts reach Slack (bot token or
incoming webhook, API URL, channels, alert mode) and where run links point."""

from __future__ import annotations

import dagster as dg
from dagster_slack import SlackResource
from slack_sdk import WebClient

from calendar_pipeline import settings
from calendar_pipeline.alerts.slack_client import (
    DEFAULT_API_URL,
    SlackPoster,
    SlackWebhookPoster,
    web_client,
)
from calendar_pipeline.settings import SettingError
from calendar_pipeline.sources.http_sources import parse_base_url


class SlackSettings(SlackResource):
    """How alerts reach Slack: `dagster_slack.SlackResource` (`token`, the bot token;
    `get_client()`) plus the API URL, channels, mode and an optional incoming webhook.
    Neither a token nor a webhook means dry-run: digests go to the outbox and the log."""

    token: str = ""  # SLACK_BOT_TOKEN; optional here (SlackResource requires it)
    webhook_url: str = ""
    channel: str = "#calendar-alerts"
    alerts_channel: str = ""
    api_url: str = DEFAULT_API_URL
    alert_mode: str = ""
    webserver_url: str = "http://127.0.0.1:3000"

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.validate()

    def validate(self) -> None:
        """The mode parses and the URLs are http(s) URLs; `SettingError` otherwise."""
        self.mode  # noqa: B018 - parsing is the check
        parse_base_url(self.api_url, "SLACK_API_URL")
        if self.webhook_url.strip():
            try:  # the webhook URL is a secret: never shown, even in this error
                parse_base_url(self.webhook_url.strip(), "SLACK_WEBHOOK_URL")
            except SettingError:
                raise SettingError(
                    "SLACK_WEBHOOK_URL", "***", "expected an https:// incoming-webhook URL"
                ) from None

    def get_client(self, *, for_posting: bool = False) -> WebClient:
        """A `slack_sdk.WebClient` for SLACK_API_URL with this project's retry handlers
        (429, 5xx and connection errors; `for_posting`: only 429 and requests never sent,
        as a chat.postMessage must not be repeated blindly) and a logger that redacts
        tokens. `poster()` takes its clients from here: override this method to point
        the project at another Slack."""
        return web_client(self.token.strip(), self.api_url, for_posting=for_posting)

    @property
    def can_post(self) -> bool:
        return bool(self.token.strip() or self.webhook_url.strip())

    @property
    def mode(self) -> settings.AlertMode:
        """CALENDAR_ALERT_MODE as an `AlertMode` (a `str` field, as Dagster reads an
        environment variable only into `str` and `int`); blank: `send` with a token
        or webhook, else `dry_run`."""
        return settings.parse_alert_mode(self.alert_mode, has_token=self.can_post)

    @property
    def failure_channel(self) -> str:
        """Where run-failure alerts go: SLACK_ALERTS_CHANNEL, else SLACK_CHANNEL."""
        return self.alerts_channel.strip() or self.channel

    @property
    def secrets(self) -> tuple[str, ...]:
        """The values that must never appear in a log line, metadata or an error."""
        return tuple(v for v in (self.token.strip(), self.webhook_url.strip()) if v)

    def poster(self) -> SlackPoster | SlackWebhookPoster:
        """The bot-token poster, or the webhook poster when only a webhook is set."""
        if self.token.strip():
            return SlackPoster(token=self.token.strip(), client_factory=self.get_client)
        if self.webhook_url.strip():
            return SlackWebhookPoster(url=self.webhook_url.strip())
        raise dg.Failure(
            "mode 'send' needs SLACK_BOT_TOKEN (or SLACK_WEBHOOK_URL); without either, "
            "use CALENDAR_ALERT_MODE=dry_run",
            allow_retries=False,
        )


SLACK_ENV = {
    "token": "SLACK_BOT_TOKEN",
    "webhook_url": "SLACK_WEBHOOK_URL",
    "channel": "SLACK_CHANNEL",
    "alerts_channel": "SLACK_ALERTS_CHANNEL",
    "api_url": "SLACK_API_URL",
    "alert_mode": "CALENDAR_ALERT_MODE",
    "webserver_url": "CALENDAR_WEBSERVER_URL",
}
