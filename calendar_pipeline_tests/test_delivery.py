"""Slack delivery that never loses an alert and never repeats one: the ledger protocol
against a local Slack server, on SQLite and on a real PostgreSQL, with faults, crashes
and concurrent processes."""

import datetime as dt
import itertools
import json
import re
import subprocess
import sys
import time
from collections import Counter

import dagster as dg
import pytest

from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.deliver import choose_mode, deliver
from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.alerts.slack_client import (
    SlackConfigError,
    SlackDeliveryError,
    SlackPoster,
    SlackWebhookPoster,
)
from calendar_pipeline.alerts.slack_format import render_digests
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.retry_policy import RetryPolicy
from calendar_pipeline_tests.delivery_worker import D, make_alerts
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN

TIMEOUT = dt.timedelta(minutes=15)
ENTITY = re.compile(r"Entity \d{4}")


def poster_for(server, **kwargs):
    kwargs.setdefault("min_interval_per_channel", 0.01)
    return SlackPoster(token=DEFAULT_TOKEN, api_url=server.url, **kwargs)


def run(engine, alerts, poster, mode="send", run_id="run-1", tmp_path=None, **kwargs):
    return deliver(
        engine,
        alerts,
        partition_date=D,
        mode=mode,
        run_id=run_id,
        default_channel="#general",
        claim_timeout=kwargs.pop("claim_timeout", TIMEOUT),
        outbox_dir=(tmp_path or __import__("pathlib").Path("/tmp")) / "outbox",
        poster=poster,
        log=lambda _line: None,
        **kwargs,
    )


def posted_entities(server) -> Counter:
    """How many times each alert (by its unique entity name) reached Slack."""
    seen: Counter = Counter()
    for call in server.messages:
        seen.update(ENTITY.findall(json.dumps(call.blocks)))
    return seen


def test_send_posts_every_alert_once_and_records_ts(engine, slack_server):
    alerts = make_alerts(40)
    report = run(engine, alerts, poster_for(slack_server))
    assert (report.due, report.claimed, report.sent, report.failed) == (40, 40, 40, 0)
    assert posted_entities(slack_server) == Counter({a.entity_name: 1 for a in alerts})
    rows = store.ledger_rows(engine)
    assert {r["state"] for r in rows} == {"sent"} and all(r["slack_ts"] for r in rows)
    by_channel = {m.channel: m.response["ts"] for m in slack_server.messages}
    assert {r["slack_ts"] for r in rows} == set(by_channel.values())

    again = run(engine, alerts, poster_for(slack_server), run_id="run-2")
    assert (again.already_delivered, again.sent, again.messages) == (40, 0, 0)
    assert len(slack_server.messages) == 3


def test_dry_run_and_record_only_post_nothing(engine, slack_server, tmp_path):
    alerts = make_alerts(10)
    dry = run(engine, alerts, None, mode="dry_run", tmp_path=tmp_path)
    assert dry.messages == 3 and store.ledger_rows(engine) == []
    assert "Entity 0009" in (tmp_path / "outbox" / "digest.txt").read_text()
    recorded = run(engine, alerts, None, mode="record_only")
    assert recorded.recorded == 10 and slack_server.calls == []
    assert {r["state"] for r in store.ledger_rows(engine)} == {"recorded"}


def test_mode_choice():
    assert choose_mode("", "send", "daily") == "send"
    assert choose_mode("", "dry_run", "daily") == "dry_run"
    assert choose_mode("", "send", "history") == "history"
    assert choose_mode("", "dry_run", "history") == "history"
    assert choose_mode("send", "send", "history") == "send"  # a person asked for it
    assert choose_mode("record_only", "send", "daily") == "record_only"


def test_history_mode_posts_and_writes_nothing(engine, slack_server):
    alerts = make_alerts(5)
    report = run(engine, alerts, None, mode="history")
    assert (report.mode, report.due, report.history, report.claimed) == ("history", 5, 5, 0)
    assert store.ledger_rows(engine) == [] and slack_server.calls == []
    # so the same keys, due on a later (daily) day, are still posted
    assert run(engine, alerts, poster_for(slack_server)).sent == 5


def test_unknown_mode_is_refused_by_name(engine):
    with pytest.raises(ValueError, match="unknown alert mode 'sned'"):
        run(engine, make_alerts(1), None, mode="sned")
    assert store.ledger_rows(engine) == []


HOSTILE = [
    "<!channel>",
    "<!here> now",
    "<@U123>",
    "<!subteam^S1>",
    "<https://evil.example|click>",
    "a & b > c",
    "line\nbreak\x00\x1b[31m",
]


