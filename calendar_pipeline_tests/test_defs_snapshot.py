"""The definitions as `dg list defs --json` lists them (assets with their group, kinds and
dependencies, checks, jobs, schedules with their cron, sensors, resources), compared with
the reviewed snapshot in `data/defs_snapshot.json`: a change to the graph shows as a
diff of that file in review. After an intended change, rewrite it with

    CALENDAR_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest -n 0 \
        calendar_pipeline_tests/test_defs_snapshot.py

and commit it with the change. Descriptions are left out (wording is not structure).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from calendar_pipeline_tests.dagster_dev import REPO_ROOT, console_script, scrubbed_env

SNAPSHOT = Path(__file__).parent / "data" / "defs_snapshot.json"


def listed_defs(tmp_path: Path) -> dict:
    env = scrubbed_env(tmp_path / "home", tmp_path / "data")
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        [console_script("dg"), "list", "defs", "--json"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(done.stdout)


def structure(listed: dict) -> dict:
    """What a reviewer compares: names and wiring, sorted; no descriptions."""
    return {
        "assets": sorted(
            (
                {
                    "key": a["asset_key"],
                    "group": a["group_name"],
                    "kinds": sorted(a["kinds"]),
                    "deps": sorted(a["dependency_keys"]),
                }
                for a in listed["assets"]
            ),
            key=lambda a: a["key"],
        ),
        "asset_checks": sorted(c["key"] for c in listed["asset_checks"]),
        "jobs": sorted(j["name"] for j in listed["jobs"]),
        "schedules": sorted(f"{s['name']} {s['cron_schedule']}" for s in listed["schedules"]),
        "sensors": sorted(s["name"] for s in listed["sensors"]),
        "resources": sorted(f"{r['name']} {r['type']}" for r in listed["resources"]),
    }


def test_the_definitions_are_the_reviewed_snapshot(tmp_path):
    found = structure(listed_defs(tmp_path))
    if os.environ.get("CALENDAR_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    expected = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    assert found == expected, (
        "the definitions changed; if intended, rewrite the snapshot "
        "(CALENDAR_UPDATE_SNAPSHOTS=1, see this module's docstring) and commit it"
    )
    assert {a["key"] for a in found["assets"]} >= {"raw_snapshot", "due_alerts"}
