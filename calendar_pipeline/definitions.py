"""The one Definitions object: everything the project has, in one screen.

Data flow: raw_snapshot -> snapshot_index -> due_alerts -> calendar_feed (assets, group
           ``calendar``); due_alerts -> slack_alert_sensor -> slack_alert_job
           (send_slack_alerts op).
Settings come from the environment (see .env.example) through three resources, one per
system: ``calendar`` (lake, database, universe, rules), ``upstream`` (the sources and
their HTTP client) and ``slack``. Tests build the same definitions with their own
resources; a resource they leave out takes its defaults.
"""

from collections.abc import Mapping

import dagster as dg

from calendar_pipeline.defs.assets import due_alerts, raw_snapshot, snapshot_index
from calendar_pipeline.defs.calendar_feed import calendar_feed
from calendar_pipeline.defs.freshness import (
    raw_snapshot_freshness_checks,
    raw_snapshot_freshness_checks_sensor,
    raw_snapshot_freshness_sensor,
)
from calendar_pipeline.defs.jobs import daily_calendar_job, slack_alert_job
from calendar_pipeline.defs.resources import UpstreamSources, resources_from_env
from calendar_pipeline.defs.schedules import daily_calendar_schedule
from calendar_pipeline.defs.sensors import (
    slack_alert_sensor,
    slack_run_failure_sensor,
    upstream_availability_sensor,
)


def build_defs(resources: Mapping[str, dg.ConfigurableResource] | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=[raw_snapshot, snapshot_index, due_alerts, calendar_feed],
        asset_checks=[*raw_snapshot_freshness_checks],
        jobs=[daily_calendar_job, slack_alert_job],
        schedules=[daily_calendar_schedule],
        sensors=[
            upstream_availability_sensor,
            slack_alert_sensor,
            slack_run_failure_sensor,
            raw_snapshot_freshness_sensor,
            raw_snapshot_freshness_checks_sensor,
        ],
        resources=(
            {"upstream": UpstreamSources(), **resources}
            if resources is not None
            else resources_from_env()
        ),
        # One process per run, also for `dagster asset materialize` and UI launches: the
        # steps are small and a process per step would cost more than the work.
        executor=dg.in_process_executor,
    )


defs = build_defs()
