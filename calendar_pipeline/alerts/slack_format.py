"""Render due alerts as Slack Block Kit digests: one digest per channel, pure and deterministic.

Everything that comes from upstream (entity names, event titles) goes through
:func:`escape_slack`, so a calendar feed cannot ping ``@channel``, mention a user or
hide a link behind friendly text: Slack shows ``<!channel>`` literally.

Slack's limits are respected by construction (see the ``MAX_*`` constants); a digest
that does not fit is continued in more sections and, if needed, in more messages for
the same channel. Every alert lands in exactly one message, whose ``dedup_keys`` say so.
"""

from __future__ import annotations

import datetime as dt
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from calendar_pipeline.alerts.change_words import change_words, count_line
from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.text import weekday_date

# Documented Block Kit limits.
MAX_BLOCKS_PER_MESSAGE = 50
MAX_SECTION_TEXT_CHARS = 3_000
MAX_HEADER_TEXT_CHARS = 150
# Not documented: chat.postMessage rejects messages whose block texts add up to roughly
# 12,000-13,000 characters with ``msg_blocks_too_long`` (slackapi/bolt-js#2509, #2867).
# We stay well below that.
MAX_MESSAGE_TEXT_CHARS = 10_000

_MAX_CONTEXT_CHARS = 200  # our context line is short and bounded
_SUMMARY_CHARS = 120  # "Since yesterday: 12 new, 3 moved, 2 renamed, 1 cancelled", bounded

MAX_TITLE_CHARS = 200
MAX_ENTITY_NAME_CHARS = 100
ELLIPSIS = "…"

# Bidirectional-text controls can make visible text lie about its content; drop them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


@dataclass(frozen=True)
class SlackMessage:
    """One ``chat.postMessage`` payload and the alerts it carries."""

    channel: str
    text: str  # plain-text fallback, used in notifications
    blocks: list[dict]
    dedup_keys: tuple[str, ...]
    thread_ts: str | None = None  # a reply in the thread of this message (alerts/threads.py)


def escape_slack(text: str, max_len: int | None = None) -> str:
    """Make upstream text safe and inert for Slack mrkdwn.

    Control characters are dropped (whitespace ones such as newlines and tabs become
    spaces), runs of whitespace collapse to one space, and ``&``, ``<``, ``>`` become
    entities, so ``<!channel>`` or ``<https://x|click>`` shows as text and pings no one.
    ``max_len`` counts visible characters and is applied before escaping, so an entity
    is never cut in half; a cut text ends with "…".
    """
    cleaned = "".join(_clean_char(ch) for ch in text)
    collapsed = " ".join(cleaned.split())
    if max_len is not None and len(collapsed) > max_len:
        if max_len <= 0:
            return ""
        collapsed = collapsed[: max_len - 1].rstrip() + ELLIPSIS
    return collapsed.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clean_char(ch: str) -> str:
    if ch.isspace():
        return " "
    if unicodedata.category(ch) == "Cc" or ch in _BIDI_CONTROLS:
        return ""
    return ch


def bucket_label(threshold_days: int) -> str:
    """The section title of a threshold bucket: 1 -> "Today or tomorrow"."""
    if threshold_days == 0:  # change notices (alerts/change_words.py)
        return "Changes since yesterday"
    if threshold_days == 1:
        return "Today or tomorrow"
    if threshold_days == 7:
        return "Within a week"
    return f"Within {threshold_days} days"


def render_digests(
    alerts: Sequence[DueAlert], partition_date: dt.date, default_channel: str
) -> list[SlackMessage]:
    """One digest per channel (channels sorted), split into several messages if needed.

    An alert goes to ``alert.channel`` or, when that is empty, to ``default_channel``.
    """
    by_channel: dict[str, list[DueAlert]] = defaultdict(list)
    for alert in alerts:
        by_channel[alert.channel or default_channel].append(alert)

    messages: list[SlackMessage] = []
    for channel in sorted(by_channel):
        messages.extend(_render_channel(channel, by_channel[channel], partition_date))
    return messages


def render_outbox_text(messages: Iterable[SlackMessage]) -> str:
    """A terminal/run-log rendering of digests: the channel, then each block's text.

    Entities are decoded back (``&lt;`` shows as ``<``) so the text reads as Slack will
    display it; control characters were already removed by :func:`escape_slack`.
    """
    chunks: list[str] = []
    for message in messages:
        count = _plural(len(message.dedup_keys), "alert")
        lines = [f"=== {message.channel} ({count}) ==="]
        lines.extend(_unescape(text) for text in _block_texts(message.blocks))
        chunks.append("\n".join(lines))
    return "\n\n".join(chunks) + ("\n" if chunks else "")


# --- one channel ---------------------------------------------------------------------


