"""Does ``torch.compile`` make an IQL update faster? Two IQL learners, one compiled.

    python bench/compile_iql.py [--rounds 3] [--updates 150] [--device cpu] [--stack K]

Both learners are built from the same seed at IQL's default sizes (256 x 256 networks,
batch 256, MetaWorld's 39 observations and 4 actions), one torch thread on a CPU; the second
one's value, twin-critic, target-critic and actor-mean forwards are wrapped in
``torch.compile`` (the backward passes follow through AOT autograd; the fused Adam steps stay
eager). ``--stack K`` (K > 1) makes each of the two K stacked seeds
(:class:`pbrl.learn.stack.StackedIQL`), the compiled one with its member-batched forwards
compiled. After 30 untimed updates each (the compilation), they train in alternating blocks
of ``--updates`` updates on random batches, so machine load hits both alike (on CUDA each
block ends with a synchronisation). Figures are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pbrl.learn.iql import IQLConfig, IQLLearner
from pbrl.learn.stack import StackedIQL

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adam_foreach import ACT, OBS, N  # noqa: E402

# the stacked parts and the member-batched method each is called through
MEMBER_METHODS = {
    "v": "forward_members",
    "q": "forward_members",
    "q_target": "forward_members",
    "actor": "log_prob_members",
}


def build(compiled: bool, k: int, device: str) -> Any:
    """One IQL learner (``k`` 1) or ``k`` stacked, from seed 0, optionally compiled."""
    members = []
    for seed in range(k):
        torch.manual_seed(seed)
        members.append(IQLLearner(OBS, ACT, IQLConfig(), max_steps=1_000_000, device=device))
    if k == 1:
        learner = members[0]
        if compiled:
            for net in (learner.v, learner.q, learner.q_target, learner.actor.mean_net):
                net.forward = torch.compile(net.forward)  # type: ignore[method-assign]
        return learner
    stack = StackedIQL(members)
    if compiled:
        for part, method in MEMBER_METHODS.items():
            template = stack.parts[part].template
            setattr(template, method, torch.compile(getattr(template, method)))
    return stack


def batches(k: int, device: str, size: int = 256) -> Callable[[], dict[str, torch.Tensor]]:
    """Random batches drawn on ``device`` from one table of ``N`` Gaussian transitions of
    MetaWorld's dimensions: ``(B, ...)`` for one learner, ``(K, B, ...)`` stacked."""
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    data = {
        "obs": torch.randn(N, OBS, generator=gen, device=device),
        "act": torch.rand(N, ACT, generator=gen, device=device) * 2 - 1,
        "next_obs": torch.randn(N, OBS, generator=gen, device=device),
        "done": torch.zeros(N, device=device),
        "reward": torch.randn(N, generator=gen, device=device),
    }
    shape = (size,) if k == 1 else (k, size)

    def batch() -> dict[str, torch.Tensor]:
        idx = torch.randint(0, N, shape, generator=gen, device=device)
        return {f: v[idx] for f, v in data.items()}

    return batch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--updates", type=int, default=150)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--stack", type=int, default=1, help="K seeds stacked (StackedIQL)")
    args = ap.parse_args(argv)
    if args.stack < 1:
        print("compile_iql.py: --stack must be at least 1", file=sys.stderr)
        return 2
    if args.device == "cpu":
        torch.set_num_threads(1)
    cuda = args.device.startswith("cuda")
    batch = batches(args.stack, args.device)
    learners = {"eager": build(False, args.stack, args.device)}
    learners["compiled"] = build(True, args.stack, args.device)
    t0 = time.perf_counter()
    for learner in learners.values():
        for _ in range(30):
            learner.update(batch())
    if cuda:
        torch.cuda.synchronize()
    print(f"30 untimed updates each (compilation included): {time.perf_counter() - t0:.1f} s")
    unit = "updates/s" if args.stack == 1 else f"seed-updates/s ({args.stack} stacked)"
    for r in range(args.rounds):
        rates = {}
        for name, learner in learners.items():
            t0 = time.perf_counter()
            for _ in range(args.updates):
                learner.update(batch())
            if cuda:
                torch.cuda.synchronize()
            rates[name] = args.stack * args.updates / (time.perf_counter() - t0)
        print(f"round {r + 1}: eager {rates['eager']:.1f} {unit}, compiled "
              f"{rates['compiled']:.1f}, compiled / eager {rates['compiled'] / rates['eager']:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
