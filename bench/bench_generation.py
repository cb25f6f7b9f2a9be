"""Generation throughput of scripted MetaWorld data against raw env stepping, in one run.

Measures, on the same task and machine:

1. raw: one process steps a registry-made env with the scripted expert (policy call and
   resets included, nothing stored) - the ceiling;
2. generator, 1 worker: :func:`pbrl.datasets.metaworld_gen.run_jobs` in-process (records
   observations, qpos/qvel, successes; per-episode task reset);
3. generator, N workers: the same jobs on a forkserver pool of N processes.

Each figure is the median of ``--repeats`` runs. Targets (issue 2, item 7): generator on
one worker >= 80% of raw; N workers near-linear. Results go into docs/metaworld-data.md.

Usage: python bench/bench_generation.py [--task button-press-topdown-v3] [--episodes 8]
       [--workers 2] [--repeats 3] [--kind expert]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def raw_rate(env_name: str, episodes: int, horizon: int) -> float:
    """Steps/s of plain expert stepping through the wrapped registry env (resets included)."""
    from pbrl.envs.metaworld import expert_action, expert_policy, make_metaworld_env

    env = make_metaworld_env(env_name, seed=0, horizon=horizon)
    policy = expert_policy(env_name)
    t0 = time.perf_counter()
    steps = 0
    for _ in range(episodes):
        obs, _ = env.reset()
        for _ in range(horizon):
            obs, _, term, trunc, _ = env.step(expert_action(policy, obs))
            steps += 1
            if term or trunc:
                break
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def gen_rate(env_name: str, kind: str, episodes: int, horizon: int, workers: int) -> float:
    """Steps/s of the generator (pool start-up included for workers > 1)."""
    from pbrl.datasets import metaworld_gen as g

    jobs = g.plan(env_name, kind, episodes, seed=0, horizon=horizon, other_pool=("reach-v3",))
    if workers == 1:
        g.run_episode(jobs[0])  # build this process's env outside the timing, as raw does
    t0 = time.perf_counter()
    eps = g.run_jobs(jobs, workers=workers)
    dt = time.perf_counter() - t0
    return sum(e.length for e in eps) / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="button-press-topdown-v3")
    ap.add_argument("--kind", default="expert")
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--horizon", type=int, default=500)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    def med(f, *args) -> tuple[float, list[float]]:
        xs = [f(*args) for _ in range(a.repeats)]
        return statistics.median(xs), xs

    raw, raw_all = med(raw_rate, a.task, a.episodes, a.horizon)
    one, one_all = med(gen_rate, a.task, a.kind, a.episodes, a.horizon, 1)
    # Give each worker as many episodes as the single-process runs had.
    many, many_all = med(gen_rate, a.task, a.kind, a.episodes * a.workers, a.horizon, a.workers)
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    print(f"load average at end: {os.getloadavg()}")
    print(
        f"task {a.task}, kind {a.kind}, {a.episodes} episodes x {a.horizon} steps, {a.repeats} repeats"
    )
    print(f"{'run':<28} {'steps/s median':>15}  all")
    print(f"{'raw env + expert':<28} {raw:15.0f}  {np.round(raw_all).tolist()}")
    print(f"{'generator, 1 worker':<28} {one:15.0f}  {np.round(one_all).tolist()}")
    print(f"{f'generator, {a.workers} workers':<28} {many:15.0f}  {np.round(many_all).tolist()}")
    print(f"generator 1 worker / raw: {one / raw:.2f}")
    print(f"generator {a.workers} workers / 1 worker: {many / one:.2f} (linear = {a.workers})")


if __name__ == "__main__":
    main()
