"""The project's definitions: every Dagster object under ``calendar_pipeline/defs/``,
found by ``dg.load_from_defs_folder``, plus the resources and the executor, set here once.

Data flow: raw_snapshot -> snapshot_index -> due_alerts -> calendar_feed (assets, group
           ``calendar``); due_alerts -> slack_alert_sensor -> slack_alert_job
           (send_slack_alerts op).
A module added under ``defs/`` (by hand or ``dg scaffold defs dagster.asset x.py``) is
loaded with no edit here; ``dg list defs`` lists it. The code location is named once, in
pyproject.toml (``[tool.dg.project]``), which ``dagster dev``, ``dg`` and the UI read.
Settings come from the environment (see .env.example) through three resources, one per
system: ``calendar`` (lake, database, universe, rules), ``upstream`` (the sources and
their HTTP client) and ``slack``. Tests build the same definitions with their own
resources (``build_defs``); a resource they leave out takes its defaults.
"""

from collections.abc import Mapping
from functools import cache
from pathlib import Path

import dagster as dg

from calendar_pipeline.defs.resources import UpstreamSources, resources_from_env


@cache
def discovered() -> dg.Definitions:
    """The assets, checks, jobs, schedule and sensors of ``defs/`` (imported once)."""
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)


def build_defs(resources: Mapping[str, dg.ConfigurableResource] | None = None) -> dg.Definitions:
    """The definitions with ``resources`` (default: from the environment)."""
    return dg.Definitions.merge(
        discovered(),
        dg.Definitions(
            resources=(
                {"upstream": UpstreamSources(), **resources}
                if resources is not None
                else resources_from_env()
            ),
            # One process per run, for every job and for `dagster asset materialize` and UI
            # launches: the steps are small and a process per step would cost more than the
            # work.
            executor=dg.in_process_executor,
        ),
    )


defs = build_defs()
