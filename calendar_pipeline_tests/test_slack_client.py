"""SlackPoster against a real local HTTP server that plays Slack (slack_server.py)."""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import secrets
import socket
import time
import traceback
from typing import TYPE_CHECKING

import pytest

from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.alerts.poster import HistoryUnavailable
from calendar_pipeline.alerts.slack_client import (
    SlackConfigError,
    SlackDeliveryError,
    SlackPoster,
)
from calendar_pipeline.alerts.slack_format import SlackMessage, render_digests
from calendar_pipeline.retry_policy import RetryPolicy

if TYPE_CHECKING:
    from calendar_pipeline_tests.slack_server import FakeSlackServer

# The ``slack_server`` fixture lives next to the fake server; load it explicitly (as a
# plugin, so pytest imports the module itself and the fixture needs no unused import).

PARTITION = dt.date(2026, 11, 23)
INTERVAL = 0.2  # min_interval_per_channel in these tests; production uses 1 s
TOLERANCE = 0.01  # clock granularity between client and server threads


def digest(channel: str = "#alerts", title: str = "Armistice") -> SlackMessage:
    alert = DueAlert(PARTITION, "fr", "France", "holidays", "e1", PARTITION, title, 0, 1, None)
    [message] = render_digests([alert], PARTITION, channel)
    return message


def poster_for(server: FakeSlackServer, **kwargs) -> SlackPoster:
    kwargs.setdefault("min_interval_per_channel", INTERVAL)
    kwargs.setdefault("token", server.token)
    return SlackPoster(api_url=server.url, **kwargs)


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


# --- the happy path ---------------------------------------------------------------------


def test_post_sends_the_digest_unfurl_off_and_no_mention_parsing(slack_server) -> None:
    message = digest("#eng", title="<!channel> party")
    ts = poster_for(slack_server).post(message)

    [call] = slack_server.calls
    assert call.method == "chat.postMessage"
    assert call.headers["Authorization"] == f"Bearer {slack_server.token}"
    assert call.channel == "#eng"
    assert call.text == message.text
    assert call.blocks == message.blocks
    assert call.params["unfurl_links"] is False
    assert call.params["unfurl_media"] is False
    assert "link_names" not in call.params
    assert "parse" not in call.params
    assert ts == call.response["ts"]


def test_timestamps_are_unique_and_increasing(slack_server) -> None:
    poster = poster_for(slack_server, min_interval_per_channel=0)
    stamps = [poster.post(digest(f"#c{n}")) for n in range(5)]
    assert stamps == sorted(stamps, key=float)
    assert len(set(stamps)) == 5


def test_a_split_digest_is_accepted_whole_by_slack(slack_server) -> None:
    alerts = [
        DueAlert(
            PARTITION, f"e{i}", f"Entity & {i}", "s", f"ev{i}", PARTITION, "<x>" * 60, 0, 1, None
        )
        for i in range(500)
    ]
    messages = render_digests(alerts, PARTITION, "#big")
    assert len(messages) > 1
    poster = poster_for(slack_server, min_interval_per_channel=0)
    for message in messages:
        poster.post(message)  # the fake enforces Slack's block limits and raises otherwise
    assert len(slack_server.messages) == len(messages)


def test_auth_test_returns_the_bot_identity(slack_server) -> None:
    # The URL without a trailing slash works too.
    poster = SlackPoster(slack_server.token, api_url=slack_server.url.rstrip("/"))
    identity = poster.auth_test()
    assert identity["ok"] is True
    assert identity["user_id"] == "U0BOT"
    assert slack_server.calls_to("auth.test")


# --- pacing -------------------------------------------------------------------------------


def test_one_channel_is_paced_at_the_interval(slack_server) -> None:
    poster = poster_for(slack_server)
    for _ in range(3):
        poster.post(digest("#alerts"))
    arrivals = [c.received_at for c in slack_server.messages]
    assert len(arrivals) == 3
    assert all(gap >= INTERVAL - TOLERANCE for gap in gaps(arrivals))


def test_channels_do_not_wait_for_each_other(slack_server) -> None:
    poster = poster_for(slack_server)
    for channel in ("#a", "#b", "#a", "#b"):
        poster.post(digest(channel))
    at = {}
    for call in slack_server.messages:
        at.setdefault(call.channel, []).append(call.received_at)
    assert at["#b"][0] - at["#a"][0] < INTERVAL / 2  # #b went straight after #a
    assert at["#a"][1] - at["#a"][0] >= INTERVAL - TOLERANCE
    assert at["#b"][1] - at["#a"][1] < INTERVAL / 2  # and #b had waited long enough meanwhile


