"""Does foreach or fused Adam make an IQL update faster on CPU? Two IQL learners, one per
optimizer kind.

    python bench/adam_foreach.py [--kind foreach|fused] [--rounds 4] [--updates 100]

Both learners are built from the same seed on one torch thread; the second one's three Adam
optimizers are rebuilt with ``foreach=True`` or ``fused=True`` (``--kind``), the first one's as
the per-parameter loop (PyTorch's CPU default; pbrl's IQL has used the fused kernel since
this measurement). They train in alternating blocks of ``--updates`` updates on random 256-transition
batches (MetaWorld's sizes: 39 observations, 4 actions), so machine load hits both alike;
the script prints each block's rate and the per-round ratio, then checks that one update
from the same state gives the same parameters with either optimizer. Figures are in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from pbrl.learn.iql import IQLConfig, IQLLearner
from pbrl.learn.kit import ActorLr

N, OBS, ACT = 100_000, 39, 4


def random_batches(seed: int = 0, size: int = 256) -> Callable[[], dict[str, torch.Tensor]]:
    """A source of random IQL batches: ``size`` rows drawn from ``N`` Gaussian transitions of
    MetaWorld's dimensions (also used by ``bench/compile_iql.py``)."""
    gen = torch.Generator()
    gen.manual_seed(seed)
    data = {
        "obs": torch.randn(N, OBS, generator=gen),
        "act": torch.rand(N, ACT, generator=gen) * 2 - 1,
        "next_obs": torch.randn(N, OBS, generator=gen),
        "done": torch.zeros(N),
        "reward": torch.randn(N, generator=gen),
    }

    def batch() -> dict[str, torch.Tensor]:
        idx = torch.randint(0, N, (size,), generator=gen)
        return {k: v[idx] for k, v in data.items()}

    return batch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=("foreach", "fused"), default="foreach")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--updates", type=int, default=100)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    batch = random_batches()

    def make(other: bool) -> IQLLearner:
        torch.manual_seed(0)
        learner = IQLLearner(OBS, ACT, IQLConfig(), max_steps=1_000_000, device="cpu")
        # IQLLearner builds fused Adams (pbrl.learn.kit.fused_adam); both sides are rebuilt
        kind = {args.kind: True} if other else {"foreach": False, "fused": False}
        for name in ("v_opt", "q_opt", "actor_opt"):
            group = getattr(learner, name).param_groups[0]
            opt = torch.optim.Adam(group["params"], lr=group["lr"], **kind)
            setattr(learner, name, opt)
        # the schedule follows the new actor optimizer
        learner.actor_lr = ActorLr(learner.actor_opt, learner.cfg.actor_lr, learner.max_steps, True)
        return learner

    learners = {False: make(False), True: make(True)}
    for learner in learners.values():
        for _ in range(20):
            learner.update(batch())
    rates: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.rounds):
        for kind, learner in learners.items():
            t0 = time.perf_counter()
            for _ in range(args.updates):
                learner.update(batch())
            rates[kind].append(args.updates / (time.perf_counter() - t0))
    print("per-parameter Adam, updates/s:", [round(x, 1) for x in rates[False]])
    print(f"{args.kind} Adam, updates/s:".ljust(30), [round(x, 1) for x in rates[True]])
    print(f"{args.kind} / per-parameter:".ljust(30),
          [round(b / a, 3) for a, b in zip(rates[False], rates[True], strict=True)])  # fmt: skip
    a, b = make(False), make(True)
    one = batch()
    torch.manual_seed(2)
    a.update(one)
    torch.manual_seed(2)
    b.update(one)
    with torch.no_grad():
        diff = max(
            float((p - q).abs().max())
            for p, q in zip(a.q.parameters(), b.q.parameters(), strict=True)
        )
    print(f"largest parameter difference after one update from the same state: {diff}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
