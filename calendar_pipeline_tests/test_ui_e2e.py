"""End to end, the way users touch the pipeline: ``dagster dev`` (webserver and daemon),
its GraphQL API, and the UI in a real headless Chromium following the RUNBOOK.

One ``dagster dev`` serves the whole module (fixture ``dagster_dev``, module-scoped so the
GraphQL and browser tests share one start and the server is stopped as soon as they are
done, not left running beside the rest of the suite until the session ends; see
``dagster_dev.py`` for the temporary DAGSTER_HOME and data dir, the scrubbed environment,
why it runs from a temporary directory so that no ``.env`` is loaded, and how it is
stopped). The code location is pyproject.toml's ``[tool.dg.project]``, as users see it.
Then:

1. ``backfill`` (module fixture): a backfill of three past days for the four assets,
   launched in Chromium by following the UI steps of docs/RUNBOOK.md, "Backfilling" (see
   "Following the RUNBOOK" below), then polled with ``partitionBackfillOrError`` until it
   completes. Without Chromium (and ``CI`` unset) it is launched with
   ``launchPartitionBackfill`` instead, so the GraphQL tests still run. The backfill
   daemon wakes about every 30 s, so this takes one to two minutes. The files, the index
   and the SQL table are read right away, before the sensor's run adds today's partition.
2. ``upstream_availability_sensor`` is turned on with ``startSensor``; its first tick
   (soon after, whatever ``minimum_interval_seconds`` says) must request a run or skip
   with a reason; it is turned off with ``stopSensor``.
3. Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright, no ``playwright install``)
   opens the asset graph of group ``calendar`` and the Partitions tab of ``due_alerts``.
   The graph's screenshot goes to pytest's tmp dir, and to ``docs/asset_graph.png`` when
   ``CALENDAR_UPDATE_SCREENSHOTS=1``. Without Chromium or Playwright these tests skip, or
   fail when ``CI`` is set (``.ci/run`` installs Chromium, ``.[test]`` Playwright).
4. Chromium re-runs one of the backfilled days by following the UI steps of "Re-running a
   day"; the run must materialize the four assets for that day.

Following the RUNBOOK: the steps are read from the "**UI:**" bullet of each section (its
numbered list), and every label the browser looks for (links, buttons, the dialog's
title, the messages) is one the step quotes, the asset names are its ``code``, the range's
format is its example. Change a step and this test no longer finds its way: update both.

The teardown stops the server (SIGTERM to its process group, SIGKILL after 20 s) and
checks that no process of it is left.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from calendar_pipeline.alerts import store
from calendar_pipeline.lake.index import SnapshotIndex, index_path
from calendar_pipeline_tests import ui_browser
from calendar_pipeline_tests.dagster_dev import (
    LOCATION_NAME,
    REPO_ROOT,
    REPOSITORY_NAME,
    DagsterDev,
)
from calendar_pipeline_tests.ui_browser import (
    ASSETS,
    CHROMIUM,
    browser_page,
    chromium_browser,
    click_button,
    click_link,
    dialog_titled,
    dismiss_first_run_dialog,
    launch_message,
    open_asset_graph,
    open_due_alerts_partition,
    tick_assets,
    type_partitions,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page
with contextlib.suppress(ImportError):  # else ui_browser.sync_playwright is None: skip
    from playwright.sync_api import expect

PARTITIONS = ("2026-11-01", "2026-11-02", "2026-11-03")
SENSOR = "upstream_availability_sensor"

BACKFILL_TIMEOUT_S = 150.0  # the backfill daemon wakes every ~30 s; two or three wake-ups
TICK_TIMEOUT_S = 90.0
RUN_TIMEOUT_S = 120.0
POLL_S = 1.0

SHOWN_PARTITION = PARTITIONS[1]  # the partition the due_alerts page selects
RERUN_PARTITION = PARTITIONS[0]  # the day the UI re-runs ("Re-running a day")

RUNBOOK = REPO_ROOT / "docs" / "RUNBOOK.md"
RERUN_SECTION = "Re-running a day"
BACKFILL_SECTION = "Backfilling"


# -- GraphQL --------------------------------------------------------------------------------

LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on UnauthorizedError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidSubsetError { message }
  }
}
"""

BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      isAssetBackfill
      partitionNames
      error { message }
      runs(limit: 50) { runId status }
    }
    ... on BackfillNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

MATERIALIZATIONS = """
query Materializations($path: [String!]!, $partitions: [String!]!) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset { assetMaterializations(partitions: $partitions) { partition runId } }
    ... on AssetNotFoundError { message }
  }
}
"""

START_SENSOR = """
mutation StartSensor($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { id status } }
    ... on SensorNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}
"""

SENSOR_TICKS = """
query SensorTicks($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      sensorState {
        status
        ticks(limit: 5) { id status timestamp runIds skipReason error { message } }
      }
    }
    ... on PythonError { message }
  }
}
"""

STOP_SENSOR = """
mutation StopSensor($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on UnauthorizedError { message }
    ... on PythonError { message }
  }
}
"""

RUN_STATUS = """
query Run($id: ID!) {
  runOrError(runId: $id) {
    __typename
    ... on Run { runId status jobName tags { key value } assetSelection { path } }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""

RUNS_WITH_TAG = """
query Runs($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId } }
    ... on PythonError { message }
  }
}
"""

FINISHED_RUN = {"SUCCESS", "FAILURE", "CANCELED"}


def wait_for(
    what: str,
    probe: Callable[[], Any],
    timeout: float,
    dev: DagsterDev,
) -> Any:
    """Call ``probe`` until it returns something truthy; fail with the server log if not."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(POLL_S)
    pytest.fail(f"{what}: not after {timeout:.0f} s\ndagster dev log (tail):\n{dev.log_tail()}")


# -- following the RUNBOOK in the UI -------------------------------------------------------


@dataclass(frozen=True)
class UiStep:
    """One numbered step of a RUNBOOK "**UI:**" bullet."""

    text: str  # whitespace collapsed
    labels: list[str]  # what it quotes ("..."): labels the UI shows
    code: list[str]  # its `code`: asset names, a value to type


def runbook_ui_steps(section: str) -> list[UiStep]:
    """The numbered steps of the "**UI:**" bullet of RUNBOOK's ``## section``."""
    text = RUNBOOK.read_text(encoding="utf-8")
    found = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert found, f"{RUNBOOK.name} has no section {section!r}"
    bullet = re.search(r"^- \*\*UI:\*\*(.*?)(?=^- |\Z)", found.group(1), re.M | re.S)
    assert bullet, f"{RUNBOOK.name}, {section!r}: no '- **UI:**' bullet"
    steps = [" ".join(step.split()) for step in re.split(r"^ +\d+\. ", bullet.group(1), flags=re.M)]
    return [
        UiStep(step, re.findall(r'"([^"]+)"', step), re.findall(r"`([^`]+)`", step))
        for step in steps[1:]
    ]


def expect_steps(section: str, steps: list[UiStep], shape: list[tuple[int, int]]) -> None:
    """The steps quote as many labels and ``code`` spans as this test follows."""
    found = [(len(step.labels), len(step.code)) for step in steps]
    assert found == shape, (
        f'{RUNBOOK.name}, "{section}": its UI steps changed; make {__name__} follow them '
        f"(quoted labels, code spans per step: {found}, followed: {shape}):\n"
        + "\n".join(f"{n}. {step.text}" for n, step in enumerate(steps, 1))
    )


def open_launch_dialog(page: Page, steps: list[UiStep]) -> Locator:
    """Steps 1 to 3 of "Re-running a day": tick the four assets in the Catalog, open the
    launch dialog, show all partitions. Returns the dialog."""
    expect_steps(RERUN_SECTION, steps, [(1, len(ASSETS)), (2, 0), (2, 0)])
    (catalog,), assets = steps[0].labels, steps[0].code
    assert sorted(assets) == sorted(ASSETS), steps[0]
    page.goto("/")
    dismiss_first_run_dialog(page)  # it may cover the page before the click (a busy machine)
    click_link(page, catalog)
    dismiss_first_run_dialog(page)
    tick_assets(page, assets)

    materialize, title = steps[1].labels
    click_button(page, materialize)
    dialog = dialog_titled(page, title)

    # "If it says ...": it does, the partitions start in 2025 (more than 90 days).
    notice, show_all = steps[2].labels
    expect(dialog.get_by_text(notice)).to_be_visible()
    click_button(dialog, show_all)
    expect(dialog.get_by_text(notice)).to_have_count(0)
    return dialog


