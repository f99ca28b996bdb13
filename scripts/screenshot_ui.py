"""Regenerate the README screenshots of the Dagster UI (and a base for a browser test).

    python scripts/screenshot_ui.py                   # docs/{asset_graph,due_alerts_asset}.png
    python scripts/screenshot_ui.py --out /tmp/shots  # the same two files elsewhere

What it does, all in throwaway directories so your own instance and data are untouched:

1. Creates a temporary DAGSTER_HOME (with a copy of the repository's dagster.yaml) and a
   temporary CALENDAR_DATA_DIR, then materializes a few partitions with the project's CLI
   (``calendar-pipeline run --date ...``) so the UI has runs, metadata and checks to show.
2. Starts ``dagster dev`` on a free port of 127.0.0.1 and waits for ``/server_info``.
3. Drives Debian's Chromium (``/usr/bin/chromium``) with Playwright, dismisses the
   first-run "Join the Dagster community" dialog and takes the screenshots:
   - ``asset_graph.png``: lineage of asset group ``calendar`` (three nodes);
   - ``due_alerts_asset.png``: Partitions tab of ``due_alerts`` with one partition selected.
4. Stops ``dagster dev`` (SIGTERM to its process group, SIGKILL after 20 s) and deletes
   the temporary directories, whatever happened before.

Requirements: ``pip install playwright`` and ``apt-get install chromium``. Do not run
``playwright install``: it downloads its own browser, which this script does not use.

Settings: inherited CALENDAR_* and SLACK_* variables are dropped so the screenshots show
the project's defaults and nothing can reach Slack (no token means dry-run; the partitions
are in the past, so they are record-only anyway). A ``.env`` file in the repository root is
still loaded by ``dagster dev`` (it overrides the environment); the script warns about it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

try:
    from playwright.sync_api import Page, expect, sync_playwright
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
except ImportError:  # pragma: no cover - a hint for the maintainer, not a code path
    sys.exit("screenshot_ui: `pip install playwright` first (no `playwright install` needed)")

REPO_ROOT = Path(__file__).resolve().parent.parent

# Partitions materialized before the UI starts; the asset page shows the last one.
PARTITIONS = ("2026-11-20", "2026-11-21", "2026-11-22")
SHOWN_PARTITION = PARTITIONS[-1]
ASSETS = ("raw_snapshot", "snapshot_index", "due_alerts")

# UI routes of Dagster 1.13. `dagster dev -m calendar_pipeline.definitions` names the code
# location after the module, and a Definitions object is the repository "__repository__".
# (The shorter /asset-groups/calendar renders the *global* lineage with a sidebar instead.)
GROUP_URL = "/locations/__repository__@calendar_pipeline.definitions/asset-groups/calendar"
ASSET_URL = f"/assets/due_alerts?view=partitions&partition={SHOWN_PARTITION}"

CHROMIUM = "/usr/bin/chromium"
# The machine has no internet: without these flags Chromium keeps trying (and failing) to
# reach Google services. --no-sandbox because the script usually runs as root in a container.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1600, "height": 900}

SERVER_TIMEOUT_S = 120  # dagster dev start-up, until /server_info answers
UI_TIMEOUT_MS = 60_000  # each wait in the browser (the code location loads lazily)
STOP_GRACE_S = 20  # SIGTERM -> SIGKILL


def console_script(name: str) -> str:
    """The console script installed next to this Python (same env as playwright), else PATH."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def child_env(dagster_home: Path, data_dir: Path) -> dict[str, str]:
    """This process's environment minus project settings, plus the temporary directories."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALENDAR_", "SLACK_"))}
    env["DAGSTER_HOME"] = str(dagster_home)
    env["CALENDAR_DATA_DIR"] = str(data_dir)
    return env


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


def free_port() -> int:
    """A port nobody listens on right now (tiny race with other programs; fine for a script)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _default_signal_handlers() -> None:
    # Runs in the child between fork and exec. A process started in the background from a
    # non-interactive shell inherits SIGINT/SIGTERM as *ignored*, and `dagster dev` would
    # then ignore our SIGTERM (DESIGN.md, "Known traps"). Restore the defaults.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start_dagster_dev(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen:
    """Start `dagster dev` in its own session/process group, output to log_path."""
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [
                console_script("dagster"),
                "dev",
                "-m",
                "calendar_pipeline.definitions",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: one killpg stops webserver, daemon...
            preexec_fn=_default_signal_handlers,
        )


def wait_for_server(proc: subprocess.Popen, base_url: str, log_path: Path) -> None:
    """Poll /server_info until it answers; fail early if dagster dev exits."""
    deadline = time.monotonic() + SERVER_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {proc.returncode}:\n{tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{base_url}/server_info", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(
        f"{base_url}/server_info not up after {SERVER_TIMEOUT_S} s:\n{tail(log_path)}"
    )


