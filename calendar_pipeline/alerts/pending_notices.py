"""Run-failure notices that could not be posted (Slack down: often the very failure being
reported), kept as files until a later post gets through.

Dagster's run-failure sensor advances its cursor past a run even when posting its notice
raised, so a notice not posted at once would be lost. Instead it is written, atomically,
to ``{data_dir}/outbox/failure_notices/{run_id}.json`` (the exact message) and posted by
the next run-failure tick or the next Slack run (``send_slack_alerts``) that reaches
Slack, oldest first, each file removed once Slack has the message. A process killed
between the post and the removal posts that one notice again (at least once: a notice
carries no ledger key).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from calendar_pipeline.alerts.slack_format import SlackMessage
from calendar_pipeline.lake.atomic import atomic_write_text


def notices_dir(data_dir: Path) -> Path:
    return data_dir / "outbox" / "failure_notices"


def keep(data_dir: Path, run_id: str, message: SlackMessage) -> Path:
    """Keep ``message`` (the notice of run ``run_id``) for a later post."""
    path = notices_dir(data_dir) / f"{run_id}.json"
    atomic_write_text(path, json.dumps(dataclasses.asdict(message), ensure_ascii=False) + "\n")
    return path


def pending(data_dir: Path) -> list[Path]:
    """The notices kept, oldest first."""
    folder = notices_dir(data_dir)
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.json"), key=lambda p: (p.stat().st_mtime, p.name))


def flush(data_dir: Path, post: Callable[[SlackMessage], object]) -> int:
    """Post every kept notice with ``post``, oldest first, removing each once posted;
    the first failure is raised (the rest stay for the next try). Returns how many."""
    posted = 0
    for path in pending(data_dir):
        fields = json.loads(path.read_text(encoding="utf-8"))
        fields["dedup_keys"] = tuple(fields.get("dedup_keys") or ())
        post(SlackMessage(**fields))
        path.unlink(missing_ok=True)
        posted += 1
    return posted
