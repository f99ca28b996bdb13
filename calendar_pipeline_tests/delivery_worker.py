"""A delivery run in its own process, for the crash and concurrency tests.

    python -m calendar_pipeline_tests.delivery_worker DB_URL API_URL RUN_ID N [--crash-after-post]

``--crash-after-post`` kills the process (``os._exit``) right after Slack accepted the
first message and before the ledger marks it sent: the worst moment to die.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path

from calendar_pipeline.alerts import deliver as deliver_module
from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.model import DueAlert
from calendar_pipeline.alerts.slack_client import SlackPoster
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN

D = dt.date(2026, 11, 23)


def make_alerts(count: int, channels: int = 3) -> list[DueAlert]:
    """``count`` alerts with unique entity names (``Entity 0007``), across ``channels``."""
    return [
        DueAlert(
            partition_date=D,
            entity_id=f"ent{n:04d}",
            entity_name=f"Entity {n:04d}",
            source="holidays",
            event_id=f"ev{n}",
            event_date=D + dt.timedelta(days=n % 30),
            title=f"Holiday {n}",
            days_until=n % 30,
            threshold_days=30,
            channel=f"#chan{n % channels}",
        )
        for n in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("db_url")
    parser.add_argument("api_url")
    parser.add_argument("run_id")
    parser.add_argument("count", type=int)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--crash-after-post", action="store_true")
    parser.add_argument("--claim-timeout", type=float, default=900.0)
    args = parser.parse_args(argv)

    engine = store.make_engine(args.db_url)
    store.create_tables(engine)
    poster = SlackPoster(token=DEFAULT_TOKEN, api_url=args.api_url, min_interval_per_channel=0.05)
    if args.crash_after_post:
        original = poster.post

        def post_then_die(message, delivery_id=""):
            original(message, delivery_id)
            os._exit(17)  # Slack has it; the ledger never hears

        poster.post = post_then_die  # type: ignore[method-assign]
    report = deliver_module.deliver(
        engine,
        make_alerts(args.count, channels=args.channels),
        partition_date=D,
        mode="send",
        run_id=args.run_id,
        default_channel="#general",
        claim_timeout=dt.timedelta(seconds=args.claim_timeout),
        outbox_dir=Path(tempfile.gettempdir()),  # only dry_run writes there
        poster=poster,
        log=lambda line: print(line, flush=True),
    )
    print(
        f"REPORT sent={report.sent} claimed={report.claimed} "
        f"confirmed={report.confirmed_from_history}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
