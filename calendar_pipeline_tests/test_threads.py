"""Thread replies (alerts/threads.py) against the local Slack Web API, on SQLite and
PostgreSQL: a change of an announced event is replied in the announcing message's thread,
once, through a lost reply and a run that died between the post and the mark."""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import select

from calendar_pipeline.alerts import store, threads
from calendar_pipeline.alerts.deliver import deliver
from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.alerts.slack_client import SlackPoster
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN

MON, TUE = dt.date(2027, 3, 1), dt.date(2027, 3, 2)


def alert(day: dt.date, **changes) -> DueAlert:
    event = dt.date(2027, 3, 16)
    base = DueAlert(
        partition_date=day, entity_id="team", entity_name="Team", source="ics",
        event_id="offsite@x", event_date=event, title="Offsite",
        days_until=(event - day).days, threshold_days=15, channel="#team",
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def announce(engine, server) -> tuple[SlackPoster, str]:
    """Monday's digest, posted through the real delivery path: the announcing message."""
    poster = SlackPoster(token=DEFAULT_TOKEN, api_url=server.url, min_interval_per_channel=0.01)
    report = deliver(
        engine, [alert(MON)], partition_date=MON, mode="send", run_id="mon",
        default_channel="#general", claim_timeout=dt.timedelta(minutes=15),
        outbox_dir=__import__("pathlib").Path("/tmp/outbox-threads"), poster=poster,
        log=lambda _: None,
    )  # fmt: skip
    assert report.sent == 1
    (row,) = store.ledger_rows(engine)
    return poster, row["slack_ts"]


def reply_states(engine) -> dict[str, str]:
    """dedup key -> state of every row of `thread_notices` (the product has no reader)."""
    table = threads.thread_notices
    with engine.connect() as conn:
        return dict(conn.execute(select(table.c.dedup_key, table.c.state)).all())


def cancelled_notice() -> DueAlert:
    return alert(TUE, threshold_days=0, notice="cancelled", change="cancelled")


def tell(engine, poster, run_id="tue", timeout=15):
    notice = cancelled_notice()
    deliver(
        engine, [notice], partition_date=TUE, mode="send", run_id=run_id,
        default_channel="#general", claim_timeout=dt.timedelta(minutes=15),
        outbox_dir=__import__("pathlib").Path("/tmp/outbox-threads"), poster=poster,
        log=lambda _: None,
    )  # fmt: skip
    return threads.reply_in_threads(
        engine, TUE, [notice], poster=poster, run_id=run_id,
        claim_timeout=dt.timedelta(minutes=timeout), default_channel="#general",
    )  # fmt: skip


def test_a_cancellation_is_replied_in_the_announcing_thread_once(engine, slack_server):
    threads.create_thread_tables(engine)
    poster, parent = announce(engine, slack_server)
    report = tell(engine, poster)
    assert report.replied == 1
    (reply,) = slack_server.replies("#team", parent)
    assert reply["text"] == "• *Team*: Offsite · Tue 2027-03-16 · in 14 days · _cancelled_"
    assert reply["thread_ts"] == parent
    # a second run of the day: nothing again, in the thread or the channel
    again = tell(engine, poster, run_id="tue-2")
    assert again.replied == 0 and again.already == 1
    assert len(slack_server.replies("#team", parent)) == 1
    assert sum("_cancelled_" in str(m.params.get("blocks")) for m in slack_server.messages) == 2


def test_a_lost_reply_is_found_in_the_thread_not_repeated(engine, slack_server):
    threads.create_thread_tables(engine)
    poster, parent = announce(engine, slack_server)
    notice = cancelled_notice()
    deliver(
        engine, [notice], partition_date=TUE, mode="send", run_id="tue",
        default_channel="#general", claim_timeout=dt.timedelta(minutes=15),
        outbox_dir=__import__("pathlib").Path("/tmp/outbox-threads"), poster=poster,
        log=lambda _: None,
    )  # fmt: skip
    slack_server.drop_after_accepting(1)  # Slack posts the reply; its answer is lost
    report = threads.reply_in_threads(
        engine, TUE, [notice], poster=poster, run_id="tue",
        claim_timeout=dt.timedelta(minutes=15), default_channel="#general",
    )  # fmt: skip
    assert report.replied == 1
    assert len(slack_server.replies("#team", parent)) == 1
    assert slack_server.calls_to("conversations.replies")  # looked in the thread
    assert reply_states(engine) == {notice.dedup_key: "sent"}


def test_a_run_that_died_after_posting_is_settled_by_the_next(engine, slack_server):
    threads.create_thread_tables(engine)
    poster, parent = announce(engine, slack_server)
    # the first run claims and posts, then dies before marking (simulated: its post done,
    # its row left 'claimed' with the delivery id, claimed long ago)
    notice = cancelled_notice()
    tell(engine, poster)
    with engine.begin() as conn:
        conn.execute(
            threads.thread_notices.update().values(
                state="claimed",
                run_id="dead",
                claimed_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
            )
        )
    report = threads.reply_in_threads(
        engine, TUE, [notice], poster=poster, run_id="next",
        claim_timeout=dt.timedelta(minutes=15), default_channel="#general",
    )  # fmt: skip
    assert report.replied == 1  # settled from the thread: marked sent, not posted again
    assert len(slack_server.replies("#team", parent)) == 1
    assert reply_states(engine) == {notice.dedup_key: "sent"}


def test_a_change_of_an_event_never_announced_gets_no_reply(engine, slack_server):
    threads.create_thread_tables(engine)
    poster = SlackPoster(token=DEFAULT_TOKEN, api_url=slack_server.url)
    report = tell(engine, poster)
    assert report.replied == 0 and slack_server.calls_to("conversations.replies") == []
