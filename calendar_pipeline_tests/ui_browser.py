"""The Dagster UI in Debian's Chromium, driven by Playwright: what ``test_ui_e2e.py`` and
``scripts/screenshot_ui.py`` share.

    with chromium_browser() as browser, browser_page(browser, dev.base_url) as page:
        open_asset_graph(page)                         # group `calendar`, live data loaded
        open_due_alerts_partition(page, "2026-11-03")  # Partitions tab, one day selected
        click_link(page, "Catalog")                    # by the label the UI shows

- Chromium is ``/usr/bin/chromium`` (``apt-get install chromium``), not a browser that
  ``playwright install`` downloads. Its flags: no sandbox (root in a container) and no
  attempts to reach Google services from a machine without internet.
- A fresh DAGSTER_HOME on localhost shows a "Join the Dagster community" dialog about a
  second after the app mounts; ``dismiss_first_run_dialog`` skips it (once per instance).
- Every wait (``expect`` and the page's own) is ``UI_TIMEOUT_MS``: the code location loads
  lazily on a cold page.
- ``click_link``, ``click_button``, ``tick_assets``, ``type_partitions`` and
  ``launch_message`` act on what a user sees, by the labels the UI shows (those the RUNBOOK
  quotes; ``test_ui_e2e.py`` follows its UI steps with them).

The playwright package is optional here: without it, ``sync_playwright`` is None (the
callers check that) and the rest of the module is not usable.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from calendar_pipeline_tests.dagster_dev import LOCATION_NAME, REPOSITORY_NAME

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the callers check `sync_playwright is None`
    sync_playwright = None

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

CHROMIUM = "/usr/bin/chromium"
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
UI_TIMEOUT_MS = 60_000  # each wait in the browser (the code location loads lazily)

# The four assets of group `calendar`, the nodes of its lineage graph.
ASSETS = ("raw_snapshot", "snapshot_index", "due_alerts", "calendar_feed")
CHECKED = ASSETS[:3]  # calendar_feed has no asset check

# UI routes of Dagster 1.13, relative to the server's base URL. The shorter
# /asset-groups/calendar renders the *global* lineage with a sidebar instead.
GROUP_URL = f"/locations/{REPOSITORY_NAME}@{LOCATION_NAME}/asset-groups/calendar"
FIRST_RUN_DIALOG = "Join the Dagster community"


def due_alerts_url(partition: str) -> str:
    """The Partitions tab of asset ``due_alerts`` with ``partition`` selected."""
    return f"/assets/due_alerts?view=partitions&partition={partition}"


@contextlib.contextmanager
def chromium_browser() -> Iterator[Browser]:
    """Headless Chromium (``CHROMIUM``, ``CHROMIUM_ARGS``); ``expect`` waits UI_TIMEOUT_MS."""
    expect.set_options(timeout=UI_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def browser_page(browser: Browser, base_url: str) -> Iterator[Page]:
    """A light-themed page of VIEWPORT in a fresh context; ``goto`` paths are relative to
    ``base_url``."""
    context = browser.new_context(viewport=VIEWPORT, color_scheme="light", base_url=base_url)
    try:
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        yield page
    finally:
        context.close()


def dismiss_first_run_dialog(page: Page) -> None:
    """Click "Skip" on the "Join the Dagster community" dialog if it shows up.

    Dagster shows it on localhost for an instance that has not seen it yet (always, with a
    fresh DAGSTER_HOME), about one second after the app mounts. "Skip" records that in the
    instance, so later pages do not show it again.
    """
    if not _first_run_dialog_due(page):
        return  # dismissed on an earlier page: no need to wait for it
    dialog = page.get_by_role("dialog").filter(has_text=FIRST_RUN_DIALOG)
    try:
        dialog.get_by_role("button", name="Skip").click(timeout=10_000)
    except PlaywrightTimeoutError:
        return  # not shown (dismissed by an earlier page, or a later Dagster version)
    expect(dialog).to_have_count(0)
    # The click left the mouse where the dialog was, over a graph node: hovering would
    # highlight that node in a screenshot. Park the pointer in the top-left corner.
    page.mouse.move(0, 0)


def _first_run_dialog_due(page: Page) -> bool:
    """Whether the instance still shows the first-run dialog (GraphQL ``shouldShowNux``;
    True if the server does not say)."""
    response = page.request.post("/graphql", data={"query": "{ shouldShowNux }"})
    if not response.ok:
        return True
    return (response.json().get("data") or {}).get("shouldShowNux", True) is not False


def expect_no_overlay(page: Page) -> None:
    """Fail rather than go on with the first-run dialog over the page."""
    expect(page.get_by_text(FIRST_RUN_DIALOG)).to_have_count(0)


def open_asset_graph(page: Page) -> Locator:
    """Open the lineage of group ``calendar`` and wait until the graph shows ASSETS with
    their live data, settled and uncovered (ready for a screenshot); returns the nodes."""
    page.goto(GROUP_URL)
    # Graph nodes are HTML inside the SVG's <foreignObject>s; their title is the asset name.
    nodes = page.locator("foreignObject")
    for asset in ASSETS:
        expect(nodes.get_by_text(asset, exact=True)).to_be_visible()
    dismiss_first_run_dialog(page)
    # Live data arrives after the layout: "n / n Passed" for each node's asset checks, and
    # its "Latest event" reads "... ago" once the materializations are loaded.
    expect(page.get_by_text(re.compile(r"^\d+ / \d+ Passed$"))).to_have_count(len(CHECKED))
    expect(nodes.get_by_text(re.compile(r" ago$"))).to_have_count(len(ASSETS))
    page.wait_for_timeout(1000)  # let the zoom-to-fit animation settle
    expect_no_overlay(page)
    return nodes


def label_name(label: str) -> re.Pattern[str]:
    """The accessible name of a link or button that shows ``label``. Dagster's icons are
    font ligatures whose names are part of the name ("lineage Lineage"), so the label is
    matched at the end, after the start or a space."""
    return re.compile(rf"(^|\s){re.escape(label)}$")


def click_link(page: Page | Locator, label: str) -> None:
    page.get_by_role("link", name=label_name(label)).click()


def click_button(page: Page | Locator, label: str) -> None:
    page.get_by_role("button", name=label_name(label)).click()


def tick_assets(page: Page, assets: list[str] | tuple[str, ...]) -> None:
    """Tick the box of each asset's row in the Catalog (the box is styled: click its label)."""
    for asset in assets:
        box = page.get_by_test_id(f"checkbox-{asset}")
        page.locator("label").filter(has=box).click()
        expect(box).to_be_checked()


