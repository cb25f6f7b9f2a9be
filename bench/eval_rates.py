"""Evaluation of stacked seeds: one seed after another against all together, in-process and
over env worker processes.

    python bench/eval_rates.py [--task metaworld/drawer-open-v3] [--k 8] [--episodes 4]
        [--horizon 200] [--workers 2] [--rounds 3] [--device cpu] [--json out.json]

``--k`` policies (``TanhDeterministicActor`` 256 x 256, each from its own seed, acting
through ``pbrl.learn.kit.greedy_action`` as the learners' ``act`` does) are evaluated for
``--episodes`` episodes of ``--horizon`` steps each, three ways, in alternation, ``--rounds``
times: ``sequential`` (``evaluate`` per seed, what a stacked run did before
``evaluate_many``), ``together`` (``evaluate_many`` in this process) and ``workers``
(``evaluate_many`` over ``--workers`` env processes). The rate is environment steps per
second over all seeds; each way's results are checked equal to the sequential ones. One
torch thread. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch

from pbrl.envs import get_task
from pbrl.envs.pool import EnvPool
from pbrl.learn.kit import greedy_action
from pbrl.learn.nn import TanhDeterministicActor
from pbrl.run.evaluate import evaluate, evaluate_many


class Policy:
    def __init__(self, seed: int, obs_dim: int, act_dim: int, device: str) -> None:
        torch.manual_seed(seed)
        self.actor = TanhDeterministicActor(obs_dim, act_dim, (256, 256)).to(device)
        self.device = device

    def act(self, obs: np.ndarray) -> np.ndarray:
        return greedy_action(self.actor, obs, self.device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="metaworld/drawer-open-v3")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    torch.set_num_threads(1)
    env = get_task(a.task).make(seed=0)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    agents = [Policy(s, obs_dim, act_dim, a.device) for s in range(a.k)]
    seeds = list(range(a.k))
    steps = a.k * a.episodes * a.horizon  # every episode runs the horizon (MetaWorld truncates)

    def sequential(pool: EnvPool | None) -> list:
        return [
            evaluate(x, a.task, a.episodes, s, a.horizon)
            for x, s in zip(agents, seeds, strict=True)
        ]

    def together(pool: EnvPool | None) -> list:
        return evaluate_many(agents, a.task, a.episodes, seeds, a.horizon, pool=pool)

    rates: dict[str, list[float]] = {"sequential": [], "together": [], "workers": []}
    with EnvPool(a.workers) as pool:
        ref = None
        for r in range(a.rounds):
            for way, fn, use in (
                ("sequential", sequential, None),
                ("together", together, None),
                ("workers", together, pool),
            ):
                t0 = time.perf_counter()
                res = fn(use)
                dt = time.perf_counter() - t0
                ref = ref if ref is not None else res
                assert res == ref, f"{way}: the results differ from the sequential ones"
                assert sum(sum(x["lengths"]) for x in res) == steps
                rates[way].append(steps / dt)
                print(f"round {r + 1} {way:10s} {steps / dt:8.1f} env steps/s ({dt:.1f} s)")
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"median: sequential {med['sequential']:.1f}, together {med['together']:.1f} "
        f"({med['together'] / med['sequential']:.2f}x), {a.workers} workers "
        f"{med['workers']:.1f} ({med['workers'] / med['sequential']:.2f}x) env steps/s"
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(
                {
                    "args": vars(a),
                    "rates": rates,
                    "median": med,
                    "machine": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(),
                    "load": os.getloadavg(),
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
