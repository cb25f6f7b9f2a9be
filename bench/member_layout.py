"""Stacked seeds' MLP member forward, features first against rows first, in one process.

    python bench/member_layout.py [--agents iql,bc] [--preset quick] [--steps 200]
        [--stack 8] [--rounds 4] [--device cpu]

``pbrl.learn.nn.MLP.forward_members`` (without LayerNorm) runs its activations features
first, ``(K, features, rows)``, each layer ``W @ h + b``: autograd then gives every stacked
weight its gradient in the weight's own layout. Before, it ran rows first, ``h @ W^T + b``
(:func:`pbrl.learn.nn.linear_members`), and every weight's gradient came out transposed and
was copied into the weight's layout before the optimizer step. This script times K stacked
seeds of each learner (``fit_stacked``, bench/throughput.py's data and ``time_agent``) with
the committed member forward and with the rows-first one, which it puts back for its own
runs, in alternation, the order swapped every round, one torch thread. It prints each
form's seed-updates per second per round and the per-round ratio features first / rows
first. Findings: docs/performance.md, "Host time per update".
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from throughput import synthetic_dataset, time_agent

from pbrl.learn.nn import MLP, linear_members
from pbrl.prefs import label_dataset
from pbrl.utils import keep_freed_memory


def rows_first(mlp: MLP, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The member forward before features first: ``(K, rows, features)`` activations."""
    h = x.reshape(x.shape[0], -1, x.shape[-1])
    for i, layer in enumerate(mlp.net):
        if isinstance(layer, torch.nn.Linear):
            h = linear_members(h, params[f"net.{i}.weight"], params[f"net.{i}.bias"])
        else:
            h = layer(h)
    return h.reshape(*x.shape[:-1], h.shape[-1])


@contextmanager
def member_forward(form: str) -> Iterator[None]:
    """Inside: every MLP's member forward is ``form`` (``features`` as committed, ``rows``)."""
    committed = MLP.forward_members
    if form == "rows":
        MLP.forward_members = rows_first  # type: ignore[method-assign]
    try:
        yield
    finally:
        MLP.forward_members = committed  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", default="iql,bc")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--stack", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.stack < 2 or args.rounds < 1:
        ap.error("--steps and --rounds must be >= 1 and --stack >= 2")
    torch.set_num_threads(1)
    if args.device == "cpu":
        keep_freed_memory()
    ds = synthetic_dataset()
    prefs = label_dataset(ds, "oracle", 2500, 64, 0)
    agents = [a for a in args.agents.split(",") if a]
    forms = ("features", "rows")
    for a in agents:  # the process's one-time costs, both forms
        for form in forms:
            with member_forward(form):
                time_agent(a, args.preset, ds, prefs, 5, args.device, args.stack)
    rates = {(a, f): [] for a in agents for f in forms}
    for r in range(args.rounds):
        order = forms if r % 2 == 0 else forms[::-1]
        for a in agents:
            for form in order:
                with member_forward(form):
                    rate = time_agent(
                        a, args.preset, ds, prefs, args.steps, args.device, args.stack
                    )
                rates[(a, form)].append(rate)
        print(f"round {r + 1}: " + ", ".join(
            f"{a} {f} {rates[(a, f)][-1]:.1f}" for a in agents for f in forms), file=sys.stderr)  # fmt: skip
    load = os.getloadavg()
    print(f"\n{args.stack} stacked seeds, preset {args.preset}, {args.steps} updates per run, "
          f"{args.rounds} rounds, device {args.device}, torch {torch.__version__}; load "
          f"average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")  # fmt: skip
    print("| learner | features first, seed-updates/s | rows first | features / rows, per round "
          "| median |")  # fmt: skip
    print("|---|---|---|---|---|")
    for a in agents:
        f, w = rates[(a, "features")], rates[(a, "rows")]
        ratios = [x / y for x, y in zip(f, w, strict=True)]
        print(f"| {a} | {', '.join(f'{x:.1f}' for x in f)} | {', '.join(f'{x:.1f}' for x in w)} "
              f"| {', '.join(f'{x:.2f}' for x in ratios)} | {statistics.median(ratios):.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