def test_hostile_titles_arrive_as_text_and_ping_no_one(engine, slack_server):
    alerts = [
        DueAlert(D, f"e{i}", f"<!everyone> {i}", "ics", f"x{i}", D, title, 0, 1, None)
        for i, title in enumerate(HOSTILE)
    ]
    run(engine, alerts, poster_for(slack_server))
    (call,) = slack_server.messages
    wire = json.dumps({"text": call.text, "blocks": call.blocks})
    assert "<!" not in wire and "<@" not in wire and "<http" not in wire
    assert "&lt;!channel&gt;" in wire and "&lt;@U123&gt;" in wire and "a &amp; b &gt; c" in wire
    assert "\\u0000" not in wire and "\\u001b" not in wire
    assert "link_names" not in call.params and call.params.get("parse") is None
    assert call.params["unfurl_links"] is False and call.params["unfurl_media"] is False
    assert all(
        b.get("text", {}).get("verbatim", True) for b in call.blocks if b["type"] == "section"
    )


def test_big_digest_is_split_and_nothing_is_lost(engine, slack_server):
    alerts = make_alerts(2000, channels=2)
    report = run(engine, alerts, poster_for(slack_server))
    assert report.sent == 2000 and report.messages == len(slack_server.messages) > 2
    assert posted_entities(slack_server) == Counter({a.entity_name: 1 for a in alerts})
    for call in slack_server.messages:
        assert len(call.blocks) <= 50
        assert all(len(b["text"]["text"]) <= 3000 for b in call.blocks if b["type"] == "section")


def test_server_errors_past_the_retries_fail_clearly_and_release(engine, slack_server):
    alerts = make_alerts(6)
    slack_server.fail_next(status=502, times=10, method="chat.postMessage")
    with pytest.raises(SlackDeliveryError, match=r"HTTP 502 for #chan\d after 2 retries"):
        run(engine, alerts, poster_for(slack_server, retry_policy=RetryPolicy(max_attempts=3)))
    rows = store.ledger_rows(engine)
    assert {r["state"] for r in rows} == {"failed"} and len(rows) == 6
    assert all("502" in r["error"] and r["attempts"] == 1 for r in rows)
    slack_server._scripted.clear()
    report = run(engine, alerts, poster_for(slack_server), run_id="run-2")
    assert report.sent == 6
    rows = store.ledger_rows(engine)
    assert {(r["state"], r["attempts"]) for r in rows} == {("sent", 2)}


def test_rate_limit_and_5xx_are_retried_and_counted(engine, slack_server):
    slack_server.fail_next(status=429, retry_after=1)
    slack_server.fail_next(status=503, method="chat.postMessage")
    report = run(engine, make_alerts(3, channels=1), poster_for(slack_server))
    assert report.sent == 3 and report.retries == 2
    assert len(slack_server.messages) == 1  # the 503 was looked up, not found, posted once
    calls = slack_server.calls_to("chat.postMessage")
    assert calls[1].received_at - calls[0].received_at >= 1.0  # waited for Retry-After


def test_a_bad_token_fails_at_once_with_what_to_fix(engine, slack_server):
    slack_server.fail_next(error="invalid_auth")
    with pytest.raises(SlackConfigError, match="SLACK_BOT_TOKEN"):
        run(engine, make_alerts(2, channels=1), poster_for(slack_server))
    assert len(slack_server.calls_to("chat.postMessage")) == 1  # no retry
    assert {r["state"] for r in store.ledger_rows(engine)} == {"failed"}


@pytest.mark.parametrize("error", ["not_in_channel", "channel_not_found", "is_archived"])
def test_one_bad_channel_fails_alone(engine, slack_server, error):
    """Issue 24 item 5: the bad channel's keys end failed, named with what to fix; every
    alert of every other channel reaches Slack, once."""
    slack_server.bad_channels["chan2"] = error
    alerts = make_alerts(200, channels=5)  # 40 per channel; #chan2 is refused
    report = run(engine, alerts, poster_for(slack_server))
    healthy = {a.entity_name for a in alerts if a.channel != "#chan2"}
    assert posted_entities(slack_server) == Counter(dict.fromkeys(healthy, 1))
    assert len(slack_server.calls_to("chat.postMessage")) == 4 + 1  # one refused, not retried
    assert list(report.failed_channels) == ["#chan2"]
    assert error in report.failed_channels["#chan2"]
    why = report.failed_channels["#chan2"]
    assert re.search(r"invite the bot|check the channel|unarchive", why)
    assert (report.sent, report.failed) == (160, 40)
    states = {r["dedup_key"]: r["state"] for r in store.ledger_rows(engine)}
    assert {states[a.dedup_key] for a in alerts if a.channel == "#chan2"} == {"failed"}
    assert {states[a.dedup_key] for a in alerts if a.channel != "#chan2"} == {"sent"}
    slack_server.bad_channels.clear()  # fixed: the next run posts only the failed channel
    again = run(engine, alerts, poster_for(slack_server), run_id="run-2")
    assert (again.sent, again.already_delivered) == (40, 160)
    assert posted_entities(slack_server) == Counter({a.entity_name: 1 for a in alerts})


