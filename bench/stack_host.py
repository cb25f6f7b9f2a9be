"""The host's share of one stacked step: drawing K members' minibatches, and the update.

    python bench/stack_host.py [--k 1,8,64] [--hidden 8,8] [--batch 8] [--steps 200]
        [--rounds 3] [--device cpu]

On a GPU, small networks leave a step's time to the host, which issues its kernels one by
one (docs/performance.md, "The CUDA path"); at tiny sizes on a CPU the same host work is
what is timed, so this script measures it where no GPU is. For each K it times, per
stacked step, in alternation within each round:

- ``per-member, randint per step``: each member draws its rows with one ``randint`` and
  indexes its own table, then the K minibatches are stacked per field (pbrl's stacked IQL
  before the shared table);
- ``per-member, blocks``: the same from each member's :meth:`TransitionTensors.minibatches`
  (rows drawn 32 minibatches per ``randint``), stacked per field (what the stacked paths
  whose minibatches are labelled segments still do);
- ``shared table``: :meth:`TransitionTensors.member_minibatches` of the members' one
  :meth:`TransitionTensors.stacked` table, a ``(K, B)`` index tensor from the members' draws
  and one gather per field (the stacked paths that sample transitions);
- ``stacked IQL update`` on those rows, and ``one IQL update`` of a single learner.

Each member has its own generator; the data are bench/throughput.py's synthetic dataset
(10,000 rows). Prints milliseconds per step (median over rounds), one torch thread.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from throughput import ACT, OBS, synthetic_dataset

from pbrl.learn.data import TransitionTensors
from pbrl.learn.iql import IQLConfig, IQLLearner
from pbrl.learn.stack import StackedIQL, member_batches


def per_step_ms(fn: Callable[[], object], steps: int, device: str) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1e3


def time_k(
    k: int, ds, cfg: IQLConfig, b: int, steps: int, rounds: int, dev: str
) -> list[list[float]]:
    """Milliseconds per step of each timed part (module docstring) for K members, per round."""
    gens = [torch.Generator(device=dev).manual_seed(s) for s in range(k)]
    own = [TransitionTensors.from_dataset(ds, dev, ds.rewards) for _ in range(k)]
    table = TransitionTensors.stacked([ds] * k, dev, [ds.rewards] * k)
    streams = [d.minibatches(b, g) for d, g in zip(own, gens, strict=True)]
    shared = table.member_minibatches(b, gens)
    learners = []
    for s in range(k):
        torch.manual_seed(s)
        learners.append(IQLLearner(OBS, ACT, cfg, max_steps=10**6, device=dev))
    stack = StackedIQL(learners)
    torch.manual_seed(k)
    single = IQLLearner(OBS, ACT, cfg, max_steps=10**6, device=dev)
    rows = next(shared)
    one = next(streams[0])

    def randint_rows() -> object:
        return member_batches(
            [
                d.rows(torch.randint(0, d.size, (b,), generator=g, device=dev))
                for d, g in zip(own, gens, strict=True)
            ]
        )

    fns = [
        randint_rows,
        lambda: member_batches([next(s) for s in streams]),
        lambda: next(shared),
        lambda: stack.update(rows),
        lambda: single.update(one),
    ]
    for fn in fns:  # untimed warm-up
        per_step_ms(fn, 5, dev)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            times[i].append(per_step_ms(fn, steps, dev))
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", default="1,8,64")
    ap.add_argument("--hidden", default="8,8")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    dev, b = args.device, args.batch
    ds = synthetic_dataset()
    cfg = IQLConfig(hidden=tuple(int(x) for x in args.hidden.split(",")))
    names = [
        "per-member, randint per step",
        "per-member, blocks",
        "shared table",
        "stacked IQL update",
        "one IQL update",
    ]
    print(f"hidden {cfg.hidden}, batch {b}, {args.steps} steps, device {dev}, 1 torch thread, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("| K | " + " | ".join(names) + " | per-member randint / shared |")
    print("|---" * (len(names) + 2) + "|")
    for k in [int(x) for x in args.k.split(",")]:
        times = time_k(k, ds, cfg, b, args.steps, args.rounds, dev)
        med = [float(np.median(t)) for t in times]
        ratio = float(np.median([a / c for a, c in zip(times[0], times[2], strict=True)]))
        print(f"| {k} | " + " | ".join(f"{m:.3f}" for m in med) + f" | {ratio:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
