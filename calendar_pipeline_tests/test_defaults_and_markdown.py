"""What Dagster and the terminal show of the definitions: which run by default, and that
every description and `--help` is Markdown (Dagster renders descriptions as Markdown),
not reStructuredText."""

import re
import subprocess
import sys

import dagster as dg
import pytest

from calendar_pipeline.definitions import defs

# reStructuredText that Markdown shows literally: ``code`` and Sphinx roles (:class:`X`)
RST = re.compile(r"``|:(?:class|meth|func|mod|attr|obj|ref):`")


def _config_descriptions(where: str, schema) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    def walk(config_type, path: str) -> None:
        for name, field in (getattr(config_type, "fields", None) or {}).items():
            if field.description:
                found.append((f"{path}.{name}", field.description))
            walk(field.config_type, f"{path}.{name}")

    if schema is not None and getattr(schema, "config_type", None) is not None:
        walk(schema.config_type, where)
    return found


def shown_descriptions() -> list[tuple[str, str]]:
    """Every description Dagster shows: assets, asset checks, jobs and their ops (and op
    config fields), schedules, sensors, resources (and their config fields)."""
    repo = defs.get_repository_def()
    found: list[tuple[str, str]] = []
    for assets_def in {id(a): a for a in repo.assets_defs_by_key.values()}.values():
        for spec in assets_def.specs:
            found.append((f"asset {spec.key.to_user_string()}", spec.description or ""))
        for check in assets_def.check_specs:
            key = f"{check.key.asset_key.to_user_string()}:{check.name}"
            found.append((f"check {key}", check.description or ""))
    for job in repo.get_all_jobs():
        found.append((f"job {job.name}", job.description or ""))
        for node in job.graph.iterate_node_defs():
            found.append((f"op {node.name}", node.description or ""))
            found += _config_descriptions(f"op {node.name} config", node.config_schema)
    found += [(f"schedule {s.name}", s.description or "") for s in repo.schedule_defs]
    found += [(f"sensor {s.name}", s.description or "") for s in repo.sensor_defs]
    for name, resource in repo.get_top_level_resources().items():
        found.append((f"resource {name}", resource.description or ""))
        found += _config_descriptions(f"resource {name} config", resource.config_schema)
    return sorted(set(found))


DESCRIPTIONS = shown_descriptions()


def test_every_kind_of_definition_is_covered():
    kinds = {where.split()[0] for where, _ in DESCRIPTIONS}
    assert {"asset", "check", "job", "op", "schedule", "sensor", "resource"} <= kinds
    names = {where for where, _ in DESCRIPTIONS}
    for expected in ("asset raw_snapshot", "asset due_alerts", "check raw_snapshot:has_events",
                     "op send_slack_alerts", "sensor slack_alert_sensor",
                     "resource calendar", "schedule daily_calendar_schedule"):  # fmt: skip
        assert expected in names
    assert sum(bool(text) for _, text in DESCRIPTIONS) >= 25  # they are actually read


@pytest.mark.parametrize(("where", "text"), DESCRIPTIONS, ids=[w for w, _ in DESCRIPTIONS])
def test_descriptions_are_markdown(where, text):
    assert not RST.search(text), f"{where}: {RST.search(text).group()} in {text!r}"


def _help(*command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "calendar_pipeline.cli", *command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: calendar-pipeline" in done.stdout
    return done.stdout


def test_help_is_markdown_for_the_command_and_every_subcommand():
    """`calendar-pipeline --help` and the help of each subcommand it lists, from the real
    entry point (a subcommand added later is covered without touching this test)."""
    top = _help()
    subcommands = re.search(r"\{([a-z,-]+)\}", top)
    assert subcommands, top
    names = subcommands.group(1).split(",")
    assert {"run", "verify"} <= set(names)
    helps = {"": top, **{name: _help(name) for name in names}}
    for name, text in helps.items():
        assert not RST.search(text), f"calendar-pipeline {name} --help:\n{text}"
    for option in ("--date", "--mode", "--full", "--json", "--verbose"):
        assert option in helps["run"]


# -- what runs by default -------------------------------------------------------------------

RUNNING_BY_DEFAULT = [
    "slack_alert_sensor",
    "slack_run_failure_sensor",
    "raw_snapshot_freshness_sensor",
    "raw_snapshot_freshness_checks_sensor",
]


@pytest.mark.parametrize("name", RUNNING_BY_DEFAULT)
def test_the_daily_routine_sensors_run_by_default(name):
    assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING


def test_the_schedule_runs_by_default():
    schedule = defs.resolve_schedule_def("daily_calendar_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING


def test_the_availability_sensor_is_opt_in():
    sensor = defs.resolve_sensor_def("upstream_availability_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_every_sensor_is_listed_here():
    """A new sensor must be placed on one side or the other (and in the RUNBOOK)."""
    names = {s.name for s in defs.get_repository_def().sensor_defs}
    assert names == {*RUNNING_BY_DEFAULT, "upstream_availability_sensor"}