def rerun_day_as_runbook_says(page: Page, day: str) -> str:
    """RUNBOOK, "Re-running a day", UI, for ``day``: returns the short run id the launch
    message shows."""
    steps = runbook_ui_steps(RERUN_SECTION)
    expect_steps(RERUN_SECTION, steps, [(1, len(ASSETS)), (2, 0), (2, 0), (2, 0), (2, 0)])
    dialog = open_launch_dialog(page, steps[:3])

    assert steps[3].text.startswith("Type D "), steps[3]
    section, count = steps[3].labels
    type_partitions(dialog, section, day)
    expect(dialog.get_by_text(count, exact=True)).to_be_visible()

    launch, message = steps[4].labels
    click_button(dialog, launch)
    run = launch_message(page, message)
    expect(dialog).to_have_count(0)
    return run


def backfill_as_runbook_says(page: Page, first: str, last: str, count: int) -> str:
    """RUNBOOK, "Backfilling", UI, for ``first`` to ``last`` (``count`` partitions):
    returns the backfill's id the launch message shows."""
    steps = runbook_ui_steps(BACKFILL_SECTION)
    expect_steps(BACKFILL_SECTION, steps, [(1, 0), (1, 1), (2, 0)])

    refers = re.match(r"Steps (\d+) to (\d+) of ", steps[0].text)
    assert refers and steps[0].labels == [RERUN_SECTION], steps[0]
    start, end = int(refers.group(1)), int(refers.group(2))
    dialog = open_launch_dialog(page, runbook_ui_steps(RERUN_SECTION)[start - 1 : end])

    # The range as the RUNBOOK's example writes it (brackets included), with our days.
    (example,), (section,) = steps[1].code, steps[1].labels
    date = r"\d{4}-\d{2}-\d{2}"
    form = re.fullmatch(rf"(\W*){date}(\W+){date}(\W*)", example)
    assert form, f"{BACKFILL_SECTION}: {example!r} is not a range of two dates"
    type_partitions(dialog, section, f"{form.group(1)}{first}{form.group(2)}{last}{form.group(3)}")
    expect(dialog.get_by_text(f"{count} partitions", exact=True)).to_be_visible()

    launch, message = steps[2].labels
    click_button(dialog, launch)
    backfill_id = launch_message(page, message)
    expect(dialog).to_have_count(0)
    return backfill_id


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (no Playwright, no Chromium), or None."""
    missing = []
    if ui_browser.sync_playwright is None:
        missing.append('the playwright package (pip install -e ".[test]")')
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (apt-get install chromium; .ci/run does it)")
    return "browser tests need " + " and ".join(missing) if missing else None


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory) -> Iterator[DagsterDev]:
    dev = DagsterDev.in_tmpdir(tmp_path_factory.mktemp("dagster_dev"))
    try:
        dev.start()
        yield dev
    finally:
        dev.stop()
    leftovers = dev.kill_leftovers()  # killed, so that even a failure leaves nothing behind
    assert not leftovers, f"dagster dev processes alive after stop: {leftovers}"


@dataclass(frozen=True)
class BackfillOutcome:
    launched_from: str  # "ui" (the RUNBOOK's steps in Chromium) or "graphql" (no browser)
    status: str
    is_asset_backfill: bool
    partition_names: list[str]
    runs: dict[str, str]  # run id -> status
    run_tags: dict[str, dict[str, str]]  # run id -> its tags
    run_partitions: dict[str, list[str]]  # run id -> the partitions it covered (its tags)
    materialized: dict[str, dict[str, str]]  # asset -> partition -> run id (GraphQL)
    snapshot_files: dict[str, list[Path]]  # partition -> files under data/snapshots/
    index_entries: list[dict[str, Any]]
    due_alert_rows: dict[str, int]  # partition -> rows of the SQL table due_alerts


@pytest.fixture(scope="module")
def backfill(dagster_dev: DagsterDev, request: pytest.FixtureRequest) -> BackfillOutcome:
    """An asset backfill of PARTITIONS x ASSETS, run by the daemon: launched in Chromium
    the way RUNBOOK's "Backfilling" says, or through GraphQL without a browser (not with
    ``CI`` set: then it fails, as the browser tests do).

    What it produced is read as soon as it completes, so later tests (the sensor starts a
    run for today) cannot change what the backfill assertions see."""
    dev = dagster_dev
    missing = browser_missing()
    if missing is None:
        browser = request.getfixturevalue("chromium")
        with browser_page(browser, dev.base_url) as page:
            backfill_id = backfill_as_runbook_says(
                page, PARTITIONS[0], PARTITIONS[-1], len(PARTITIONS)
            )
        launched_from = "ui"
    else:
        if os.environ.get("CI"):
            pytest.fail(missing)
        params = {
            "assetSelection": [{"path": [asset]} for asset in ASSETS],
            "partitionNames": list(PARTITIONS),
            "title": "test_ui_e2e",
        }
        launched = dev.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]
        launched_from = "graphql"

    def finished() -> dict[str, Any] | None:
        result = dev.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert result["__typename"] == "PartitionBackfill", result
        return None if result["status"] in ("REQUESTED", "CANCELING", "FAILING") else result

    result = wait_for(f"backfill {backfill_id} to finish", finished, BACKFILL_TIMEOUT_S, dev)
    runs = result["runs"]
    assert result["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), (
        f"backfill {backfill_id}: {result['status']}, error {result['error']}, runs {runs}\n"
        f"dagster dev log (tail):\n{dev.log_tail()}"
    )

    data_dir = dev.data_dir
    snapshot_files = {
        p: sorted((data_dir / "snapshots" / p).glob("snapshot_*.json")) for p in PARTITIONS
    }
    index_entries = list(SnapshotIndex(index_path(data_dir)).entries())
    engine = store.make_engine(store.default_db_url(data_dir))
    try:
        due_alert_rows = {
            p: len(store.read_due_alerts(engine, dt.date.fromisoformat(p))) for p in PARTITIONS
        }
    finally:
        engine.dispose()

    materialized = {}
    for asset in ASSETS:
        answer = dev.graphql(MATERIALIZATIONS, {"path": [asset], "partitions": list(PARTITIONS)})
        assert answer["assetOrError"]["__typename"] == "Asset", answer
        events = answer["assetOrError"]["assetMaterializations"]  # newest first
        materialized[asset] = {}
        for event in reversed(events):
            materialized[asset][event["partition"]] = event["runId"]
    run_tags = {run["runId"]: _run_tags(dev, run["runId"]) for run in runs}
    return BackfillOutcome(
        launched_from=launched_from,
        status=result["status"],
        is_asset_backfill=result["isAssetBackfill"],
        partition_names=result["partitionNames"],
        runs={run["runId"]: run["status"] for run in runs},
        run_tags=run_tags,
        run_partitions={run_id: _run_partitions(tags) for run_id, tags in run_tags.items()},
        materialized=materialized,
        snapshot_files=snapshot_files,
        index_entries=index_entries,
        due_alert_rows=due_alert_rows,
    )


def _run_tags(dev: DagsterDev, run_id: str) -> dict[str, str]:
    run = dev.graphql(RUN_STATUS, {"id": run_id})["runOrError"]
    assert run["__typename"] == "Run", run
    return {tag["key"]: tag["value"] for tag in run["tags"]}


def _run_partitions(tags: dict[str, str]) -> list[str]:
    """One partition (tag dagster/partition) or a range (tags dagster/asset_partition_range_*)."""
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    first = tags["dagster/asset_partition_range_start"]
    last = tags["dagster/asset_partition_range_end"]
    return [p for p in PARTITIONS if first <= p <= last]


# -- the backfill ---------------------------------------------------------------------------


def test_backfill_materializes_three_days(backfill: BackfillOutcome):
    # One run for the range or one per day: the assertions hold either way.
    assert backfill.is_asset_backfill
    assert backfill.partition_names == list(PARTITIONS)
    assert backfill.runs, "the backfill launched no run"
    assert set(backfill.runs.values()) == {"SUCCESS"}, backfill.runs
    assert sorted(p for ps in backfill.run_partitions.values() for p in ps) == list(PARTITIONS)
    for asset in ASSETS:
        assert sorted(backfill.materialized[asset]) == list(PARTITIONS), backfill.materialized
        assert set(backfill.materialized[asset].values()) <= set(backfill.runs), backfill

    # data/snapshots/D/snapshot_<time>.json, one per day.
    for partition, files in backfill.snapshot_files.items():
        assert len(files) == 1, (partition, files)

    # The index: exactly those three lines, in order, each pointing at its day's snapshot.
    assert [entry["partition"] for entry in backfill.index_entries] == list(PARTITIONS)
    for entry in backfill.index_entries:
        assert Path(entry["path"]).resolve() == backfill.snapshot_files[entry["partition"]][0]
        assert entry["row_count"] > 0, entry

    # The SQL table due_alerts has rows for each day (holidays within 30 days of any date).
    assert all(rows > 0 for rows in backfill.due_alert_rows.values()), backfill.due_alert_rows


def test_runbook_backfill_in_the_ui_completes_for_the_range(backfill: BackfillOutcome):
    """RUNBOOK, "Backfilling", UI: the steps launched it (the fixture followed them), and it
    completed for the range typed, every run from the UI (the rest: the test above)."""
    if backfill.launched_from != "ui":
        pytest.skip(browser_missing() or "launched through GraphQL")
    assert backfill.status == "COMPLETED_SUCCESS", backfill
    assert backfill.partition_names == list(PARTITIONS), backfill.partition_names
    assert sorted(p for ps in backfill.run_partitions.values() for p in ps) == list(PARTITIONS)
    for run_id, tags in backfill.run_tags.items():
        assert tags.get("dagster/from_ui") == "true", (run_id, tags)
        assert tags.get("dagster/code_location") == LOCATION_NAME, (run_id, tags)


# -- GraphQL: sensor ------------------------------------------------------------------------


def test_availability_sensor_requests_or_skips_a_run(
    dagster_dev: DagsterDev, backfill: BackfillOutcome
):
    dev = dagster_dev
    selector = {
        "repositoryLocationName": LOCATION_NAME,
        "repositoryName": REPOSITORY_NAME,
        "sensorName": SENSOR,
    }
    started = dev.graphql(START_SENSOR, {"selector": selector})["startSensor"]
    assert started["__typename"] == "Sensor", started
    state = started["sensorState"]
    assert state["status"] == "RUNNING", state
    try:

        def first_tick() -> dict[str, Any] | None:
            answer = dev.graphql(SENSOR_TICKS, {"selector": selector})["sensorOrError"]
            assert answer["__typename"] == "Sensor", answer
            ticks = answer["sensorState"]["ticks"]
            done = [tick for tick in ticks if tick["status"] != "STARTED"]
            return done[-1] if done else None  # newest first: the last one is the first

        tick = wait_for(f"first tick of {SENSOR}", first_tick, TICK_TIMEOUT_S, dev)
        assert tick["status"] in ("SUCCESS", "SKIPPED"), tick
        if tick["status"] == "SKIPPED":
            assert tick["skipReason"], tick
        else:
            assert len(tick["runIds"]) == 1, tick
            run = _wait_for_run(dev, tick["runIds"][0])
            assert run["jobName"] == "daily_calendar_job", run
            tags = {tag["key"]: tag["value"] for tag in run["tags"]}
            assert tags["dagster/sensor_name"] == SENSOR, tags
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", tags["dagster/partition"]), tags
            assert run["status"] == "SUCCESS", f"{run}\n{dev.log_tail()}"
    finally:
        stopped = dev.graphql(STOP_SENSOR, {"id": state["id"]})["stopSensor"]
    assert stopped["__typename"] == "StopSensorMutationResult", stopped
    assert stopped["instigationState"]["status"] == "STOPPED", stopped


def _wait_for_run(dev: DagsterDev, run_id: str) -> dict[str, Any]:
    """The run once finished (so the browser tests see settled pages and nothing is killed
    mid-run at teardown)."""

    def finished() -> dict[str, Any] | None:
        answer = dev.graphql(RUN_STATUS, {"id": run_id})["runOrError"]
        if answer["__typename"] == "RunNotFoundError":
            return None
        assert answer["__typename"] == "Run", answer
        return answer if answer["status"] in FINISHED_RUN else None

    return wait_for(f"run {run_id} to finish", finished, RUN_TIMEOUT_S, dev)


# -- the UI in Chromium ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright; skip without them (fail when CI is set)."""
    missing = browser_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    with chromium_browser() as browser:
        yield browser