class _Section:
    """A mrkdwn section being filled: a bold title, event lines, the alerts behind them."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.lines: list[str] = []
        self.keys: list[str] = []
        self.chars = _slack_len(title)

    def add(self, line: str, key: str) -> None:
        self.lines.append(line)
        self.keys.append(key)
        self.chars += 1 + _slack_len(line)  # newline + line

    def text(self) -> str:
        return "\n".join([self.title, *self.lines])


def _render_channel(
    channel: str, alerts: list[DueAlert], partition_date: dt.date
) -> list[SlackMessage]:
    summary = count_line(alerts)  # "Since yesterday: 2 new, 1 cancelled" opens the digest
    pages = _paginate(_bucketed_lines(alerts), reserve=_SUMMARY_CHARS if summary else 0)
    total = len(alerts)
    return [
        _build_message(
            channel,
            sections,
            partition_date,
            part,
            len(pages),
            total,
            summary=summary if part == 1 else "",
        )
        for part, sections in enumerate(pages, start=1)
    ]


def _bucketed_lines(alerts: list[DueAlert]) -> list[tuple[int, list[tuple[str, str]]]]:
    """``[(threshold, [(line, dedup_key), ...]), ...]``, buckets and events in order."""
    buckets: dict[int, list[DueAlert]] = defaultdict(list)
    for alert in alerts:
        buckets[alert.threshold_days].append(alert)
    ordered = []
    for threshold in sorted(buckets):
        events = sorted(
            buckets[threshold],
            key=lambda a: (a.event_date, a.entity_name, a.title, a.dedup_key),
        )
        ordered.append((threshold, [(_event_line(a), a.dedup_key) for a in events]))
    return ordered


def _event_line(alert: DueAlert) -> str:
    """`• *Team*: Offsite · Fri 2027-03-19 10:30 UTC · in 18 days · _renamed (was X)_`: a
    line read alone (a notification, a search result) says what, when and what changed."""
    name = escape_slack(alert.entity_name, MAX_ENTITY_NAME_CHARS) or "(unnamed)"
    title = escape_slack(alert.title, MAX_TITLE_CHARS) or "(untitled)"
    when = weekday_date(alert.event_date) + (f" {alert.time_text}" if alert.time_text else "")
    line = f"• *{name}*: {title} · {when} · {_relative_day(alert.days_until)}"
    for word in change_words(alert):
        line += f" · _{escape_slack(word, MAX_TITLE_CHARS + 20)}_"
    if alert.previous_date is not None and alert.previous_date != alert.event_date:
        line += f" · _date changed, was {weekday_date(alert.previous_date)}_"
    if alert.previous_time_text:
        line += f" · _time changed, was {alert.previous_time_text}_"
    if alert.data_note:
        line += f" · _{escape_slack(alert.data_note, 120)}_"
    return line


event_line = _event_line  # the public name: alerts/threads.py replies with the same line


def _relative_day(days: int) -> str:
    if days == 0:
        return "today"
    if days == 1:
        return "tomorrow"
    if days == -1:
        return "yesterday"
    return f"in {days} days" if days > 0 else f"{-days} days ago"


def _paginate(
    buckets: list[tuple[int, list[tuple[str, str]]]], reserve: int = 0
) -> list[list[_Section]]:
    """Pack lines into sections and sections into messages, within Slack's limits.

    A section holds at most ``MAX_SECTION_TEXT_CHARS``; a message holds a header, at
    most ``MAX_BLOCKS_PER_MESSAGE - 2`` sections and a context block, and at most
    ``MAX_MESSAGE_TEXT_CHARS`` of text in all. A bucket that does not fit continues in
    a new section titled "(continued)", in the same message or the next one. ``reserve``
    keeps one block and that many characters free for the summary line.
    """
    max_sections = MAX_BLOCKS_PER_MESSAGE - 2 - (1 if reserve else 0)  # header + context
    sections_budget = MAX_MESSAGE_TEXT_CHARS - MAX_HEADER_TEXT_CHARS - _MAX_CONTEXT_CHARS - reserve
    pages: list[list[_Section]] = [[]]
    page_chars = 0
    for threshold, lines in buckets:
        label = bucket_label(threshold)
        section: _Section | None = None
        for line, key in lines:
            added = 1 + _slack_len(line)  # newline + line
            fits = (
                section is not None
                and section.chars + added <= MAX_SECTION_TEXT_CHARS
                and page_chars + added <= sections_budget
            )
            if not fits:
                title = f"*{label}*" if section is None else f"*{label} (continued)*"
                section = _Section(title)
                page_full = len(pages[-1]) >= max_sections
                if page_full or page_chars + section.chars + added > sections_budget:
                    pages.append([])
                    page_chars = 0
                pages[-1].append(section)
                page_chars += section.chars
            section.add(line, key)
            page_chars += added
    return [page for page in pages if page]


def _build_message(
    channel: str,
    sections: list[_Section],
    partition_date: dt.date,
    part: int,
    parts: int,
    channel_total: int,
    summary: str = "",
) -> SlackMessage:
    keys = tuple(key for section in sections for key in section.keys)
    count = len(keys)
    day = weekday_date(partition_date)
    part_suffix = f" (part {part}/{parts})" if parts > 1 else ""

    header = _cut(f"Upcoming events for {day}{part_suffix}", MAX_HEADER_TEXT_CHARS)
    if parts > 1:
        fallback = f"{count} of {channel_total} upcoming events for {partition_date.isoformat()}"
        context = f"{_plural(count, 'event')} in this message, {channel_total} in all"
    else:
        fallback = f"{_plural(count, 'upcoming event')} for {partition_date.isoformat()}"
        context = _plural(count, "event")
    context += f" · partition {partition_date.isoformat()}{part_suffix}"

    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}}
    ]
    if summary:
        blocks.append(_mrkdwn_section(f"_{escape_slack(summary)}_"))
    blocks.extend(_mrkdwn_section(section.text()) for section in sections)
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": escape_slack(context), "verbatim": True}],
        }
    )
    return SlackMessage(
        channel=channel,
        text=escape_slack(fallback + part_suffix),
        blocks=blocks,
        dedup_keys=keys,
    )


def _mrkdwn_section(text: str) -> dict:
    # verbatim: Slack must not auto-link channel names or parse mentions in our text.
    return {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _cut(text: str, max_len: int) -> str:
    return text if len(text) <= max_len else text[: max_len - 1] + ELLIPSIS


def _slack_len(text: str) -> int:
    """Length in UTF-16 code units: never less than the code-point count Slack may use."""
    return len(text.encode("utf-16-le")) // 2


def _block_texts(blocks: list[dict]) -> list[str]:
    texts = []
    for block in blocks:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts.extend(element["text"] for element in block.get("elements", []) if "text" in element)
    return texts


def _unescape(text: str) -> str:
    """The exact inverse of the entity step of :func:`escape_slack` (``&`` last)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