def test_pacing_sleeps_only_the_remaining_time(slack_server) -> None:
    now = [100.0]
    sleeps: list[float] = []

    def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    poster = poster_for(
        slack_server, min_interval_per_channel=1.0, sleep=fake_sleep, clock=lambda: now[0]
    )
    poster.post(digest("#a"))
    now[0] += 0.25
    poster.post(digest("#a"))  # 0.75 s left to wait
    poster.post(digest("#b"))  # another channel: no wait
    now[0] += 5
    poster.post(digest("#a"))  # long enough ago: no wait
    assert sleeps == [pytest.approx(0.75)]


# --- retries --------------------------------------------------------------------------------


def test_rate_limit_is_retried_after_retry_after(slack_server) -> None:
    slack_server.fail_next(status=429, retry_after=1)
    ts = poster_for(slack_server).post(digest())

    first, second = slack_server.calls
    assert (first.status, second.status) == (429, 200)
    assert second.received_at - first.received_at >= 1.0
    assert ts == second.response["ts"]


def test_server_errors_are_looked_up_then_retried_until_success(slack_server) -> None:
    # A 5xx may come after Slack acted: each is looked up in the history before a retry.
    slack_server.fail_next(status=503, times=2, method="chat.postMessage")
    ts = poster_for(slack_server).post(digest(), delivery_id="e" * 32)
    assert [c.status for c in slack_server.calls_to("chat.postMessage")] == [503, 503, 200]
    assert len(slack_server.calls_to("conversations.history")) == 2
    assert ts == slack_server.messages[0].response["ts"]


def test_server_errors_without_a_delivery_id_are_not_retried(slack_server) -> None:
    slack_server.fail_next(status=503, method="chat.postMessage")
    with pytest.raises(SlackDeliveryError, match=r"HTTP 503 for #alerts") as caught:
        poster_for(slack_server).post(digest("#alerts"))
    assert caught.value.ambiguous and len(slack_server.calls) == 1


def test_server_errors_past_the_retries_raise_a_delivery_error(slack_server) -> None:
    slack_server.fail_next(status=500, times=5, method="chat.postMessage")
    with pytest.raises(SlackDeliveryError, match=r"HTTP 500 for #alerts after 1 retries"):
        poster_for(slack_server, retry_policy=RetryPolicy(max_attempts=2)).post(
            digest("#alerts"), delivery_id="e" * 32
        )
    assert len(slack_server.calls_to("chat.postMessage")) == 2


def test_unknown_api_errors_are_delivery_errors_without_retry(slack_server) -> None:
    slack_server.fail_next(error="msg_blocks_too_long")
    with pytest.raises(SlackDeliveryError, match="msg_blocks_too_long") as caught:
        poster_for(slack_server).post(digest())
    assert caught.value.error == "msg_blocks_too_long"
    assert len(slack_server.calls) == 1


def test_unreachable_slack_is_a_delivery_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    poster = SlackPoster(
        "xoxb-x", api_url=f"http://127.0.0.1:{port}/api/", retry_policy=RetryPolicy(max_attempts=2)
    )
    with pytest.raises(SlackDeliveryError, match="could not reach Slack"):
        poster.post(digest())
    assert poster.retries == 1  # never sent, so retried (as many times as the policy says)


def test_a_read_timeout_without_a_delivery_id_is_not_retried(slack_server) -> None:
    # The message may have been posted already, and nothing tells: a blind retry could
    # post it twice (the run-failure alert posts this way).
    slack_server.latency = 1.0
    with pytest.raises(SlackDeliveryError, match="TimeoutError") as caught:
        poster_for(slack_server, timeout=0.3).post(digest())
    assert caught.value.ambiguous
    assert len(slack_server.calls) == 1


def test_a_read_timeout_with_a_delivery_id_is_settled_from_history(slack_server) -> None:
    slack_server.slow_next_post(1.0)
    poster = poster_for(slack_server, timeout=0.5)
    ts = poster.post(digest("#eng"), delivery_id="d" * 32)
    [posted] = slack_server.messages
    assert ts == posted.response["ts"] and poster.found_after_lost_reply == 1
    [listing] = slack_server.calls_to("conversations.list")  # the name resolved to an id
    assert "private_channel" in listing.params["types"]
    [history] = slack_server.calls_to("conversations.history")
    assert history.params["channel"] == slack_server.channel_id("#eng")


def test_find_delivery_pages_through_history_and_needs_metadata(slack_server) -> None:
    poster = poster_for(slack_server, min_interval_per_channel=0)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    wanted = poster.post(digest("#eng"), delivery_id="a" * 32)
    for n in range(450):  # more than two pages of 200 after it
        poster.post(digest("#eng", title=f"later {n}"), delivery_id=f"{n:032d}")
    assert poster.find_delivery("#eng", "a" * 32, since) == wanted
    assert len(slack_server.calls_to("conversations.history")) == 3
    assert poster.find_delivery("#eng", "b" * 32, since) is None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    assert poster.find_delivery("#eng", "a" * 32, later) is None  # oldest bounds the search
    # Slack returns metadata only when asked: a client that forgot would never find it
    page = poster._client.conversations_history(channel=slack_server.channel_id("#eng"))
    assert all("metadata" not in m for m in page["messages"])


