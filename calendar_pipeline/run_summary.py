"""What `calendar-pipeline run` prints: a short summary of a day's two runs, from plain data.

`calendar-pipeline run` collects what its two runs produced into a `RunFacts` (plain
values: the checks, each asset's materialization metadata, the `send_slack_alerts`
output metadata and the digest text it rendered) and prints `summary_lines(facts)`:
about a dozen lines for a normal day, bounded (about 30) whatever the number of channels,
checks or warnings. `as_json(facts)` is the same result for machines (`--json`).

The summary is a list of parts, `SECTIONS`, each a small pure function
`(RunFacts) -> list[str]`; warnings come from `WARNINGS`, functions of the same shape
whose lines are listed under "Warnings" and counted in the closing line. Adding a part
(for instance the broken entities from `raw_snapshot`'s `broken_entities` metadata, in
`facts.assets["raw_snapshot"]`) is one function and one entry in one of the lists.

No Dagster here: the CLI turns Dagster's results into plain data, so this module is
tested with hand-made facts and reused by anyone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PREVIEW_LINES = 3  # alert lines shown per channel
MAX_PREVIEWED_CHANNELS = 3  # up to 3 channels: each one's first lines are shown ...
PREVIEWED_OF_MANY = 2  # ... more: the first 2 channels' first lines
MAX_CHANNELS = 6  # channels with a count line; the rest in one line
MAX_WARNINGS = 5  # warning lines; the rest in one line

_CHANNEL_HEADER = re.compile(r"^=== (?P<channel>.+) \((?P<count>\d+) alerts?\) ===$")
_SECTION_TITLE = re.compile(r"^\*(?P<title>[^*]+?)(?: \(continued\))?\*$")
_BULLET = "• "


@dataclass(frozen=True)
class Check:
    """One asset check evaluation of the daily run."""

    asset: str
    name: str
    passed: bool
    severity: str = "ERROR"  # ERROR (blocking) or WARN
    description: str = ""
    judged: str = ""  # "nothing — why" when the check had nothing to judge (quality/verdict)

    @property
    def status(self) -> str:
        if self.passed:
            return "passed"
        return "failed" if self.severity == "ERROR" else "warned"


@dataclass(frozen=True)
class ChannelDigest:
    """One channel's part of a digest: its alerts, messages and lines per section."""

    channel: str
    alerts: int
    messages: int
    sections: dict[str, int]  # section title ("Within 3 days") -> alert lines, in order
    lines: list[str]  # the alert lines ("• ..."), in order


@dataclass
class RunFacts:
    """Plain facts of one `calendar-pipeline run`: the daily run, then the Slack run."""

    partition: str
    intent: str = "daily"  # daily or history (alerts/intent.py)
    forced_mode: str = ""  # --mode, when given
    mode_note: str = ""  # why the settings' mode is what it is ("no Slack token: ...")
    checks: list[Check] = field(default_factory=list)
    # asset -> its materialization metadata for the partition (plain values)
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the send_slack_alerts output metadata, without `digest` and `outbox`
    delivery: dict[str, Any] = field(default_factory=dict)
    digest: str = ""  # the outbox text ("" when nothing was rendered: history, send)
    outbox: str = ""  # its file
    daily_run_id: str = ""
    slack_run_id: str = ""
    in_ui: bool = False  # the runs are in a DAGSTER_HOME instance the UI shows
    errors: list[str] = field(default_factory=list)  # why a run failed, one line each

    @property
    def mode(self) -> str:
        return str(self.delivery.get("mode", ""))

    @property
    def channels(self) -> list[ChannelDigest]:
        return parse_digest(self.digest)

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_digest(text: str) -> list[ChannelDigest]:
    """The channels of a digest as `render_outbox_text` writes it (alerts/slack_format.py):
    per message a `=== #channel (N alerts) ===` line, then its block texts; a section is a
    bold title (`*Within 3 days*`, continued as `*Within 3 days (continued)*`) followed by
    one `• ` line per alert. Channels in the digest's order."""
    channels: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    section = ""
    for line in text.splitlines():
        header = _CHANNEL_HEADER.match(line)
        if header:
            current = channels.setdefault(
                header["channel"], {"alerts": 0, "messages": 0, "sections": {}, "lines": []}
            )
            current["alerts"] += int(header["count"])
            current["messages"] += 1
            section = ""
            continue
        if current is None:
            continue
        title = _SECTION_TITLE.match(line)
        if title:
            section = title["title"]
            continue
        if line.startswith(_BULLET):
            current["lines"].append(line)
            if section:
                current["sections"][section] = current["sections"].get(section, 0) + 1
    return [ChannelDigest(channel=name, **parts) for name, parts in channels.items()]


