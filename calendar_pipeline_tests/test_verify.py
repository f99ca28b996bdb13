"""``calendar-pipeline verify``: every kind of damage it must find, what ``--repair`` may
and may not fix, the exit code and the JSON form. The data is made by real runs of the
daily job; the damage is what a kill, a full disk or a stray writer leaves."""

from __future__ import annotations

import datetime as dt
import json
import os

import dagster as dg
import pytest
from sqlalchemy import update

from calendar_pipeline import cli
from calendar_pipeline.alerts import store
from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline.lake.index import IndexCorruptError, SnapshotIndex, build_entry, index_path
from calendar_pipeline.lake.snapshots import latest_snapshot, list_snapshots, write_snapshot

DAYS = ["2025-12-18", "2025-12-19", "2025-12-20"]
LEDGER_ROW = {
    "partition_date": dt.date(2025, 12, 18),
    "entity_id": "x",
    "event_id": "e",
    "event_date": dt.date(2025, 12, 25),
    "threshold_days": 7,
    "run_id": "run-1",
    "attempts": 1,
}


@pytest.fixture
def lake(tmp_path, small_universe, monkeypatch):
    """Three days run through daily_calendar_job; the CLI's environment points at them."""
    data = tmp_path / "data"
    calendar = CalendarSettings(data_dir=str(data), universe=str(small_universe))
    defs = build_defs({"calendar": calendar, "slack": SlackSettings()})
    with dg.instance_for_test() as instance:
        for day in DAYS:
            job = defs.resolve_job_def("daily_calendar_job")
            assert job.execute_in_process(partition_key=day, instance=instance).success
    for name in [n for n in os.environ if n.startswith(("CALENDAR_", "SLACK_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CALENDAR_DATA_DIR", str(data))
    monkeypatch.setenv("CALENDAR_UNIVERSE", str(small_universe))
    return calendar


def run_verify(capsys, *flags: str) -> tuple[int, str]:
    code = cli.main(["verify", *flags])
    return code, capsys.readouterr().out


def test_a_clean_lake_verifies(lake, capsys):
    code, out = run_verify(capsys)
    assert code == 0 and out.strip().endswith("OK")
    assert "checked 3 snapshot files, 0 temporary files, 3 index lines, 3 indexed days" in out


def test_leftovers_of_killed_writes_are_warnings_and_repair_removes_them(lake, capsys):
    data = lake.data_path
    stray = data / "snapshots" / DAYS[0] / ".snapshot_20251218T060000000000Z.json.x1y2.tmp"
    stray.write_bytes(b'{"partial": ')
    index_stray = data / "index" / ".snapshots.jsonl.abcd.tmp"
    index_stray.write_bytes(b"half a rewrite")
    with open(index_path(data), "ab") as handle:
        handle.write(b'{"partition":"2025-12-21","path":')  # an append killed midway

    code, out = run_verify(capsys)
    assert code == 0  # nothing a reader would see: warnings only
    assert f"WARNING temp_files: stray temporary file {stray}" in out
    assert f"stray temporary file {index_stray}" in out
    assert "trailing partial line" in out

    code, out = run_verify(capsys, "--repair")
    assert code == 0 and out.count("repaired:") == 3
    assert not stray.exists() and not index_stray.exists()
    assert index_path(data).read_bytes().endswith(b"}\n")
    assert run_verify(capsys) == (0, run_verify(capsys)[1])
    assert "WARNING" not in run_verify(capsys)[1]


def test_an_unindexed_newest_snapshot_is_indexed_only_if_it_passes_the_checks(lake, capsys):
    data, day = lake.data_path, DAYS[1]
    document = json.loads(latest_snapshot(data, day).read_text())
    killed = write_snapshot(data, day, document)  # its run died before snapshot_index
    code, out = run_verify(capsys)
    assert code == 0 and f"newest snapshot {killed.name} is not indexed" in out

    code, out = run_verify(capsys, "--repair")
    assert code == 0 and "passes the checks: indexed, due_alerts recomputed" in out
    assert SnapshotIndex(index_path(data)).get(day)["path"] == str(killed)

    # a snapshot a check rejected (most events gone) is listed, never indexed
    rejected_doc = {**document, "events": document["events"][:2]}
    rejected = write_snapshot(data, DAYS[2], rejected_doc)
    code, out = run_verify(capsys, "--repair")
    assert "it fails the checks, left out: volume_within_history" in out
    assert SnapshotIndex(index_path(data)).get(DAYS[2])["path"] != str(rejected)


def test_repair_rebuilds_an_index_that_writers_refuse(lake, capsys):
    data = lake.data_path
    index = SnapshotIndex(index_path(data))
    first, second, third = index_path(data).read_bytes().splitlines(keepends=True)
    index_path(data).write_bytes(third + b'{"partition":"2025-12-19", garbled\n' + first)
    newest = {day: latest_snapshot(data, day) for day in DAYS}
    with pytest.raises(IndexCorruptError, match="line 2"):  # what the next run would hit
        index.upsert(build_entry(DAYS[0], newest[DAYS[0]], row_count=1, error_count=0))

    code, out = run_verify(capsys)
    assert code == 1 and "line 2: not valid JSON" in out
    assert f"line 3 ({DAYS[0]}): out of order" in out

    code, out = run_verify(capsys, "--repair")
    assert code == 0, out
    assert "repaired: rebuilt the index from its intact lines, without this one" in out
    assert "repaired: rebuilt the index: its line kept, in partition order" in out
    assert f"newest_snapshot [{DAYS[1]}]" in out  # the day that lost its line, judged again
    assert "passes the checks: indexed, due_alerts recomputed" in out
    assert index.partitions() == DAYS
    assert [index.get(day)["path"] for day in DAYS] == [str(newest[day]) for day in DAYS]
    assert index_path(data).read_bytes().startswith(first + second.split(b'"mtime"')[0])
    assert index.problems() == []
    code, out = run_verify(capsys)
    assert code == 0 and "WARNING" not in out and "ERROR" not in out


def test_repair_drops_the_line_of_a_day_whose_snapshots_were_all_deleted(lake, capsys):
    data = lake.data_path
    for path in list_snapshots(data, DAYS[2]):  # docs/RUNBOOK.md, Deleting a bad snapshot
        path.unlink()

    code, out = run_verify(capsys)
    assert code == 1 and f"ERROR   index [{DAYS[2]}]" in out and "does not exist" in out

    code, out = run_verify(capsys, "--repair")
    assert code == 0 and "repaired: rebuilt the index from its intact lines" in out
    assert SnapshotIndex(index_path(data)).partitions() == DAYS[:2]
    assert run_verify(capsys)[0] == 0


def test_damaged_data_is_an_error_with_the_day_to_re_run(lake, capsys):
    data = lake.data_path
    oldest = latest_snapshot(data, DAYS[0])
    oldest.write_bytes(oldest.read_bytes()[:500])  # a file cut short under the index
    engine = lake.engine()
    with engine.begin() as conn:  # a day's rows lost
        conn.execute(
            store.due_alerts.delete().where(
                store.due_alerts.c.partition_date == dt.date(2025, 12, 19)
            )
        )

    code, out = run_verify(capsys)
    assert code == 1 and out.strip().endswith("FAILED: 3 error(s)")
    assert f"ERROR   snapshots [{DAYS[0]}]: {oldest}" in out
    assert "the file changed after it was indexed" in out
    assert f"ERROR   due_alerts [{DAYS[1]}]: {DAYS[1]}: 0 rows, the rule gives" in out
    assert "calendar-pipeline run --date 2025-12-18, calendar-pipeline run --date 2025-12-19" in out

    code, out = run_verify(capsys, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and report["errors"] == 3
    assert {f["area"] for f in report["findings"]} == {"snapshots", "index", "due_alerts"}


def test_ledger_rows_in_an_unknown_state_or_claimed_too_long(lake, capsys):
    engine = lake.engine()
    now = dt.datetime.now(dt.UTC)
    rows = [
        ("a|e|2025-12-25|D-7", "claimed", now - dt.timedelta(hours=2)),
        ("b|e|2025-12-25|D-7", "claimed", now),
        ("c|e|2025-12-25|D-7", "sent", now),
    ]
    with engine.begin() as conn:
        for key, state, claimed_at in rows:
            row = {"dedup_key": key, "state": state, "claimed_at": claimed_at}
            conn.execute(
                store.alert_deliveries.insert().values(**row, **LEDGER_ROW, updated_at=now)
            )
    code, out = run_verify(capsys)
    assert code == 0 and "a|e|2025-12-25|D-7: claimed by run run-1" in out
    assert "b|e|" not in out
    with engine.begin() as conn:
        conn.execute(
            update(store.alert_deliveries)
            .where(store.alert_deliveries.c.dedup_key == "c|e|2025-12-25|D-7")
            .values(state="posted?")
        )
    code, out = run_verify(capsys)
    assert code == 1 and "unknown state 'posted?'" in out


def test_a_bad_database_url_is_named_without_its_password(lake, capsys, monkeypatch):
    monkeypatch.setenv("CALENDAR_DB_URL", "mysql://me:hunter2@127.0.0.1/calendar")
    assert cli.main(["verify"]) == 2
    err = capsys.readouterr().err
    assert "CALENDAR_DB_URL='mysql://me:***@127.0.0.1/calendar': unsupported database URL" in err
    assert "hunter2" not in err


def test_alerts_slack_could_not_take_are_reported_until_delivered(lake, capsys):
    """Issue 24 item 2: after a Slack outage (or invalid_auth), verify is not OK while
    undelivered alerts are still ahead, and says what happens next."""
    engine = lake.engine()
    now = dt.datetime.now(dt.UTC)
    ahead = now.date() + dt.timedelta(days=5)
    failed = "SlackConfigError: Slack rejected the bot token (invalid_auth): check SLACK_BOT_TOKEN"
    rows = [
        (f"a|e|{ahead}|D-7", ahead),
        (f"b|e|{ahead}|D-7", ahead),
        ("c|e|2025-12-25|D-7", dt.date(2025, 12, 25)),
    ]
    with engine.begin() as conn:
        for key, event_date in rows:
            values = {**LEDGER_ROW, "event_date": event_date}
            conn.execute(
                store.alert_deliveries.insert().values(
                    dedup_key=key, state="failed", error=failed, updated_at=now, **values
                )
            )
    code, out = run_verify(capsys)
    assert code == 1, out
    assert "ERROR   ledger: 2 alert(s) due 2025-12-18 not delivered (last error: " in out
    assert "invalid_auth" in out and "the next Slack run posts them marked late" in out
    assert "WARNING ledger: 1 alert(s) due 2025-12-18 never delivered" in out
    with engine.begin() as conn:  # delivered the next day: verify is OK again
        conn.execute(
            update(store.alert_deliveries)
            .where(store.alert_deliveries.c.event_date == ahead)
            .values(state="sent")
        )
    code, out = run_verify(capsys)
    assert code == 0 and "not delivered" not in out, out
