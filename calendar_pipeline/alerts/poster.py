"""What alerts/deliver.py asks of whatever posts to Slack (alerts/slack_client.py, or a
test double): the :class:`Poster` protocol, the error it raises when it cannot read a
channel's history, and the short key digests its messages carry in their metadata. Here,
not in deliver.py, so that the client does not import the module that drives it."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Iterable
from typing import Protocol

from calendar_pipeline.alerts.slack_format import SlackMessage


class HistoryUnavailable(RuntimeError):
    """The poster cannot read channel history (a webhook, or a token without the
    ``channels:history`` scope): a lost reply may then mean one repeated message."""


KEY_DIGEST_CHARS = 10  # 60 bits: no collision among millions of keys in practice


def key_digest(dedup_key: str) -> str:
    """A short, fixed-size stand-in for ``dedup_key`` in Slack message metadata (keys may
    be hundreds of characters; Slack bounds the metadata): base64url of its SHA-256."""
    digest = hashlib.sha256(dedup_key.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:KEY_DIGEST_CHARS]


def key_digests(dedup_keys: Iterable[str]) -> str:
    """The digests of ``dedup_keys``, space-separated (the metadata's ``keys``)."""
    return " ".join(key_digest(key) for key in dedup_keys)


class Poster(Protocol):
    """Posts one message (with its delivery id as Slack message metadata) and returns its
    ``ts``; settles a lost reply itself. Safe to call from several threads for different
    channels. ``retries`` counts its retries, ``found_after_lost_reply`` the lost replies
    it settled from the channel's history."""

    retries: int
    found_after_lost_reply: int

    def post(self, message: SlackMessage, delivery_id: str = "") -> str: ...

    def find_delivery(self, channel: str, delivery_id: str, oldest: dt.datetime) -> str | None:
        """The ``ts`` of the message posted with ``delivery_id`` to ``channel`` since
        ``oldest``, or ``None``; raises :class:`HistoryUnavailable` when it cannot look."""
        ...

    def posted_key_digests(
        self, channels: Iterable[str], oldest: dt.datetime
    ) -> dict[str, tuple[str, str]]:
        """Key digest -> (channel, ``ts``) of every alert our messages to ``channels``
        carried since ``oldest``; raises :class:`HistoryUnavailable` when it cannot look."""
        ...
