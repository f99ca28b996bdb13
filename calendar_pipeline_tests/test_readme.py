"""The README's first command, exactly as written, in a fresh copy of the repository:
a new virtualenv, the install, and today's run printing the digest. Offline but for the
package registry. Also: loading the definitions raises no deprecation warning that
points at this project's code."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from calendar_pipeline_tests.markdown_blocks import bash_blocks

REPO = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    return [b.text for b in bash_blocks("README.md") if b.section == "The two commands"]


def test_readme_has_the_two_commands_and_ci_runs_the_second():
    first, second = readme_commands()[:2]
    assert "calendar-pipeline run" in first
    assert "pytest" in second
    assert second in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_readme_first_command_in_a_fresh_copy(tmp_path):
    first = readme_commands()[0]
    copy = tmp_path / "repo"
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALENDAR_", "SLACK_"))}
    env.pop("DAGSTER_HOME", None)
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        ["bash", "-c", first], cwd=copy, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    # a summary (issue 23): the alerts of the channel, one closing line, at most 30 lines
    assert len(done.stdout.splitlines()) <= 30, done.stdout
    assert "\n#calendar-alerts: " in done.stdout and "Slack: dry run" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("Done: ")
    assert list((copy / "data" / "snapshots").glob("*/snapshot_*.json"))
    assert (copy / "data" / "index" / "snapshots.jsonl").stat().st_size > 0


def test_definitions_load_without_deprecation_warnings_from_our_code():
    probe = (
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    import calendar_pipeline.definitions as d\n"
        "    d.defs.resolve_all_job_defs()\n"
        "    d.defs.resolve_asset_graph()\n"
        "for w in caught:\n"
        "    print(w.category.__name__, w.filename, str(w.message).splitlines()[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ours = [
        line
        for line in done.stdout.splitlines()
        if "calendar_pipeline" in line
        and ("Deprecat" in line or "Beta" in line or "Preview" in line or "Supersession" in line)
    ]
    assert ours == []
