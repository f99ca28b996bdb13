"""`SlackSettings`, the `slack` resource: how alerts reach Slack (bot token or
incoming webhook, API URL, channels, alert mode) and where run links point."""

from __future__ import annotations

from typing import Annotated

import dagster as dg
from dagster_slack import SlackResource
from pydantic import ConfigDict
from slack_sdk import WebClient

from calendar_pipeline import settings
from calendar_pipeline.alerts.slack_client import (
    DEFAULT_API_URL,
    SlackPoster,
    SlackWebhookPoster,
    web_client,
)
from calendar_pipeline.defs.resources.declared import Declared
from calendar_pipeline.settings import Setting


class SlackSettings(Declared, SlackResource):
    """How alerts reach Slack: `dagster_slack.SlackResource` (`token`, the bot token;
    `get_client()`) plus the API URL, channels, mode and an optional incoming webhook.
    Neither a token nor a webhook means dry-run: digests go to the outbox and the log.
    Each field is one setting, declared once (`declared.py`)."""

    model_config = ConfigDict(use_attribute_docstrings=True)  # a field's doc: the UI's

    token: Annotated[str, Setting("SLACK_BOT_TOKEN", secret=True)] = ""
    """Bot token (xoxb-...); optional here (SlackResource requires it). Blank: dry-run."""
    webhook_url: Annotated[
        str, Setting("SLACK_WEBHOOK_URL", settings.parse_webhook_url, secret=True)
    ] = ""
    """Incoming-webhook URL, instead of a bot token (posts to its own channel only)."""
    channel: Annotated[str, Setting("SLACK_CHANNEL")] = "#calendar-alerts"
    """Default channel; the universe's `channel` column overrides it per entity."""
    alerts_channel: Annotated[str, Setting("SLACK_ALERTS_CHANNEL")] = ""
    """Where run-failure alerts go (blank: SLACK_CHANNEL)."""
    api_url: Annotated[str, Setting("SLACK_API_URL", settings.parse_base_url)] = DEFAULT_API_URL
    """Slack Web API base URL."""
    alert_mode: Annotated[
        str, Setting("CALENDAR_ALERT_MODE", settings.parse_alert_mode_setting)
    ] = ""
    """send, dry_run or record_only (blank: send with a token or webhook, else dry_run)."""
    webserver_url: Annotated[str, Setting("CALENDAR_WEBSERVER_URL")] = "http://127.0.0.1:3000"
    """Base URL of the Dagster UI, for the run links in failure alerts."""

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self.validate()

    def validate(self) -> None:
        """The mode parses and the URLs are http(s) URLs (`check_settings`); `SettingError`
        otherwise, never showing the webhook URL (a secret)."""
        self.check_settings()

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
        explicit: settings.AlertMode | None = self.parsed("alert_mode")
        if explicit is not None:
            return explicit
        return settings.AlertMode.SEND if self.can_post else settings.AlertMode.DRY_RUN

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