# -- the parts -------------------------------------------------------------------------------

Section = Callable[[RunFacts], list[str]]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _count(facts: RunFacts, key: str) -> int:
    value = facts.delivery.get(key, 0)
    return value if isinstance(value, int) else 0


def overview(facts: RunFacts) -> list[str]:
    """`2026-12-05 (daily): 964 events of 283 entities; 10 checks passed`."""
    snapshot = facts.assets.get("raw_snapshot", {})
    parts = []
    events = snapshot.get("dagster/row_count")
    if isinstance(events, int):
        entities = snapshot.get("entities")
        of = f" of {entities} {'entity' if entities == 1 else 'entities'}"
        parts.append(_plural(events, "event") + (of if isinstance(entities, int) else ""))
    due = facts.assets.get("due_alerts", {}).get("dagster/row_count")
    if isinstance(due, int):
        parts.append(f"{due} due_alerts rows")
    passed = sum(c.passed for c in facts.checks)
    if facts.checks:
        idle = [c.name for c in facts.checks if c.passed and c.judged]
        parts.append(
            (
                f"{passed}/{len(facts.checks)} checks passed"
                if passed < len(facts.checks)
                else f"{_plural(passed, 'check')} passed"
            )
            + (f" ({', '.join(idle)}: nothing to judge yet)" if idle else "")
        )
    return [f"{facts.partition} ({facts.intent}): " + "; ".join(parts)] if parts else []


def delivery(facts: RunFacts) -> list[str]:
    """What the Slack run did, in the words of its mode."""
    if not facts.delivery:
        return []
    mode, due = facts.mode, _count(facts, "due")
    forced = f" (--mode {facts.forced_mode})" if facts.forced_mode else ""
    earlier = _count(facts, "already_delivered")
    already = f"; {earlier} already delivered earlier" if earlier else ""
    if mode == "history":
        return [
            f"Slack: history, nothing posted or recorded: {_plural(due, 'alert')} were due on "
            "this past day (--mode dry_run previews them, --mode send posts them)"
        ]
    if mode == "dry_run":
        pending = sum(c.alerts for c in facts.channels)
        why = forced or (f" ({facts.mode_note})" if facts.mode_note else "")
        return [
            f"Slack: dry run{why}, nothing posted or recorded: {_plural(pending, 'alert')} "
            f"would be posted in {_plural(_count(facts, 'messages'), 'message')}{already}"
        ]
    if mode == "record_only":
        return [
            f"Slack: record_only{forced}, nothing posted: "
            f"{_plural(_count(facts, 'recorded'), 'alert')} recorded as delivered{already}"
        ]
    late = _count(facts, "delivered_late")
    return [
        f"Slack: sent{forced} {_plural(_count(facts, 'sent'), 'alert')} in "
        f"{_plural(_count(facts, 'messages'), 'message')}"
        + (f" ({late} late)" if late else "")
        + already
    ]


def channels(facts: RunFacts, preview: int = PREVIEW_LINES) -> list[str]:
    """Per channel: alerts by threshold, then the first `preview` alert lines of its
    digest (for every channel when there are at most `MAX_PREVIEWED_CHANNELS`, else for
    the first `PREVIEWED_OF_MANY`); at most `MAX_CHANNELS` channels by name."""
    found = facts.channels
    previewed = len(found) if len(found) <= MAX_PREVIEWED_CHANNELS else PREVIEWED_OF_MANY
    lines: list[str] = []
    for number, digest in enumerate(found[:MAX_CHANNELS]):
        counts = ", ".join(f"{title.lower()} {n}" for title, n in digest.sections.items())
        lines.append(
            f"{digest.channel}: {_plural(digest.alerts, 'alert')}"
            + (f" ({counts})" if counts else "")
        )
        if number < previewed and preview:
            shown = digest.lines[:preview]
            lines.extend(f"    {line}" for line in shown)
            if len(digest.lines) > len(shown):
                lines.append(f"    … {len(digest.lines) - len(shown)} more")
    rest = found[MAX_CHANNELS:]
    if rest:
        lines.append(
            f"… {_plural(len(rest), 'more channel')} with "
            f"{_plural(sum(d.alerts for d in rest), 'alert')}"
        )
    return lines


