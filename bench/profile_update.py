"""Where an update's time goes: cProfile over one learner's updates on bench/throughput.py's data.

    python bench/profile_update.py AGENT [--preset quick] [--steps 200] [--top 15]
        [--device cpu] [--stack K] [--ops] [--set FIELD=VALUE ...] [--sort tottime]

Trains AGENT for ``--steps`` updates (after the same number of untimed warm-up updates, so
that first-call costs are out) under cProfile on one torch thread and prints the functions
with the most time of their own (``--sort cumtime``: with the most time under them, which
splits a learner's run into its phases). ``--stack K`` profiles K seeds stacked
(``fit_stacked``); ``--set FIELD=VALUE`` sets a config field as ``bench/throughput.py``'s
does.
``--ops`` (always on CUDA) then runs the same updates once more under torch's profiler and
prints the shares of the operators' own host time: the matrix products' own time (``mm``, ``addmm``,
``bmm``, ``baddbmm``), the optimizers' (their ``step`` and ``zero_grad``, everything under
them included) and the rest, then the operators with the most host time; on CUDA also those
with the most device time: when the device's total is far below the wall time, the updates
wait on the host (kernel launches, Python). Freed memory is kept for reuse, as in a CPU
training run (:func:`pbrl.utils.keep_freed_memory`).
Findings are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

import torch
from throughput import add_set_option, parsed_sets, synthetic_dataset, time_agent

from pbrl.prefs import label_dataset
from pbrl.utils import keep_freed_memory

PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("agent")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--stack", type=int, default=1, help="K seeds stacked (fit_stacked)")
    ap.add_argument("--ops", action="store_true", help="torch's profiler too (always on CUDA)")
    ap.add_argument("--sort", default="tottime", choices=["tottime", "cumtime"])
    add_set_option(ap)
    args = ap.parse_args(argv)
    sets = parsed_sets(ap, args.set)
    torch.set_num_threads(1)
    if args.device == "cpu":
        keep_freed_memory()
    ds = synthetic_dataset()
    prefs = label_dataset(ds, "oracle", 2500, 64, 0)
    run = (args.agent, args.preset, ds, prefs, args.steps, args.device, args.stack, sets)
    time_agent(*run)  # warm-up
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    rate = time_agent(*run)
    prof.disable()
    print(f"{args.agent}: {rate:.1f} seed-updates/s under cProfile, {args.stack} seed(s) on "
          f"{args.device} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)  # fmt: skip
    pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)
    cuda = args.device.startswith("cuda")
    if cuda or args.ops:
        acts = [torch.profiler.ProfilerActivity.CPU]
        if cuda:
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        t0 = time.perf_counter()
        with torch.profiler.profile(activities=acts) as tprof:
            rate = time_agent(*run)
        wall = time.perf_counter() - t0
        table = tprof.key_averages()
        host_us = sum(e.self_cpu_time_total for e in table)
        products = sum(e.self_cpu_time_total for e in table if e.key in PRODUCTS)
        optim = sum(
            e.cpu_time_total
            for e in table
            if e.key.startswith(("Optimizer.step#", "Optimizer.zero_grad#"))
        )
        print(f"torch profiler: {rate:.1f} seed-updates/s, wall {wall:.2f} s, operators' own "
              f"host time {host_us / 1e6:.2f} s: matrix products {100 * products / host_us:.0f}%, "
              f"optimizers {100 * optim / host_us:.0f}%, the rest "
              f"{100 * (host_us - products - optim) / host_us:.0f}% (the Python between "
              "operators and the profiler's own cost are in the wall time only)")  # fmt: skip
        if cuda:
            device_us = sum(e.self_device_time_total for e in table)
            print(f"device busy {device_us / 1e6:.2f} s "
                  f"({100 * device_us / 1e6 / wall:.0f}% of the wall time)")  # fmt: skip
        print(table.table(sort_by="self_cpu_time_total", row_limit=args.top))
        if cuda:
            print(table.table(sort_by="self_device_time_total", row_limit=args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
