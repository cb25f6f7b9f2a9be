"""Where an update's time goes: cProfile over one learner's updates on bench/throughput.py's data.

    python bench/profile_update.py AGENT [--preset quick] [--steps 200] [--top 15]
        [--device cpu] [--stack K]

Trains AGENT for ``--steps`` updates (after the same number of untimed warm-up updates, so
that first-call costs are out) under cProfile on one torch thread and prints the functions
with the most time of their own. ``--stack K`` profiles K seeds stacked (``fit_stacked``).
On CUDA it then runs the same updates once more under torch's profiler and prints the
operators with the most host time and those with the most device time: when the device's
total is far below the wall time, the updates wait on the host (kernel launches, Python).
Findings are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

import torch
from throughput import synthetic_dataset, time_agent

from pbrl.prefs import label_dataset


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("agent")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--stack", type=int, default=1, help="K seeds stacked (fit_stacked)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ds = synthetic_dataset()
    prefs = label_dataset(ds, "oracle", 2500, 64, 0)
    run = (args.agent, args.preset, ds, prefs, args.steps, args.device, args.stack)
    time_agent(*run)  # warm-up
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    rate = time_agent(*run)
    prof.disable()
    print(f"{args.agent}: {rate:.1f} seed-updates/s under cProfile, {args.stack} seed(s) on "
          f"{args.device} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)  # fmt: skip
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)
    if args.device.startswith("cuda"):
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        t0 = time.perf_counter()
        with torch.profiler.profile(activities=acts) as tprof:
            rate = time_agent(*run)
        wall = time.perf_counter() - t0
        table = tprof.key_averages()
        device_us = sum(e.self_device_time_total for e in table)
        print(f"torch profiler: {rate:.1f} seed-updates/s, wall {wall:.2f} s, device busy "
              f"{device_us / 1e6:.2f} s ({100 * device_us / 1e6 / wall:.0f}%)")  # fmt: skip
        print(table.table(sort_by="self_cpu_time_total", row_limit=args.top))
        print(table.table(sort_by="self_device_time_total", row_limit=args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
