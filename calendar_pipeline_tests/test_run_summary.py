"""run_summary: what `calendar-pipeline run` prints, from plain facts (no Dagster).

The digests are rendered by the real renderer (alerts/slack_format.py), so a change in
its format that the summary cannot read fails here."""

import datetime as dt
import json

from calendar_pipeline import run_summary
from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.alerts.slack_format import render_digests, render_outbox_text
from calendar_pipeline.run_summary import (
    SECTIONS,
    Check,
    RunFacts,
    as_json,
    parse_digest,
    summary_lines,
)

D = dt.date(2026, 12, 5)


def alert(n: int, days: int, threshold: int, channel: str | None) -> DueAlert:
    return DueAlert(
        partition_date=D,
        entity_id=f"e{n}",
        entity_name=f"Entity {n}",
        source="holidays",
        event_id=f"ev{n}",
        event_date=D + dt.timedelta(days=days),
        title=f"Holiday number {n}",
        days_until=days,
        threshold_days=threshold,
        channel=channel,
    )


def digest(alerts: list[DueAlert]) -> str:
    return render_outbox_text(render_digests(alerts, D, "#default"))


def many(count: int, channel: str | None, start: int = 0) -> list[DueAlert]:
    buckets = [(0, 1), (2, 3), (5, 7), (12, 15), (20, 30)]
    return [alert(start + n, *buckets[n % 5], channel) for n in range(count)]


def dry_run(alerts: list[DueAlert], **kwargs) -> RunFacts:
    text = digest(alerts)
    messages = text.count("\n=== ") + text.startswith("=== ")
    return RunFacts(
        partition=D.isoformat(),
        checks=[Check("raw_snapshot", "has_events", True), Check("due_alerts", "rows", True)],
        assets={"raw_snapshot": {"dagster/row_count": 900, "entities": 250}},
        delivery={"mode": "dry_run", "due": len(alerts), "messages": messages, "sent": 0},
        digest=text,
        outbox="data/outbox/2026-12-05/digest.txt",
        **kwargs,
    )


def test_parse_digest_counts_alerts_per_channel_and_threshold_over_split_messages():
    # 700 alerts in one channel: split over several messages and "(continued)" sections
    alerts = many(700, None) + many(4, "#markets", start=1000)
    channels = {c.channel: c for c in parse_digest(digest(alerts))}
    assert set(channels) == {"#default", "#markets"}
    default = channels["#default"]
    assert default.messages > 1 and default.alerts == 700 == len(default.lines)
    assert default.sections == {
        "Today or tomorrow": 140,
        "Within 3 days": 140,
        "Within a week": 140,
        "Within 15 days": 140,
        "Within 30 days": 140,
    }
    assert channels["#markets"].alerts == 4 and sum(channels["#markets"].sections.values()) == 4
    assert default.lines[0].startswith("• *Entity 0*: Holiday number 0")
    assert parse_digest("Nothing to post.") == []


def test_a_day_in_dry_run_is_a_dozen_lines_with_counts_first_lines_and_where_the_rest_is():
    facts = dry_run(many(700, None) + many(4, "#markets", start=1000))
    lines = summary_lines(facts)
    text = "\n".join(lines)
    assert len(lines) <= 14, text
    assert lines[0] == "2026-12-05 (daily): 900 events of 250 entities; 2 checks passed"
    assert "dry run, nothing posted or recorded: 704 alerts would be posted in" in lines[1]
    assert (
        "#default: 700 alerts (today or tomorrow 140, within 3 days 140, within a week 140, "
        "within 15 days 140, within 30 days 140)" in lines
    )
    assert (
        "#markets: 4 alerts (today or tomorrow 1, within 3 days 1, within a week 1, "
        "within 15 days 1)" in lines
    )
    assert "    • *Entity 0*: Holiday number 0 · Sat 2026-12-05 · today" in lines
    assert "    … 697 more" in lines  # 3 shown of 700
    assert any(
        line.startswith("Full digest: data/outbox/2026-12-05/digest.txt") and "--full" in line
        for line in lines
    )
    assert (
        lines[-1]
        == "Done: 2026-12-05, dry run, 704 alerts for 2 channels, nothing posted; no warnings."
    )


def test_the_ui_is_named_only_when_the_runs_are_in_an_instance_it_shows():
    facts = dry_run(many(3, None), slack_run_id="0123456789abcdef")
    assert "in the UI" not in "\n".join(summary_lines(facts))
    facts.in_ui = True
    assert any(
        "in the UI: run 01234567 of slack_alert_job, step send_slack_alerts, metadata `digest`"
        in line
        for line in summary_lines(facts)
    )


def test_many_channels_and_warnings_stay_about_thirty_lines():
    alerts = [a for n in range(20) for a in many(10, f"#team-{n:02d}", start=100 * n)]
    facts = dry_run(alerts)
    facts.checks += [
        Check("raw_snapshot", f"check_{n}", False, "WARN", f"problem {n}\nmore detail")
        for n in range(10)
    ]
    facts.delivery.update(failed=3, failed_channels="#team-01")
    lines = summary_lines(facts)
    assert len(lines) <= 28, "\n".join(lines)  # + the CLI's two progress lines: 30
    assert "… 14 more channels with 140 alerts" in lines
    assert sum(line.startswith("    • ") for line in lines) == 6  # 2 channels previewed
    assert "Warnings (11):" in lines
    assert "  check raw_snapshot:check_0 warned: problem 0" in lines  # first line only
    assert "  … 6 more (--json lists them all)" in lines
    assert lines[-1].endswith("; 11 warnings.")
    assert len(as_json(facts)["warnings"]) == 11


