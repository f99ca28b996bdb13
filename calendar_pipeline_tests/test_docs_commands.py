"""Every ```bash block of README.md and docs/RUNBOOK.md, extracted from the Markdown and
run with bash, so that a doc change that breaks a command fails here.

Each document gets one sandbox: a temporary working directory, its own data dir and
DAGSTER_HOME (a copy of the shipped dagster.yaml), this virtualenv first on PATH, and a
local Slack server with a token (a documented command forces ``mode: send``). Its blocks run
in document order with ``bash -euo pipefail``, so later commands see what earlier ones
wrote, and an unset variable or a failing command in the middle of a block fails it. After
(and for some, before) a block, a check looks at its effect.

What is not run is listed, with the reason, and asserted to match the documents:
- README's "The two commands" section: test_readme.py runs those.
- SKIPPED_LINES: commands that start servers and run until stopped.
- SUBSTITUTIONS: long ranges shortened in the extracted text; the command shape is kept.
docs/SCALING.md's step blocks are run by test_deployment.py.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from calendar_pipeline.lake.index import SnapshotIndex, index_path
from calendar_pipeline_tests.markdown_blocks import REPO, Block, bash_blocks, fenced_blocks
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN, FakeSlackServer

BIN = Path(sys.executable).parent
README = "README.md"
RUNBOOK = "docs/RUNBOOK.md"

# README sections whose blocks another test runs.
COVERED_ELSEWHERE = {(README, "The two commands"): (2, "test_readme.py")}

# (document, start of a line in a block) -> why that line is not run. Each entry must match
# exactly one line, and no other line is left out.
SKIPPED_LINES = {
    (README, ".venv/bin/dagster dev"): "serves the UI and the daemon until stopped "
    "(test_ui_e2e.py starts `dagster dev` through dagster_dev.py)",
    (README, ".venv/bin/dg dev"): "the same servers through dg, until stopped",
    (README, "dg check defs"): "test_cli_dg.py runs the README's dg lines from the repository",
    (README, "dg list defs"): "test_cli_dg.py, as above",
    (README, "dg launch "): "test_cli_dg.py, as above",
}

# (document, text in its blocks, replacement, why). Each text must occur exactly once in the
# document's runnable blocks.
SUBSTITUTIONS = [
    (
        README,
        "--partition-range 2025-11-01...2026-10-31",
        "--partition-range 2026-10-29...2026-10-31",
        "a year takes about 30 s; three days run the same command",
    ),
    (
        RUNBOOK,
        "--partition-range 2025-11-01...2026-10-31",
        "--partition-range 2026-10-29...2026-10-31",
        "a year takes about 30 s; three days run the same command",
    ),
    (
        RUNBOOK,
        '"dagster/asset_partition_range_start": "2025-01-01"',
        '"dagster/asset_partition_range_start": "2026-11-18"',
        "every day since 2025-01-01 takes about a minute; three days run the same command",
    ),
]

# Words that start a command: inline code in RUNBOOK's prose that starts with one must be
# part of a block (so it is run), or be listed here.
PROSE_MENTIONS = {"dagster dev": "names the server process that recovers dead runs"}
COMMAND_WORDS = ("dagster ", "calendar-pipeline ", "python ", "rm ", "sqlite3 ", "pg_dump ",
                 "psql ", "DELETE ", "SELECT ", "dg ", "ls ", "cp ")  # fmt: skip


def runnable(doc: str) -> list[Block]:
    """The bash blocks of ``doc`` as they run: covered sections dropped, skipped lines
    removed, substitutions applied. Blocks left empty are dropped."""
    blocks = []
    for block in bash_blocks(doc):
        if (doc, block.section) in COVERED_ELSEWHERE:
            continue
        kept = [
            line
            for line in block.text.splitlines()
            if not any(d == doc and line.startswith(p) for d, p in SKIPPED_LINES)
        ]
        text = "\n".join(kept)
        for d, old, new, _ in SUBSTITUTIONS:
            if d == doc:
                text = text.replace(old, new)
        if any(line.strip() and not line.lstrip().startswith("#") for line in kept):
            blocks.append(dataclasses.replace(block, text=text))
    return blocks


def test_the_tables_match_the_documents():
    """A skip or substitution that no longer matches fails, and nothing else is left out."""
    for (doc, section), (count, test) in COVERED_ELSEWHERE.items():
        covered = [b for b in bash_blocks(doc) if b.section == section]
        assert len(covered) == count, (
            f"{doc} '{section}': {len(covered)} blocks, {test} runs {count}"
        )
    for (doc, prefix), _ in SKIPPED_LINES.items():
        matching = [
            line
            for b in bash_blocks(doc)
            if (doc, b.section) not in COVERED_ELSEWHERE
            for line in b.text.splitlines()
            if line.startswith(prefix)
        ]
        assert len(matching) == 1, (doc, prefix, matching)
    for doc, old, new, _ in SUBSTITUTIONS:
        text = "\n".join(
            b.text for b in bash_blocks(doc) if (doc, b.section) not in COVERED_ELSEWHERE
        )
        assert text.count(old) == 1, (doc, old)
        assert new not in text, (doc, new)
    # every runnable line of every block is in `runnable`, but for the skipped ones
    for doc in (README, RUNBOOK):
        ran = "\n".join(b.text for b in runnable(doc)).splitlines()
        every = [
            line
            for b in bash_blocks(doc)
            if (doc, b.section) not in COVERED_ELSEWHERE
            for line in b.text.splitlines()
        ]
        left_out = [line for line in every if line not in ran]
        skipped = {p for d, p in SKIPPED_LINES if d == doc}
        substituted = {old for d, old, _, _ in SUBSTITUTIONS if d == doc}
        assert all(
            any(line.startswith(p) for p in skipped) or any(o in line for o in substituted)
            for line in left_out
        ), left_out


def transcripts(doc: str) -> list[tuple[Block, str, list[str]]]:
    """(block, command, output lines) of each ```text block that shows a command (``$ ``
    on its first line) and what it prints."""
    found = []
    for block in fenced_blocks(doc):
        lines = block.text.splitlines()
        if block.language in ("text", "") and lines and lines[0].startswith("$ "):
            found.append((block, lines[0][2:], lines[1:]))
    return found


def test_commands_are_in_bash_blocks():
    """No shell block in another language, a command outside a bash block only as the
    first line of a transcript (run below), and RUNBOOK has no command in its prose (one
    would not be run)."""
    for doc in (README, RUNBOOK):
        languages = {block.language for block in fenced_blocks(doc)}
        assert languages <= {"bash", "csv", "text", ""}, (doc, languages)
        for block in fenced_blocks(doc):
            if block.language in ("text", ""):
                rest = block.text.split("\n", 1)[1] if block.text.startswith("$ ") else block.text
                assert not re.search(r"^(\$ |dagster |calendar-pipeline |python )", rest, re.M), (
                    block.where
                )
    prose, inside = [], False
    for line in (REPO / RUNBOOK).read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            inside = not inside
        elif not inside:
            prose.append(line)
    blocks = "\n".join(b.text for b in bash_blocks(RUNBOOK))
    commands = [
        c for c in re.findall(r"`([^`]+)`", "\n".join(prose)) if c.startswith(COMMAND_WORDS)
    ]
    assert commands, "the prose mentions `calendar-pipeline verify`"
    not_run = [c for c in commands if c not in blocks and c not in PROSE_MENTIONS]
    assert not not_run, f"commands in RUNBOOK's prose that no block runs: {not_run}"


# --- the sandboxes ------------------------------------------------------------------------


@dataclass
class Sandbox:
    root: Path
    slack: FakeSlackServer
    variables: dict[str, str] = field(default_factory=dict)
    state: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.work = self.root / "work"
        self.data = self.root / "data"
        self.home = self.root / "dagster_home"
        for path in (self.work, self.home):
            path.mkdir(parents=True)
        shutil.copy(REPO / "dagster.yaml", self.home / "dagster.yaml")

    @property
    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CALENDAR_", "SLACK_", "DAGSTER_", "FINNHUB_", "NAGER_"))
        }
        env.pop("VIRTUAL_ENV", None)
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            DAGSTER_HOME=str(self.home),
            CALENDAR_DATA_DIR=str(self.data),
            SLACK_BOT_TOKEN=DEFAULT_TOKEN,
            SLACK_API_URL=self.slack.url,
            **self.variables,
        )
        return env

    def bash(self, text: str, where: str) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", text],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, (
            f"{where} exited {done.returncode}:\n{text}\n--- stdout\n{done.stdout[-3000:]}"
            f"\n--- stderr\n{done.stderr[-6000:]}"
        )
        return done

    # what the checks look at
    def snapshots(self, day: str) -> list[str]:
        return sorted(p.name for p in (self.data / "snapshots" / day).glob("snapshot_*.json"))

    def indexed(self, day: str) -> str | None:
        entry = SnapshotIndex(index_path(self.data)).get(day)
        return Path(entry["path"]).name if entry else None

    def sql(self, query: str, *args) -> list[tuple]:
        with closing(sqlite3.connect(self.data / "calendar.db")) as db:
            return db.execute(query, args).fetchall()

    def ledger(self, day: str) -> dict[str, tuple[str, str | None]]:
        rows = self.sql(
            "SELECT dedup_key, state, slack_ts FROM alert_deliveries WHERE partition_date = ?",
            day,
        )
        return {key: (state, ts) for key, state, ts in rows}

    def due_keys(self, day: str) -> set[str]:
        rows = self.sql("SELECT dedup_key FROM due_alerts WHERE partition_date = ?", day)
        return {key for (key,) in rows}


