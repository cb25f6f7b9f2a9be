"""K stacked IQL seeds (pbrl/learn/stack.py) against the same K seeds run one after another.

    python bench/stack_seeds.py [--k 8] [--steps 100] [--rounds 3] [--hidden 256,256]
        [--batch 256] [--device cpu]

Both sides do the same work: K IQL learners (MetaWorld's dimensions, 39 observations and 4
actions; networks ``--hidden``; batch ``--batch``), each on its own minibatches drawn by its
own generator from the same 10,000 random transitions, ``--steps`` updates per learner. The
sequential side updates learner 1 ``--steps`` times, then learner 2, ...; the stacked side
makes ``--steps`` updates of all K at once. The two are timed in alternation, ``--rounds``
times, so a busy machine slows both alike within a round; the figure that survives a shared
machine is the per-round ratio of seed-updates per second. One torch thread on CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from pbrl.learn.iql import IQLConfig, IQLLearner
from pbrl.learn.stack import StackedIQL

OBS, ACT, N = 39, 4, 10_000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hidden", default="256,256")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    dev = args.device
    hidden = tuple(int(x) for x in args.hidden.split(","))
    cfg = IQLConfig(hidden=hidden)
    g = torch.Generator().manual_seed(0)
    data = {
        "obs": torch.randn(N, OBS, generator=g),
        "act": torch.rand(N, ACT, generator=g) * 2 - 1,
        "reward": torch.randn(N, generator=g),
        "next_obs": torch.randn(N, OBS, generator=g),
        "done": (torch.rand(N, generator=g) < 0.01).float(),
    }
    data = {k: v.to(dev) for k, v in data.items()}

    def members() -> list[IQLLearner]:
        out = []
        for s in range(args.k):
            torch.manual_seed(s)
            out.append(IQLLearner(OBS, ACT, cfg, max_steps=args.steps, device=dev))
        return out

    def sample(gen: torch.Generator) -> dict[str, torch.Tensor]:
        idx = torch.randint(0, N, (args.batch,), generator=gen).to(dev)
        return {k: v[idx] for k, v in data.items()}

    def sync() -> None:
        if dev.startswith("cuda"):
            torch.cuda.synchronize()

    rates: dict[str, list[float]] = {"sequential": [], "stacked": []}
    for r in range(args.rounds):
        singles = members()
        gens = [torch.Generator().manual_seed(100 + s) for s in range(args.k)]
        t0 = time.perf_counter()
        for m, gen in zip(singles, gens, strict=True):
            for _ in range(args.steps):
                m.update(sample(gen))
        sync()
        rates["sequential"].append(args.k * args.steps / (time.perf_counter() - t0))
        stacked = StackedIQL(members())
        gens = [torch.Generator().manual_seed(100 + s) for s in range(args.k)]
        t0 = time.perf_counter()
        for _ in range(args.steps):
            bs = [sample(gen) for gen in gens]
            stacked.update({k: torch.stack([b[k] for b in bs]) for k in bs[0]})
        sync()
        rates["stacked"].append(args.k * args.steps / (time.perf_counter() - t0))
        print(
            f"round {r + 1}: sequential {rates['sequential'][-1]:.1f}, stacked "
            f"{rates['stacked'][-1]:.1f} seed-updates/s",
            file=sys.stderr,
        )
    ratios = [a / b for a, b in zip(rates["stacked"], rates["sequential"], strict=True)]
    load = os.getloadavg()
    print(
        f"\nIQL, K = {args.k} seeds, hidden {hidden}, batch {args.batch}, {args.steps} updates "
        f"per seed, device {dev}, 1 torch thread, torch {torch.__version__}; load average "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
    )
    print("| | seed-updates/s per round | median |")
    print("|---|---|---|")
    for k, v in rates.items():
        print(f"| {k} | {', '.join(f'{x:.1f}' for x in v)} | {np.median(v):.1f} |")
    print(f"| stacked / sequential | {', '.join(f'{x:.2f}' for x in ratios)} | "
          f"{np.median(ratios):.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
