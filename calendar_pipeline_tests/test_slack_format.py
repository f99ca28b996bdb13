"""Slack digest rendering: escaping, grouping, ordering, Slack's limits, determinism."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from collections import Counter

import pytest

from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.alerts.slack_format import (
    MAX_BLOCKS_PER_MESSAGE,
    MAX_HEADER_TEXT_CHARS,
    MAX_MESSAGE_TEXT_CHARS,
    MAX_SECTION_TEXT_CHARS,
    SlackMessage,
    bucket_label,
    escape_slack,
    render_digests,
    render_outbox_text,
)

PARTITION = dt.date(2026, 11, 23)  # a Monday
HOSTILE_TITLES = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<@U123>",
    "<#C999|general>",
    "<!subteam^S1>",
    "<!subteam^S1|@oncall>",
    "<https://evil.example|click>",
    "<mailto:x@evil.example|mail>",
    "<!date^1392734382^{date}|fallback>",
]
ENTITY_RE = re.compile(r"&(?!amp;|lt;|gt;)")  # a bare "&": an entity was cut or missed


def alert(
    *,
    entity_id: str = "fr",
    name: str = "France",
    event_id: str = "e1",
    days: int = 0,
    threshold: int = 1,
    title: str = "Holiday",
    channel: str | None = None,
) -> DueAlert:
    return DueAlert(
        partition_date=PARTITION,
        entity_id=entity_id,
        entity_name=name,
        source="holidays",
        event_id=event_id,
        event_date=PARTITION + dt.timedelta(days=days),
        title=title,
        days_until=days,
        threshold_days=threshold,
        channel=channel,
    )


def block_texts(block: dict) -> list[str]:
    texts = [block["text"]["text"]] if "text" in block else []
    return texts + [element["text"] for element in block.get("elements", [])]


def section_lines(messages: list[SlackMessage]) -> list[str]:
    """Every event line of every section, in display order."""
    return [
        line
        for message in messages
        for block in message.blocks
        if block["type"] == "section"
        for line in block["text"]["text"].split("\n")[1:]
    ]


def assert_within_slack_limits(messages: list[SlackMessage]) -> None:
    for message in messages:
        assert len(message.blocks) <= MAX_BLOCKS_PER_MESSAGE
        assert message.blocks[0]["type"] == "header"
        assert message.blocks[-1]["type"] == "context"
        total = 0
        for block in message.blocks:
            for text in block_texts(block):
                limit = MAX_HEADER_TEXT_CHARS if block["type"] == "header" else 3000
                assert 0 < len(text) <= limit, (block["type"], len(text))
                assert not ENTITY_RE.search(text)
                total += len(text)
        assert total <= MAX_MESSAGE_TEXT_CHARS


def assert_each_key_once(alerts: list[DueAlert], messages: list[SlackMessage]) -> None:
    counts = Counter(key for message in messages for key in message.dedup_keys)
    assert counts == Counter(a.dedup_key for a in alerts)
    assert set(counts.values()) == {1}


# --- escape_slack ------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE_TITLES)
def test_escape_slack_leaves_no_control_sequence(hostile: str) -> None:
    escaped = escape_slack(hostile)
    assert "<" not in escaped and ">" not in escaped
    assert escaped.startswith("&lt;") and escaped.endswith("&gt;")
    assert escaped.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == hostile


def test_escape_slack_escapes_ampersand_first_so_entities_stay_visible_text() -> None:
    assert escape_slack("AT&T <b>") == "AT&amp;T &lt;b&gt;"
    # A literal "&lt;" in a title must show as "&lt;", not turn into "<".
    assert escape_slack("&lt;!channel&gt;") == "&amp;lt;!channel&amp;gt;"


def test_escape_slack_strips_control_characters_and_collapses_whitespace() -> None:
    raw = "  Line1\nLine2\tTabbed\r\n  spaced\x00nul\x1b[31mred\x7fdel\x9bcsi\u202eevil  "
    assert escape_slack(raw) == "Line1 Line2 Tabbed spacednul[31mreddelcsievil"


def test_escape_slack_keeps_emoji_and_non_ascii() -> None:
    text = "Fête nationale 🇫🇷 · 👨‍👩‍👧 家族 · Ünïcödé"
    assert escape_slack(text) == text


def test_escape_slack_cuts_with_an_ellipsis() -> None:
    assert escape_slack("a" * 300, 200) == "a" * 199 + "…"
    assert escape_slack("exactly ten", 11) == "exactly ten"
    assert escape_slack("word " * 10, 6) == "word…"  # no space before the ellipsis


@pytest.mark.parametrize("max_len", range(1, 12))
def test_escape_slack_never_splits_an_entity(max_len: int) -> None:
    escaped = escape_slack("&<>&<>&<>&<>&<>", max_len)
    assert not ENTITY_RE.search(escaped)
    visible = escaped.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert len(visible) <= max_len


def test_bucket_labels() -> None:
    assert bucket_label(1) == "Today or tomorrow"
    assert bucket_label(7) == "Within a week"
    assert bucket_label(3) == "Within 3 days"
    assert bucket_label(30) == "Within 30 days"


# --- render_digests: content -------------------------------------------------------------


def test_one_digest_per_channel_sorted_with_default_channel() -> None:
    alerts = [
        alert(entity_id="us", name="USA", channel="#zeta"),
        alert(entity_id="fr", name="France", channel=None),
        alert(entity_id="de", name="Germany", channel="#alpha"),
        alert(entity_id="jp", name="Japan", channel=""),
    ]
    messages = render_digests(alerts, PARTITION, "#calendar")
    assert [m.channel for m in messages] == ["#alpha", "#calendar", "#zeta"]
    by_channel = {m.channel: set(m.dedup_keys) for m in messages}
    assert by_channel["#calendar"] == {alerts[1].dedup_key, alerts[3].dedup_key}


def test_digest_layout_buckets_ascending_and_events_sorted() -> None:
    alerts = [
        alert(entity_id="a", name="Zed", event_id="1", days=25, threshold=30, title="Late"),
        alert(entity_id="b", name="Beta", event_id="2", days=5, threshold=7, title="Week"),
        alert(entity_id="c", name="Alpha", event_id="3", days=5, threshold=7, title="Week"),
        alert(entity_id="d", name="Alpha", event_id="4", days=4, threshold=7, title="Zzz"),
        alert(entity_id="e", name="Now", event_id="5", days=1, threshold=1, title="Soon"),
        alert(entity_id="f", name="Aardvark", event_id="6", days=6, threshold=7, title="Late"),
    ]
    [message] = render_digests(alerts, PARTITION, "#cal")
    header, *sections, context = message.blocks
    assert header == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": "Upcoming events for Mon 2026-11-23",
            "emoji": True,
        },
    }
    assert [s["text"]["text"] for s in sections] == [
        "*Today or tomorrow*\n• *Now*: Soon · Tue 2026-11-24 · tomorrow",
        "*Within a week*\n"
        "• *Alpha*: Zzz · Fri 2026-11-27 · in 4 days\n"
        "• *Alpha*: Week · Sat 2026-11-28 · in 5 days\n"
        "• *Beta*: Week · Sat 2026-11-28 · in 5 days\n"
        "• *Aardvark*: Late · Sun 2026-11-29 · in 6 days",
        "*Within 30 days*\n• *Zed*: Late · Fri 2026-12-18 · in 25 days",
    ]
    assert {(s["text"]["type"], s["text"]["verbatim"]) for s in sections} == {("mrkdwn", True)}
    assert context["type"] == "context"
    assert context["elements"][0]["text"].startswith("6 events")
    assert message.text == "6 upcoming events for 2026-11-23"
    display_order = (4, 3, 2, 1, 5, 0)
    assert message.dedup_keys == tuple(alerts[i].dedup_key for i in display_order)


def test_today_and_singular_wording() -> None:
    [message] = render_digests([alert(days=0)], PARTITION, "#cal")
    assert message.blocks[1]["text"]["text"].endswith("· Mon 2026-11-23 · today")
    assert message.text == "1 upcoming event for 2026-11-23"


def test_hostile_names_and_titles_cannot_ping_or_link() -> None:
    alerts = [
        alert(event_id=str(i), name=hostile, title=f"{hostile} {hostile}\n<!here>")
        for i, hostile in enumerate(HOSTILE_TITLES)
    ]
    messages = render_digests(alerts, PARTITION, "#cal")
    payload = json.dumps([m.blocks for m in messages] + [m.text for m in messages])
    assert "<" not in payload and ">" not in payload
    assert "&lt;!channel&gt;" in payload
    assert "\\n&lt;!here" not in payload  # the newline in the title became a space


def test_long_upstream_strings_are_cut() -> None:
    [message] = render_digests([alert(name="N" * 500, title="T" * 500)], PARTITION, "#c")
    line = message.blocks[1]["text"]["text"].split("\n")[1]
    assert f"*{'N' * 99}…*" in line
    assert f": {'T' * 199}… ·" in line


# --- render_digests: limits and splitting -------------------------------------------------


def many_alerts(count: int, seed: int = 7) -> list[DueAlert]:
    """Alerts over two channels and five buckets, with long, entity-heavy titles."""
    rng = random.Random(seed)
    thresholds = [1, 3, 7, 15, 30]
    alerts = []
    for i in range(count):
        threshold = thresholds[i % 5]
        days = rng.randint(0, threshold)
        title = f"Event {i} & <{'x' * rng.randint(0, 150)}> 🎉"
        alerts.append(
            alert(
                entity_id=f"ent{i % 40}",
                name=f"Entity {i % 40} & Co",
                event_id=f"ev{i}",
                days=days,
                threshold=threshold,
                title=title,
                channel="#ops" if i % 3 else None,
            )
        )
    return alerts


def test_hundreds_of_alerts_split_within_limits_and_none_dropped() -> None:
    alerts = many_alerts(600)
    messages = render_digests(alerts, PARTITION, "#calendar")

    assert_within_slack_limits(messages)
    assert_each_key_once(alerts, messages)
    for channel in ("#calendar", "#ops"):
        parts = [m for m in messages if m.channel == channel]
        assert len(parts) > 1
        for number, part in enumerate(parts, start=1):
            suffix = f"(part {number}/{len(parts)})"
            assert part.blocks[0]["text"]["text"].endswith(suffix)
            assert part.text.endswith(suffix)
    # A bucket too big for one section continues in another one, labelled as such.
    titles = [b["text"]["text"].split("\n")[0] for m in messages for b in m.blocks[1:-1]]
    assert "*Within 30 days (continued)*" in titles
    assert len(section_lines(messages)) == len(alerts)


def test_splits_at_fifty_blocks_when_there_are_many_small_sections() -> None:
    # 120 distinct thresholds -> 120 one-line sections -> 48 per message at most.
    alerts = [alert(event_id=str(n), days=n, threshold=n, title="x") for n in range(1, 121)]
    messages = render_digests(alerts, PARTITION, "#cal")

    assert [len(m.blocks) for m in messages] == [50, 50, 2 + 120 - 2 * 48]
    assert_within_slack_limits(messages)
    assert_each_key_once(alerts, messages)
    assert messages[2].blocks[0]["text"]["text"] == "Upcoming events for Mon 2026-11-23 (part 3/3)"


def test_one_huge_bucket_fills_sections_to_the_limit() -> None:
    alerts = [
        alert(event_id=str(i), name="&" * 100, title="&" * 200, threshold=30, days=20)
        for i in range(50)
    ]
    messages = render_digests(alerts, PARTITION, "#cal")
    assert_within_slack_limits(messages)
    assert_each_key_once(alerts, messages)
    sections = [b for m in messages for b in m.blocks if b["type"] == "section"]
    # Each worst-case line is ~1,540 characters: exactly one fits per 3,000-character section.
    assert all(len(s["text"]["text"]) <= MAX_SECTION_TEXT_CHARS for s in sections)
    assert len(sections) == 50


def test_header_stays_within_150_characters_with_long_dates_and_many_parts() -> None:
    far = dt.date(9999, 12, 31)
    alerts = [DueAlert(far, "e", "E", "s", str(n), far, "t", 0, n, None) for n in range(1, 2500)]
    messages = render_digests(alerts, far, "#cal")
    assert len(messages) > 50
    headers = [m.blocks[0]["text"]["text"] for m in messages]
    assert all(len(h) <= MAX_HEADER_TEXT_CHARS for h in headers)
    assert (
        headers[-1] == f"Upcoming events for Fri 9999-12-31 (part {len(messages)}/{len(messages)})"
    )


def test_no_alerts_no_messages() -> None:
    assert render_digests([], PARTITION, "#cal") == []
    assert render_outbox_text([]) == ""


def test_output_is_deterministic_whatever_the_input_order() -> None:
    ties = [alert(event_id=f"tie{i}", title="Same", days=2, threshold=3) for i in range(9)]
    alerts = many_alerts(300) + ties  # ties differ only in their dedup key
    shuffled = alerts[:]
    random.Random(1).shuffle(shuffled)
    first = render_digests(alerts, PARTITION, "#calendar")
    assert render_digests(shuffled, PARTITION, "#calendar") == first
    assert json.dumps([m.blocks for m in first]) == json.dumps(
        [m.blocks for m in render_digests(alerts, PARTITION, "#calendar")]
    )


# --- render_outbox_text -------------------------------------------------------------------


def test_outbox_text_shows_channels_and_readable_lines() -> None:
    alerts = [
        alert(entity_id="fr", title="Armistice <!channel> & more", channel="#eu"),
        alert(entity_id="us", name="USA", title="Thanksgiving", days=3, threshold=3),
    ]
    text = render_outbox_text(render_digests(alerts, PARTITION, "#calendar"))
    assert text.splitlines() == [
        "=== #calendar (1 alert) ===",
        "Upcoming events for Mon 2026-11-23",
        "*Within 3 days*",
        "• *USA*: Thanksgiving · Thu 2026-11-26 · in 3 days",
        "1 event · partition 2026-11-23",
        "",
        "=== #eu (1 alert) ===",
        "Upcoming events for Mon 2026-11-23",
        "*Today or tomorrow*",
        "• *France*: Armistice <!channel> & more · Mon 2026-11-23 · today",
        "1 event · partition 2026-11-23",
    ]