@dataclass(frozen=True)
class Check:
    """What a block (found by ``marker``, a text only it contains) must have done."""

    marker: str
    after: Callable[[Sandbox, subprocess.CompletedProcess], None]
    before: Callable[[Sandbox], None] = lambda box: None


def run_document(doc: str, box: Sandbox, checks: list[Check]) -> list[str]:
    blocks = runnable(doc)
    for check in checks:
        owners = [b.where for b in blocks if check.marker in b.text]
        assert len(owners) == 1, f"{doc}: {check.marker!r} is in {owners or 'no block'}"
    ran = []
    for block in blocks:
        mine = [c for c in checks if c.marker in block.text]
        for check in mine:
            check.before(box)
        done = box.bash(block.text, block.where)
        for check in mine:
            check.after(box, done)
        ran.append(block.where)
    return ran


def days(first: str, last: str) -> list[str]:
    start, end = dt.date.fromisoformat(first), dt.date.fromisoformat(last)
    return [(start + dt.timedelta(n)).isoformat() for n in range((end - start).days + 1)]


# --- README -------------------------------------------------------------------------------


def readme_checks() -> list[Check]:
    def command_line(box: Sandbox, done) -> None:
        assert len(box.snapshots("2026-11-02")) == 2  # previewed, then as history
        assert (box.data / "outbox" / "2026-11-02").is_dir()  # the dry run's digest
        for day in ["2026-11-02", "2026-11-20", *days("2026-10-29", "2026-10-31")]:
            assert box.indexed(day) == box.snapshots(day)[-1], day
        # Only the forced run posted, and it recorded exactly 2026-11-20's due alerts.
        assert box.slack.messages
        assert box.sql("SELECT DISTINCT partition_date, state FROM alert_deliveries") == [
            ("2026-11-20", "sent")
        ]
        assert set(box.ledger("2026-11-20")) == box.due_keys("2026-11-20")

    return [Check("--mode send", command_line)]