def stop_dagster_dev(proc: subprocess.Popen) -> None:
    """SIGTERM the whole process group, wait, then SIGKILL whatever is left."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=STOP_GRACE_S)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            print(f"  dagster dev still alive after {STOP_GRACE_S} s: SIGKILL", file=sys.stderr)
    # The leader may be gone while children (webserver, daemon, code server) linger.
    with contextlib.suppress(ProcessLookupError):  # nobody left: the usual case
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def dismiss_first_run_dialog(page: Page) -> None:
    """Click "Skip" on the "Join the Dagster community" dialog if it shows up.

    Dagster shows it on localhost for an instance that has not seen it yet (always, with a
    fresh DAGSTER_HOME), about one second after the app mounts. "Skip" records that in the
    instance, so later pages do not show it again.
    """
    dialog = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
    try:
        dialog.get_by_role("button", name="Skip").click(timeout=10_000)
    except PlaywrightTimeoutError:
        return  # not shown (a later Dagster version, or already dismissed)
    expect(dialog).to_have_count(0)
    # The click left the mouse where the dialog was, over a graph node: hovering would
    # highlight that node in the screenshot. Park the pointer in the top-left corner.
    page.mouse.move(0, 0)


def expect_no_overlay(page: Page) -> None:
    """Fail rather than save a screenshot with the first-run dialog over the page."""
    expect(page.get_by_text("Join the Dagster community")).to_have_count(0)


def screenshot_asset_graph(page: Page, base_url: str, path: Path) -> None:
    page.goto(base_url + GROUP_URL)
    # Graph nodes are HTML inside the SVG's <foreignObject>s; their title is the asset name.
    for asset in ASSETS:
        expect(page.locator("foreignObject").get_by_text(asset, exact=True)).to_be_visible()
    dismiss_first_run_dialog(page)
    # Live data arrives after the layout: each node's "Latest event" reads "... ago" once
    # the materializations are loaded (and "n / n Passed" for the asset checks).
    expect(page.locator("foreignObject").get_by_text(re.compile(r" ago$"))).to_have_count(3)
    expect(page.get_by_text(re.compile(r"^\d+ / \d+ Passed$"))).to_have_count(3)
    page.wait_for_timeout(1000)  # let the zoom-to-fit animation settle
    expect_no_overlay(page)
    page.screenshot(path=path)


def screenshot_due_alerts(page: Page, base_url: str, path: Path) -> None:
    page.goto(base_url + ASSET_URL)
    dismiss_first_run_dialog(page)  # no-op when the graph page already dismissed it
    # The right pane shows the selected partition: status tag, then its metadata table.
    expect(page.get_by_text("Materialized", exact=True)).to_be_visible()
    expect(page.get_by_text("Metadata", exact=True)).to_be_visible()
    for key in ("dagster/row_count", "due_d1", "due_d30"):
        expect(page.get_by_text(key, exact=True)).to_be_visible()
    expect(page.get_by_text(f"Materialized ({len(PARTITIONS)})")).to_be_visible()
    page.wait_for_timeout(500)
    expect_no_overlay(page)
    page.screenshot(path=path)


def take_screenshots(base_url: str, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    graph_png, asset_png = out_dir / "asset_graph.png", out_dir / "due_alerts_asset.png"
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT, color_scheme="light")
            page = context.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            screenshot_asset_graph(page, base_url, graph_png)
            print(f"  wrote {graph_png}", flush=True)
            screenshot_due_alerts(page, base_url, asset_png)
            print(f"  wrote {asset_png}", flush=True)
        finally:
            browser.close()
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
    if (REPO_ROOT / ".env").exists():
        print("screenshot_ui: warning: dagster dev will load .env, which overrides settings")

    # `dagster dev` would otherwise keep running if this script is killed with SIGTERM:
    # turn SIGTERM into SystemExit so the `finally` below still cleans up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    started = time.monotonic()
    tmp_root = Path(tempfile.mkdtemp(prefix="calendar-screenshots-"))
    proc: subprocess.Popen | None = None
    try:
        dagster_home, data_dir = tmp_root / "dagster_home", tmp_root / "data"
        dagster_home.mkdir()
        data_dir.mkdir()
        shutil.copy(REPO_ROOT / "dagster.yaml", dagster_home / "dagster.yaml")
        env = child_env(dagster_home, data_dir)

        print(f"[1/4] materializing {len(PARTITIONS)} partitions in {tmp_root}", flush=True)
        materialize_partitions(env)

        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log_path = tmp_root / "dagster_dev.log"
        print(f"[2/4] starting dagster dev on {base_url}", flush=True)
        proc = start_dagster_dev(env, port, log_path)
        wait_for_server(proc, base_url, log_path)

        print("[3/4] taking screenshots with Chromium", flush=True)
        try:
            take_screenshots(base_url, out_dir)
        except Exception:
            print(f"dagster dev log (tail):\n{tail(log_path)}", file=sys.stderr)
            raise
    finally:
        print("[4/4] stopping dagster dev, removing temporary directories", flush=True)
        if proc is not None:
            stop_dagster_dev(proc)
        shutil.rmtree(tmp_root, ignore_errors=True)

    print(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