MAX_FAILURE_ERROR_CHARS = 1500


def render_run_failure(
    *,
    channel: str,
    job_name: str,
    run_id: str,
    partition: str | None,
    step: str | None,
    error: str,
    run_url: str,
) -> SlackMessage:
    """A run-failure alert: which job and partition failed, where, why, and a link."""
    where = f"`{escape_slack(step, 100)}`" if step else "the run"
    partition_text = f" for partition {escape_slack(partition, 40)}" if partition else ""
    title = f"{job_name} failed{partition_text}"
    error_text = escape_slack(error, MAX_FAILURE_ERROR_CHARS) or "(no error message)"
    link = f"<{run_url}|Open run {escape_slack(run_id[:8], 8)} in Dagster>"
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(title, 150)}},
        _mrkdwn_section(f"*Failed in* {where}\n```{error_text}```"),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": link}]},
    ]
    return SlackMessage(
        channel=channel,
        text=escape_slack(f"{title}: {error}", 300),
        blocks=blocks,
        dedup_keys=(),
    )


def render_stale(
    *, channel: str, asset: str, partition: str, due: str, late_hours: float,
    newest: str | None, missing_since: str | None, asset_url: str,
) -> SlackMessage:  # fmt: skip
    """A staleness alert: which partition of which asset is missing, since when (its
    deadline, and the first day missing after the newest partition), what to look at."""
    title = f"{asset} is stale: partition {partition} missing since {due}"
    if newest and missing_since and missing_since != partition:
        gap = (
            f"The newest partition is {escape_slack(newest, 40)}: every day since "
            f"{escape_slack(missing_since, 40)} is missing. "
        )
    elif newest:
        gap = f"The newest partition before it is {escape_slack(newest, 40)}. "
    else:
        gap = ""
    body = (
        f"Partition {escape_slack(partition, 40)} was due by {escape_slack(due, 40)} and is "
        f"{late_hours:.1f} h late. {gap}Runs of other partitions (a backfill of history) do "
        "not count. Check `daily_calendar_schedule`, that `dagster-daemon` runs, and the "
        "latest runs."
    )
    link = f"<{asset_url}|Open {escape_slack(asset, 60)} in Dagster>"
    return SlackMessage(
        channel=channel,
        text=escape_slack(f"{title}. {body}", 400),
        blocks=[
            {"type": "header", "text": {"type": "plain_text", "text": _cut(title, 150)}},
            _mrkdwn_section(body),
            {"type": "context", "elements": [{"type": "mrkdwn", "text": link}]},
        ],
        dedup_keys=(),
    )
