"""Peak memory of fetching oversized iCalendar feeds: does it grow with their number?

    python bench/bench_feed_memory.py [--feeds 1,4,8] [--events 60000] [--spread-days 730]
                                      [--tree PATH]

Generates ``--events`` one-off VEVENTs per feed (7.6 MiB for 60,000: timed and all-day
events with a title, spread over ``--spread-days`` days from 2026-06-01, so about 5,000
fall in the window), each feed with its own UIDs, served by a local
:class:`UpstreamServer` on 127.0.0.1 in this process. Each case (1, 4, 8 feeds) runs in
a FRESH subprocess the path of a day's ``raw_snapshot``: the HTTP sources as
``UpstreamSources`` builds them (shipped politeness: 2 requests/s and 4 in flight per
host; the conditional-GET cache in a SQLite file), ``collect_events`` over the day's
window (2026-11-20 + 60 days), ``split_by_window``, ``snapshot_payload`` and the JSON
text ``write_snapshot`` writes. The child reports its peak RSS (``ru_maxrss``), the RSS
it had before the fetch (interpreter and imports, without Dagster) and the events kept.

Prints per case: peak RSS, peak minus that baseline, events kept, the snapshot's JSON
size, wall time (and the feeds that failed, if any), then the ratios of the peak of 4
and 8 feeds to the peak of one (target: 4 feeds at most 1.5x one feed).

``--tree PATH`` imports ``calendar_pipeline`` from another checkout (e.g. a ``git
worktree`` of an older commit) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_load import rss_mib  # a sibling script: bench/ is on sys.path when run

REPO = Path(__file__).resolve().parents[1]
DAY = dt.date(2026, 11, 20)
LOOKAHEAD = 60
SPREAD_START = dt.date(2026, 6, 1)
RESULT_MARK = "BENCH_FEED_MEMORY_RESULT "


def feed_body(n: int, events: int, spread_days: int) -> bytes:
    """Feed ``n``: ``events`` one-off VEVENTs (one in three timed), deterministic."""
    rng = random.Random(n)
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:-//bench_feed_memory//feed {n}//EN"]
    for k in range(events):
        day = SPREAD_START + dt.timedelta(days=rng.randrange(spread_days))
        lines += ["BEGIN:VEVENT", f"UID:f{n}-e{k}@bench.test", "DTSTAMP:20260101T000000Z"]
        if k % 3 == 0:
            hour = rng.randrange(8, 18)
            lines.append(f"DTSTART:{day:%Y%m%d}T{hour:02d}0000Z")
        else:
            lines.append(f"DTSTART;VALUE=DATE:{day:%Y%m%d}")
        lines += [f"SUMMARY:Feed {n} item {k}", "END:VEVENT"]
    lines.append("END:VCALENDAR")
    return ("\r\n".join(lines) + "\r\n").encode()


def child(spec: dict) -> None:
    """One case: the collection path of raw_snapshot over ``spec['urls']``."""
    sys.path.insert(0, spec["tree"])
    from sqlalchemy import create_engine

    import calendar_pipeline
    from calendar_pipeline.sources.collect import (
        collect_events,
        snapshot_payload,
        split_by_window,
    )
    from calendar_pipeline.sources.http_cache import SqlHttpCache, create_http_cache_table
    from calendar_pipeline.sources.http_sources import HttpConfig, build_http_sources
    from calendar_pipeline.sources.model import Entity, Window

    assert calendar_pipeline.__file__.startswith(spec["tree"]), calendar_pipeline.__file__
    engine = create_engine(f"sqlite:///{spec['db']}")
    create_http_cache_table(engine)
    # the shipped politeness (2 requests/s, 4 in flight per host) and conditional-GET cache
    sources = build_http_sources(HttpConfig(), SqlHttpCache(engine))
    entities = [
        Entity(entity_id=f"big-{k}", name=f"Big feed {k}", source="ics", key=url)
        for k, url in enumerate(spec["urls"])
    ]
    window = Window.ahead(DAY, LOOKAHEAD)
    before = rss_mib()
    start = time.perf_counter()
    fetched = collect_events(entities, window, sources)
    [result] = split_by_window(fetched, entities, [window], sources)
    payload = snapshot_payload(
        partition=DAY.isoformat(),
        window=window,
        result=result,
        universe_path="bench",
        universe_sha256="0" * 64,
        entities=entities,
        generated_at=dt.datetime.now(dt.UTC).isoformat(),
    )
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        RESULT_MARK
        + json.dumps(
            {
                "feeds": len(entities),
                "failed": [e.message for e in fetched.errors],
                "events": len(payload["events"]),
                "snapshot_mib": len(text) / 2**20,
                "before_mib": before,
                "peak_mib": peak,
                "wall": wall,
            }
        ),
        flush=True,
    )


def run_case(urls: list[str], tree: str, workdir: Path) -> dict:
    spec = {"urls": urls, "tree": tree, "db": str(workdir / f"cache-{len(urls)}.db")}
    env = {**os.environ, "CALENDAR_DATA_DIR": str(workdir)}
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    raise SystemExit(f"case of {len(urls)} feeds failed:\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", default="1,4,8", help="feed counts, comma-separated")
    parser.add_argument("--events", type=int, default=60_000, help="VEVENTs per feed")
    parser.add_argument("--spread-days", type=int, default=730)
    parser.add_argument("--tree", default=str(REPO), help="checkout to import the code from")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    sys.path.insert(0, str(REPO))
    from calendar_pipeline_tests.upstream_server import Reply, UpstreamServer

    counts = [int(c) for c in args.feeds.split(",")]
    tree = str(Path(args.tree).resolve())
    with UpstreamServer() as server, tempfile.TemporaryDirectory() as tmp:
        size = 0
        for n in range(max(counts)):
            body = feed_body(n, args.events, args.spread_days)
            size = len(body)
            server.route(f"/feeds/{n}.ics", Reply(body=body, content_type="text/calendar"))
        print(
            f"code from {tree}; feeds of {args.events:,} events, {size / 2**20:.1f} MiB each; "
            f"window {DAY} + {LOOKAHEAD} days"
        )
        header = f"{'feeds':>5} {'peak MiB':>9} {'added MiB':>9} {'events':>7} {'json MiB':>8}"
        print(header + f" {'s':>6}")
        results = {}
        for count in counts:
            urls = [f"{server.url}/feeds/{n}.ics" for n in range(count)]
            r = run_case(urls, tree, Path(tmp))
            results[count] = r
            print(
                f"{count:>5} {r['peak_mib']:>9.0f} {r['peak_mib'] - r['before_mib']:>9.0f} "
                f"{r['events']:>7,} {r['snapshot_mib']:>8.1f} {r['wall']:>6.1f}"
                + (f"  {len(r['failed'])} failed: {r['failed'][0]}" if r["failed"] else "")
            )
    if 1 in results:
        one = results[1]["peak_mib"]
        for count in counts:
            if count != 1:
                ratio = results[count]["peak_mib"] / one
                print(f"peak of {count} feeds / peak of 1 feed: {ratio:.2f}x")


if __name__ == "__main__":
    main()
