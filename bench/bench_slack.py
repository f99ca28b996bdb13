"""Slack delivery throughput against a local Slack server with 50 ms latency.

    python bench/bench_slack.py [--alerts 2000] [--channels 10] [--latency 0.05]

Delivers ``--alerts`` due alerts spread over ``--channels`` channels through the real
path (ledger claims on SQLite, Block Kit digests, SlackPoster with one message per second
per channel) and prints:
- the wall time relative to the pacing floor: the busiest channel's messages at one per
  second, i.e. (messages in that channel - 1) s plus one round trip;
- the number of messages relative to the number of alerts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calendar_pipeline.alerts import store
from calendar_pipeline.alerts.deliver import DeliveryReport, deliver
from calendar_pipeline.alerts.slack_client import SlackPoster
from calendar_pipeline_tests.delivery_worker import D, make_alerts
from calendar_pipeline_tests.slack_server import DEFAULT_TOKEN, FakeSlackServer


def deliver_all(tmp: Path, alerts: list, server: FakeSlackServer) -> DeliveryReport:
    """Deliver ``alerts`` in ``send`` mode into a fresh SQLite ledger under ``tmp``."""
    engine = store.make_engine(f"sqlite:///{tmp}/bench.db")
    store.create_tables(engine)
    return deliver(
        engine,
        alerts,
        partition_date=D,
        mode="send",
        run_id="bench",
        default_channel="#general",
        claim_timeout=dt.timedelta(minutes=15),
        outbox_dir=tmp,
        poster=SlackPoster(token=DEFAULT_TOKEN, api_url=server.url),
        log=lambda _line: None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeSlackServer(latency=args.latency) as server:
        start = time.perf_counter()
        report = deliver_all(Path(tmp), make_alerts(args.alerts, channels=args.channels), server)
        wall = time.perf_counter() - start
        per_channel = Counter(call.channel for call in server.messages)
    busiest = max(per_channel.values())
    floor = (busiest - 1) * 1.0 + args.latency
    print(
        f"{report.sent} alerts in {report.messages} messages over {len(per_channel)} channels "
        f"(busiest channel: {busiest} messages), server latency {args.latency * 1000:.0f} ms"
    )
    print(f"wall time {wall:.2f} s, pacing floor {floor:.2f} s")
    print(f"ratio wall/pacing_floor = {wall / floor:.2f}x")
    print(
        f"ratio messages/alerts = {report.messages / report.sent:.4f} "
        f"({report.sent / report.messages:.1f} alerts per message)"
    )


if __name__ == "__main__":
    main()