@pytest.mark.parametrize("outage", ["http_500", "refuse", "invalid_auth"])
def test_slack_down_leaves_no_key_claimed(engine, slack_server, outage):
    """Issue 24 item 2: Slack down, also while an earlier attempt is being checked: every
    key ends failed (never claimed), within a bounded time."""
    alerts = make_alerts(30, channels=3)
    slack_server.fail_after_accepting(status=503)  # an attempt whose answer is lost
    slack_server.go_down("http_500")
    with pytest.raises((SlackDeliveryError, SlackConfigError)):
        run(engine, alerts, poster_for(slack_server, retry_policy=RetryPolicy(max_attempts=2)))
    slack_server.come_back()
    assert {r["state"] for r in store.ledger_rows(engine)} == {"failed"}
    slack_server.fail_after_accepting(status=503)  # a post Slack has, answer lost
    first = run(
        engine,
        alerts[:10],
        poster_for(slack_server, retry_policy=RetryPolicy(max_attempts=1)),
        run_id="run-2",
    )
    assert first.sent == 10
    slack_server.go_down(outage)
    started = time.monotonic()
    with pytest.raises((SlackDeliveryError, SlackConfigError)):
        run(
            engine,
            alerts,
            poster_for(slack_server, retry_policy=RetryPolicy(max_attempts=3)),
            run_id="run-3",
        )
    elapsed = time.monotonic() - started
    slack_server.come_back()
    assert elapsed < 20, elapsed
    states = Counter(r["state"] for r in store.ledger_rows(engine))
    assert states == Counter({"sent": 10, "failed": 20})
    again = run(engine, alerts, poster_for(slack_server), run_id="run-4")
    assert again.sent == 20 and states["claimed"] == 0
    assert posted_entities(slack_server) == Counter({a.entity_name: 1 for a in alerts})


@pytest.mark.parametrize("fault", ["drop", "timeout", "5xx"])
def test_a_lost_reply_is_found_in_history_and_never_repeated(engine, slack_server, fault):
    alerts = make_alerts(9)
    if fault == "drop":  # Slack posted it, then the connection died unanswered
        slack_server.drop_after_accepting(1)
    elif fault == "5xx":  # Slack posted it, then answered with a server error
        slack_server.fail_after_accepting(status=503)
    else:  # Slack posted it, but answered after the client gave up
        slack_server.slow_next_post(1.0)
    poster = poster_for(slack_server, timeout=0.5 if fault == "timeout" else 10.0)
    report = run(engine, alerts, poster)
    counts = posted_entities(slack_server)
    assert counts == Counter({a.entity_name: 1 for a in alerts})  # nothing lost, none twice
    assert len(slack_server.messages) == 3 and report.sent == 9
    assert report.confirmed_from_history == 1
    rows = store.ledger_rows(engine)
    posted_ts = {m.response["ts"] for m in slack_server.messages}
    assert {r["state"] for r in rows} == {"sent"} and {r["slack_ts"] for r in rows} == posted_ts
    history = slack_server.calls_to("conversations.history")
    assert history and all(c.params["channel"].startswith("C") for c in history)
    assert all(c.params["include_all_metadata"] in ("1", "true", True) for c in history)
    for message in slack_server.messages:  # every post carries its delivery id
        metadata = message.params["metadata"]
        assert metadata["event_type"] == "calendar_alert_digest_posted"
        assert len(metadata["event_payload"]["delivery_id"]) == 32


def test_without_the_history_scope_a_lost_reply_costs_one_repeat_and_says_so(engine, slack_server):
    slack_server.scopes -= {"channels:history", "groups:history"}
    alerts = make_alerts(9)
    slack_server.drop_after_accepting(1)
    poster = poster_for(slack_server)
    report = run(engine, alerts, poster)
    counts = posted_entities(slack_server)
    assert set(counts) == {a.entity_name for a in alerts}  # nothing lost
    assert max(counts.values()) == 2 and len([n for n in counts.values() if n == 2]) == 3
    assert report.sent == 9 and report.confirmed_from_history == 0
    assert "missing_scope" in poster.history_warning
    assert "channels:history" in poster.history_warning


