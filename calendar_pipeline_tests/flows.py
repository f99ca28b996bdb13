"""What the multi-day flow tests share: an iCalendar feed with an event every day, a
universe around it, running days through the Dagster layer as the schedule and
slack_alert_sensor would, and measuring what reached Slack *from the Slack server's side*
(the ledger is not trusted to measure itself). (PYTEST_DONT_REWRITE: no asserts here.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
from dagster._core.definitions.run_status_sensor_definition import RunStatusSensorCursor

from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.due import bucket_for
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import RESOURCES, CalendarSettings, SlackSettings
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN, FakeSlackServer
from calendar_pipeline_tests.upstream_server import Reply, UpstreamServer

THRESHOLDS = (1, 3, 7, 15, 30)
FEED_START = dt.date(2026, 1, 1)
FEED_DAYS = 200  # one event a day from FEED_START: about 31 alerts due on every day
# A posted line: "• *Team*: Release 2026-03-12 · Thu 2026-03-12 · in 2 days"
_LINE = re.compile(
    r"• \*(?P<name>[^*]+)\*: (?P<title>.+?) · \w{3} (?P<date>\d{4}-\d{2}-\d{2}) · "
    r"(?P<rel>today|tomorrow|in (?P<n>\d+) days)"
)

Key = tuple[str, dt.date, int]  # (title, event date, bucket): a dedup key, as Slack shows it


def resources(**fields) -> dict[str, dg.ConfigurableResource]:
    """The ``calendar``, ``upstream`` and ``slack`` resources, each field of ``fields``
    given to the resource that has it (``rate_limit`` to ``upstream``, ...)."""
    owner = {field: key for key, (_, names, _) in RESOURCES.items() for field in names}
    unknown = set(fields) - set(owner)
    if unknown:
        raise TypeError(f"no resource has the field(s) {sorted(unknown)}")
    return {
        key: cls(**{f: v for f, v in fields.items() if owner[f] == key})
        for key, (cls, _, _) in RESOURCES.items()
    }


def feed(start: dt.date = FEED_START, days: int = FEED_DAYS) -> bytes:
    """An RFC 5545 calendar with one all-day event a day, titled by its date."""
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//calendar_pipeline tests//flows//EN"]
    for n in range(days):
        day = start + dt.timedelta(days=n)
        lines += [
            "BEGIN:VEVENT",
            f"UID:release-{day.isoformat()}@flows.test",
            "DTSTAMP:20260101T000000Z",
            f"DTSTART;VALUE=DATE:{day:%Y%m%d}",
            f"DTEND;VALUE=DATE:{day + dt.timedelta(days=1):%Y%m%d}",
            f"SUMMARY:Release {day.isoformat()}",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return ("\r\n".join(lines) + "\r\n").encode()


def serve_feed(upstream: UpstreamServer) -> None:
    upstream.route("/team.ics", Reply(body=feed(), content_type="text/calendar"))


def write_universe(
    path: Path, upstream: UpstreamServer, *, broken: bool = False, healthy: bool = True
) -> Path:
    """The team feed (unless not ``healthy``), plus (``broken``) an entity whose feed
    answers 404: a failed entity. Only the broken one: a day with no event at all."""
    rows = ["entity_id,name,source,key,channel"]
    if healthy:
        rows.append(f"team,Team,ics,{upstream.url}/team.ics,#team")
    if broken:
        rows.append(f"gone,Gone team,ics,{upstream.url}/gone.ics,#team")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def make_defs(
    tmp_path: Path, universe: Path, slack: FakeSlackServer, db_url: str = ""
) -> tuple[dg.Definitions, CalendarSettings]:
    calendar = CalendarSettings(
        data_dir=str(tmp_path / "data"), universe=str(universe), db_url=db_url
    )
    slack_settings = SlackSettings(token=DEFAULT_TOKEN, api_url=slack.url, channel="#general")
    return build_defs({"calendar": calendar, "slack": slack_settings}), calendar


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    """``day`` at ``hour:minute`` UTC: where a test moves the clock."""
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=dt.UTC)


def range_tags(first: dt.date, last: dt.date) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first.isoformat(),
        "dagster/asset_partition_range_end": last.isoformat(),
    }


def run_daily(defs, instance, day: dt.date, **kwargs):
    return defs.resolve_job_def("daily_calendar_job").execute_in_process(
        partition_key=day.isoformat(), instance=instance, raise_on_error=False, **kwargs
    )


def run_range(defs, instance, first: dt.date, last: dt.date, **kwargs):
    return defs.resolve_job_def("daily_calendar_job").execute_in_process(
        tags=range_tags(first, last), instance=instance, raise_on_error=False, **kwargs
    )


# The cursor the daemon's first tick of slack_alert_sensor sets on an instance with no run
# yet: `slack_tick` without a cursor means "the sensor was on from the start" (Dagster's
# RunStatusSensorCursor is internal: a test-only use, to start before any run).
FROM_THE_START = RunStatusSensorCursor(record_id=-1).to_json()


@dataclasses.dataclass
class Ticks:
    run_requests: list
    cursor: str | None


def slack_tick(defs, instance, cursor: str | None = None, max_ticks: int = 200) -> Ticks:
    """The ticks of slack_alert_sensor, one after the other as the daemon runs them, until
    one finds nothing new: every run request and the last cursor. A run status sensor
    requests at most one run per tick (Dagster's rule). No ``cursor``: the sensor has been
    on since before the first run."""
    sensor = defs.resolve_sensor_def("slack_alert_sensor")
    cursor = cursor or FROM_THE_START
    requests: list = []
    for _ in range(max_ticks):
        tick = evaluate(sensor, defs, instance, cursor)
        requests.extend(tick.run_requests)
        if not tick.run_requests and tick.cursor == cursor:
            return Ticks(requests, tick.cursor)
        cursor = tick.cursor
    raise AssertionError(f"slack_alert_sensor still had requests after {max_ticks} ticks")


def slack_runs(defs, instance, cursor: str | None = None) -> tuple[list, str | None]:
    """What the daemon does for Slack: slack_alert_sensor's ticks, then the runs they ask
    for. Returns the runs' results and the sensor's cursor."""
    tick = slack_tick(defs, instance, cursor)
    return run_requests(defs, instance, tick.run_requests), tick.cursor


def switch_on_slack_sensor(defs, instance) -> str:
    """The first tick ever of slack_alert_sensor (switched on now): it requests nothing
    and watches from this moment; returns its cursor."""
    tick = evaluate(defs.resolve_sensor_def("slack_alert_sensor"), defs, instance)
    assert tick.run_requests == [] and "Initiating" in (tick.skip_message or ""), tick
    return tick.cursor


def evaluate(sensor, defs, instance, cursor: str | None = None):
    """One tick of ``sensor`` with the definitions' resources, as the daemon runs it: in a
    context manager, since a resource with a teardown (the upstream resource's run guard)
    is opened and closed around the tick."""
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
    ) as context:
        return sensor.evaluate_tick(context)


def run_requests(defs, instance, requests) -> list:
    """Execute the Slack runs the sensor asked for, as the daemon would."""
    results = []
    for request in requests:
        results.append(
            defs.resolve_job_def("slack_alert_job").execute_in_process(
                partition_key=request.partition_key,
                tags=request.tags,
                instance=instance,
                raise_on_error=False,
            )
        )
    return results


def output_metadata(result) -> dict:
    """The output metadata of a Slack run (`send_slack_alerts`: mode, sent, partitions ...)."""
    event = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
    return {k: v.value for k, v in event.step_output_data.metadata.items()}


def posted_lines(slack: FakeSlackServer) -> list[tuple[str, str, dt.date, int]]:
    """Every alert line Slack received, as (entity name, title, event date, bucket), in
    order; a line posted twice is there twice."""
    lines = []
    for message in slack.messages:
        partition = _partition_of(message)
        for block in message.blocks or []:
            for text in _texts(block):
                for match in _LINE.finditer(text):
                    date = dt.date.fromisoformat(match["date"])
                    days = {"today": 0, "tomorrow": 1}.get(match["rel"])
                    days = int(match["n"]) if days is None else days
                    if (date - partition).days != days:
                        raise ValueError(f"line {match[0]!r} disagrees with {partition}")
                    bucket = bucket_for(days, THRESHOLDS)
                    lines.append((match["name"], match["title"], date, bucket))
    return lines


def posted(slack: FakeSlackServer) -> Counter[Key]:
    """Every alert line Slack received, with its bucket, counted (2 means a duplicate)."""
    return Counter((title, date, bucket) for _, title, date, bucket in posted_lines(slack))


def posted_partitions(slack: FakeSlackServer) -> set[dt.date]:
    """The partitions whose digests reached Slack."""
    return {_partition_of(message) for message in slack.messages}


def due(calendar: CalendarSettings, day: dt.date) -> set[Key]:
    """What the pipeline computed as due on ``day`` (due_alerts rows)."""
    return {
        (a.title, a.event_date, a.threshold_days)
        for a in store.read_due_alerts(calendar.engine(), day)
    }


def expected_due(day: dt.date) -> set[Key]:
    """What is due on ``day`` by the bucket rule, from the feed alone (independent)."""
    keys = set()
    for n in range(FEED_DAYS):
        event = FEED_START + dt.timedelta(days=n)
        bucket = bucket_for((event - day).days, THRESHOLDS)
        if bucket is not None:
            keys.add((f"Release {event.isoformat()}", event, bucket))
    return keys


def never_reached_slack(slack: FakeSlackServer, day: dt.date) -> set[Key]:
    """Alerts due on ``day`` that Slack never received (the issue's metric: must be empty)."""
    return expected_due(day) - set(posted(slack))


def duplicates(slack: FakeSlackServer) -> dict[Key, int]:
    return {key: n for key, n in posted(slack).items() if n > 1}


def _partition_of(message) -> dt.date:
    for block in message.blocks or []:
        for text in _texts(block):
            found = re.search(r"partition (\d{4}-\d{2}-\d{2})", text)
            if found:
                return dt.date.fromisoformat(found[1])
    raise ValueError("a digest without its partition in the context block")


def _texts(block: dict) -> list[str]:
    if "text" in block and isinstance(block["text"], dict):
        return [block["text"].get("text", "")]
    return [e.get("text", "") for e in block.get("elements", []) if isinstance(e, dict)]


def cli_process(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """``calendar-pipeline *args`` in a fresh process (a new day is a new process) run in
    ``tmp_path``: the project's settings and DAGSTER_HOME dropped from the environment,
    then CALENDAR_DATA_DIR=``tmp_path/data`` and ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CALENDAR_", "SLACK_"))}
    environ.pop("DAGSTER_HOME", None)
    environ.update({"CALENDAR_DATA_DIR": str(tmp_path / "data"), **env})
    return subprocess.run(
        [sys.executable, "-m", "calendar_pipeline.cli", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