@pytest.fixture
def page(chromium: Browser, dagster_dev: DagsterDev, backfill: BackfillOutcome) -> Iterator[Page]:
    with browser_page(chromium, dagster_dev.base_url) as page:
        yield page


def test_asset_graph_shows_the_assets_and_their_checks(page: Page, tmp_path: Path):
    # The four nodes: each "... ago" (live data loaded), the three with checks "n / n Passed".
    nodes = open_asset_graph(page)
    # Each node has an "Asset checks" row (calendar_feed's is empty).
    expect(nodes.get_by_text("Asset checks", exact=True)).to_have_count(len(ASSETS))
    # The code location as users name it: pyproject.toml's [tool.dg.project] (plain
    # `dagster dev`, `dg dev`), and the page (and the README's screenshot) shows it.
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    tool = pyproject["tool"]
    assert "dagster" not in tool  # one place names the code location: [tool.dg]
    assert tool["dg"]["project"]["code_location_name"] == LOCATION_NAME, tool["dg"]
    location = page.locator(f'a[href="/locations/{LOCATION_NAME}/"]')  # "Asset Group in ..."
    expect(location).to_be_visible()
    expect(location).to_contain_text(LOCATION_NAME)
    expect(page.get_by_text("calendar_pipeline.definitions")).to_have_count(0)  # the module

    shot = tmp_path / "asset_graph.png"
    page.screenshot(path=shot)
    assert shot.stat().st_size > 10_000, shot
    if os.environ.get("CALENDAR_UPDATE_SCREENSHOTS") == "1":
        page.screenshot(path=REPO_ROOT / "docs" / "asset_graph.png")


