"""`calendar-pipeline`: run a day of the pipeline from a terminal, without the UI.

    calendar-pipeline run                 # today's partition, then Slack (dry-run without a token)
    calendar-pipeline run --date 2026-12-01 --mode dry_run --full   # the whole digest
    calendar-pipeline run --json          # the result for machines, on stdout
    calendar-pipeline verify [--repair] [--json]   # audit the lake, the tables and the ledger
    calendar-pipeline deliveries --date D          # the ledger of a day (ledger_commands.py)
    calendar-pipeline resend --date D --key K      # post chosen alerts of a day again

It executes `daily_calendar_job` in-process for the partition, then `slack_alert_job`
for the same partition, and prints a summary (run_summary.py): the checks, per channel
how many alerts by threshold and the first lines of its digest, where the whole digest
is, warnings, and one closing line. Runs are recorded in the Dagster instance at
DAGSTER_HOME when it is set (so `dagster dev` shows them), else in a throwaway instance.

It first reads `.env` in the working directory without replacing exported variables (an
exported variable beats the file) and says so on its first line, naming the variables
the environment overrode (names only). Then every setting is checked before anything
runs: a bad value, option or date, or a DAGSTER_HOME that is not a directory, is one line
on stderr and exit code 2, never a traceback. So is a Slack run that refuses to post
because the ledger is lost and cannot be rebuilt from Slack (alerts/deliver.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import io
import json
import os
import sys
from pathlib import Path

import dagster as dg
from dotenv import dotenv_values

from calendar_pipeline.alerts.intent import HISTORY, Reference, intent_for
from calendar_pipeline.alerts.ledger_view import SelectionError
from calendar_pipeline.instance import cli_instance, root_causes
from calendar_pipeline.quality.verdict import JUDGED
from calendar_pipeline.run_summary import FULL_SECTIONS, Check, RunFacts, as_json, summary_lines
from calendar_pipeline.settings import ALERT_MODES, SettingError, load_time_settings, today_in
from calendar_pipeline.universe import UniverseError


class OptionError(ValueError):
    """A command-line option the pipeline cannot use; the message says why."""


@dataclasses.dataclass(frozen=True)
class DotEnv:
    """What `read_dotenv` did: the file, the names it holds, and those of them the
    environment already had (the environment's value was kept). Names only: values may
    be secrets."""

    path: Path
    names: list[str]
    overridden: list[str]

    def line(self) -> str:
        """`read ./.env: A, B, C; the environment overrides B` (names only)."""
        text = f"read {self.path}: {', '.join(self.names) or 'nothing'}"
        if self.overridden:
            text += f"; the environment overrides {', '.join(self.overridden)}"
        return text


def read_dotenv(directory: Path) -> DotEnv | None:
    """Load `directory/.env` into the environment without replacing what is already
    there: an exported variable beats the file (python-dotenv's default, twelve-factor).
    None without a file."""
    path = directory / ".env"
    if not path.is_file():
        return None
    values = {name: value for name, value in dotenv_values(path).items() if value is not None}
    overridden = sorted(name for name in values if name in os.environ)
    os.environ.update({name: value for name, value in values.items() if name not in overridden})
    return DotEnv(path=path, names=sorted(values), overridden=overridden)


def partition_to_run(date: str | None) -> str:
    """`--date` (default today in CALENDAR_TIMEZONE), checked against the daily
    partitions; `OptionError` with the valid range otherwise."""
    timezone, start, _ = load_time_settings()
    today = today_in(timezone).isoformat()
    partition = date or today
    if not start.isoformat() <= partition <= today:
        raise OptionError(
            f"--date {partition} is outside the daily partitions {start.isoformat()}..{today} "
            f"(CALENDAR_START_DATE to today in CALENDAR_TIMEZONE={timezone})"
        )
    return partition


@dataclasses.dataclass(frozen=True)
class Output:
    """How `run` prints: the summary (default), the whole digest too (`--full`), or JSON
    on stdout (`--json`: every other line goes to stderr); Dagster's INFO log with
    `--verbose` (default: its warnings and errors only)."""

    full: bool = False
    json: bool = False
    verbose: bool = False

    @property
    def progress(self):  # where the lines that are not the result go
        return sys.stderr if self.json else sys.stdout


def slack_header(partition: str, intent: str, mode: str, reference_day: dt.date) -> str:
    """The line before the Slack run: what it will do with the day, never contradicted by
    what it then does (a past day with `--mode send` is posted, and says so)."""
    head = f"calendar_pipeline: slack_alert_job for partition {partition} ({intent}"
    if mode:
        does = {
            "send": "posts the day's alerts",
            "dry_run": "posts nothing, prints what it would post",
            "record_only": "posts nothing, records the day's alerts as delivered",
        }.get(mode, "as that mode does")
        return f"{head}, --mode {mode}: {does})"
    if intent == HISTORY:
        return (
            f"{head}: a past day, posts nothing unless --mode says so; "
            f"reference day {reference_day})"
        )
    return head + ")"


def run(partition: str, mode: str, output: Output = Output(), mode_note: str = "") -> int:
    from calendar_pipeline.definitions import defs
    from calendar_pipeline.defs.jobs import DUE_ALERTS_RUN_TAG
    from calendar_pipeline.defs.partitions import TIMEZONE

    say = output.progress
    level = "INFO" if output.verbose else "WARNING"
    logs = {"loggers": {"console": {"config": {"log_level": level}}}}
    with cli_instance() as instance:
        facts = RunFacts(
            partition=partition,
            forced_mode=mode,
            mode_note=mode_note,
            in_ui=not instance.is_ephemeral,
        )
        print(
            f"calendar_pipeline: daily_calendar_job for partition {partition}", file=say, flush=True
        )
        # The command's start is the run's reference (alerts/intent.py), stamped on it.
        started = dt.datetime.now(dt.UTC)
        stamp = Reference(today_in(TIMEZONE), f"calendar-pipeline run started {started}")
        result = defs.resolve_job_def("daily_calendar_job").execute_in_process(
            partition_key=partition,
            instance=instance,
            raise_on_error=False,
            run_config=logs,
            tags=stamp.as_tags(),
        )
        facts.daily_run_id = result.run_id
        facts.checks = [
            Check(
                asset=check.asset_key.to_user_string(),
                name=check.check_name,
                passed=check.passed,
                severity=check.severity.value,
                description=check.description or "",
                judged=str(getattr(check.metadata.get(JUDGED), "value", "") or ""),
            )
            for check in result.get_asset_check_evaluations()
        ]
        for event in result.get_asset_materialization_events():
            mat = event.step_materialization_data.materialization
            if mat.partition in (None, partition):
                facts.assets.setdefault(mat.asset_key.to_user_string(), {}).update(
                    _plain(mat.metadata)
                )
        if not result.success:
            facts.errors = root_causes(result) or ["daily_calendar_job failed"]
            return _failed(facts, output, "daily_calendar_job")

        if mode:
            logs["ops"] = {"send_slack_alerts": {"config": {"mode": mode}}}
        # The Slack run judges "daily or history" by the daily run's reference day (the
        # stamp: the day this command started), not by the clock when Slack runs
        # (alerts/intent.py).
        reference = stamp
        tags = {DUE_ALERTS_RUN_TAG: result.run_id, **reference.as_tags()}
        facts.intent = intent_for(dt.date.fromisoformat(partition), reference)
        print(slack_header(partition, facts.intent, mode, reference.day), file=say, flush=True)
        # A lost ledger the Slack run cannot rebuild is refused in one line: Dagster's own
        # log of that failure (a stack trace) is held back, and shown only otherwise.
        with _held_stderr(_ledger_may_be_lost(partition)) as held:
            slack = defs.resolve_job_def("slack_alert_job").execute_in_process(
                partition_key=partition,
                instance=instance,
                run_config=logs,
                tags=tags,
                raise_on_error=False,
            )
        facts.slack_run_id = slack.run_id
        for event in slack.all_node_events:
            if event.event_type_value == "STEP_OUTPUT":
                metadata = event.step_output_data.metadata
                facts.delivery = _plain(
                    {k: v for k, v in metadata.items() if k not in ("digest", "outbox")}
                )
                if "digest" in metadata:
                    facts.outbox = str(metadata["outbox"].value)
                    facts.digest = metadata["digest"].value.strip("`\n") + "\n"
        lost = "" if slack.success else _ledger_lost(slack)
        if lost:  # nothing posted: one line naming the ledger and the next step
            print(f"calendar-pipeline: {lost}", file=sys.stderr)
            return 2
        sys.stderr.write(held.getvalue())
        if not slack.success:
            facts.errors = root_causes(slack) or ["slack_alert_job failed"]
            return _failed(facts, output, "slack_alert_job")
    if output.json:
        print(json.dumps(as_json(facts), indent=2, default=str))
        return 0
    if output.full:
        print("  " + ", ".join(f"{k}={v}" for k, v in facts.delivery.items()))
        if facts.outbox:
            print(f"  outbox: {facts.outbox}\n")
        print(facts.digest, end="" if facts.digest.endswith("\n") else "\n")
    print("\n".join(summary_lines(facts, FULL_SECTIONS if output.full else None)))
    return 0


def _failed(facts: RunFacts, output: Output, job: str) -> int:
    """A run that failed: the summary (its errors and failed checks, with what each check
    says in full) or the JSON, exit 1."""
    if output.json:
        print(json.dumps(as_json(facts), indent=2, default=str))
        return 1
    for check in facts.checks:
        if not check.passed and check.description:
            print(f"  check {check.asset}:{check.name} {check.status}", file=sys.stderr)
            print("    " + check.description.replace("\n", "\n    "), file=sys.stderr)
    for line in summary_lines(facts):
        print(line, file=sys.stderr)
    print(
        f"{job} failed for {facts.partition}; the failed check or the error above says why "
        "and what to do (--verbose shows Dagster's log)",
        file=sys.stderr,
    )
    return 1


def _ledger_may_be_lost(partition: str) -> bool:
    """Whether the ledger looks lost before the Slack run (alerts/deliver.py
    `lost_ledger`): only then is that run's terminal output held back."""
    from calendar_pipeline.alerts.deliver import lost_ledger
    from calendar_pipeline.defs.resources import resource_from_env

    try:
        calendar = resource_from_env("calendar")
        day = dt.date.fromisoformat(partition)
        return lost_ledger(calendar.engine(), calendar.data_path, day) is not None
    except Exception:  # the Slack run itself says what is wrong
        return False


@contextlib.contextmanager
def _held_stderr(hold: bool):
    """While ``hold``: what is written to stderr goes to a buffer (yielded) instead."""
    buffer = io.StringIO()
    if not hold:
        yield buffer
        return
    with contextlib.redirect_stderr(buffer):
        yield buffer


def _ledger_lost(result) -> str:
    """The one line of a Slack run that refused to post because the ledger is lost and
    cannot be rebuilt from Slack (alerts/deliver.py `LedgerLost`), else ``""``."""
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        failure = event.step_failure_data.user_failure_data
        value = failure.metadata.get("ledger_lost") if failure is not None else None
        if value is not None:
            return str(getattr(value, "value", value))
    return ""


def _plain(metadata) -> dict:
    """Dagster metadata values as plain Python values (a table as a list of dicts)."""
    plain = {}
    for key, value in metadata.items():
        raw = getattr(value, "value", value)
        if isinstance(value, dg.TableMetadataValue):
            raw = [dict(record.data) for record in value.records]
        elif isinstance(raw, dg.MetadataValue):
            raw = str(raw)
        plain[key] = raw
    return plain


def verify(repair: bool, as_json: bool) -> int:
    from calendar_pipeline.defs.resources import check_environment
    from calendar_pipeline.verify import verify as audit

    calendar = check_environment(writable=repair)["calendar"]  # an audit only reads
    report = audit(
        calendar.data_path,
        calendar.engine() if repair else calendar.reading_engine(),
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
    """argparse, with a bad option reported in one line (`--help` shows the usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (--help lists the options)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="calendar-pipeline",
        description="Run a day of the calendar pipeline from a terminal, without the UI: "
        "`run` a partition (then Slack), `verify` what is stored, list a day's `deliveries`, "
        "`resend` chosen alerts. Reads `./.env` first "
        "(an exported variable beats it).",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run_cmd = commands.add_parser(
        "run",
        help="run one partition of `daily_calendar_job`, then `slack_alert_job`; print a summary",
        description="Run one partition of `daily_calendar_job`, then `slack_alert_job`, "
        "in-process, and print a summary: checks, alerts per channel and threshold, the "
        "first lines of each digest, warnings.",
    )
    run_cmd.add_argument(
        "--date",
        type=_partition_date,
        help="partition `YYYY-MM-DD` (default: today in `CALENDAR_TIMEZONE`); a past day is "
        "history: nothing is posted unless `--mode` says so",
    )
    run_cmd.add_argument(
        "--mode",
        choices=ALERT_MODES,
        default="",
        help="force an alert mode (default: from the settings; `send` posts a past day too)",
    )
    shape = run_cmd.add_mutually_exclusive_group()
    shape.add_argument(
        "--full",
        action="store_true",
        help="also print the whole digest (it is always in the outbox file the summary "
        "names, and in the UI as the Slack run's `digest` metadata)",
    )
    shape.add_argument(
        "--json",
        action="store_true",
        help="print the result as JSON on stdout (partition, mode, checks, per-channel "
        "counts, alerts, warnings, the digest); progress goes to stderr",
    )
    run_cmd.add_argument(
        "--verbose", action="store_true", help="show Dagster's INFO log (default: warnings)"
    )
    verify_cmd = commands.add_parser(
        "verify",
        help="audit snapshots, index, `due_alerts`, ledger and temporary files (exit 1 on an "
        "error)",
        description="Audit snapshots, index, `due_alerts`, ledger and temporary files "
        "(exit 1 on an error).",
    )
    verify_cmd.add_argument(
        "--repair",
        action="store_true",
        help="also remove stray temporary files, drop a partial index line, and index a "
        "newest snapshot that passes the checks",
    )
    verify_cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    feeds_cmd = commands.add_parser(
        "serve-feeds",
        help="serve the calendar feeds (`{data_dir}/feeds/*.ics`) read-only over HTTP",
        description="Serve the `.ics` files of `{data_dir}/feeds/` read-only over HTTP on "
        "`CALENDAR_FEEDS_ADDRESS` (ETag, Last-Modified, 304s; 404 for anything else) until "
        "stopped.",
    )
    feeds_cmd.add_argument("--address", help="`HOST:PORT` (default: `CALENDAR_FEEDS_ADDRESS`)")
    deliveries_cmd = commands.add_parser(
        "deliveries",
        help="list the alerts due on a day and what the ledger holds for each",
        description="List the alerts due on `--date` (its `due_alerts` rows) with their "
        "ledger state (`sent`, `recorded`, `claimed`, `failed` or not in the ledger), "
        "channel, Slack message `ts` and dedup key.",
    )
    deliveries_cmd.add_argument("--date", type=_partition_date, required=True, help="`YYYY-MM-DD`")
    deliveries_cmd.add_argument("--json", action="store_true", help="print the rows as JSON")
    resend_cmd = commands.add_parser(
        "resend",
        help="post chosen alerts of a day to Slack again (by key, entity or event)",
        description="Post chosen alerts of `--date` again: their ledger rows are removed, "
        "then `slack_alert_job` runs for the day in mode `send` for those keys only (the "
        "same exactly-once path as the daily run). `deliveries` lists the keys.",
    )
    resend_cmd.add_argument("--date", type=_partition_date, required=True, help="`YYYY-MM-DD`")
    resend_cmd.add_argument("--key", action="append", default=[], help="a dedup key (repeatable)")
    resend_cmd.add_argument(
        "--entity", action="append", default=[], help="every alert of an entity id (repeatable)"
    )
    resend_cmd.add_argument(
        "--event", action="append", default=[], help="every alert of an event id (repeatable)"
    )
    resend_cmd.add_argument(
        "--dry-run", action="store_true", help="say what would be re-sent; change nothing"
    )
    args = parser.parse_args(argv)
    env_file = read_dotenv(Path.cwd())
    if env_file is not None:
        print(f"calendar-pipeline: {env_file.line()}", file=sys.stderr)
    try:
        if args.command == "verify":
            return verify(args.repair, args.json)
        if args.command in ("deliveries", "resend"):
            from calendar_pipeline import ledger_commands

            day = dt.date.fromisoformat(args.date)
            if args.command == "deliveries":
                return ledger_commands.deliveries(day, args.json)
            return ledger_commands.resend(day, args.key, args.entity, args.event, args.dry_run)
        if args.command == "serve-feeds":
            from calendar_pipeline.defs.resources import resource_from_env
            from calendar_pipeline.feeds.serve import serve_feeds

            calendar = resource_from_env("calendar")
            return serve_feeds(calendar.data_path, calendar.feeds_address, args.address)
        from calendar_pipeline.defs.resources import check_environment

        partition = partition_to_run(args.date)
        slack = check_environment()["slack"]
        output = Output(full=args.full, json=args.json, verbose=args.verbose)
        why = "" if slack.can_post else "no Slack token: SLACK_BOT_TOKEN or SLACK_WEBHOOK_URL"
        return run(partition, args.mode, output, mode_note=why)
    except (SettingError, UniverseError, OptionError, SelectionError) as exc:
        print(f"calendar-pipeline: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