def where_the_digest_is(facts: RunFacts) -> list[str]:
    """Where the whole digest is: the outbox file, `--full`, and the UI when it has the run."""
    if not facts.digest or not facts.channels:
        return []
    places = [facts.outbox] if facts.outbox else []
    places.append("`calendar-pipeline run --full` prints it")
    if facts.in_ui and facts.slack_run_id:
        places.append(
            f"in the UI: run {facts.slack_run_id[:8]} of slack_alert_job, "
            "step send_slack_alerts, metadata `digest`"
        )
    return ["Full digest: " + "; ".join(places)]


# -- warnings ---------------------------------------------------------------------------------


def failed_checks(facts: RunFacts) -> list[str]:
    """A check that did not pass: its name, status and the first line of what it says."""
    lines = []
    for check in facts.checks:
        if check.passed:
            continue
        why = check.description.strip().splitlines()[0] if check.description.strip() else ""
        lines.append(
            f"check {check.asset}:{check.name} {check.status}" + (f": {why}" if why else "")
        )
    return lines


def delivery_problems(facts: RunFacts) -> list[str]:
    """Alerts not posted, channels Slack refused, notices and replies left for later."""
    lines = []
    failed = _count(facts, "failed")
    if failed:
        channels = facts.delivery.get("failed_channels")
        lines.append(
            f"{_plural(failed, 'alert')} not posted"
            + (f" (Slack refused {channels})" if channels else "")
            + "; the next run posts them"
        )
    passed = _count(facts, "passed_undelivered")
    if passed:
        lines.append(f"{_plural(passed, 'alert')} could not be posted before their event passed")
    for key, what in (
        ("broken_notice_failed", "broken-entity notice(s)"),
        ("thread_replies_failed", "thread reply(ies)"),
    ):
        if _count(facts, key):
            lines.append(f"{_count(facts, key)} {what} not posted; the next run posts them")
    return lines


def run_errors(facts: RunFacts) -> list[str]:
    return [f"error: {line}" for line in facts.errors]


MAX_BROKEN = 10


def changes(facts: RunFacts) -> list[str]:
    """`Changes since the last snapshot: 1 new, 1 moved, 1 cancelled` (the counts
    `due_alerts` stores as `changes_*`, the words every Slack line uses)."""
    due = facts.assets.get("due_alerts", {})
    kinds = ("new", "moved", "renamed", "cancelled")
    counts = {kind: due.get(f"changes_{kind}") for kind in kinds}
    parts = [f"{n} {kind}" for kind, n in counts.items() if isinstance(n, int) and n]
    return ["Changes since the last snapshot: " + ", ".join(parts)] if parts else []


def broken_entities(facts: RunFacts) -> list[str]:
    """One line per broken entity (`raw_snapshot`'s `broken_entities` table): who, what
    failed, since when, and what its alerts use now (README "When a feed breaks")."""
    rows = facts.assets.get("raw_snapshot", {}).get("broken_entities")
    if not isinstance(rows, list) or not rows:
        return []
    lines = []
    for row in rows[:MAX_BROKEN]:
        uses = (
            f"alerts use data of {row.get('data_of')}"
            if row.get("state") == "carried"
            else "alerts stopped"
        )
        lines.append(
            f"broken: {row.get('entity_id')} ({row.get('name')}, {row.get('source')}): "
            f"{row.get('problem')}, since {row.get('since')}; {uses}"
        )
    if len(rows) > MAX_BROKEN:
        lines.append(f"broken: … and {len(rows) - MAX_BROKEN} more (raw_snapshot metadata)")
    return lines


