"""HTTP fetch throughput against a local Nager.Date imitation that answers after 50 ms.

    python bench/bench_http.py [--entities 400] [--rate 40] [--latency 0.05] [--skip-naive]

Fetches ``--entities`` countries through the real path (``collect_events`` -> the Nager
adapter -> the shared polite client, with conditional GET stored in SQLite) at a limit
of ``--rate`` requests per second, and prints:
- the wall time relative to the politeness floor (entities / rate; target <= 1.15);
- the wall time relative to the naive approach: a sequential loop with a fixed delay of
  1 / rate between requests (measured in the same run, not estimated);
- the busiest second as seen by the server (must not exceed the rate);
- a second run against the unchanged upstream (every answer a 304): the bytes relative to
  the first run (target < 5%), as body bytes received by the client and as whole
  responses (status line, headers, body) measured at the server.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import string
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calendar_pipeline.alerts.store import make_engine
from calendar_pipeline.sources.collect import collect_events
from calendar_pipeline.sources.http import USER_AGENT, HttpClient, HttpConfig, HttpResponse
from calendar_pipeline.sources.http_cache import SqlHttpCache, create_http_cache_table
from calendar_pipeline.sources.model import Entity, Window
from calendar_pipeline.sources.nager import NagerSource, parse_public_holidays
from calendar_pipeline_tests.upstream_server import UpstreamServer, nager_api

WINDOW = Window(dt.date(2025, 10, 1), dt.date(2025, 11, 29))  # one year: one request each


def entities(count: int) -> list[Entity]:
    codes = ("".join(pair) for pair in itertools.product(string.ascii_uppercase, repeat=2))
    return [
        Entity(entity_id=f"nager-{code}", name=code, source="nager", key=code)
        for code in itertools.islice(codes, count)
    ]


def busiest_second(server: UpstreamServer) -> int:
    times = sorted(r.arrived_at for r in server.requests)
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def naive(server: UpstreamServer, universe: list[Entity], rate: float) -> float:
    """The baseline: one request after the other, sleeping 1/rate between them."""
    started = time.perf_counter()
    with httpx.Client(headers={"User-Agent": USER_AGENT}, timeout=20) as client:
        for entity in universe:
            url = f"{server.url}/api/v3/PublicHolidays/{WINDOW.start.year}/{entity.key}"
            response = client.get(url)
            response.raise_for_status()
            parse_public_holidays_from(response, entity.key)
            time.sleep(1 / rate)
    return time.perf_counter() - started


def parse_public_holidays_from(response: httpx.Response, country: str) -> None:
    """The same validation as the adapter, so both sides do the same work."""
    url = str(response.url)
    parse_public_holidays(HttpResponse(url, url, 200, response.headers, response.content), country)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=400)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--skip-naive", action="store_true", help="do not time the naive loop")
    args = parser.parse_args()
    universe = entities(args.entities)
    floor = args.entities / args.rate

    with tempfile.TemporaryDirectory() as tmp, UpstreamServer(latency=args.latency) as server:
        server.route_prefix("/api/v3/PublicHolidays/", nager_api())
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        create_http_cache_table(engine)
        client = HttpClient(HttpConfig(rate_limit=args.rate), SqlHttpCache(engine))
        sources = {"nager": NagerSource(client, server.url)}

        started = time.perf_counter()
        first = collect_events(universe, WINDOW, sources)
        wall = time.perf_counter() - started
        first_stats = client.stats
        first_bytes = server.bytes_sent
        peak = busiest_second(server)
        assert first.entities_ok == args.entities, first.errors[:3]

        server.reset_log()
        started = time.perf_counter()
        second = collect_events(universe, WINDOW, sources)
        second_wall = time.perf_counter() - started
        second_stats = client.stats - first_stats
        second_bytes = server.bytes_sent
        assert second.events == first.events

        naive_wall = None if args.skip_naive else naive(server, universe, args.rate)

    print(
        f"{args.entities} entities, limit {args.rate:g} req/s per host, "
        f"server latency {args.latency * 1000:.0f} ms, {len(first.events)} events"
    )
    print(f"wall time {wall:.2f} s, politeness floor {floor:.2f} s")
    print(f"ratio wall/politeness_floor = {wall / floor:.3f}x (target <= 1.15)")
    if naive_wall is not None:
        print(
            f"ratio wall/naive_sequential = {wall / naive_wall:.3f}x "
            f"(naive loop with a 1/rate delay: {naive_wall:.2f} s; "
            f"{naive_wall / wall:.2f}x faster)"
        )
    print(f"busiest second at the server: {peak} requests (limit {args.rate:g})")
    print(
        f"second run (upstream unchanged): {second_wall:.2f} s, "
        f"{second_stats.not_modified}/{second_stats.requests} answers were 304"
    )
    print(
        f"ratio body_bytes second/first run = {second_stats.bytes / first_stats.bytes:.2%} "
        f"({second_stats.bytes:,} vs {first_stats.bytes:,} body bytes received) (target < 5%)"
    )
    print(
        f"ratio response_bytes second/first run = {second_bytes / first_bytes:.2%} "
        f"(status lines + headers + bodies, measured at the server: {second_bytes:,} vs "
        f"{first_bytes:,}; the floor is one {second_bytes // args.entities}-byte 304 per request)"
    )


if __name__ == "__main__":
    main()