def test_due_alerts_partition_page_shows_status_and_metadata(page: Page, backfill: BackfillOutcome):
    # The right pane shows the selected partition: its status, then its metadata table.
    # (The first-run dialog may cover it when this test runs alone: text stays visible.)
    open_due_alerts_partition(page, SHOWN_PARTITION)
    # `dagster/row_count` is that day's rows, also when one run backfilled the range.
    rows = backfill.due_alert_rows[SHOWN_PARTITION]
    row_count = page.locator("tr").filter(has=page.get_by_text("dagster/row_count", exact=True))
    expect(row_count.locator("td").nth(1)).to_have_text(str(rows))


def test_runbook_rerun_of_a_day_in_the_ui_materializes_the_four_assets(
    page: Page, dagster_dev: DagsterDev, backfill: BackfillOutcome
):
    """RUNBOOK, "Re-running a day", UI: one run, for that day, of the four assets."""
    dev, day = dagster_dev, RERUN_PARTITION
    short_id = rerun_day_as_runbook_says(page, day)

    def launched() -> str | None:
        answer = dev.graphql(
            RUNS_WITH_TAG, {"filter": {"tags": [{"key": "dagster/partition", "value": day}]}}
        )["runsOrError"]
        assert answer["__typename"] == "Runs", answer
        ids = [r["runId"] for r in answer["results"] if r["runId"].startswith(short_id)]
        return ids[0] if ids else None

    run_id = wait_for(f"the run {short_id} of {day}", launched, RUN_TIMEOUT_S, dev)
    run = _wait_for_run(dev, run_id)
    assert run["status"] == "SUCCESS", f"{run}\n{dev.log_tail()}"
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert tags["dagster/partition"] == day, tags
    assert tags.get("dagster/from_ui") == "true", tags
    assert sorted(key["path"][-1] for key in run["assetSelection"]) == sorted(ASSETS), run
    assert run_id not in backfill.runs  # a new run, not the backfill's

    # Each asset's latest materialization of the day is this run's.
    for asset in ASSETS:
        answer = dev.graphql(MATERIALIZATIONS, {"path": [asset], "partitions": [day]})
        assert answer["assetOrError"]["__typename"] == "Asset", answer
        events = answer["assetOrError"]["assetMaterializations"]  # newest first
        assert events and events[0]["runId"] == run_id, (asset, events)
        assert events[0]["partition"] == day, (asset, events)