def test_history_says_nothing_is_posted_and_how_to_post():
    facts = RunFacts(
        partition="2025-12-20",
        intent="history",
        delivery={"mode": "history", "due": 835, "history_not_posted": 835},
    )
    lines = summary_lines(facts)
    assert lines[0].startswith("Slack: history, nothing posted or recorded: 835 alerts")
    assert "--mode send posts them" in lines[0]
    assert lines[-1] == "Done: 2025-12-20, history, nothing posted; no warnings."
    assert not any(line.startswith("Full digest") for line in lines)


def test_send_and_record_only_say_what_they_did():
    sent = RunFacts(
        partition="2025-12-20",
        intent="history",
        forced_mode="send",
        delivery={"mode": "send", "due": 9, "sent": 7, "messages": 3, "already_delivered": 2},
    )
    lines = summary_lines(sent)
    assert lines[0] == (
        "Slack: sent (--mode send) 7 alerts in 3 messages; 2 already delivered earlier"
    )
    assert lines[-1] == "Done: 2025-12-20, 7 alerts posted to Slack; no warnings."
    recorded = RunFacts(partition="2025-12-20", delivery={"mode": "record_only", "recorded": 4})
    assert summary_lines(recorded)[0] == (
        "Slack: record_only, nothing posted: 4 alerts recorded as delivered"
    )


def test_a_failed_run_ends_with_its_errors():
    facts = RunFacts(
        partition="2026-12-05",
        checks=[Check("raw_snapshot", "has_events", False, "ERROR", "No events at all.")],
        errors=["Slack refused #nope"],
    )
    lines = summary_lines(facts)
    assert "  error: Slack refused #nope" in lines
    assert "  check raw_snapshot:has_events failed: No events at all." in lines
    assert lines[-1] == "Failed: 2026-12-05; 2 warnings above say why."
    assert as_json(facts)["ok"] is False


def test_a_new_section_is_one_function():
    """How another part joins the summary (here a made-up asset's rows)."""

    def example(facts: RunFacts) -> list[str]:
        rows = facts.assets.get("example_asset", {}).get("rows", [])
        return [f"Example: {', '.join(r['id'] for r in rows)}"] if rows else []

    facts = dry_run(many(3, None))
    facts.assets["example_asset"] = {"rows": [{"id": "x-1"}]}
    lines = summary_lines(facts, [*SECTIONS, example])
    assert lines[-2:] == ["Example: x-1", lines[-1]] and lines[-1].startswith("Done:")
    assert "Example: x-1" not in summary_lines(facts)  # the default parts are unchanged
    # a warning part is counted in the closing line
    run_summary.WARNINGS.append(example)
    try:
        assert summary_lines(facts)[-1].endswith("; 1 warning.")
    finally:
        run_summary.WARNINGS.remove(example)


def test_broken_entities_are_warnings_one_line_each_and_changes_a_line():
    facts = dry_run(many(3, None))
    facts.assets["raw_snapshot"]["broken_entities"] = [
        {"entity_id": "team-b", "name": "Team B", "source": "ics", "state": "carried",
         "since": "2027-05-04", "data_of": "2027-05-03", "problem": "HTTP 500 from x.test"},
        {"entity_id": "zz", "name": "Nowhere", "source": "holidays", "state": "stopped",
         "since": "2027-05-01", "data_of": "", "problem": "unknown country code 'ZZ'"},
    ]  # fmt: skip
    facts.assets.setdefault("due_alerts", {}).update({"changes_new": 2, "changes_cancelled": 1})
    lines = summary_lines(facts)
    assert "Changes since the last snapshot: 2 new, 1 cancelled" in lines
    assert "Warnings (2):" in lines
    assert (
        "  broken: team-b (Team B, ics): HTTP 500 from x.test, since 2027-05-04; alerts use "
        "data of 2027-05-03"
    ) in lines
    assert "  broken: zz (Nowhere, holidays): unknown country code 'ZZ', since 2027-05-01; " \
        "alerts stopped" in lines  # fmt: skip
    assert lines[-1].endswith("; 2 warnings.")


def test_json_holds_the_counts_the_alert_lines_and_the_digest():
    facts = dry_run(many(12, "#a") + many(3, "#b", start=50))
    data = json.loads(json.dumps(as_json(facts)))
    assert data["partition"] == "2026-12-05" and data["mode"] == "dry_run" and data["ok"]
    assert data["alerts"] == 15
    assert [(c["channel"], c["alerts"]) for c in data["channels"]] == [("#a", 12), ("#b", 3)]
    assert data["channels"][0]["by_section"]["Today or tomorrow"] == 3
    assert len(data["channels"][0]["alert_lines"]) == 12
    assert data["digest"] == facts.digest
    assert [c["status"] for c in data["checks"]] == ["passed", "passed"]


def test_the_summary_says_where_the_calendar_feed_is():
    facts = dry_run(many(3, None))
    assert not any(line.startswith("Calendar feed:") for line in summary_lines(facts))
    facts.assets["calendar_feed"] = {"file_all": "data/feeds/all.ics", "events_all": 12}
    assert (
        "Calendar feed: data/feeds/all.ics (12 events); `calendar-pipeline serve-feeds` serves it"
        in summary_lines(facts)
    )


def test_a_check_with_nothing_to_judge_is_named_on_the_first_line_and_in_json():
    facts = dry_run(many(3, "#a"))
    facts.checks = [
        Check("raw_snapshot", "has_events", True),
        Check("raw_snapshot", "volume_within_history", True, "WARN", judged="nothing — first"),
    ]
    first = summary_lines(facts)[0]
    assert first.endswith("2 checks passed (volume_within_history: nothing to judge yet)")
    data = json.loads(json.dumps(as_json(facts)))
    assert [c["judged"] for c in data["checks"]] == [None, "nothing — first"]
