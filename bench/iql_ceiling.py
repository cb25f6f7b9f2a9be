"""What one core's matrix products allow an IQL update, against pbrl's IQL, in one run.

    python bench/iql_ceiling.py [--preset paper] [--steps 300] [--rounds 3] [--stack K]
        [--json out.json]

Issue 22 sets pbrl's CPU target as 2.5x d3rlpy's IQL update rate, "about 80% of what the
core's matrix products allow". This measures that allowance directly instead of through
d3rlpy: every matrix product of one IQL update at IQL's ``paper`` size (observations 39,
actions 4, 256 x 256 networks, batch 256, CORL's order: V of the next observations and the
target twin critic without gradients, then V, the twin critic and the Gaussian actor's mean
each forward and backward, weight gradients for every layer and input gradients for all but
the first) is run with ``torch.mm`` on preallocated, contiguous operands, nothing else: no
activations, no losses, no optimizer, no autograd. Its rate (products-only updates per
second) is the ceiling; pbrl's ``iql`` agent (its whole ``fit`` loop at the ``paper`` preset,
as ``bench/iql_d3rlpy.py`` times it) is timed in alternation with it, ``--rounds`` times, one
torch thread. The per-round ratio pbrl / ceiling is the figure the target is about.
``--preset quick`` uses the quick preset's batch of 128. ``--stack K`` also times K seeds
stacked (pbrl's ``fit_stacked``) against the same products for K members at once
(``torch.bmm`` over a leading member axis, as the stacked update's products are): the
stacked ceiling over one seed's pbrl rate bounds what stacking can gain over K sequential
runs on this core. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling bench scripts
OBS, ACT, HIDDEN, BATCH = 39, 4, 256, 256


def iql_products(
    obs: int = OBS, act: int = ACT, hidden: int = HIDDEN, batch: int = BATCH
) -> list[tuple[int, int, int]]:
    """The (M, K, N) of every matrix product of one IQL update (see the module docstring)."""
    v = [(obs, hidden), (hidden, hidden), (hidden, 1)]
    q = [(obs + act, hidden), (hidden, hidden), (hidden, 1)]
    actor = [(obs, hidden), (hidden, hidden), (hidden, act)]

    def forward(layers: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
        return [(batch, i, o) for i, o in layers]

    def backward(layers: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
        wgrad = [(i, batch, o) for i, o in layers]
        igrad = [(batch, o, i) for i, o in layers[1:]]
        return wgrad + igrad

    out = forward(v) + 2 * forward(q)  # V(s'), the target critics
    for net, n in ((v, 1), (q, 2), (actor, 1)):
        out += n * (forward(net) + backward(net))
    return out


def ceiling_rate(steps: int, products: list[tuple[int, int, int]], stack: int = 1) -> float:
    """Products-only seed-updates per second: every product of ``products`` per update, for
    ``stack`` members at once (``torch.bmm``; ``torch.mm`` for one)."""
    gen = torch.Generator().manual_seed(0)
    lead = (stack,) if stack > 1 else ()
    mul = torch.bmm if stack > 1 else torch.mm
    ops = [
        (
            torch.randn(*lead, m, k, generator=gen),
            torch.randn(*lead, k, n, generator=gen),
            torch.empty(*lead, m, n),
        )
        for m, k, n in products
    ]
    for a, b, c in ops:  # one untimed pass
        mul(a, b, out=c)
    t0 = time.perf_counter()
    for _ in range(steps):
        for a, b, c in ops:
            mul(a, b, out=c)
    return stack * steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="paper", choices=["paper", "quick"])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--stack", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    products = iql_products(batch=BATCH if args.preset == "paper" else 128)
    gflop = sum(2 * m * k * n for m, k, n in products) / 1e9
    import throughput as tp

    ds = tp.synthetic_dataset()
    from pbrl.prefs import label_dataset

    prefs = label_dataset(ds, "oracle", 2500, 64, 0)
    k = args.stack
    tp.time_agent("iql", args.preset, ds, prefs, 20, "cpu")  # the process's one-time costs
    rates: dict[str, list[float]] = {"pbrl": [], "ceiling": []}
    if k > 1:
        rates.update({f"pbrl {k} stacked": [], f"ceiling {k} stacked": []})
    for r in range(args.rounds):
        rates["pbrl"].append(tp.time_agent("iql", args.preset, ds, prefs, args.steps, "cpu"))
        rates["ceiling"].append(ceiling_rate(args.steps, products))
        if k > 1:
            rates[f"pbrl {k} stacked"].append(
                tp.time_agent("iql", args.preset, ds, prefs, args.steps, "cpu", k)
            )
            rates[f"ceiling {k} stacked"].append(ceiling_rate(args.steps, products, k))
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in rates.items()),
              file=sys.stderr)  # fmt: skip
    ratios = [a / b for a, b in zip(rates["pbrl"], rates["ceiling"], strict=True)]
    extra: dict[str, list[float]] = {}
    if k > 1:
        pairs = {
            f"pbrl {k} stacked / ceiling {k} stacked": (
                f"pbrl {k} stacked",
                f"ceiling {k} stacked",
            ),
            f"pbrl {k} stacked / pbrl (stacked over sequential)": (f"pbrl {k} stacked", "pbrl"),
            f"ceiling {k} stacked / pbrl (the most stacking can gain)": (
                f"ceiling {k} stacked",
                "pbrl",
            ),
        }
        for name, (x, y) in pairs.items():
            extra[name] = [a / b for a, b in zip(rates[x], rates[y], strict=True)]
    load = os.getloadavg()
    print(
        f"\nIQL {args.preset} size, {len(products)} matrix products, {gflop:.3f} GFLOP per update, "
        f"1 torch thread, {args.steps} updates per run, {args.rounds} rounds, torch "
        f"{torch.__version__}; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
    )
    print("| | updates/s per round | median | GFLOP/s (median) |")
    print("|---|---|---|---|")
    for k, v in rates.items():
        med = float(np.median(v))
        print(f"| {k} | {', '.join(f'{x:.1f}' for x in v)} | {med:.1f} | {med * gflop:.1f} |")
    print(
        f"| pbrl / ceiling | {', '.join(f'{x:.2f}' for x in ratios)} | {np.median(ratios):.2f} | |"
    )
    for name, v in extra.items():
        print(f"| {name} | {', '.join(f'{x:.2f}' for x in v)} | {np.median(v):.2f} | |")
    if args.json:
        out = {
            "machine": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "preset": args.preset,
            "stack": k,
            "steps": args.steps,
            "gflop_per_update": gflop,
            "load_average": load,
            "rates": rates,
            "ratio_pbrl_over_ceiling": ratios,
            "stacked_ratios": extra,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
