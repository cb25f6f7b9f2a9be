"""Operators issued per update, one seed against K stacked: what stacking saves a host-bound device.

    python bench/op_counts.py [--agents cpl,iql,...] [--preset quick] [--steps 20] [--stack 8]
        [--device cpu] [--set FIELD=VALUE ...] [--json out.json]

On a GPU, small networks leave an update's time to the host, which issues the update's
kernels one by one (docs/performance.md, "The CUDA path"). Time then goes with the number of
operators issued, and K seeds stacked in one process gain over K sequential runs about what
they save in operators. This script counts them, which needs no GPU and no quiet machine:
for every learner with a stacked path (``fit_stacked``), the ATen operators that do work
(leaves of torch's profiler tree, with the views and allocations that launch no kernel left
out) of one run and of K seeds stacked, each trained ``--steps`` and ``2 * --steps``
updates on bench/throughput.py's synthetic data. The difference of the two is the updates'
own count, without what a run does once (building networks and tensors, PT's relabelling,
DPPO's scoring). It prints, per learner, the operators per update of one run and per stacked
step of K seeds, and ``K * one / stacked``: the factor by which K stacked seeds issue fewer
operators than K sequential runs, the most stacking can gain where operators are what is
timed. A count is a count of the calls the host makes, not of the kernels a device runs
(one call may launch several, a fused optimizer step one per group of tensors), and it
does not weigh the calls: a stacked path whose arithmetic fills a device gains less.
``--set FIELD=VALUE`` sets a config field as bench/throughput.py's does. Figures are in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from throughput import add_set_option, build_runs, fit_runs, parsed_sets, synthetic_dataset

from pbrl.learn.api import list_agents, load_agent_module
from pbrl.prefs import label_dataset

NO_KERNEL = frozenset(
    "aten::" + n
    for n in (
        "view",
        "_unsafe_view",
        "_reshape_alias",
        "as_strided",
        "t",
        "transpose",
        "permute",
        "expand",
        "unsqueeze",
        "squeeze",
        "slice",
        "select",
        "narrow",
        "alias",
        "detach",
        "detach_",
        "lift_fresh",
        "empty",
        "empty_like",
        "empty_strided",
        "resize_",
        "set_",
        "resolve_conj",
        "resolve_neg",
        "result_type",
        "view_as",
        "unfold",
        "diagonal",
        "movedim",
        "mT",
        "split",
        "unbind",
        "chunk",
        "numpy_T",
        "is_nonzero",
        # composites that call kernels through other operators, or none when nothing moves
        "reshape",
        "flatten",
        "contiguous",
        "expand_as",
        "to",
    )
)
"""ATen operators that launch no kernel of their own: metadata changes and allocations, and
composites whose work (if any) is an operator they call."""


def count_ops(fn: Callable[[], Any]) -> int:
    """The ATen operators that do work in a call of ``fn``: in the profiler's tree of calls,
    those outside :data:`NO_KERNEL` with no such operator under them (a composite such as
    ``linear`` counts as the product it calls)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    counted = 0
    for ev in prof.events():  # each tree of calls from its root
        if ev.cpu_parent is None:
            counted += _count(ev)[1]
    return counted


def _count(ev: Any) -> tuple[bool, int]:
    """(whether ``ev`` or an operator under it does work, the working operators counted in
    its tree): an operator counts when it does work and nothing under it does."""
    below = [_count(c) for c in ev.cpu_children]
    n = sum(c[1] for c in below)
    if any(c[0] for c in below):
        return True, n
    own = ev.name.startswith("aten::") and ev.name not in NO_KERNEL
    return own, n + int(own)


def per_update(name: str, k: int, steps: int, args: argparse.Namespace, data: tuple) -> float:
    """Operators per update (per stacked step when ``k`` > 1): the counts of a fit of
    ``2 * steps`` and of ``steps`` updates, their difference over ``steps``."""
    counts = []
    for n in (steps, 2 * steps):
        mod, agents, ctxs = build_runs(name, args.preset, *data, n, args.device, k, args.sets)
        counts.append(count_ops(lambda: fit_runs(mod, agents, ctxs)))  # noqa: B023
    return (counts[1] - counts[0]) / steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", default="", help="comma-separated (default: every stackable)")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--stack", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default="")
    add_set_option(ap)
    args = ap.parse_args(argv)
    if args.steps < 1 or args.stack < 2:
        ap.error("--steps must be >= 1 and --stack >= 2")
    args.sets = parsed_sets(ap, args.set)
    known = list_agents()
    names = [a for a in args.agents.split(",") if a]
    unknown = [a for a in names if a not in known]
    if unknown:
        ap.error(f"--agents: unknown learner {unknown[0]!r}")
    names = [a for a in names or known if hasattr(load_agent_module(a), "fit_stacked")]
    if not names:
        ap.error("--agents: none of these learners has a stacked path")
    torch.set_num_threads(1)
    ds = synthetic_dataset()
    data = (ds, label_dataset(ds, "oracle", 2500, 64, 0))
    k = args.stack
    rows = {}
    for n in names:
        one = per_update(n, 1, args.steps, args, data)
        stacked = per_update(n, k, args.steps, args, data)
        rows[n] = {"one": one, "stacked": stacked, "saving": k * one / stacked}
        print(f"{n}: {one:.0f} / {stacked:.0f}", file=sys.stderr)
    sets = "".join(f", {kv}" for kv in args.set)
    print(f"\noperators per update, preset {args.preset}{sets}, device {args.device}, "
          f"{args.steps} and {2 * args.steps} updates, {k} stacked")  # fmt: skip
    print(f"| learner | one run, per update | {k} stacked, per step | per seed-update, stacked "
          f"| {k} sequential / {k} stacked |")  # fmt: skip
    print("|---|---|---|---|---|")
    for n, r in rows.items():
        print(f"| {n} | {r['one']:.0f} | {r['stacked']:.0f} | {r['stacked'] / k:.1f} "
              f"| {r['saving']:.2f} |")  # fmt: skip
    if args.json:
        out = {
            "machine": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "preset": args.preset,
            "steps": args.steps,
            "stack": k,
            "device": args.device,
            "set": args.sets,
            "operators_per_update": rows,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