def test_find_delivery_without_scopes_raises_history_unavailable(slack_server) -> None:
    slack_server.scopes -= {"channels:read", "groups:read"}
    with pytest.raises(HistoryUnavailable, match="missing_scope"):
        poster_for(slack_server).find_delivery("#eng", "x", dt.datetime.now(dt.UTC))
    by_id = poster_for(slack_server).post(digest(slack_server.channel_id("#eng")), "c" * 32)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    found = poster_for(slack_server).find_delivery(slack_server.channel_id("#eng"), "c" * 32, since)
    assert found == by_id  # a channel given by id needs no conversations.list


# --- configuration errors ---------------------------------------------------------------------


def test_not_in_channel_says_to_invite_the_bot_and_is_not_retried(slack_server) -> None:
    slack_server.fail_next(error="not_in_channel")
    with pytest.raises(SlackConfigError) as caught:
        poster_for(slack_server).post(digest("#private-ops"))
    assert "invite the bot to #private-ops" in str(caught.value)
    assert (caught.value.error, caught.value.channel) == ("not_in_channel", "#private-ops")
    assert len(slack_server.calls) == 1


def test_channel_not_found_names_the_channel(slack_server) -> None:
    slack_server.fail_next(error="channel_not_found")
    with pytest.raises(SlackConfigError, match="#nope not found"):
        poster_for(slack_server).post(digest("#nope"))


@pytest.mark.parametrize(
    "error", ["invalid_auth", "not_authed", "account_inactive", "token_revoked"]
)
def test_token_errors_say_to_check_the_token(slack_server, error: str) -> None:
    slack_server.fail_next(error=error)
    with pytest.raises(SlackConfigError, match="check SLACK_BOT_TOKEN"):
        poster_for(slack_server).auth_test()
    assert len(slack_server.calls) == 1


def test_a_wrong_token_is_rejected_by_the_server(slack_server) -> None:
    with pytest.raises(SlackConfigError, match=r"\(invalid_auth\): check SLACK_BOT_TOKEN"):
        poster_for(slack_server, token="xoxb-not-the-right-one").post(digest())
    assert slack_server.calls[0].response == {"ok": False, "error": "invalid_auth"}


# --- the token stays secret -----------------------------------------------------------------


def test_the_token_never_appears_in_errors_reprs_or_logs(slack_server, caplog) -> None:
    caplog.set_level(logging.DEBUG)  # root, so slack_sdk's DEBUG records are captured too
    # Built at run time, so that no source line shown in a traceback contains them.
    token = f"xoxb-1234-{secrets.token_hex(12)}"
    wrong_token = f"xoxb-9999-{secrets.token_hex(12)}"
    slack_server.token = token
    poster = poster_for(slack_server, token=token, retry_policy=RetryPolicy(max_attempts=2))

    errors: list[Exception] = []
    poster.post(digest())
    for failure in ({"error": "not_in_channel"}, {"status": 503, "times": 1}):
        slack_server.fail_next(**failure)
        with pytest.raises((SlackConfigError, SlackDeliveryError)) as caught:
            poster.post(digest())
        errors.append(caught.value)
    slack_server.fail_next(status=503, method="chat.postMessage")
    slack_server.fail_next(status=503, times=2, method="conversations.history")  # and a retry
    with pytest.raises(SlackDeliveryError) as caught:
        poster.post(digest(), delivery_id="f" * 32)
    assert slack_server.calls_to("conversations.history")  # the lookup ran, and failed
    errors.insert(0, caught.value)
    # A server (or proxy) that echoes the token back in its error gets it redacted.
    slack_server.fail_next(error=f"bad_token_{token}")
    with pytest.raises(SlackDeliveryError) as caught:
        poster.post(digest())
    errors.append(caught.value)
    with pytest.raises(SlackConfigError) as caught:  # wrong token: the real one stays hidden
        poster_for(slack_server, token=wrong_token).post(digest())
    errors.append(caught.value)

    assert slack_server.calls[0].headers["Authorization"] == f"Bearer {token}"  # it was used
    assert "bad_token_***" in str(errors[3])
    for exc in errors:
        assert exc.__cause__ is None and exc.__suppress_context__  # slack_sdk's error dropped
        rendered = "".join(traceback.format_exception(exc))
        for text in (str(exc), repr(exc), rendered):
            assert token not in text and wrong_token not in text
    assert token not in repr(poster) and "token='***'" in repr(poster)
    # slack_sdk logs every request at DEBUG, body included, with Authorization redacted,
    # and every response body as received: the echoed token is redacted by our filter.
    assert "Sending a request" in caplog.text and "'Authorization': '(redacted)'" in caplog.text
    assert '"error": "bad_token_xox?-***"' in caplog.text
    assert token not in caplog.text and wrong_token not in caplog.text


