"""What mapping a stacked step with ``torch.func.vmap`` costs the host, against one call with a
leading member axis: the learners' transformer models and their loss arithmetic.

    python bench/stack_vmap.py [--k 8] [--batch 8] [--length 16] [--embed 16] [--steps 200]
        [--rounds 3] [--device cpu]

On a GPU, small networks leave a stacked step's time to the host, which issues its kernels
one by one (docs/performance.md, "The CUDA path"); at tiny sizes on a CPU the same host work
is what is timed. For each part, forward and backward of K members per call, timed in
alternation within each round:

- ``vmap``: a per-member function mapped over the members (``StackedModules.vmap`` of the
  module's own forward; ``vmap`` of the loss), as the stacked paths ran before the member
  forwards;
- ``member axis``: the module's member forward (``StackedModules.members``:
  :class:`pbrl.learn.nn.Layers`) or the loss called once on ``(K, ...)`` inputs, as they run
  now.

The parts: the sequence models of ``pt``, ``hprior``, ``dppo`` and ``oppo`` (their default
architectures at width ``--embed``, two heads, one layer; ``--batch`` segments of ``--length``
steps per member, dropout 0.1 in training mode), and the loss arithmetic of ``cpl`` (a
comparison batch's terms from given log-likelihoods) and ``ipl`` (the critic's terms from
given Q values) at ``--batch`` pairs of ``--length`` steps. Prints microseconds per call
(median over rounds) and the ratio, one torch thread. Findings are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from stack_host import per_step_ms
from torch.func import vmap

from pbrl.agents import cpl, dppo, hprior, ipl, oppo, pt
from pbrl.learn.api import AgentSpec
from pbrl.learn.stack import StackedModules

OBS, ACT, Z = 39, 4, 8


def first_tensor(out: Any) -> torch.Tensor:
    """A model's first output tensor (models return a tensor or a tuple)."""
    return out[0] if isinstance(out, tuple) else out


def model_parts(
    k: int, b: int, length: int, embed: int, dev: str
) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """Each sequence model's (vmap, member axis) forward-and-backward of K members."""
    g = torch.Generator(device=dev).manual_seed(0)
    obs = torch.randn(k, b, length, OBS, generator=g, device=dev)
    act = torch.rand(k, b, length, ACT, generator=g, device=dev) * 2 - 1
    mask = torch.ones(k, b, length, device=dev)
    z = torch.randn(k, b, length, Z, generator=g, device=dev)
    builders: dict[str, tuple[Callable[[], torch.nn.Module], tuple[torch.Tensor, ...]]] = {
        "pt reward model": (
            lambda: pt.PTRewardModel(OBS, ACT, embed, 1, 2, length, 0.1, pref_attn_dim=embed),
            (obs, act, mask),
        ),
        "hprior world model": (
            lambda: hprior.WorldModel(OBS, ACT, embed, 1, 2, length, 0.1),
            (obs, act, mask),
        ),
        "dppo predictor": (
            lambda: dppo.ScoreModel(OBS, ACT, embed, 1, 2, length, 0.1),
            (obs, act, mask),
        ),
        "oppo encoder": (
            lambda: oppo.HIMEncoder(OBS, ACT, Z, embed, 1, 2, length, 0.1),
            (obs, act, mask),
        ),
        "oppo policy": (
            lambda: oppo.ContextualPolicy(OBS, ACT, Z, embed, 1, 2, length, 0.1),
            (z, obs, act, mask),
        ),
    }
    parts = {}
    for name, (build, args) in builders.items():
        stack = StackedModules([build().to(dev) for _ in range(k)])
        stack.train(True)

        def mapped(stack: StackedModules = stack, args: tuple = args) -> None:
            out = stack.vmap(lambda p, *x: first_tensor(stack.call(p, *x)), *args)
            out.sum().backward()

        def member(stack: StackedModules = stack, args: tuple = args) -> None:
            first_tensor(stack.members(*args)).sum().backward()

        parts[name] = (mapped, member)
    return parts


def loss_parts(
    k: int, b: int, length: int, dev: str
) -> dict[str, tuple[Callable[[], Any], Callable[[], Any]]]:
    """CPL's and IPL's loss arithmetic: (vmap, member axis), forward and backward."""
    g = torch.Generator(device=dev).manual_seed(1)
    spec = AgentSpec(OBS, ACT, -np.ones(ACT), np.ones(ACT), dev)
    c = cpl.Agent(cpl.Config(hidden=(8, 8)), spec)
    ones = torch.ones(k, b, length, device=dev)
    batch = {
        "mask_a": ones,
        "mask_b": ones,
        "prefer_b": (torch.rand(k, b, generator=g, device=dev) < 0.5).float(),
    }
    lp_a = torch.randn(k, b, length, generator=g, device=dev, requires_grad=True)
    lp_b = torch.randn(k, b, length, generator=g, device=dev, requires_grad=True)
    logps = {"_a": (lp_a, lp_a), "_b": (lp_b, lp_b)}
    i = ipl.Agent(ipl.Config(hidden=(8, 8)), spec)
    n = 2 * b * length
    rows = {
        "discount": torch.full((k, n), 0.99, device=dev),
        "mask_a": ones,
        "mask_b": ones,
        "prefer_b": batch["prefer_b"],
        "w_c": torch.full((k, n), 1.0 / n, device=dev),
    }
    q = torch.randn(k, 2, n, generator=g, device=dev, requires_grad=True)
    next_v = torch.randn(k, n, generator=g, device=dev)
    return {
        "cpl loss terms": (
            lambda: vmap(c.losses)(batch, logps)["cpl_loss"].sum().backward(),
            lambda: c.losses(batch, logps)["cpl_loss"].sum().backward(),
        ),
        "ipl critic terms": (
            lambda: vmap(i.critic_terms)(q, next_v, rows)[0].sum().backward(),
            lambda: i.critic_terms(q, next_v, rows)[0].sum().backward(),
        ),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=16)
    ap.add_argument("--embed", type=int, default=16)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if min(args.k, args.batch, args.length, args.embed, args.steps, args.rounds) < 1:
        ap.error("--k, --batch, --length, --embed, --steps and --rounds must be >= 1")
    if args.embed % 2:
        ap.error("--embed must be even (two attention heads)")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dev = args.device
    parts = {
        **model_parts(args.k, args.batch, args.length, args.embed, dev),
        **loss_parts(args.k, args.batch, args.length, dev),
    }
    times: dict[str, list[list[float]]] = {name: [[], []] for name in parts}
    for fns in parts.values():  # warm-up: first calls, allocations
        for fn in fns:
            for _ in range(10):
                fn()
    for _ in range(args.rounds):
        for name, fns in parts.items():
            for j, fn in enumerate(fns):
                times[name][j].append(1e3 * per_step_ms(fn, args.steps, dev))
    print(f"K {args.k}, {args.batch} segments of {args.length} steps per member, width "
          f"{args.embed}, {dev}, microseconds per call (forward and backward), median of "
          f"{args.rounds} rounds of {args.steps}")  # fmt: skip
    print("| part | vmap | member axis | vmap / member axis |")
    print("|---|---|---|---|")
    for name, (mapped, member) in times.items():
        a, b = statistics.median(mapped), statistics.median(member)
        print(f"| {name} | {a:,.0f} | {b:,.0f} | {a / b:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
