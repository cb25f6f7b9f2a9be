"""torch's dropout against pbrl's CPU dropout (``pbrl.learn.nn.Dropout``), side by side.

    python bench/dropout_cpu.py [--shapes 128x512,2048x512] [--p 0.25] [--steps 300]
        [--rounds 3]

Times, in turns within each round, one training-mode forward and backward of
``torch.nn.Dropout(p)`` and of pbrl's ``Dropout(p)`` (a ``torch.rand`` mask) on float32
activations of each shape, and a matrix product of the same activations with a square
weight of their width for scale; one torch thread, freed memory kept for reuse as in a CPU
training run (:func:`pbrl.utils.keep_freed_memory`). The default shapes are BC's ``quick``
batch of 128 rows and CPL's of 16 pairs of 64-step segments (2,048 rows), both at the
2 x 512 actor's width, where the dropout is 0.25. Prints microseconds per call (median over
the rounds) and the per-round ratios. Figures: docs/performance.md ("Dropout on a CPU").
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from pbrl.learn.nn import Dropout
from pbrl.utils import keep_freed_memory


def per_call_us(fn: Callable[[], object], steps: int) -> float:
    for _ in range(10):
        fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="128x512,2048x512")
    ap.add_argument("--p", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    keep_freed_memory()  # as a CPU training run does
    gen = torch.Generator().manual_seed(0)
    print(f"p {args.p}, {args.steps} calls per timing, {args.rounds} rounds, 1 torch thread, "
          f"torch {torch.__version__}, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    print("| shape | torch dropout, us | pbrl Dropout, us | torch / pbrl (rounds) | matmul, us |")
    print("|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        rows, width = (int(v) for v in shape.split("x"))
        x = torch.randn(rows, width, generator=gen, requires_grad=True)
        grad = torch.randn(rows, width, generator=gen)
        w = torch.randn(width, width, generator=gen)
        mods = [nn.Dropout(args.p).train(), Dropout(args.p).train()]
        fns: list[Callable[[], object]] = [
            *(lambda m=m, x=x, grad=grad: m(x).backward(grad, inputs=[x]) for m in mods),
            lambda x=x, w=w: torch.mm(x.detach(), w),
        ]
        times: list[list[float]] = [[] for _ in fns]
        for _ in range(args.rounds):
            for i, fn in enumerate(fns):
                times[i].append(per_call_us(fn, args.steps))
        med = [float(np.median(t)) for t in times]
        ratios = [a / b for a, b in zip(times[0], times[1], strict=True)]
        print(f"| {shape} | {med[0]:.0f} | {med[1]:.0f} | {np.median(ratios):.2f} ("
              + ", ".join(f"{r:.2f}" for r in ratios) + f") | {med[2]:.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
