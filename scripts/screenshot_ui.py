"""Regenerate the README screenshots of the Dagster UI (and a base for a browser test).

    python scripts/screenshot_ui.py                   # docs/{asset_graph,due_alerts_asset}.png
    python scripts/screenshot_ui.py --out /tmp/shots  # the same two files elsewhere

What it does, all in throwaway directories so your own instance and data are untouched:

1. Creates a temporary DAGSTER_HOME (with a copy of the repository's dagster.yaml) and a
   temporary CALENDAR_DATA_DIR, then materializes a few partitions with the project's CLI
   (``calendar-pipeline run --date ...``) so the UI has runs, metadata and checks to show.
2. Starts ``dagster dev`` on a free port of 127.0.0.1 and waits for ``/server_info``
   (``calendar_pipeline_tests/dagster_dev.py``, the end-to-end tests' ``DagsterDev``). It
   loads the code location as pyproject.toml's ``[tool.dg.project]`` names it,
   ``calendar_pipeline``, as ``dagster dev`` in the repository does, not after the module.
3. Drives Debian's Chromium (``/usr/bin/chromium``) with Playwright, dismisses the
   first-run "Join the Dagster community" dialog and takes the screenshots
   (``calendar_pipeline_tests/ui_browser.py``, shared with ``test_ui_e2e.py``):
   - ``asset_graph.png``: lineage of asset group ``calendar`` (three nodes), its header
     "Asset Group in calendar_pipeline";
   - ``due_alerts_asset.png``: Partitions tab of ``due_alerts`` with one partition selected.
4. Stops ``dagster dev`` (SIGTERM to its process group, SIGKILL after 20 s) and deletes
   the temporary directories, whatever happened before.

Requirements: ``pip install playwright`` and ``apt-get install chromium``. Do not run
``playwright install``: it downloads its own browser, which this script does not use.

Settings: inherited project settings (``CALENDAR_*``, ``SLACK_*``, ``NAGER_*``,
``FINNHUB_*`` and whatever else ``.env.example`` lists) are dropped so the screenshots show
the project's defaults and nothing can reach Slack (no token means dry-run; the partitions
are in the past, so they are record-only anyway). ``dagster dev`` runs from a temporary
directory, so a ``.env`` file in the repository root is not loaded either.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - a hint for the maintainer, not a code path
    sys.exit("screenshot_ui: `pip install playwright` first (no `playwright install` needed)")

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # calendar_pipeline_tests is not an installed package

from calendar_pipeline_tests.dagster_dev import (  # noqa: E402
    LOCATION_NAME,
    DagsterDev,
    console_script,
)
from calendar_pipeline_tests.ui_browser import (  # noqa: E402
    CHROMIUM,
    browser_page,
    chromium_browser,
    dismiss_first_run_dialog,
    expect_no_overlay,
    open_asset_graph,
    open_due_alerts_partition,
)

# Partitions materialized before the UI starts; the asset page shows the last one.
PARTITIONS = ("2026-11-20", "2026-11-21", "2026-11-22")
SHOWN_PARTITION = PARTITIONS[-1]


def materialize_partitions(env: dict[str, str]) -> None:
    """Run the daily job (then the Slack job) per partition; runs land in DAGSTER_HOME."""
    for partition in PARTITIONS:
        print(f"  calendar-pipeline run --date {partition}", flush=True)
        result = subprocess.run(
            [console_script("calendar-pipeline"), "run", "--date", partition],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            print(result.stdout[-3000:], result.stderr[-3000:], sep="\n", file=sys.stderr)
            raise RuntimeError(f"calendar-pipeline run --date {partition} failed")


def screenshot_asset_graph(page: Page, path: Path) -> None:
    open_asset_graph(page)
    # The header names the code location ("Asset Group in calendar_pipeline").
    expect(page.locator(f'a[href="/locations/{LOCATION_NAME}/"]')).to_contain_text(LOCATION_NAME)
    page.screenshot(path=path)


def screenshot_due_alerts(page: Page, path: Path) -> None:
    open_due_alerts_partition(page, SHOWN_PARTITION)
    dismiss_first_run_dialog(page)  # no-op when the graph page already dismissed it
    expect(page.get_by_text("due_d30", exact=True)).to_be_visible()
    expect(page.get_by_text(f"Materialized ({len(PARTITIONS)})")).to_be_visible()
    page.wait_for_timeout(500)
    expect_no_overlay(page)
    page.screenshot(path=path)


def take_screenshots(base_url: str, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    graph_png, asset_png = out_dir / "asset_graph.png", out_dir / "due_alerts_asset.png"
    with chromium_browser() as browser, browser_page(browser, base_url) as page:
        screenshot_asset_graph(page, graph_png)
        print(f"  wrote {graph_png}", flush=True)
        screenshot_due_alerts(page, asset_png)
        print(f"  wrote {asset_png}", flush=True)
    return [graph_png, asset_png]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "docs", help="output directory (default: docs/)"
    )
    args = parser.parse_args(argv)
    out_dir = args.out.resolve()

    if not Path(CHROMIUM).exists():
        print(f"screenshot_ui: {CHROMIUM} missing: apt-get install -y chromium", file=sys.stderr)
        return 2

    # `dagster dev` would otherwise keep running if this script is killed with SIGTERM:
    # turn SIGTERM into SystemExit so the `finally` below still cleans up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    started = time.monotonic()
    with tempfile.TemporaryDirectory(
        prefix="calendar-screenshots-", ignore_cleanup_errors=True
    ) as tmp:
        dev = DagsterDev.in_tmpdir(Path(tmp))
        try:
            print(f"[1/4] materializing {len(PARTITIONS)} partitions in {tmp}", flush=True)
            materialize_partitions(dev.env)

            print("[2/4] starting dagster dev", flush=True)
            dev.start()  # on failure, the error carries the tail of the log
            print(f"  serving on {dev.base_url}", flush=True)

            print("[3/4] taking screenshots with Chromium", flush=True)
            try:
                take_screenshots(dev.base_url, out_dir)
            except Exception:
                print(f"dagster dev log (tail):\n{dev.log_tail(40)}", file=sys.stderr)
                raise
        finally:
            print("[4/4] stopping dagster dev, removing temporary directories", flush=True)
            dev.stop()

    print(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
