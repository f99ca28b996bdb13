"""How long upstream_availability_sensor's probe of 300 entities takes, against local
iCalendar servers that answer after 50 ms, compared with the 60 s a sensor tick may last.

    python bench/bench_probe.py [--feeds 300] [--latency 0.05] [--hosts 10]

Each case evaluates the real sensor (universe load, the shared polite client, the SQL HTTP
cache, conditional GETs) tick after tick until every feed has been probed once, then once
more against the unchanged upstream (every answer a 304), and prints per case:
- the first tick's time, and its ratio to the 60 s tick limit (must stay under 1);
- ticks needed for a whole round (1 when everything fits the 45 s budget);
- the unchanged tick's time and how many answers were 304.

Cases: the feeds spread over ``--hosts`` hosts at the default 2 requests/s per host; all
on one host at 20 requests/s; all on one host at the default 2 requests/s (the politeness
limit, not the code, sets the pace: a round takes several ticks).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calendar_pipeline.definitions import build_defs
from calendar_pipeline.defs.resources import CalendarSettings, UpstreamSources
from calendar_pipeline_tests.flows import feed
from calendar_pipeline_tests.upstream_server import Reply, UpstreamServer

TICK_LIMIT = 60.0  # Dagster's default sensor evaluation timeout


def run_case(name: str, feeds: int, hosts: int, latency: float, rate: str) -> None:
    servers = [UpstreamServer(latency=latency).start() for _ in range(hosts)]
    body = feed(start=dt.date.today(), days=120)
    try:
        rows = ["entity_id,name,source,key,channel"]
        for n in range(feeds):
            server = servers[n % hosts]
            server.route(f"/feeds/{n}.ics", Reply(body=body, content_type="text/calendar"))
            rows.append(f"feed-{n},Feed {n},ics,{server.url}/feeds/{n}.ics,")
        with tempfile.TemporaryDirectory() as tmp, dg.instance_for_test() as instance:
            universe = Path(tmp) / "universe.csv"
            universe.write_text("\n".join(rows) + "\n")
            calendar = CalendarSettings(data_dir=tmp, universe=str(universe))
            upstream = UpstreamSources(rate_limit=rate)
            defs = build_defs({"calendar": calendar, "upstream": upstream})
            sensor = defs.resolve_sensor_def("upstream_availability_sensor")
            cursor = None

            def tick() -> float:
                nonlocal cursor
                started = time.perf_counter()
                context = dg.build_sensor_context(
                    instance=instance, cursor=cursor, resources=defs.resources, definitions=defs
                )
                cursor = sensor.evaluate_tick(context).cursor
                return time.perf_counter() - started

            first = tick()
            ticks = 1
            while len(json.loads(cursor)["fingerprints"]) < feeds and ticks < 20:
                tick()
                ticks += 1
            marks = [len(s.requests) for s in servers]
            unchanged = tick()
            answers = [
                r.status for s, m in zip(servers, marks, strict=True) for r in s.requests[m:]
            ]
    finally:
        for server in servers:
            server.stop()
    print(
        f"{name:<44} first tick {first:6.1f} s = {first / TICK_LIMIT:4.2f}x the tick limit; "
        f"round in {ticks} tick(s); unchanged tick {unchanged:5.1f} s, "
        f"{answers.count(304)}/{len(answers)} answers 304"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--hosts", type=int, default=10)
    args = parser.parse_args()
    print(f"{args.feeds} iCalendar feeds, server latency {args.latency * 1000:.0f} ms")
    hosts = f"{args.hosts} hosts, 2 requests/s per host (default)"
    run_case(hosts, args.feeds, args.hosts, args.latency, "2")
    run_case("1 host, 20 requests/s", args.feeds, 1, args.latency, "20")
    run_case("1 host, 2 requests/s (default)", args.feeds, 1, args.latency, "2")


if __name__ == "__main__":
    main()