def test_a_lookup_that_fails_too_does_not_post_blind(engine, slack_server):
    """Slack answers nothing useful after the drop: the keys stay unconfirmed (failed,
    with their delivery id), and the next run finds the message instead of reposting."""
    alerts = make_alerts(3, channels=1)
    slack_server.drop_after_accepting(1)
    slack_server.fail_next(status=503, times=20, method="conversations.history")
    with pytest.raises(SlackDeliveryError):
        run(engine, alerts, poster_for(slack_server, retry_policy=RetryPolicy(max_attempts=2)))
    assert len(slack_server.messages) == 1
    rows = store.ledger_rows(engine)
    assert {r["state"] for r in rows} == {"failed"} and all(r["delivery_id"] for r in rows)
    slack_server._scripted.clear()
    report = run(engine, alerts, poster_for(slack_server), run_id="run-2")
    assert len(slack_server.messages) == 1  # found, not posted again
    assert report.confirmed_from_history == 3 and report.sent == 0
    rows = store.ledger_rows(engine)
    assert {r["state"] for r in rows} == {"sent"}
    assert {r["slack_ts"] for r in rows} == {slack_server.messages[0].response["ts"]}


def test_moved_event_says_the_date_changed(engine, slack_server):
    first = DueAlert(
        D,
        "xnys",
        "NYSE",
        "holidays",
        "earnings-q4",
        D + dt.timedelta(days=5),
        "Results",
        5,
        7,
        None,
    )
    run(engine, [first], poster_for(slack_server))
    moved = DueAlert(
        D,
        "xnys",
        "NYSE",
        "holidays",
        "earnings-q4",
        D + dt.timedelta(days=6),
        "Results",
        6,
        7,
        None,
    )
    report = run(engine, [moved], poster_for(slack_server), run_id="run-2")
    assert report.moved == 1
    last = json.dumps(slack_server.messages[-1].blocks)
    assert f"date changed, was {first.event_date.strftime('%a')} {first.event_date}" in last
    later = DueAlert(
        D, "xnys", "NYSE", "holidays", "earnings-q4", moved.event_date, "Results", 2, 3, None
    )
    run(engine, [later], poster_for(slack_server), run_id="run-3")
    assert "date changed" not in json.dumps(slack_server.messages[-1].blocks)


def test_channels_are_posted_side_by_side(engine, slack_server):
    """Three channels with two messages each at a 1 s pace: about 1 s, not 3 s."""
    slack_server.latency = 0.05
    poster = poster_for(slack_server, min_interval_per_channel=1.0)
    alerts = make_alerts(600, channels=3)
    assert len(render_digests(alerts, D, "#general")) == 6
    start = time.monotonic()
    run(engine, alerts, poster)
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 2.0
    per_channel: dict[str, list[float]] = {}
    for call in slack_server.messages:
        per_channel.setdefault(call.channel, []).append(call.received_at)
    assert all(b - a >= 0.99 for a, b in (sorted(t) for t in per_channel.values()))


def test_pacing_measured_at_the_server(engine, slack_server):
    poster = poster_for(slack_server, min_interval_per_channel=0.3)
    run(engine, make_alerts(1500, channels=2), poster)
    by_channel: dict[str, list[float]] = {}
    for call in slack_server.messages:
        by_channel.setdefault(call.channel, []).append(call.received_at)
    for times in by_channel.values():
        assert len(times) >= 2
        assert min(b - a for a, b in itertools.pairwise(times)) >= 0.29


def test_webhook_poster(engine, slack_server):
    poster = SlackWebhookPoster(slack_server.webhook_url, min_interval_per_channel=0.01)
    report = run(engine, make_alerts(4, channels=2), poster)
    assert report.sent == 4
    hooks = slack_server.calls_to("webhook")
    assert len(hooks) == 2 and all(c.params["unfurl_links"] is False for c in hooks)
    assert {r["slack_ts"] for r in store.ledger_rows(engine)} == {"webhook:1", "webhook:2"}
    slack_server.fail_next(status=404, error="no_service", method="webhook")
    with pytest.raises(SlackConfigError, match="SLACK_WEBHOOK_URL") as info:
        run(engine, make_alerts(6, channels=2), poster, run_id="run-2")
    assert "webhooksecret123" not in str(info.value) and "webhooksecret123" not in repr(poster)


