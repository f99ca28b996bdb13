"""The files of `{data_dir}/feeds/`: `all.ics`, one `<channel>.ics` per Slack channel, and
`state.json` (the feed records of the last few days, feeds/build.py). Every file is
written atomically (lake/atomic.py) under one writer lock, so a subscribed calendar app
reads yesterday's feed or today's, never half of one, and two runs never interleave.

`state.json` keeps the records of the newest `STATE_DAYS` days it was given, by day. Day D
is computed from the newest stored day *before* D, so re-running D gives the same result.
The `.ics` files are rewritten only by the newest day processed: re-running an older day
(a backfill) updates its state, never the published feeds; a day older than every kept
day is left as it is (`FeedReport.skipped`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calendar_pipeline.feeds import build
from calendar_pipeline.lake.atomic import atomic_write_text, writer_lock

FEEDS_DIR = "feeds"
STATE_FILE = "state.json"
LOCK_FILE = ".feeds.lock"
STATE_DAYS = 3
STATE_VERSION = 1


def feeds_dir(data_dir: Path) -> Path:
    return Path(data_dir) / FEEDS_DIR


@dataclass
class DayInput:
    """What one day's feeds are made of."""

    day: dt.date
    document: Mapping[str, Any]  # the day's snapshot JSON (from the index)
    cancelled: Sequence[build.CancelledRow]  # the day's `cancelled` rows of event_changes


@dataclass
class FeedReport:
    """What a run published: events per feed (name -> count), the files written, and per
    day the counts the UI plots."""

    published_day: dt.date | None = None
    events: dict[str, int] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    removed: list[Path] = field(default_factory=list)
    skipped: list[dt.date] = field(default_factory=list)  # too old to recompute
    per_day: dict[dt.date, dict[str, int]] = field(default_factory=dict)


def publish(
    data_dir: Path,
    days: Iterable[DayInput],
    *,
    thresholds: Sequence[int],
    default_channel: str,
    timezone: str,
    kept_days: int = build.CANCELLED_KEPT_DAYS,
) -> FeedReport:
    """Advance the feed records through ``days`` (oldest first), store them, and write
    the `.ics` files of the last day when no newer day was processed before."""
    directory = feeds_dir(data_dir)
    report = FeedReport()
    with writer_lock(directory, LOCK_FILE):
        state = _load(directory / STATE_FILE)
        newest_before = max(state, default=None)
        records: dict[build.Key, build.FeedRecord] | None = None
        last: DayInput | None = None
        for item in days:
            if state and item.day < max(state) and not any(d < item.day for d in state):
                # older than every kept day: what it would start from is gone, and a state
                # rebuilt from nothing would lose the UIDs carried through churn
                report.skipped.append(item.day)
                continue
            previous = _before(state, item.day)
            records = build.advance(
                previous, item.document, item.cancelled, item.day, kept_days=kept_days
            )
            state[item.day] = records
            shown = build.published(records, item.day, kept_days)
            report.per_day[item.day] = {
                "events": len(shown),
                "cancelled": sum(1 for r in shown if r.cancelled_on),
                "changed_today": sum(
                    1 for r in shown if r.changed_on == item.day.isoformat() and r.sequence
                ),
            }
            last = item
            for old in sorted(state)[:-STATE_DAYS]:  # a long range holds a few days only
                if old != item.day:
                    del state[old]
        if last is None:
            return report
        atomic_write_text(directory / STATE_FILE, _dump(state))
        if newest_before is not None and last.day < newest_before:
            return report  # an older day: the published feeds stay those of the newest
        shown = build.published(state[last.day], last.day, kept_days)
        stamp = build.day_start_utc(last.day, timezone)
        written = set()
        for name, records_of in sorted(build.split_feeds(shown, default_channel).items()):
            title = "Calendar pipeline" if name == build.ALL_FEED else f"Calendar pipeline: #{name}"
            path = directory / f"{name}.ics"
            text = build.render(records_of, name=title, thresholds=thresholds, stamp=stamp)
            atomic_write_text(path, text.decode("utf-8"))
            report.events[name] = len(records_of)
            report.files[name] = path
            written.add(path.name)
        for stale in sorted(directory.glob("*.ics")):  # a channel no entity uses any more
            if stale.name not in written:
                stale.unlink()
                report.removed.append(stale)
        report.published_day = last.day
    return report


def _before(
    state: Mapping[dt.date, dict[build.Key, build.FeedRecord]], day: dt.date
) -> dict[build.Key, build.FeedRecord]:
    earlier = [d for d in state if d < day]
    return state[max(earlier)] if earlier else {}


def _load(path: Path) -> dict[dt.date, dict[build.Key, build.FeedRecord]]:
    """The stored records by day; a missing file is an empty state. A file this code
    cannot read raises ValueError naming it (the feeds are not rebuilt over it blindly)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        content = json.loads(text)
        if content.get("version") != STATE_VERSION:
            raise ValueError(f"version {content.get('version')!r}, expected {STATE_VERSION}")
        return {
            dt.date.fromisoformat(day): {
                (row["entity_id"], row["event_id"]): build.FeedRecord.from_json(row) for row in rows
            }
            for day, rows in content["days"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path} cannot be read ({exc}); move it away to rebuild the feed state "
            "(UIDs stay the same, SEQUENCE numbers restart)"
        ) from None


def _dump(state: Mapping[dt.date, Mapping[build.Key, build.FeedRecord]]) -> str:
    days = {
        day.isoformat(): [record.as_json() for _, record in sorted(records.items())]
        for day, records in sorted(state.items())
    }
    return json.dumps({"version": STATE_VERSION, "days": days}, indent=None, sort_keys=True)