def dialog_titled(page: Page, title: str) -> Locator:
    dialog = page.get_by_role("dialog").filter(has_text=title)
    expect(dialog).to_be_visible()
    return dialog


def type_partitions(dialog: Locator, section: str, value: str) -> None:
    """Type ``value`` (a partition, ``[first...last]``, a comma-separated list) in the text
    box under ``section`` of the launch dialog and press Enter (typing alone selects
    nothing)."""
    expect(dialog.get_by_text(section, exact=True)).to_be_visible()
    box = dialog.get_by_role("textbox")  # the only one: "Tags" and "Config" are folded
    box.fill(value)
    box.press("Enter")


def launch_message(page: Page, message: str) -> str:
    """Wait for the message a launch shows, ``message`` up to its trailing "…" (say
    "Launched run …"), and return what follows: the run's short id, the backfill's id."""
    pattern = re.compile(rf"^{re.escape(message.rstrip('…').strip())} (\w+)$")
    shown = page.get_by_text(pattern)
    expect(shown).to_be_visible()
    found = pattern.match(shown.inner_text().strip())
    assert found, (message, shown.inner_text())
    return found.group(1)


def open_due_alerts_partition(page: Page, partition: str) -> None:
    """Open ``due_alerts`` at ``partition`` and wait for the right pane: the partition's
    status, then its metadata table with ``dagster/row_count`` and ``due_d01``. (The
    first-run dialog is left alone: the text stays visible under it.)"""
    page.goto(due_alerts_url(partition))
    expect(page.get_by_text("Materialized", exact=True)).to_be_visible()
    expect(page.get_by_text("Metadata", exact=True)).to_be_visible()
    for key in ("dagster/row_count", "due_d01"):
        expect(page.get_by_text(key, exact=True)).to_be_visible()
