"""The Dagster layer: assets and their checks, jobs, sensors, the schedule, resources.

Two BetaWarnings of Dagster 1.13 are silenced here, once, before anything is defined,
so that every process that loads the code (and the README's first command) starts
quietly. Any other Dagster warning still shows.

- `backfill_policy` (single-run backfills: a year of history is one run) is marked
  beta; we use it on purpose.
- `owners` of `SensorDefinition`: Dagster warns about its own call when it copies a
  sensor to attach resources (`Definitions` -> `with_updated_jobs`); our sensors set
  no owners.
"""

import warnings

import dagster as dg

for _beta_parameter in (
    r"Parameter `backfill_policy` of function `asset`",
    r"Parameter `owners` of initializer `SensorDefinition.__init__`",
):
    warnings.filterwarnings("ignore", message=_beta_parameter, category=dg.BetaWarning)