def test_readme_commands(tmp_path, slack_server):
    box = Sandbox(tmp_path, slack_server)
    ran = run_document(README, box, readme_checks())
    assert len(ran) == 1, ran  # the dev block is all servers


def test_readme_transcripts(tmp_path, slack_server):
    """A ```text block that shows a command and its output: the command prints that."""
    box = Sandbox(tmp_path, slack_server)
    shown = transcripts(README)
    assert shown, "README shows no transcript"
    for block, command, output in shown:
        done = subprocess.run(
            ["bash", "-c", command], cwd=box.work, env=box.env, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        printed = (done.stdout + done.stderr).splitlines()
        missing = [line for line in output if line not in printed]
        assert not missing, f"{block.where}: {command!r} printed\n{done.stdout}{done.stderr}"


# --- RUNBOOK ------------------------------------------------------------------------------


def runbook_example(pattern: str) -> str:
    """A value the RUNBOOK's prose gives as its example (of D, of KEY)."""
    found = re.search(pattern, (REPO / RUNBOOK).read_text("utf-8"))
    assert found, f"RUNBOOK no longer gives an example matching {pattern}"
    return found.group(1)


def runbook_checks(d: str) -> list[Check]:
    def rerun_before(box: Sandbox) -> None:
        box.state["before"] = box.snapshots(d)

    def rerun_after(box: Sandbox, done) -> None:
        now = box.snapshots(d)
        assert len(now) == len(box.state["before"]) + 1
        assert box.indexed(d) == now[-1]

    def backfill_after(box: Sandbox, done) -> None:
        for day in days("2026-10-29", "2026-10-31"):
            assert box.indexed(day) == box.snapshots(day)[-1], day

    def long_backfill_after(box: Sandbox, done) -> None:
        for day in days("2026-11-18", d):
            assert box.indexed(day) == box.snapshots(day)[-1], day
        assert box.sql("SELECT count(*) FROM due_alerts WHERE partition_date = ?", "2026-11-18")

    def delete_before(box: Sandbox) -> None:
        box.state["before"] = box.snapshots(d)
        assert len(box.state["before"]) >= 2 and box.indexed(d) == box.state["before"][-1]

    def delete_after(box: Sandbox, done) -> None:
        assert box.snapshots(d) == box.state["before"][:-1]  # the newest, and only it
        assert box.state["before"][0] in done.stdout  # the `ls`

    def reindex_after(box: Sandbox, done) -> None:
        assert box.indexed(d) == box.state["before"][-2]  # the newest remaining file

    def drop_before(box: Sandbox) -> None:  # "no snapshot is left for D"
        aside = box.work / "snapshots-of-D"
        (box.data / "snapshots" / d).rename(aside)
        box.state["aside"] = aside

    def drop_after(box: Sandbox, done) -> None:
        assert box.indexed(d) is None
        assert d not in SnapshotIndex(index_path(box.data)).partitions()
        assert "rebuilt the index from its intact lines" in done.stdout, done.stdout
        # put D back as step 2 does, so that `verify` below audits a consistent lake
        box.state["aside"].rename(box.data / "snapshots" / d)
        reindex = next(b for b in runnable(RUNBOOK) if "'snapshot_index,due_alerts'" in b.text)
        box.bash(reindex.text, reindex.where)
        assert box.indexed(d) == box.snapshots(d)[-1]

    def verify_after(box: Sandbox, done) -> None:
        report = json.loads(done.stdout[done.stdout.index("{") : done.stdout.rindex("}") + 1])
        assert report["ok"] is True, report

    def run_day_after(box: Sandbox, done) -> None:
        assert "history" in done.stdout and box.indexed(d) == box.snapshots(d)[-1]

    def free_slots_before(box: Sandbox) -> None:
        import dagster as dg

        with dg.DagsterInstance.from_config(str(box.home)) as instance:
            storage = instance.event_log_storage
            storage.initialize_concurrency_limit_to_default("calendar_upstream")
            storage.claim_concurrency_slot("calendar_upstream", box.variables["RUN_ID"], "x")
            assert storage.get_concurrency_info("calendar_upstream").claimed_slots

    def free_slots_after(box: Sandbox, done) -> None:
        import dagster as dg

        with dg.DagsterInstance.from_config(str(box.home)) as instance:
            info = instance.event_log_storage.get_concurrency_info("calendar_upstream")
            assert not info.claimed_slots, info.claimed_slots

    def deliveries_after(box: Sandbox, done) -> None:
        key, (state, ts) = box.variables["KEY"], box.ledger(d)[box.variables["KEY"]]
        assert state == "sent"
        assert any(key in line and line.lstrip().startswith(f"sent ts {ts}") for line in
                   done.stdout.splitlines()), done.stdout  # fmt: skip

    def resend_before(box: Sandbox) -> None:
        box.state["posted"] = len(box.slack.messages)
        box.state["ledger"] = box.ledger(d)

    def resend_after(box: Sandbox, done) -> None:
        new = box.slack.messages[box.state["posted"] :]
        assert len(new) == 1, new  # one message, for the one key
        ledger = box.ledger(d)
        assert ledger[box.variables["KEY"]] == ("sent", new[0].response["ts"])
        assert ledger[box.variables["KEY"]] != box.state["ledger"][box.variables["KEY"]]
        others = {k: v for k, v in ledger.items() if k != box.variables["KEY"]}
        assert others == {k: v for k, v in box.state["ledger"].items() if k in others}
        assert len(others) == len(box.state["ledger"]) - 1

    def restore_after(box: Sandbox, done) -> None:
        assert box.ledger(d) == {}  # the backup was taken before D was posted

    def record_only_before(box: Sandbox) -> None:
        box.state["posted"] = len(box.slack.messages)

    def record_only_after(box: Sandbox, done) -> None:
        assert len(box.slack.messages) == box.state["posted"]  # nothing posted
        ledger = box.ledger(d)
        assert set(ledger) == box.due_keys(d) and {s for s, _ in ledger.values()} == {"recorded"}

    def states_after(box: Sandbox, done) -> None:
        assert done.stdout.split() == ["recorded", str(len(box.due_keys(d)))]

    def switches_after(box: Sandbox, done) -> None:  # "What runs by default", flipped
        for name, state in (("slack_alert_sensor", "STOPPED"),
                            ("slack_run_failure_sensor", "STOPPED"),
                            ("raw_snapshot_freshness_sensor", "STOPPED"),
                            ("raw_snapshot_freshness_checks_sensor", "STOPPED"),
                            ("upstream_availability_sensor", "RUNNING")):  # fmt: skip
            assert f"Sensor: {name} [{state}]" in done.stdout, done.stdout

    def dotenv_before(box: Sandbox) -> None:
        (box.work / ".env").write_text("CALENDAR_LEDGER_RETENTION_DAYS=400\n")

    def dotenv_after(box: Sandbox, done) -> None:
        block = next(b for b in runnable(RUNBOOK) if ". ./.env" in b.text)
        exported = box.bash(f"{block.text}\nprintenv CALENDAR_LEDGER_RETENTION_DAYS", "export")
        assert exported.stdout.split() == ["400"]
        (box.work / ".env").unlink()
        box.bash(block.text, f"{block.where} without a .env")

    return [
        Check(". ./.env", dotenv_after, dotenv_before),
        Check("--select 'group:calendar' --partition \"$D\"", rerun_after, rerun_before),
        Check("--partition-range", backfill_after),
        Check("dagster/max_runtime", long_backfill_after),
        Check('rm "$(ls', delete_after, delete_before),
        Check("'snapshot_index,due_alerts'", reindex_after),
        Check("drops D's line", drop_after, drop_before),
        Check("verify --json", verify_after),
        Check('calendar-pipeline run --date "$D"', run_day_after),
        Check("free_concurrency_slots_for_run", free_slots_after, free_slots_before),
        Check("calendar-pipeline deliveries", deliveries_after),
        Check("calendar-pipeline resend", resend_after, resend_before),
        Check("ATTACH DATABASE", restore_after),
        Check("--mode record_only", record_only_after, record_only_before),
        Check("GROUP BY state", states_after),
        Check("dagster sensor stop slack_alert_sensor", switches_after),
    ]


def test_runbook_commands(tmp_path, slack_server):
    d = runbook_example(r"`export D=(\d{4}-\d{2}-\d{2})`")
    assert d < dt.date.today().isoformat()  # a past day (partitions end today)
    box = Sandbox(tmp_path, slack_server, variables={"D": d})
    # Production before the runbook: D ran as history, a ledger backup was taken, then D
    # was posted (a run for D on D would have done both).
    box.bash(f"calendar-pipeline run --date {d}", "setup: D as history")
    box.variables["BACKUP"] = str(tmp_path / "backup.db")
    with (
        closing(sqlite3.connect(box.data / "calendar.db")) as db,
        closing(sqlite3.connect(tmp_path / "backup.db")) as copy,
    ):
        db.backup(copy)
    box.bash(f"calendar-pipeline run --date {d} --mode send", "setup: D posted")
    assert set(box.ledger(d)) == box.due_keys(d) and box.slack.messages
    box.variables["KEY"] = runbook_example(r"`KEY='([^']+)'`")
    assert box.variables["KEY"] in box.due_keys(d)  # the example is a real key of D
    box.variables["RUN_ID"] = box.sql(
        "SELECT DISTINCT run_id FROM alert_deliveries WHERE partition_date = ?", d
    )[0][0]

    ran = run_document(RUNBOOK, box, runbook_checks(d))
    assert len(ran) == len(bash_blocks(RUNBOOK)) == 16, ran


if __name__ == "__main__":  # print what would run
    for doc in (README, RUNBOOK):
        for block in runnable(doc):
            print(f"--- {block.where}\n{textwrap.indent(block.text, '    ')}")
