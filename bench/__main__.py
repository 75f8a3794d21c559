"""`python -m bench [NAME ...]`: run the benchmarks (all by default), then a summary.

Exits 1 when a goal is not met or a benchmark fails.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback

from bench import (
    agent_latency,
    assignment,
    dispatch,
    engine_throughput,
    expiry,
    gateway,
    heartbeat,
    idle,
    migrations,
    request_layers,
    request_path,
    runner_logs,
    statistics,
    task_logs,
    webhooks,
    websocket,
)
from bench.common import Result, machine

BENCHMARKS = {
    "heartbeat": heartbeat.run,
    "assignment": assignment.run,
    "dispatch": dispatch.run,
    "agent_latency": agent_latency.run,
    "idle": idle.run,
    "engine_throughput": engine_throughput.run,
    "expiry": expiry.run,
    "websocket": websocket.run,
    "gateway": gateway.run,
    "webhooks": webhooks.run,
    "statistics": statistics.run,
    "task_logs": task_logs.run,
    "runner_logs": runner_logs.run,
    "request_path": request_path.run,
    "request_layers": request_layers.run,
    "migrations": migrations.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(BENCHMARKS))
    names = parser.parse_args(argv).names or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    # A plain kill still runs the clean-ups (stop gunicorn, drop the databases).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    print("machine:")
    for key, value in machine().items():
        print(f"  {key:<13} {value}")
    results: list[Result] = []
    for name in names:
        print(f"\n== {name}")
        try:
            results += BENCHMARKS[name]()
        except Exception as exc:
            traceback.print_exc()
            results.append(Result(name, f"failed: {exc.__class__.__name__}", "-", "-", False))
    print_summary(results)
    return 0 if all(result.met for result in results) else 1


def print_summary(results: list[Result]) -> None:
    """A Markdown table, ready for docs/BENCHMARKS.md."""
    header = ("benchmark", "measured", "floor (same run)", "goal", "met")
    rows = [(r.benchmark, r.measured, r.floor, r.goal, "yes" if r.met else "NO") for r in results]
    widths = [max(len(row[n]) for row in (header, *rows)) for n in range(len(header))]
    print("\n== summary")
    for row in (header, tuple("-" * width for width in widths), *rows):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    sys.exit(main())
