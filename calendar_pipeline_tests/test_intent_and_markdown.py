"""The daily-or-history rule (alerts/intent.py) and markdown that upstream text cannot
turn into links or HTML in the Dagster UI (defs/markdown.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from markdown_it import MarkdownIt

from calendar_pipeline.alerts.intent import (
    DAILY,
    HISTORY,
    REFERENCE_DAY_TAG,
    Reference,
    describe,
    intent_for,
    reference_for,
)
from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.defs.due_alerts import _alerts_markdown
from calendar_pipeline.defs.markdown import md_code_block, md_text
from calendar_pipeline.defs.raw_snapshot import _errors_markdown
from calendar_pipeline.sources.model import EntityError

UTC = dt.UTC


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_a_schedule_tick_is_the_reference_stamped_on_its_run():
    ref = Reference.of_schedule_tick(utc(2026, 3, 9, 23, 0), "UTC")
    assert ref.day == dt.date(2026, 3, 9) and ref.why.startswith("schedule tick")
    assert Reference.from_tags(ref.as_tags()) == ref  # what a retry, copying tags, reads
    # the tick's day in the partitions' time zone
    assert Reference.of_schedule_tick(utc(2026, 3, 9, 23, 0), "Asia/Tokyo").day == dt.date(
        2026, 3, 10
    )


def test_backfill_launch_then_root_run_creation():
    by_backfill = reference_for(
        timezone="UTC",
        backfill_id="bf1",
        backfill_launched_at=utc(2026, 3, 8, 12),
        root_run_id="abcdef123",
        root_created_at=utc(2026, 3, 10),
    )
    assert by_backfill.day == dt.date(2026, 3, 8) and "backfill bf1" in by_backfill.why
    by_run = reference_for(
        timezone="UTC", root_run_id="abcdef123", root_created_at=utc(2026, 3, 10)
    )
    assert by_run.day == dt.date(2026, 3, 10) and "run abcdef12" in by_run.why


def test_reference_day_is_taken_in_the_partitions_time_zone():
    late_evening_utc = utc(2026, 3, 10, 23, 30)  # already 11 March in Paris
    paris = reference_for(
        timezone="Europe/Paris", root_run_id="r", root_created_at=late_evening_utc
    )
    assert paris.day == dt.date(2026, 3, 11)
    new_york = reference_for(
        timezone="America/New_York", root_run_id="r", root_created_at=late_evening_utc
    )
    assert new_york.day == dt.date(2026, 3, 10)


def test_intent_is_daily_from_the_reference_day_on():
    ref = Reference(dt.date(2026, 3, 10), "test")
    assert intent_for(dt.date(2026, 3, 9), ref) == HISTORY
    assert intent_for(dt.date(2026, 3, 10), ref) == DAILY
    assert intent_for(dt.date(2026, 3, 11), ref) == DAILY  # a partition ahead: never history
    line = describe([dt.date(2026, 3, d) for d in (7, 8, 9, 10)], ref)
    assert "history (not posted, not recorded): 2026-03-07..2026-03-09 (3 days)" in line
    assert "daily (posted): 2026-03-10" in line and "[reference: test]" in line


def test_reference_round_trips_through_run_tags_and_bad_tags_are_named():
    ref = Reference(dt.date(2026, 3, 10), "schedule tick 2026-03-10T06:00:00+00:00")
    assert Reference.from_tags(ref.as_tags()) == ref
    assert Reference.from_tags({}) is None
    with pytest.raises(ValueError, match=rf"{REFERENCE_DAY_TAG}='2026-13-01' is not a date"):
        Reference.from_tags({REFERENCE_DAY_TAG: "2026-13-01"})


HOSTILE = [
    "<https://evil.example|click>",
    "<!channel> party",
    "[click](https://evil.example)",
    "www.evil.example and https://evil.example/x",
    "![img](https://evil.example/p.png)",
    "**bold** _it_ `code` | pipe",
    "<script>alert(1)</script>",
    "line\nbreak",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_md_text_renders_literally_with_no_link_image_or_html(text):
    html = MarkdownIt("commonmark", {"linkify": False}).enable("table").render(md_text(text))
    assert "<a " not in html and "<img" not in html and "<script" not in html
    assert "<strong>" not in html and "<em>" not in html and "<code>" not in html
    shown = html.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert " ".join(text.split()) in shown.replace("<p>", "").replace("</p>", "").strip()


def test_md_text_cuts_before_escaping():
    cut = md_text("a|b" * 100, max_len=10)
    assert cut.endswith("…") and not cut.endswith("\\…") and cut.count("\\|") == 3


def test_previews_escape_titles_names_and_error_messages():
    alert = DueAlert(
        dt.date(2026, 3, 10), "x", "<!channel> Co", "ics", "e", dt.date(2026, 3, 11),
        "<https://evil.example|click>", 1, 1, None,
    )  # fmt: skip
    error = EntityError(
        entity_id="x", source="ics", error_type="HTTPError", message="[a](https://evil.example)"
    )
    md = MarkdownIt("commonmark").enable("table")
    for preview in (_alerts_markdown([alert]), _errors_markdown([error])):
        html = md.render(preview)
        assert "<table>" in html and "<a " not in html and "evil" in html
    assert "&lt;!channel&gt; Co" in md.render(_alerts_markdown([alert]))


def test_code_block_cannot_be_closed_by_its_content():
    text = "before\n```\n[click](https://evil.example)\n````\nafter"
    html = MarkdownIt("commonmark").render(md_code_block(text))
    assert html.count("<pre>") == 1 and "<a " not in html and "after" in html
