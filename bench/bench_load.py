"""Load: time and peak memory of daily_calendar_job as the universe and the range grow.

    python bench/bench_load.py [--entities 5000] [--days 1095] [--small-days 30]
                               [--fallback-days 365] [--max-seconds 1200] [--max-rss-gib 18]
                               [--skip-midpoint] [--profile CASE]

The big universe is every row of the bundled ``with_subdivisions.csv`` (the ``holidays``
universe with subdivisions, 934 entities) plus generated iCalendar entities up to
``--entities``, each its own feed (``/feeds/N.ics``: 20 to 50 events spread over
2023-09..2027-03, one feed in five with a monthly recurring event) served by two local
:class:`UpstreamServer` s without latency. Politeness is turned down so it does not
dominate (``rate_limit`` 1000 requests/s and ``max_concurrency`` 16 per host).

Each case runs ``daily_calendar_job`` once, in-process on an ephemeral instance, in a
FRESH subprocess with a fresh data directory (a backfill is one run with the range
tags), so the peak RSS is the case's own (``ru_maxrss`` of that child, from ``wait4``):

1. 283 entities (bundled ``countries_and_markets.csv``), one day
2. 283 entities, a ``--small-days`` backfill
1m. 283 entities sampled evenly from the big universe, one day: the same mix of sources
   as cases 3, M and 4 (a generated feed costs more to parse than a holidays entity, so
   entity growth is judged 1m -> 3, not 1 -> 3; both are printed)
3. ``--entities`` entities, one day
M. ``--entities`` entities, a ``--fallback-days`` backfill (the midpoint; skip it with
   ``--skip-midpoint``)
4. ``--entities`` entities, a ``--days`` backfill. When it runs over ``--max-seconds`` or
   ``--max-rss-gib`` it is stopped, said so, and the midpoint stands in for it.

The days end 2026-11-20; the children run with CALENDAR_START_DATE=2023-01-01 so three
years of partitions exist. Prints a table (wall time of the run, peak RSS of the process,
RSS added by the run), each case's time and memory per entity-day relative to case 1, the
growth between pairs of cases against the growth of entities x days, and a verdict:
linear or better means the per-entity-day ratios (against the same-mix one-day case) stay
<= 1 and no pair grows faster than its entity-days (for the marginal cost per day:
M -> 4 must grow no faster than days).

``--profile CASE`` (1, 2, 1m, 3, M or 4) runs only that case, under cProfile, and prints the
top functions by cumulative and by own time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pstats
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
UNIVERSES = REPO / "calendar_pipeline" / "universe"
LAST_DAY = dt.date(2026, 11, 20)
START_DATE = "2023-01-01"  # CALENDAR_START_DATE of the children: three years of partitions
FEED_SPAN = (dt.date(2023, 9, 1), dt.date(2027, 3, 31))
SERVERS = 2
RESULT_MARK = "BENCH_LOAD_RESULT "
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


# --- the generated universe ------------------------------------------------------------------


def feed_body(n: int) -> bytes:
    """Feed ``n``: 20-50 VEVENTs (all-day and timed) over FEED_SPAN, deterministic; every
    fifth feed also has a monthly recurring event."""
    rng = random.Random(n)
    span_days = (FEED_SPAN[1] - FEED_SPAN[0]).days
    lines = ["BEGIN:VCALENDAR", "VERSION:2.0", f"PRODID:-//bench_load//feed {n}//EN"]
    recurring = n % 5 == 0
    count = rng.randint(20, 50) - (1 if recurring else 0)
    for k in range(count):
        day = FEED_SPAN[0] + dt.timedelta(days=rng.randrange(span_days))
        lines += ["BEGIN:VEVENT", f"UID:feed{n}-ev{k}@bench.test", "DTSTAMP:20260101T000000Z"]
        if k % 3 == 0:
            hour = rng.randrange(8, 18)
            lines += [
                f"DTSTART:{day:%Y%m%d}T{hour:02d}0000Z",
                f"DTEND:{day:%Y%m%d}T{hour + 1:02d}0000Z",
            ]
        else:
            lines += [
                f"DTSTART;VALUE=DATE:{day:%Y%m%d}",
                f"DTEND;VALUE=DATE:{day + dt.timedelta(days=1):%Y%m%d}",
            ]
        lines += [f"SUMMARY:Feed {n} milestone {k}", f"LOCATION:Room {k % 7}", "END:VEVENT"]
    if recurring:
        lines += [
            "BEGIN:VEVENT",
            f"UID:feed{n}-monthly@bench.test",
            "DTSTAMP:20260101T000000Z",
            "DTSTART;VALUE=DATE:20231015",
            "DTEND;VALUE=DATE:20231016",
            "RRULE:FREQ=MONTHLY;BYMONTHDAY=15;COUNT=42",
            f"SUMMARY:Feed {n} monthly review",
            "END:VEVENT",
        ]
    lines.append("END:VCALENDAR")
    return ("\r\n".join(lines) + "\r\n").encode()


def write_big_universe(path: Path, total: int, servers: list) -> int:
    """with_subdivisions.csv plus generated ics entities up to ``total``; serves the feeds.
    Returns the number of generated feeds."""
    from calendar_pipeline_tests.upstream_server import Reply

    base = (UNIVERSES / "with_subdivisions.csv").read_text(encoding="utf-8").splitlines()
    header, rows = base[0], [row for row in base[1:] if row.strip()]
    generated = total - len(rows)
    if generated < 0:
        raise SystemExit(f"--entities {total} is below the {len(rows)} rows of the base universe")
    for n in range(generated):
        server = servers[n % len(servers)]
        server.route(f"/feeds/{n}.ics", Reply(body=feed_body(n), content_type="text/calendar"))
        rows.append(f"ics-{n:05d},Generated feed {n},ics,{server.url}/feeds/{n}.ics,")
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return generated


def write_sample(path: Path, universe: Path, count: int) -> Path:
    """``count`` rows taken evenly from ``universe``: a small universe with its mix."""
    header, *rows = universe.read_text(encoding="utf-8").splitlines()
    picked = [rows[i * len(rows) // count] for i in range(count)]
    path.write_text("\n".join([header, *picked]) + "\n", encoding="utf-8")
    return path


# --- one case, in a child process ------------------------------------------------------------


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(spec: dict) -> None:
    """Run daily_calendar_job once as ``spec`` says; print one JSON result line."""
    import dagster as dg

    from calendar_pipeline.definitions import build_defs
    from calendar_pipeline.defs.resources import CalendarSettings, UpstreamSources

    calendar = CalendarSettings(
        data_dir=spec["data_dir"],
        universe=spec["universe"],
        max_missing_share="1",  # synthetic entities: no data over the span is expected
    )
    upstream = UpstreamSources(rate_limit="1000", max_concurrency=16)
    defs = build_defs({"calendar": calendar, "upstream": upstream})
    job = defs.resolve_job_def("daily_calendar_job")
    if spec["first"] == spec["last"]:
        kwargs = {"partition_key": spec["last"]}
    else:
        kwargs = {
            "tags": {
                "dagster/asset_partition_range_start": spec["first"],
                "dagster/asset_partition_range_end": spec["last"],
            }
        }
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
    before = rss_mib()
    with dg.DagsterInstance.ephemeral() as instance:
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        result = job.execute_in_process(
            instance=instance, run_config=QUIET, raise_on_error=False, **kwargs
        )
        if profiler is not None:
            profiler.disable()
        wall = time.perf_counter() - start
        steps = {
            e.step_key: e.event_specific_data.duration_ms / 1000
            for e in result.get_step_success_events()
        }
        checks = {
            f"{e.asset_key.to_user_string()}:{e.check_name}": {
                "passed": e.passed,
                "metadata": {k: v.value for k, v in e.metadata.items()},
            }
            for e in result.get_asset_check_evaluations()
        }
    if profiler is not None:
        profiler.dump_stats(spec["profile"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    events = checks.get("raw_snapshot:has_events", {}).get("metadata", {}).get("events")
    failed = (
        checks.get("raw_snapshot:failed_entities_within_budget", {})
        .get("metadata", {})
        .get("failed")
    )
    out = {
        "success": result.success,
        "wall": wall,
        "rss_before": before,
        "peak": peak,
        "steps": steps,
        "events": events,
        "failed": failed,
        "checks_failed": [name for name, c in checks.items() if not c["passed"]],
    }
    print(RESULT_MARK + json.dumps(out, default=str), flush=True)


# --- the parent ------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    entities: int
    days: int
    universe: Path
    note: str = ""
    wall: float = 0.0
    peak: float = 0.0  # MiB, the child's ru_maxrss
    added: float = 0.0  # MiB, peak minus the RSS before the run (imports, definitions)
    process: float = 0.0  # seconds, the whole child process
    events: int | None = None
    steps: dict | None = None
    ok: bool = False

    @property
    def entity_days(self) -> int:
        return self.entities * self.days


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALENDAR_", "SLACK_"))}
    env["CALENDAR_START_DATE"] = START_DATE
    env["PYTHONPATH"] = str(REPO)
    return env


def run_case(
    case: Case, root: Path, max_seconds: float, max_rss_gib: float, profile: Path | None = None
) -> Case:
    """Run ``case`` in a fresh child; fills its figures (``ok`` False when it was stopped)."""
    first = LAST_DAY - dt.timedelta(days=case.days - 1)
    work = root / f"case-{case.name}-{case.days}d"
    work.mkdir()
    spec = {
        "data_dir": str(work / "data"),
        "universe": str(case.universe),
        "entities": case.entities,
        "first": first.isoformat(),
        "last": LAST_DAY.isoformat(),
        "profile": str(profile) if profile else None,
    }
    out_path, err_path = work / "stdout.txt", work / "stderr.txt"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    started = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=child_env(), cwd=REPO)
    stopped = ""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        elapsed = time.perf_counter() - started
        rss = _rss_of(proc.pid)
        if elapsed > max_seconds and not stopped:
            stopped = f"stopped after {elapsed:.0f} s (limit {max_seconds:.0f} s)"
        elif rss > max_rss_gib * 1024 and not stopped:
            stopped = f"stopped at {rss / 1024:.1f} GiB RSS (limit {max_rss_gib:g} GiB)"
        if stopped:
            proc.kill()
        time.sleep(0.2)
    case.process = time.perf_counter() - started
    case.peak = usage.ru_maxrss / 1024
    if stopped:
        case.note = stopped
        case.wall = case.process
        return case
    lines = [line for line in out_path.read_text().splitlines() if line.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        tail = err_path.read_text()[-3000:]
        raise SystemExit(f"case {case.name} failed (exit {proc.returncode}):\n{tail}")
    data = json.loads(lines[-1][len(RESULT_MARK) :])
    if not data["success"] or data["checks_failed"]:
        raise SystemExit(
            f"case {case.name}: run success={data['success']}, "
            f"failed checks {data['checks_failed']}; see {err_path}"
        )
    if data["failed"]:
        raise SystemExit(f"case {case.name}: {data['failed']} entities failed; see {err_path}")
    case.wall, case.events, case.steps = data["wall"], data["events"], data["steps"]
    case.added = data["peak"] - data["rss_before"]
    case.ok = True
    return case


def _rss_of(pid: int) -> float:
    """MiB resident of a running process (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def say(text: str = "") -> None:
    print(text, flush=True)


def report(cases: list[Case], total: float) -> None:
    base = cases[0]
    by_name = {c.name: c for c in cases if c.ok}
    # per-entity-day figures against case 1 (as asked) and against the one-day run of the
    # same entity mix (1 for the bundled universe, 1m for the big one): a generated feed
    # costs more to parse than a bundled holidays entity, which is not growth
    mix_base = {c.name: (base if c.universe == base.universe else by_name.get("1m")) for c in cases}

    def per_ed(c: Case, b: Case | None, attr: str) -> float:
        if b is None:
            return float("nan")
        return (getattr(c, attr) / c.entity_days) / (getattr(b, attr) / b.entity_days)

    say()
    say(
        f"{'case':<4} {'entities':>8} {'days':>5} {'entity-days':>11} {'wall s':>8} "
        f"{'peak MiB':>8} {'run MiB':>7} {'events':>10} {'s/ent-day':>9} {'peak':>6} "
        f"{'MiB/ent-day':>11} {'s/ent-day':>9} {'MiB/ent-day':>11}"
    )
    say(f"{'':<59}{'| vs case 1':<40}{'| vs same-mix 1-day case'}")
    for c in cases:
        if not c.ok:
            say(f"{c.name:<4} {c.entities:>8,} {c.days:>5,} {c.entity_days:>11,}  {c.note}")
            continue
        b = mix_base[c.name]
        say(
            f"{c.name:<4} {c.entities:>8,} {c.days:>5,} {c.entity_days:>11,} {c.wall:>8.2f} "
            f"{c.peak:>8.0f} {c.added:>7.0f} {c.events or 0:>10,} "
            f"{per_ed(c, base, 'wall'):>8.4f}x {c.peak / base.peak:>5.2f}x "
            f"{per_ed(c, base, 'added'):>10.4f}x {per_ed(c, b, 'wall'):>8.4f}x "
            f"{per_ed(c, b, 'added'):>10.4f}x"
        )
    say(
        "wall s: daily_calendar_job.execute_in_process (imports and definitions excluded); "
        "peak MiB: the child's ru_maxrss; run MiB: peak minus the RSS before the run "
        "(per entity-day ratios use it); events: summed over the run's snapshots. "
        "1m: 283 entities sampled evenly from the big universe (its mix of sources)"
    )
    for c in cases:
        if c.ok and c.steps:
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in c.steps.items())
            say(f"  case {c.name} steps: {parts} (process {c.process:.1f} s)")

    # (from, to, same mix?)
    pairs = [
        ("1", "2", True),
        ("1m", "3", True),
        ("3", "M", True),
        ("M", "4", True),
        ("3", "4", True),
        ("1m", "4", True),
        ("1", "3", False),
        ("1", "4", False),
    ]
    say()
    say("growth between cases (linear or better: time and run memory grow <= entity-days):")
    linear = True
    for a, b, same_mix in pairs:
        if a not in by_name or b not in by_name:
            continue
        x, y = by_name[a], by_name[b]
        size = y.entity_days / x.entity_days
        t, m = y.wall / x.wall, y.added / x.added
        fine = t <= size * 1.1 and m <= size * 1.1
        if same_mix:
            linear &= fine
        label = "ok" if fine else "WORSE THAN LINEAR"
        say(
            f"  {a:>2} -> {b:<2}: entity-days x{size:,.1f}, time x{t:,.2f}, run memory "
            f"x{m:,.2f}, peak RSS x{y.peak / x.peak:,.2f}  ({label}"
            f"{'' if same_mix else '; the mix of sources changes too'})"
        )
    for c in cases:
        if c.ok and mix_base[c.name] is not None and c is not mix_base[c.name]:
            b = mix_base[c.name]
            linear &= per_ed(c, b, "wall") <= 1.1 and per_ed(c, b, "added") <= 1.1
    over = [
        c.name
        for c in cases
        if c.ok and (per_ed(c, base, "wall") > 1.1 or per_ed(c, base, "added") > 1.1)
    ]
    biggest = max((c for c in cases if c.ok), key=lambda c: c.entity_days)
    stood_in = [c for c in cases if not c.ok]
    say()
    if stood_in:
        say(
            f"NOTE: case {stood_in[0].name} ({stood_in[0].days:,} days) {stood_in[0].note}; "
            f"the largest measured case is {biggest.name} ({biggest.entities:,} entities x "
            f"{biggest.days:,} days)"
        )
    if over and "1m" in by_name:
        mix = by_name["1m"]
        say(
            f"against case 1 per entity-day, case(s) {', '.join(over)} exceed 1.1x; the "
            f"same-mix 1m costs {mix.wall / base.wall:.2f}x case 1 for the same 283 "
            "entity-days, so that is the cost of the entity mix, not growth"
        )
    say(
        f"verdict: time and memory grow {'no worse than' if linear else 'WORSE than'} "
        f"linearly in entities x days (same mix of sources), up to {biggest.entities:,} "
        f"entities x {biggest.days:,} days ({biggest.wall:.1f} s, {biggest.peak:,.0f} MiB peak)"
    )
    say(f"whole bench: {total:.0f} s")