def calendar_feed(facts: RunFacts) -> list[str]:
    """`Calendar feed: data/feeds/all.ics (964 events); subscribe with calendar-pipeline
    serve-feeds` (the files `calendar_feed` published, README "Subscribe")."""
    feed = facts.assets.get("calendar_feed", {})
    path, events = feed.get("file_all"), feed.get("events_all")
    if not path:
        return []
    count = f" ({_plural(events, 'event')})" if isinstance(events, int) else ""
    return [f"Calendar feed: {path}{count}; `calendar-pipeline serve-feeds` serves it"]


WARNINGS: list[Section] = [run_errors, failed_checks, broken_entities, delivery_problems]
SECTIONS: list[Section] = [
    overview,
    changes,
    delivery,
    channels,
    where_the_digest_is,
    calendar_feed,
]


def channel_counts(facts: RunFacts) -> list[str]:
    """`channels` without the digest's first lines."""
    return channels(facts, preview=0)


FULL_SECTIONS: list[Section] = [
    overview,
    changes,
    delivery,
    channel_counts,
    where_the_digest_is,
    calendar_feed,
]


def warning_lines(facts: RunFacts, parts: list[Section] | None = None) -> list[str]:
    return [line for part in (WARNINGS if parts is None else parts) for line in part(facts)]


def warnings_section(facts: RunFacts) -> list[str]:
    found = warning_lines(facts)
    if not found:
        return []
    shown = found[:MAX_WARNINGS]
    more = (
        [f"  … {len(found) - len(shown)} more (--json lists them all)"]
        if found[len(shown) :]
        else []
    )
    return [f"Warnings ({len(found)}):", *(f"  {line}" for line in shown), *more]


def closing(facts: RunFacts) -> str:
    """The one last line: did it work, what went where, how many warnings."""
    warnings = len(warning_lines(facts))
    tail = f"{_plural(warnings, 'warning')}" if warnings else "no warnings"
    if not facts.ok:
        return f"Failed: {facts.partition}; {tail} above say why."
    channels = facts.channels
    if facts.mode == "send":
        what = f"{_plural(_count(facts, 'sent'), 'alert')} posted to Slack"
    elif facts.mode == "record_only":
        what = f"{_plural(_count(facts, 'recorded'), 'alert')} recorded, nothing posted"
    elif facts.mode == "history":
        what = "history, nothing posted"
    elif facts.mode == "dry_run":
        pending = sum(c.alerts for c in channels)
        what = (
            f"dry run, {_plural(pending, 'alert')} for {_plural(len(channels), 'channel')}, "
            "nothing posted"
        )
    else:
        what = "done"
    return f"Done: {facts.partition}, {what}; {tail}."


def summary_lines(facts: RunFacts, sections: list[Section] | None = None) -> list[str]:
    """The summary: each of `sections` (default `SECTIONS`; `FULL_SECTIONS` leaves out the
    digest's first lines, for `--full`, which prints it whole), the warnings, and one
    closing line."""
    lines = [line for part in (SECTIONS if sections is None else sections) for line in part(facts)]
    return [*lines, *warnings_section(facts), closing(facts)]


def as_json(facts: RunFacts) -> dict[str, Any]:
    """The run's result for machines: the same facts, every warning, the whole digest."""
    return {
        "ok": facts.ok,
        "partition": facts.partition,
        "intent": facts.intent,
        "mode": facts.mode,
        "forced_mode": facts.forced_mode or None,
        "runs": {"daily_calendar_job": facts.daily_run_id, "slack_alert_job": facts.slack_run_id},
        "checks": [
            {
                "asset": c.asset,
                "name": c.name,
                "status": c.status,
                "severity": c.severity,
                "description": c.description,
                "judged": c.judged or None,
            }
            for c in facts.checks
        ],
        "assets": facts.assets,
        "delivery": facts.delivery,
        "channels": [
            {
                "channel": c.channel,
                "alerts": c.alerts,
                "messages": c.messages,
                "by_section": c.sections,
                "alert_lines": c.lines,
            }
            for c in facts.channels
        ],
        "alerts": sum(c.alerts for c in facts.channels),
        "outbox": facts.outbox or None,
        "digest": facts.digest or None,
        "warnings": warning_lines(facts),
        "errors": facts.errors,
    }
