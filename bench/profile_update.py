"""Where an update's time goes: cProfile over one learner's updates on bench/throughput.py's data.

    python bench/profile_update.py AGENT [--preset quick] [--steps 200] [--top 15]

Trains AGENT for ``--steps`` updates (after the same number of untimed warm-up updates, so
that first-call costs are out) under cProfile on one torch thread and prints the functions
with the most time of their own. Findings are in docs/performance.md.
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
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ds = synthetic_dataset()
    prefs = label_dataset(ds, "oracle", 2500, 64, 0)
    time_agent(args.agent, args.preset, ds, prefs, args.steps, "cpu")  # warm-up
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    rate = time_agent(args.agent, args.preset, ds, prefs, args.steps, "cpu")
    prof.disable()
    print(f"{args.agent}: {rate:.1f} updates/s under the profiler "
          f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)  # fmt: skip
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
