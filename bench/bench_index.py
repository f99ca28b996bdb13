"""Benchmark: does the snapshot index's append and newest-day get() cost stay flat as it grows?

Builds two indexes, a small one and a large one (default 10 and 1,000 partitions, each line
embedding ``--content-kb`` KB of content_text), then times on each:

- ``append``: ``upsert`` of a partition newer than the last line (the daily case). Each
  repetition truncates the file back to its original size, so every run appends to the
  same index.
- ``get_newest``: ``get()`` of the newest partition (what a daily run asks), reading the
  last line from the end of the file.

and prints the medians and the ratios large/small, whose target is < 2x: both operations
must not grow with the number of lines. For contrast it also times ``get()`` of a middle
partition (binary search, grows with log(lines)) and a rewrite (``upsert`` replacing the
last line, which streams the whole file and so grows with it; no target).

    python bench/bench_index.py [--content-kb 50] [--small 10] [--large 1000] [--repeats 9]

Exits 1 with ``--strict`` if a target is missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calendar_pipeline.lake.index import SnapshotIndex

TARGET_RATIO = 2.0


def partition(n: int) -> str:
    return (dt.date(2020, 1, 1) + dt.timedelta(days=n)).isoformat()


def make_content(kilobytes: int) -> str:
    """Snapshot-like text of about ``kilobytes`` KB, with quotes and non-ASCII to escape."""
    event = '{"entity_id":"FR","name":"Fête \\"nationale\\"","date":"2024-07-14"},'
    return ('{"events":[' + event * (kilobytes * 1024 // len(event) + 1))[: kilobytes * 1024]


def make_entry(n: int, content: str) -> dict[str, Any]:
    data = content.encode("utf-8")
    return {
        "partition": partition(n),
        "path": f"/data/snapshots/{partition(n)}/snapshot_20240101T000000000000Z.json",
        "mtime": 1_700_000_000.0 + n,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "row_count": 100,
        "error_count": 0,
        "content_text": content,
    }


def median_seconds(action: Callable[[], object], repeats: int, reset: Callable[[], None]) -> float:
    """Median wall time of ``action`` over ``repeats`` runs, calling ``reset`` after each."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
        reset()
    return statistics.median(times)


def measure(
    directory: Path, partitions: int, content: str, repeats: int, slow_repeats: int
) -> dict[str, float]:
    """Build an index of ``partitions`` lines in ``directory`` and time its operations."""
    index = SnapshotIndex(directory / f"index_{partitions}.jsonl")
    index.upsert_sorted(make_entry(n, content) for n in range(partitions))
    size = index.path.stat().st_size
    newest = make_entry(partitions, content)
    last_again = make_entry(partitions - 1, content)
    middle = partition(partitions // 2)
    last = partition(partitions - 1)

    def truncate_back() -> None:
        os.truncate(index.path, size)

    def nothing() -> None:
        pass

    results = {
        "append": median_seconds(lambda: index.upsert(newest), repeats, truncate_back),
        "get_newest": median_seconds(lambda: index.get(last), repeats * 5, nothing),
        "get_middle": median_seconds(lambda: index.get(middle), repeats, nothing),
        "rewrite_last": median_seconds(lambda: index.upsert(last_again), slow_repeats, nothing),
        "file_mb": size / 1e6,
    }
    assert index.get(last)["partition"] == last
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--content-kb", type=int, default=50, help="content_text per line")
    parser.add_argument("--small", type=int, default=10, help="partitions in the small index")
    parser.add_argument("--large", type=int, default=1000, help="partitions in the large index")
    parser.add_argument("--repeats", type=int, default=9, help="repetitions per measurement")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)

    content = make_content(args.content_kb)
    with tempfile.TemporaryDirectory(prefix="bench_index_") as directory:
        small = measure(Path(directory), args.small, content, args.repeats, 3)
        large = measure(Path(directory), args.large, content, args.repeats, 3)

    print(f"lines of ~{args.content_kb} KB content_text; median of {args.repeats} runs")
    for name, results in ((f"{args.small:>5}", small), (f"{args.large:>5}", large)):
        print(
            f"{name} partitions ({results['file_mb']:7.1f} MB): "
            f"append {results['append'] * 1e3:7.3f} ms   "
            f"get newest {results['get_newest'] * 1e3:7.3f} ms   "
            f"get(middle) {results['get_middle'] * 1e3:7.3f} ms   "
            f"rewrite(last) {results['rewrite_last'] * 1e3:8.1f} ms"
        )

    missed = False
    for operation in ("append", "get_newest"):
        ratio = large[operation] / small[operation]
        verdict = "ok" if ratio < TARGET_RATIO else "MISSED"
        missed |= ratio >= TARGET_RATIO
        print(
            f"{operation}_{args.large}/{operation}_{args.small} = {ratio:.2f}x "
            f"(target < {TARGET_RATIO:g}x: {verdict})"
        )
    for operation in ("get_middle", "rewrite_last"):
        ratio = large[operation] / small[operation]
        print(f"{operation}_{args.large}/{operation}_{args.small} = {ratio:.2f}x (no target)")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
