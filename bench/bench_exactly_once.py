"""What exactly-once costs when Slack's replies get lost, against a local Slack server.

    python bench/bench_exactly_once.py [--alerts 2000] [--channels 10] [--drops 5]

Delivers ``--alerts`` alerts over ``--channels`` channels three times, each into a fresh
ledger and a fresh Slack server with 50 ms latency:
- ``clean``: no fault;
- ``drops, history scope``: the replies to the first ``--drops`` accepted posts are lost
  (the connection is cut after Slack recorded the message);
- ``drops, no history scope``: the same, with a token that may not read history.
For each it prints the alerts Slack received twice per lost reply, the Web API calls
per message posted, and the wall time relative to the clean run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_slack import deliver_all
from calendar_pipeline_tests.delivery_worker import make_alerts
from calendar_pipeline_tests.slack_server import FakeSlackServer

ENTITY = re.compile(r"Entity \d{4}")


def run(alerts: int, channels: int, drops: int, history_scope: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp, FakeSlackServer(latency=0.05) as server:
        if not history_scope:
            server.scopes -= {"channels:history", "groups:history"}
        server.drop_after_accepting(drops)
        start = time.perf_counter()
        report = deliver_all(Path(tmp), make_alerts(alerts, channels=channels), server)
        wall = time.perf_counter() - start
        seen: Counter[str] = Counter()
        for call in server.messages:
            seen.update(ENTITY.findall(json.dumps(call.blocks)))
        return {
            "wall": wall,
            "lost": alerts - len(seen),
            "repeated": sum(n - 1 for n in seen.values()),
            "messages": report.messages,
            "calls": len(server.calls),
            "posts": len(server.messages),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--drops", type=int, default=5)
    args = parser.parse_args()
    clean = run(args.alerts, args.channels, 0, True)
    print(f"{args.alerts} alerts, {args.channels} channels, {args.drops} lost replies")
    for name, drops, scope in (
        ("clean", 0, True),
        ("drops, history scope", args.drops, True),
        ("drops, no history scope", args.drops, False),
    ):
        result = clean if drops == 0 else run(args.alerts, args.channels, drops, scope)
        per_drop = result["repeated"] / drops if drops else 0.0
        print(
            f"{name:26s} lost={result['lost']} alerts repeated={result['repeated']} "
            f"({per_drop:.1f} per lost reply), posts={result['posts']} for "
            f"{result['messages']} messages, ratio api_calls/messages = "
            f"{result['calls'] / max(1, result['messages']):.2f}, ratio wall/clean = "
            f"{result['wall'] / clean['wall']:.2f}x"
        )


if __name__ == "__main__":
    main()
