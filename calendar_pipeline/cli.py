"""``calendar-pipeline``: run a day of the pipeline from a terminal, without the UI.

    calendar-pipeline run                 # today's partition, then Slack (dry-run without a token)
    calendar-pipeline run --date 2026-12-01 --mode dry_run
    calendar-pipeline verify [--repair] [--json]   # audit the lake, the tables and the ledger

It executes ``daily_calendar_job`` in-process for the partition, then ``slack_alert_job``
for the same partition, and prints the digest it posted or would post. Runs are recorded
in the Dagster instance at DAGSTER_HOME when it is set (so ``dagster dev`` shows them),
else in a throwaway instance.

Like ``dagster dev``, it first reads ``.env`` in the working directory (its values win
over the environment's) and says so. Then every setting is checked before anything runs:
a bad value, option or date is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
from pathlib import Path

import dagster as dg
from dotenv import dotenv_values

from calendar_pipeline.alerts.intent import HISTORY, intent_for
from calendar_pipeline.instance import open_dagster_home
from calendar_pipeline.settings import ALERT_MODES, SettingError, load_time_settings, today_in
from calendar_pipeline.universe import UniverseError

# Dagster's console logger at INFO: progress and warnings, not every engine event.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _instance() -> contextlib.AbstractContextManager[dg.DagsterInstance]:
    """The instance at DAGSTER_HOME, created under a lock when the directory is fresh
    (runs started together never race on its schema), with the runs of this machine whose
    process is gone marked failed and their pool slots freed (``instance.py``); else a
    throwaway one."""
    if os.environ.get("DAGSTER_HOME"):
        return open_dagster_home(
            say=lambda line: print(f"calendar-pipeline: {line}", file=sys.stderr)
        )
    return dg.DagsterInstance.ephemeral()


class OptionError(ValueError):
    """A command-line option the pipeline cannot use; the message says why."""


def read_dotenv(directory: Path) -> tuple[Path, list[str]] | None:
    """Load ``directory/.env`` into the environment the way ``dagster dev`` does (the
    file's values win); return its path and the names it set, or None without a file."""
    path = directory / ".env"
    if not path.is_file():
        return None
    values = {name: value for name, value in dotenv_values(path).items() if value is not None}
    os.environ.update(values)
    return path, sorted(values)


def partition_to_run(date: str | None) -> str:
    """``--date`` (default today in CALENDAR_TIMEZONE), checked against the daily
    partitions; ``OptionError`` with the valid range otherwise."""
    timezone, start, _ = load_time_settings()
    today = today_in(timezone).isoformat()
    partition = date or today
    if not start.isoformat() <= partition <= today:
        raise OptionError(
            f"--date {partition} is outside the daily partitions {start.isoformat()}..{today} "
            f"(CALENDAR_START_DATE to today in CALENDAR_TIMEZONE={timezone})"
        )
    return partition


def run(partition: str, mode: str) -> int:
    from calendar_pipeline.definitions import defs
    from calendar_pipeline.defs.jobs import DUE_ALERTS_RUN_TAG, reference_for_run
    from calendar_pipeline.defs.partitions import TIMEZONE

    with _instance() as instance:
        print(f"calendar_pipeline: daily_calendar_job for partition {partition}", flush=True)
        result = defs.resolve_job_def("daily_calendar_job").execute_in_process(
            partition_key=partition, instance=instance, raise_on_error=False, run_config=QUIET
        )
        for check in result.get_asset_check_evaluations():
            status = "passed" if check.passed else check.severity.value.replace("ERROR", "FAILED")
            print(f"  check {check.asset_key.to_user_string()}:{check.check_name} {status}")
            if not check.passed and check.description:
                print("    " + check.description.replace("\n", "\n    "))
        if not result.success:
            for cause in _root_causes(result):
                print(f"  error: {cause}", file=sys.stderr)
            print(
                f"daily_calendar_job failed for {partition}; the failed check or the error "
                "above says why and what to do (also in the log above)",
                file=sys.stderr,
            )
            return 1
        for event in result.get_asset_materialization_events():
            mat = event.step_materialization_data.materialization
            rows = mat.metadata.get("dagster/row_count")
            print(
                f"  materialized {mat.asset_key.to_user_string()} [{partition}]"
                f" rows={rows.value if rows else '?'}"
            )

        run_config = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        if mode:
            run_config["ops"] = {"send_slack_alerts": {"config": {"mode": mode}}}
        # The Slack run judges "daily or history" by the daily run's reference day (the day
        # this command started it), not by the clock when Slack runs (alerts/intent.py).
        daily_run = instance.get_run_by_id(result.run_id)
        reference = reference_for_run(instance, daily_run, TIMEZONE)
        tags = {DUE_ALERTS_RUN_TAG: result.run_id, **reference.as_tags()}
        intent = intent_for(dt.date.fromisoformat(partition), reference)
        print(
            f"calendar_pipeline: slack_alert_job for partition {partition} ({intent}"
            + (f": posts nothing unless --mode says so, reference day {reference.day})"
               if intent == HISTORY else ")"),
            flush=True,
        )  # fmt: skip
        slack = defs.resolve_job_def("slack_alert_job").execute_in_process(
            partition_key=partition,
            instance=instance,
            run_config=run_config,
            tags=tags,
            raise_on_error=False,
        )
        if not slack.success:
            print("slack_alert_job failed; see the log above", file=sys.stderr)
            return 1
        for event in slack.all_node_events:
            if event.event_type_value == "STEP_OUTPUT":
                metadata = event.step_output_data.metadata
                summary = {k: v.value for k, v in metadata.items() if k not in ("digest", "outbox")}
                print("  " + ", ".join(f"{k}={v}" for k, v in summary.items()))
                if "digest" in metadata:
                    print(f"  outbox: {metadata['outbox'].value}\n")
                    print(metadata["digest"].value.strip("`\n"))
    return 0


def _root_causes(result) -> list[str]:
    """The first line of the innermost error of each failure event of ``result``."""
    causes: list[str] = []
    for event in result.all_events:
        error = getattr(event.event_specific_data, "error", None)
        if error is None:  # step failures, resource init failures, run failures
            continue
        while error.cause is not None:
            error = error.cause
        line = (error.message or "").strip().splitlines()[0] if error.message else ""
        prefix, _, rest = line.partition(": ")
        if error.cls_name and prefix.endswith(error.cls_name) and rest:
            line = rest  # "pkg.module.SettingError: X=…" -> "X=…"
        if line and line not in causes:
            causes.append(line)
    return causes


def verify(repair: bool, as_json: bool) -> int:
    from calendar_pipeline.defs.resources import check_environment
    from calendar_pipeline.verify import verify as audit

    calendar = check_environment()["calendar"]
    report = audit(
        calendar.data_path,
        calendar.engine(),
        calendar.threshold_days,
        calendar.claim_timeout,
        calendar.budgets,
        repair=repair,
    )
    print(report.to_json() if as_json else report.to_text())
    return 0 if report.ok else 1


def _partition_date(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad option reported in one line (``--help`` shows the usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (--help lists the options)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="calendar-pipeline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run_cmd = commands.add_parser("run", help="run one partition of the daily job, then Slack")
    run_cmd.add_argument(
        "--date",
        type=_partition_date,
        help="partition YYYY-MM-DD (default: today in CALENDAR_TIMEZONE); a past day is "
        "history: nothing is posted unless --mode says so",
    )
    run_cmd.add_argument(
        "--mode",
        choices=ALERT_MODES,
        default="",
        help="force an alert mode (default: from the settings)",
    )
    verify_cmd = commands.add_parser(
        "verify",
        help="audit snapshots, index, due_alerts, ledger and temporary files (exit 1 on an error)",
    )
    verify_cmd.add_argument(
        "--repair",
        action="store_true",
        help="also remove stray temporary files, drop a partial index line, and index a "
        "newest snapshot that passes the checks",
    )
    verify_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    env_file = read_dotenv(Path.cwd())
    if env_file is not None:
        path, names = env_file
        print(f"calendar-pipeline: read {path}: {', '.join(names) or 'nothing'}", file=sys.stderr)
    try:
        if args.command == "verify":
            return verify(args.repair, args.json)
        from calendar_pipeline.defs.resources import check_environment

        partition = partition_to_run(args.date)
        check_environment()
        return run(partition, args.mode)
    except (SettingError, UniverseError, OptionError) as exc:
        print(f"calendar-pipeline: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
