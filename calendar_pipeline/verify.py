"""``calendar-pipeline verify``: audit everything the pipeline stores, and repair what is safe.

What is checked, and how bad each finding is:

- **snapshots** (error): every ``snapshots/D/snapshot_*.json`` parses, has the schema
  ``due_alerts`` reads, and names its own partition.
- **index** (error): every line parses, lines are sorted and unique, each ``sha256``
  matches its file and its embedded text (``SnapshotIndex.problems``). A trailing partial
  line (an append that was killed) is a warning: readers ignore it; ``--repair`` cuts it
  off. On any error, ``--repair`` rebuilds the index from its intact lines
  (``SnapshotIndex.rebuild``: sorted, every line with a problem dropped, both lines of a
  day listed twice too); each day that loses its line is then treated as below.
- **newest snapshot** (warning): the index line of day D points at D's newest snapshot
  (or D has no line).
  A newer one was either rejected by a blocking check (it stays on disk, never indexed)
  or written by a run killed before ``snapshot_index``. ``--repair`` re-judges it with
  the rules of the raw_snapshot checks (``quality/judge.py``) and, if it passes, indexes
  it and recomputes D's ``due_alerts`` rows; a rejected one is only listed.
- **due_alerts** (error): the rows of every indexed day equal the bucket rule applied to
  its indexed snapshot (``quality/reconcile.py``). Fixed by re-running the day.
- **ledger** (error for an unknown state; warning for a claim older than the claim
  timeout, which the next Slack run of that day takes over). A lost ledger (deleted or
  emptied while the lake has earlier days: ``deliver.lost_ledger``) is one error naming
  it and what to do.
- **temporary files** (warning): ``.snapshot_*.tmp`` and ``.snapshots.jsonl.*.tmp`` left by
  killed writes. ``--repair`` removes them under the writers' locks.

The exit code is 1 when an error remains (after repairs), else 0. ``--json`` prints the
same report as one JSON object for monitoring.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.deliver import lost_ledger
from calendar_pipeline.alerts.due import compute_due_alerts
from calendar_pipeline.lake.history import History
from calendar_pipeline.lake.index import (
    IndexCorruptError,
    SnapshotIndex,
    build_entry,
    index_path,
)
from calendar_pipeline.lake.snapshots import (
    SNAPSHOTS_DIR,
    is_valid_partition,
    list_snapshots,
    remove_snapshot_temp_files,
    snapshot_temp_files,
)
from calendar_pipeline.quality.judge import Budgets, judge_snapshot
from calendar_pipeline.quality.reconcile import compare_buckets, expected_buckets
from calendar_pipeline.quality.volume import find_baseline
from calendar_pipeline.sources.collect import parse_snapshot_text

ERROR, WARNING = "error", "warning"
KNOWN_STATES = ("claimed", "sent", "recorded", "failed")


@dataclass
class Finding:
    area: str  # snapshots | index | newest_snapshot | due_alerts | ledger | temp_files
    severity: str  # error | warning
    problem: str
    partition: str | None = None
    repaired: str | None = None  # what --repair did about it


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    def add(self, area: str, severity: str, problem: str, partition: str | None = None):
        finding = Finding(area, severity, problem, partition)
        self.findings.append(finding)
        return finding

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR and not f.repaired]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> str:
        return json.dumps(
            {
                "ok": self.ok,
                "errors": len(self.errors),
                "warnings": sum(f.severity == WARNING and not f.repaired for f in self.findings),
                "repaired": sum(bool(f.repaired) for f in self.findings),
                "checked": self.checked,
                "findings": [asdict(f) for f in self.findings],
            },
            indent=2,
        )

    def to_text(self) -> str:
        checked = ", ".join(f"{n} {what}" for what, n in self.checked.items())
        lines = [f"checked {checked}"]
        for f in self.findings:
            where = f" [{f.partition}]" if f.partition else ""
            lines.append(f"{f.severity.upper():7} {f.area}{where}: {f.problem}")
            if f.repaired:
                lines.append(f"        repaired: {f.repaired}")
        rerun = sorted({f.partition for f in self.errors if f.partition})
        if rerun:
            lines.append(
                "re-run these days (the ledger keeps each alert to one post): "
                + ", ".join(f"calendar-pipeline run --date {day}" for day in rerun[:10])
            )
        lines.append("OK" if self.ok else f"FAILED: {len(self.errors)} error(s)")
        return "\n".join(lines)


def verify(
    data_dir: Path,
    engine: Engine,
    thresholds: Sequence[int],
    claim_timeout: dt.timedelta,
    budgets: Budgets,
    *,
    repair: bool = False,
    now: dt.datetime | None = None,
    retention: dt.timedelta = dt.timedelta(days=400),
) -> Report:
    """Audit ``data_dir`` and the tables behind ``engine``; repair what is safe.
    ``retention``: the ledger's (CALENDAR_LEDGER_RETENTION_DAYS), to tell a ledger pruned
    empty from a lost one."""
    now = now or dt.datetime.now(dt.UTC)
    report = Report()
    index = SnapshotIndex(index_path(data_dir))
    newest = _check_snapshots(data_dir, report)
    _check_temp_files(data_dir, index, report, repair)
    _check_index(index, report, repair)
    indexed = _indexed_paths(index)
    report.checked["index lines"] = len(indexed)
    _check_newest(index, indexed, newest, engine, thresholds, budgets, report, repair)
    _check_due_alerts(index, engine, thresholds, report)
    _check_lost_ledger(data_dir, engine, now, retention, report)
    _check_ledger(engine, claim_timeout, now, report)
    return report


def _check_lost_ledger(
    data_dir: Path, engine: Engine, now: dt.datetime, retention: dt.timedelta, report: Report
) -> None:
    """One error when the ledger is lost: the lake has processed days, the ledger holds
    no delivered alert it should have (``deliver.lost_ledger``)."""
    reason = lost_ledger(engine, data_dir, now.date() + dt.timedelta(days=1), retention)
    if reason is not None:
        report.add(
            "ledger",
            ERROR,
            f"{reason}. The next Slack run rebuilds it from Slack's history (a bot token "
            "with channels:history); without that it refuses to post: restore the ledger "
            "from a backup, or re-prime it with `calendar-pipeline run --mode record_only` "
            "(docs/RUNBOOK.md, The ledger is lost)",
        )


def _check_snapshots(data_dir: Path, report: Report) -> dict[str, Path]:
    """Parse every snapshot; return each day's newest one."""
    root = Path(data_dir) / SNAPSHOTS_DIR
    names = [p.name for p in root.iterdir()] if root.exists() else []
    days = sorted(name for name in names if is_valid_partition(name))
    newest: dict[str, Path] = {}
    files = 0
    for day in days:
        for path in list_snapshots(data_dir, day):
            files += 1
            try:
                text = path.read_text(encoding="utf-8")
                parse_snapshot_text(text)  # the schema due_alerts reads
                named = json.loads(text).get("partition")
                if named != day:
                    raise ValueError(f"names partition {named!r}")
            except (OSError, ValueError) as exc:
                report.add("snapshots", ERROR, f"{path}: {exc}", day)
            newest[day] = path
    report.checked["snapshot files"] = files
    return newest