def worker(url: str, api_url: str, run_id: str, count: int, *extra: str):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "calendar_pipeline_tests.delivery_worker",
            url,
            api_url,
            run_id,
            str(count),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize("history_scope", [True, False])
@pytest.mark.parametrize("channels", [1, 3])
def test_crash_between_post_and_mark_loses_nothing(engine, slack_server, channels, history_scope):
    """Killed right after Slack accepted a message, before the ledger heard: every alert
    still arrives. With the history scope the next run finds the messages in flight and
    repeats none; without it, the only repeats are those messages (one per channel at
    most, since each channel posts one message at a time)."""
    if not history_scope:
        slack_server.scopes -= {"channels:history", "groups:history"}
    url = engine.url.render_as_string(hide_password=False)
    n = 600  # several messages per channel
    args = ("--channels", str(channels))
    crashed = worker(url, slack_server.url, "run-crash", n, "--crash-after-post", *args)
    assert crashed.wait(timeout=120) == 17, crashed.stderr.read()[-2000:]
    assert Counter(r["state"] for r in store.ledger_rows(engine)) == {"claimed": n}
    in_flight = posted_entities(slack_server)
    crashed_messages = len(slack_server.messages)
    assert 1 <= crashed_messages <= channels and sum(in_flight.values()) < n

    # a new run before the claim timeout leaves the dead run's claims alone...
    early = worker(url, slack_server.url, "run-early", n, *args)
    assert early.wait(timeout=120) == 0 and "sent=0" in early.stdout.read()
    # ...and after it, takes them over and delivers everything
    later = worker(url, slack_server.url, "run-late", n, "--claim-timeout", "0", *args)
    assert later.wait(timeout=120) == 0, later.stderr.read()[-2000:]
    out = later.stdout.read()
    counts = posted_entities(slack_server)
    assert set(counts) == {f"Entity {i:04d}" for i in range(n)}  # nothing lost
    if history_scope:
        assert set(counts.values()) == {1}  # none twice
        assert f"confirmed={sum(in_flight.values())}" in out
    else:
        assert {name for name, c in counts.items() if c == 2} == set(in_flight)  # only those
        assert max(counts.values()) == 2 and "confirmed=0" in out
    assert Counter(r["state"] for r in store.ledger_rows(engine)) == {"sent": n}


def test_two_processes_at_once_never_post_the_same_alert_twice(engine, slack_server):
    slack_server.latency = 0.05
    url = engine.url.render_as_string(hide_password=False)
    procs = [worker(url, slack_server.url, f"run-{i}", 600) for i in range(2)]
    for proc in procs:
        assert proc.wait(timeout=180) == 0, proc.stderr.read()[-2000:]
    counts = posted_entities(slack_server)
    assert len(counts) == 600 and set(counts.values()) == {1}
    assert Counter(r["state"] for r in store.ledger_rows(engine)) == {"sent": 600}


def test_run_failure_sensor_posts_job_partition_error_and_link(tmp_path, slack_server):
    universe = tmp_path / "u.csv"
    universe.write_text(
        "entity_id,name,source,key,channel\nfr,F,holidays,country:FR,\nfr,F,holidays,country:FR,\n"
    )
    slack = SlackSettings(
        token=DEFAULT_TOKEN,
        api_url=slack_server.url,
        channel="#alerts",
        alerts_channel="#ops-failures",
        webserver_url="http://dagster.internal:3000/",
    )
    calendar = CalendarSettings(data_dir=str(tmp_path / "data"), universe=str(universe))
    defs = build_defs({"calendar": calendar, "slack": slack})
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("daily_calendar_job").execute_in_process(
            partition_key="2025-12-18", instance=instance, raise_on_error=False
        )
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        (record,) = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
        failure = record.dagster_event
        context = dg.build_run_status_sensor_context(
            sensor_name="slack_run_failure_sensor",
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=run,
            resources={"slack": slack, "calendar": calendar},
        ).for_run_failure()
        sensor = defs.resolve_sensor_def("slack_run_failure_sensor")
        sensor(context)
    (call,) = slack_server.messages
    wire = json.dumps(call.blocks)
    assert call.channel == "#ops-failures"
    assert "daily_calendar_job failed for partition 2025-12-18" in wire
    assert "raw_snapshot" in wire and "duplicate entity_id" in wire
    assert f"http://dagster.internal:3000/runs/{result.run_id}" in wire
    assert DEFAULT_TOKEN not in wire