# --- where the clients come from, and how they retry ----------------------------------------


def test_the_poster_takes_its_clients_from_the_resources_get_client(slack_server) -> None:
    """Overriding `SlackSettings.get_client` is the one place to point at another Slack:
    posts and history reads both go where it says, whatever SLACK_API_URL holds."""
    from calendar_pipeline.alerts.slack_client import web_client
    from calendar_pipeline.defs.resources import SlackSettings

    asked: list[bool] = []

    class ElsewhereSlack(SlackSettings):
        def get_client(self, *, for_posting: bool = False):
            asked.append(for_posting)
            return web_client(self.token, slack_server.url, for_posting=for_posting)

    settings = ElsewhereSlack(token=slack_server.token, api_url="http://127.0.0.1:9/api/")
    poster = settings.poster()
    assert sorted(asked) == [False, True]  # a reading client and a posting client
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    ts = poster.post(digest("#eng"), delivery_id="f" * 32)
    assert poster.find_delivery("#eng", "f" * 32, since) == ts
    assert [c.method for c in slack_server.calls] == ["chat.postMessage", "conversations.history"]
    assert poster.api_url == slack_server.url  # errors name where the requests went


def test_the_posting_client_does_not_retry_a_server_error_itself(slack_server) -> None:
    """chat.postMessage through get_client(for_posting=True) leaves a 5xx to the poster
    (which looks in the history first); a read retries it."""
    from calendar_pipeline.defs.resources import SlackSettings

    settings = SlackSettings(token=slack_server.token, api_url=slack_server.url)
    slack_server.fail_next(status=503, method="chat.postMessage")
    with pytest.raises(SlackDeliveryError, match="HTTP 503"):
        poster = settings.poster()
        poster.post(digest("#eng"))
    assert len(slack_server.calls_to("chat.postMessage")) == 1 and poster.retries == 0
    slack_server.fail_next(status=503, method="auth.test")
    assert poster.auth_test()["ok"] is True
    assert len(slack_server.calls_to("auth.test")) == 2 and poster.retries == 1


def test_a_retry_after_past_the_policys_limit_is_not_waited_for(slack_server) -> None:
    slack_server.fail_next(status=429, retry_after=30)
    poster = poster_for(slack_server, retry_policy=RetryPolicy(max_retry_after=2.0))
    started = time.monotonic()
    with pytest.raises(SlackDeliveryError, match="rate-limit"):
        poster.post(digest())
    assert time.monotonic() - started < 5 and len(slack_server.calls) == 1


FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.05)


def test_each_history_page_is_retried_and_its_errors_explained(slack_server) -> None:
    """slack_sdk fetches the next page when the iteration asks: that request too goes
    through the retry handlers, and its failure is mapped to our errors."""
    poster = poster_for(slack_server, min_interval_per_channel=0, retry_policy=FAST)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    for n in range(250):  # two pages of 200
        poster.post(digest("#eng", title=f"n{n}"), delivery_id=f"{n:032d}")
    slack_server.fail_next(status=502, times=2, method="conversations.history")
    before = poster.retries
    messages = poster._our_messages("#eng", since)
    next(messages)  # the first page: two 502s, then an answer
    assert poster.retries - before == 2
    slack_server.fail_next(status=503, times=3, method="conversations.history")
    with pytest.raises(SlackDeliveryError, match=r"HTTP 503 for #eng after 2 retries"):
        list(messages)  # the second page: three 503s
    assert poster.retries - before == 4

    messages = poster._our_messages("#eng", since)
    next(messages)
    slack_server.fail_next(error="missing_scope", method="conversations.history")
    with pytest.raises(HistoryUnavailable, match="missing_scope"):
        list(messages)


def test_history_pages_follow_the_cursor_until_the_oldest_bound(slack_server) -> None:
    poster = poster_for(slack_server, min_interval_per_channel=0)
    for n in range(5):
        poster.post(digest("#eng", title=f"old {n}"), delivery_id=f"{n:032d}")
    time.sleep(0.05)
    since = dt.datetime.now(dt.UTC)
    for n in range(401):  # three pages of 200 after `since`
        poster.post(digest("#eng", title=f"n{n}"), delivery_id=f"{n + 100:032d}")
    found = [payload["delivery_id"] for _, payload in poster._our_messages("#eng", since)]
    assert found == [f"{n + 100:032d}" for n in reversed(range(401))]  # newest first, no old
    history = slack_server.calls_to("conversations.history")
    assert [c.params.get("cursor") for c in history] == [None, "200", "400"]
    assert {c.params["oldest"] for c in history} == {f"{since.timestamp():.6f}"}