def _check_temp_files(data_dir: Path, index: SnapshotIndex, report: Report, repair: bool):
    strays = snapshot_temp_files(data_dir) + index.temp_files()
    report.checked["temporary files"] = len(strays)
    removed: set[Path] = set()
    if repair:
        for day in sorted({p.parent.name for p in strays if is_valid_partition(p.parent.name)}):
            removed.update(remove_snapshot_temp_files(data_dir, day))
        removed.update(index.remove_temp_files())
    for path in strays:
        finding = report.add("temp_files", WARNING, f"stray temporary file {path}")
        if path in removed:
            finding.repaired = "removed"


def _check_index(index: SnapshotIndex, report: Report, repair: bool) -> None:
    """Every problem of the index. ``repair``: a trailing partial line alone is cut off;
    any error rebuilds the index from its intact lines (``SnapshotIndex.rebuild``), and
    the days it dropped are judged again from their newest snapshot by ``_check_newest``."""
    findings = []
    for partition, text in index.problems():
        partial = "trailing partial line" in text
        findings.append(report.add("index", WARNING if partial else ERROR, text, partition))
    if not repair or not findings:
        return
    if all(f.severity == WARNING for f in findings):  # only a partial line
        if index.repair_tail():
            for finding in findings:
                finding.repaired = "dropped the partial line"
        return
    dropped = set(index.rebuild())
    for finding in findings:
        if finding.partition is not None and finding.partition not in dropped:
            finding.repaired = "rebuilt the index: its line kept, in partition order"
        else:
            finding.repaired = (
                "rebuilt the index from its intact lines, without this one; the day is "
                "indexed again below if its newest snapshot passes the checks"
            )


def _indexed_paths(index: SnapshotIndex) -> dict[str, str]:
    """Day -> the snapshot its line points at (empty when a line is unreadable: that is
    an index error, reported by ``_check_index``)."""
    try:
        return {entry["partition"]: entry["path"] for entry in index.entries()}
    except IndexCorruptError:
        return {}


