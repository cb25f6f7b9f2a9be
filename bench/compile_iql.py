"""Does ``torch.compile`` make an IQL update faster on CPU? Two IQL learners, one compiled.

    python bench/compile_iql.py [--rounds 3] [--updates 150]

Both learners are built from the same seed on one torch thread at IQL's default sizes
(256 x 256 networks, batch 256, MetaWorld's 39 observations and 4 actions); the second one's
value, twin-critic, target-critic and actor-mean forwards are wrapped in ``torch.compile``
(the backward passes follow through AOT autograd; the fused Adam steps stay eager). After 30
untimed updates each (the compilation), they train in alternating blocks of ``--updates``
updates on random batches, so machine load hits both alike. Figures are in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from pbrl.learn.iql import IQLConfig, IQLLearner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adam_foreach import ACT, OBS, random_batches  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--updates", type=int, default=150)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    batch = random_batches()

    def make(compiled: bool) -> IQLLearner:
        torch.manual_seed(0)
        learner = IQLLearner(OBS, ACT, IQLConfig(), max_steps=1_000_000, device="cpu")
        if compiled:
            for net in (learner.v, learner.q, learner.q_target, learner.actor.mean_net):
                net.forward = torch.compile(net.forward)  # type: ignore[method-assign]
        return learner

    learners = {"eager": make(False), "compiled": make(True)}
    t0 = time.perf_counter()
    for learner in learners.values():
        for _ in range(30):
            learner.update(batch())
    print(f"30 untimed updates each (compilation included): {time.perf_counter() - t0:.1f} s")
    for r in range(args.rounds):
        rates = {}
        for name, learner in learners.items():
            t0 = time.perf_counter()
            for _ in range(args.updates):
                learner.update(batch())
            rates[name] = args.updates / (time.perf_counter() - t0)
        print(f"round {r + 1}: eager {rates['eager']:.1f} updates/s, compiled "
              f"{rates['compiled']:.1f}, compiled / eager {rates['compiled'] / rates['eager']:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
