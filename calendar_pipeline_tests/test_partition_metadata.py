"""raw_snapshot's metadata, partition by partition, as the UI plots it: a range run (a
backfill) fetches once for all its days, so its HTTP figures are the run's and must not be
copied onto every day. One day run alone carries its own ``http_*``; a range carries none,
and its totals appear once, as ``run_http_*`` on its last partition. Against a local
iCalendar host, so the figures are checked against what the server saw."""

import datetime as dt

import dagster as dg
import pytest

from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, SlackSettings
from calendar_pipeline_tests.flows import feed, run_daily, run_range, serve_feed, write_universe
from calendar_pipeline_tests.upstream_server import UpstreamServer

DAYS = [dt.date(2026, 3, 10), dt.date(2026, 3, 11), dt.date(2026, 3, 12)]
HTTP_KEYS = {"done", "failed", "requests", "retried", "not_modified", "bytes"}


@pytest.fixture
def upstream():
    with UpstreamServer() as server:
        serve_feed(server)
        yield server


def make_defs(tmp_path, upstream, name: str) -> dg.Definitions:
    """Its own data directory (and so its own HTTP cache): each run really fetches."""
    universe = write_universe(tmp_path / f"{name}.csv", upstream)
    calendar = CalendarSettings(data_dir=str(tmp_path / name), universe=str(universe))
    return build_defs({"calendar": calendar, "slack": SlackSettings()})


def raw_snapshot_metadata(result) -> dict[str, dict]:
    """partition -> the metadata of its raw_snapshot materialization."""
    mats = (
        event.step_materialization_data.materialization
        for event in result.get_asset_materialization_events()
    )
    return {
        mat.partition: mat.metadata
        for mat in mats
        if mat.asset_key.to_user_string() == "raw_snapshot"
    }


def with_prefix(metadata: dict, prefix: str) -> dict[str, int]:
    return {
        key.removeprefix(prefix): value.value
        for key, value in metadata.items()
        if key.startswith(prefix)
    }


def test_a_range_run_keeps_its_http_totals_off_the_partitions(tmp_path, upstream):
    defs = make_defs(tmp_path, upstream, "range")
    with dg.instance_for_test() as instance:
        result = run_range(defs, instance, DAYS[0], DAYS[-1])
        logs = [entry.message or "" for entry in instance.all_logs(result.run_id)]
    assert result.success
    seen = upstream.requests_to("/team.ics")
    assert len(seen) == 1  # one fetch for the three days

    by_partition = raw_snapshot_metadata(result)
    assert sorted(by_partition) == [day.isoformat() for day in DAYS]
    for partition, metadata in by_partition.items():
        # the day's own figures stay on every day
        assert metadata["window_start"].value == partition
        assert metadata["dagster/row_count"].value > 0
        assert metadata["partitions_in_run"].value == len(DAYS)
        # no day claims the run's fetch as its own
        assert with_prefix(metadata, "http_") == {}, partition
    *earlier, last = (by_partition[day.isoformat()] for day in DAYS)
    assert all(with_prefix(metadata, "run_http_") == {} for metadata in earlier)
    totals = with_prefix(last, "run_http_")  # once, on the range's last day
    assert set(totals) == HTTP_KEYS
    assert totals["requests"] == len(seen) and totals["done"] == 1 and totals["failed"] == 0
    assert totals["bytes"] == len(feed())
    # summed over the days (as one reads a plot), the fetch counts once, not three times
    runs = [with_prefix(m, "run_http_").get("requests", 0) for m in by_partition.values()]
    assert sum(runs) == len(seen)
    assert any(line.startswith("HTTP for 2026-03-10..2026-03-12 (3 days)") for line in logs)


def test_a_single_day_run_carries_its_own_http_figures(tmp_path, upstream):
    defs = make_defs(tmp_path, upstream, "day")
    with dg.instance_for_test() as instance:
        result = run_daily(defs, instance, DAYS[1])
    assert result.success
    seen = upstream.requests_to("/team.ics")
    (metadata,) = raw_snapshot_metadata(result).values()
    assert with_prefix(metadata, "run_http_") == {}
    figures = with_prefix(metadata, "http_")
    assert set(figures) == HTTP_KEYS
    assert figures["requests"] == len(seen) == 1 and figures["done"] == 1
    assert figures["bytes"] == len(feed())