def _check_newest(
    index: SnapshotIndex,
    indexed: dict[str, str],
    newest: dict[str, Path],
    engine: Engine,
    thresholds: Sequence[int],
    budgets: Budgets,
    report: Report,
    repair: bool,
) -> None:
    for day, path in sorted(newest.items()):
        line_path = indexed.get(day)
        if line_path is not None and Path(line_path).resolve() == path.resolve():
            continue
        what = "no index line" if line_path is None else f"its index line points at {line_path}"
        finding = report.add(
            "newest_snapshot",
            WARNING,
            f"newest snapshot {path.name} is not indexed ({what}): rejected by a blocking "
            "check, or its run was killed before snapshot_index",
            day,
        )
        if not repair:
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # reported as a corrupt snapshot already
        reasons = judge_snapshot(
            document, find_baseline(History(index.get).document, day, include_self=False), budgets
        )
        if reasons:
            finding.problem += f"; it fails the checks, left out: {'; '.join(reasons)}"
            continue
        counts = document.get("counts", {})
        index.upsert(
            build_entry(
                day,
                path,
                row_count=len(document["events"]),
                error_count=int(counts.get("entities_failed", 0)),
            )
        )
        events, entities = parse_snapshot_text(path.read_text(encoding="utf-8"))
        date = dt.date.fromisoformat(day)
        store.replace_due_alerts_many(
            engine, {date: compute_due_alerts(events, date, thresholds, entities)}
        )
        finding.repaired = (
            "passes the checks: indexed, due_alerts recomputed; re-run the day to post it"
        )


def _check_due_alerts(
    index: SnapshotIndex, engine: Engine, thresholds: Sequence[int], report: Report
) -> None:
    """Every indexed day's rows against the rule, in one pass over the index."""
    days = 0
    with contextlib.suppress(IndexCorruptError):  # an unreadable line: an index error
        for entry in index.entries(include_content=True):
            days += 1
            day = dt.date.fromisoformat(entry["partition"])
            expected = expected_buckets(json.loads(entry["content_text"]), day, thresholds)
            stored = store.stored_buckets_many(engine, [day])[day]
            diff = compare_buckets(entry["partition"], stored, expected)
            if not diff.ok:
                report.add("due_alerts", ERROR, diff.describe(), entry["partition"])
    report.checked["indexed days"] = days


def _check_ledger(
    engine: Engine, claim_timeout: dt.timedelta, now: dt.datetime, report: Report
) -> None:
    rows = store.ledger_rows(engine)
    report.checked["ledger rows"] = len(rows)
    _check_undelivered(rows, now, report)
    for row in rows:
        day = str(row["partition_date"])
        if row["state"] not in KNOWN_STATES:
            report.add("ledger", ERROR, f"{row['dedup_key']}: unknown state {row['state']!r}", day)
        elif row["state"] == "claimed" and row["claimed_at"] is not None:
            claimed_at = row["claimed_at"]
            if claimed_at.tzinfo is None:
                claimed_at = claimed_at.replace(tzinfo=dt.UTC)
            if now - claimed_at > claim_timeout:
                when = claimed_at.strftime("%Y-%m-%d %H:%M UTC")
                report.add(
                    "ledger",
                    WARNING,
                    f"{row['dedup_key']}: claimed by run {row['run_id']} at {when}, older than "
                    "the claim timeout (the next Slack run of the day settles it)",
                    day,
                )


def _check_undelivered(rows: Sequence[dict], now: dt.datetime, report: Report) -> None:
    """Alerts a Slack run claimed and could not post (state ``failed``: Slack down, a bad
    token or channel), one finding per day they were due: an error while their event is
    still ahead (the next Slack run posts them, marked late, once the cause is fixed), a
    warning once it has passed (they are named in one line by the next run, or lost)."""
    today = now.date()
    by_day: dict[tuple[str, bool], list[dict]] = {}
    for row in rows:
        if row["state"] == "failed":
            ahead = row["event_date"] >= today
            by_day.setdefault((str(row["partition_date"]), ahead), []).append(row)
    for (day, ahead), failed in sorted(by_day.items()):
        error = (failed[-1]["error"] or "no error recorded").splitlines()[0][:200]
        if ahead:
            report.add(
                "ledger",
                ERROR,
                f"{len(failed)} alert(s) due {day} not delivered (last error: {error}); "
                "fix the cause, the next Slack run posts them marked late",
            )
        else:
            report.add(
                "ledger",
                WARNING,
                f"{len(failed)} alert(s) due {day} never delivered and their event has "
                f"passed (last error: {error})",
            )
