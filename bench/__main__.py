"""`make bench` / `python -m bench`: every phase of the benchmark, or the ones named with
`--phase=a,b` (`make bench ARGS=--phase=events`), each run `--runs` times; figures are the
median of the runs, and each target is judged PASS or MISS on that median (SKIP, with the
reason, for a phase that cannot run here). None of this is a timed test.

Phases: latency (control verb vs raw ESL, one process), throughput (one and two bridge
processes), events (ESL ingestion), sessions (10,000 live sessions: RSS and Redis), webhooks
(signed deliveries), freeswitch (the latency phase against the real switch from `make freeswitch`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import math
import platform
import statistics
import sys
import time
import traceback

import redis
from redis.utils import HIREDIS_AVAILABLE

from bench.common import PhaseResult, machine, quiet_logs

PHASES = ("latency", "throughput", "events", "sessions", "webhooks", "freeswitch")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--phase", default=",".join(PHASES), help=f"comma-separated, of {', '.join(PHASES)}")
    p.add_argument("--runs", type=int, default=3, help="runs of each phase (figures are their median)")
    g = p.add_argument_group("latency / freeswitch")
    g.add_argument("--samples", type=int, default=3000, help="latency samples")
    g.add_argument("--calls", type=int, default=150, help="live calls, latency phase (10/s each)")
    # The lab's voice agent takes 10 calls at a time (max_concurrent's default).
    g.add_argument("--fs-calls", type=int, default=10, help="SIPp calls, freeswitch phase (<= 10)")
    g.add_argument("--fs-samples", type=int, default=600, help="latency samples, freeswitch phase")
    g = p.add_argument_group("throughput")
    g.add_argument("--throughput-calls", type=int, default=32, help="live calls per bridge")
    g.add_argument("--connections", type=int, default=32, help="keep-alive connections per bridge")
    g.add_argument("--seconds", type=float, default=5.0, help="measured window")
    g.add_argument("--one-bridge", action="store_true", help="skip the two-bridge run")
    g = p.add_argument_group("events")
    g.add_argument("--event-calls", type=int, default=2000, help="calls whose events make up the flood")
    g = p.add_argument_group("sessions")
    g.add_argument("--sessions", type=int, default=10_000, help="live sessions to hold")
    g.add_argument("--session-batch", type=int, default=25, help="calls placed at a time")
    g = p.add_argument_group("webhooks")
    g.add_argument("--deliveries", type=int, default=5000, help="webhook deliveries to time")
    args = p.parse_args(argv)
    args.phases = [x.strip() for x in args.phase.split(",") if x.strip()]
    for name in args.phases:
        if name not in PHASES:
            p.error(f"unknown phase {name!r} (one of {', '.join(PHASES)})")
    return args


def _fmt(v: float) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "n/a"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3f}"


def summarize(name: str, runs: list[PhaseResult]) -> list[tuple[str, str, str, str, str]]:
    """Print the phase's figures (median and range of the runs); return its summary rows."""
    first = runs[0]
    print(f"\n## {name}\n")
    for note in first.notes:
        print(f"  {note}")
    if first.skip:
        print(f"\n  SKIP  {first.skip}")
        return [(name, "(phase)", "", "", f"SKIP: {first.skip}")]
    failed = next((r for r in runs if r.error), None)
    if failed is not None:
        # Neither PASS nor MISS: the phase did not produce its figures.
        print(f"\n  ERROR  run {runs.index(failed) + 1}: {failed.error}")
        return [(name, "(phase)", "", str(len(runs)), "ERROR (see above)")]
    print()
    width = max(len(k) for k in first.figures)
    print(f"  | {'figure':<{width}} | {'median':>10} | {'runs':<40} |")
    print(f"  |{'-' * (width + 2)}|{'-' * 12}|{'-' * 42}|")
    medians: dict[str, float] = {}
    for key in first.figures:
        values = [r.figures[key] for r in runs if key in r.figures]
        medians[key] = statistics.median(values)
        shown = ", ".join(_fmt(v) for v in values)
        print(f"  | {key:<{width}} | {_fmt(medians[key]):>10} | {shown:<40} |")
    rows = []
    print()
    for t in first.targets:
        value = medians.get(t.figure, float("nan"))
        verdict = "PASS" if not math.isnan(value) and t.met(value) else "MISS"
        print(f"  {verdict}  {t.label}: {_fmt(value)} (median of {len(runs)})")
        rows.append((name, t.label, _fmt(value), str(len(runs)), verdict))
    return rows


async def run_phase(name: str, args: argparse.Namespace) -> PhaseResult:
    module = importlib.import_module(f"bench.{name}")
    result: PhaseResult = await module.run(args)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    quiet_logs()
    print(
        f"bridge benchmarks: Python {platform.python_version()}, redis-py {redis.__version__} "
        f"({'hiredis' if HIREDIS_AVAILABLE else 'pure-Python'} parser), {machine()}"
    )
    rows: list[tuple[str, str, str, str, str]] = []
    for name in args.phases:
        runs: list[PhaseResult] = []
        for i in range(args.runs):
            t0 = time.monotonic()
            try:
                result = asyncio.run(run_phase(name, args))
            except Exception as exc:  # one phase that breaks does not take the others with it
                traceback.print_exc()
                result = PhaseResult(name, error=f"{type(exc).__name__}: {exc}"[:300])
            print(
                f"  [{name} run {i + 1}/{args.runs}: {time.monotonic() - t0:.0f} s; {machine()}]",
                file=sys.stderr,
                flush=True,
            )
            runs.append(result)
            if result.skip or result.error:
                break
        rows += summarize(name, runs)
    print("\n## summary\n")
    widths = [
        max(len(r[i]) for r in [("phase", "target", "median", "runs", "result"), *rows]) for i in range(5)
    ]
    header = ("phase", "target", "median", "runs", "result")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    print(f"\n(after the run: {machine()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