def print_profile(path: Path, limit: int = 30) -> None:
    stats = pstats.Stats(str(path))
    stats.strip_dirs()
    for key in ("cumulative", "tottime"):
        say(f"\n--- top {limit} by {key} ---")
        stats.sort_stats(key).print_stats(limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=5000)
    parser.add_argument("--days", type=int, default=1095)
    parser.add_argument("--small-days", type=int, default=30)
    parser.add_argument("--fallback-days", type=int, default=365)
    parser.add_argument("--max-seconds", type=float, default=1200)
    parser.add_argument("--max-rss-gib", type=float, default=18)
    parser.add_argument("--skip-midpoint", action="store_true")
    parser.add_argument("--profile", choices=["1", "2", "1m", "3", "M", "4"])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    from calendar_pipeline_tests.upstream_server import UpstreamServer

    started = time.perf_counter()
    small = UNIVERSES / "countries_and_markets.csv"
    small_count = sum(1 for line in small.read_text().splitlines()[1:] if line.strip())
    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        root = Path(tmp)
        servers = [UpstreamServer().start() for _ in range(SERVERS)]
        try:
            big = root / "universe_big.csv"
            generated = write_big_universe(big, args.entities, servers)
            say(
                f"universes: {small_count} entities ({small.name}); {args.entities:,} entities "
                f"({args.entities - generated} from with_subdivisions.csv + {generated:,} "
                f"generated iCalendar feeds on {SERVERS} local servers); days end {LAST_DAY}; "
                f"rate_limit 1000/s, max_concurrency 16 per host"
            )
            plan = [
                Case("1", small_count, 1, small),
                Case("2", small_count, args.small_days, small),
                Case(
                    "1m", small_count, 1, write_sample(root / "universe_mix.csv", big, small_count)
                ),
                Case("3", args.entities, 1, big),
            ]
            if not args.skip_midpoint or args.profile == "M":
                plan.append(Case("M", args.entities, args.fallback_days, big))
            plan.append(Case("4", args.entities, args.days, big))
            if args.profile:
                case = next(c for c in plan if c.name == args.profile)
                profile = root / "profile.out"
                run_case(case, root, args.max_seconds, args.max_rss_gib, profile)
                say(f"case {case.name}: {case.wall:.2f} s, peak {case.peak:.0f} MiB {case.note}")
                print_profile(profile)
                return
            cases = []
            for case in plan:
                say(f"running case {case.name}: {case.entities:,} entities x {case.days:,} days")
                cases.append(run_case(case, root, args.max_seconds, args.max_rss_gib))
                say(f"  {case.wall:.2f} s, peak {case.peak:,.0f} MiB {case.note}".rstrip())
            if not cases[-1].ok and args.skip_midpoint:
                fallback = Case("M", args.entities, args.fallback_days, big)
                say(f"running case M: {fallback.entities:,} entities x {fallback.days} days")
                cases.append(run_case(fallback, root, args.max_seconds, args.max_rss_gib))
        finally:
            for server in servers:
                server.stop()
    report(cases, time.perf_counter() - started)


if __name__ == "__main__":
    main()
