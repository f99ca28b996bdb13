"""The README's first command (minus the install) against a bare Dagster baseline.

    python bench/bench_first_command.py [--repeats 3]

Measures, each in a fresh process and a fresh data directory, the wall time of
  (a) ``calendar-pipeline run``: today's partition of daily_calendar_job on the embedded
      holidays source (283 entities) plus slack_alert_job in dry-run, and
  (b) a bare ``dagster.materialize()`` of one trivial asset,
and prints the medians and the ratio a/b: how much the whole daily pipeline costs over
the fixed price of starting Dagster at all.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

BASELINE = """
import dagster as dg

@dg.asset
def trivial():
    return 1

assert dg.materialize([trivial]).success
"""


def timed(cmd: list[str], env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CALENDAR_", "SLACK_"))}
    base_env.pop("DAGSTER_HOME", None)
    pipeline, baseline = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            env = {**base_env, "CALENDAR_DATA_DIR": os.path.join(tmp, "data")}
            pipeline.append(timed([sys.executable, "-m", "calendar_pipeline.cli", "run"], env, tmp))
            baseline.append(timed([sys.executable, "-c", BASELINE], base_env, tmp))
    p, b = statistics.median(pipeline), statistics.median(baseline)
    print(
        f"calendar-pipeline run (daily job + slack dry-run): median {p:.2f} s "
        f"({', '.join(f'{t:.2f}' for t in pipeline)})"
    )
    print(
        f"bare dagster materialize() of one trivial asset:   median {b:.2f} s "
        f"({', '.join(f'{t:.2f}' for t in baseline)})"
    )
    print(f"ratio first_command / bare_materialize = {p / b:.2f}x")


if __name__ == "__main__":
    main()
