"""Policy evaluation on a separately seeded environment.

Episodes run in waves of up to ``parallel`` envs stepped in lockstep: one batched
``agent.act`` call per step for every live env, which keeps small networks efficient on
a GPU. :func:`evaluate_many` evaluates several agents (the seeds of a stacked run) at once:
a wave holds ``parallel`` episodes of every agent, every agent acts on its own episodes'
batch, and the envs are stepped together, in this process or spread over worker processes
(:class:`pbrl.envs.pool.EnvPool`, ``--eval-workers``). Each agent's result is the one
:func:`evaluate` gives it alone. Evaluation seeds never overlap training data seeds:
episode ``i`` of an evaluation with seed ``s`` resets its env with ``s + EVAL_SEED_OFFSET +
i`` (``EVAL_SEED_OFFSET = 10_000``; generated datasets use seeds below that).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pbrl.envs import get_task
from pbrl.envs.pool import EnvPool

logger = logging.getLogger(__name__)

EVAL_SEED_OFFSET = 10_000


def evaluate(
    agent: Any,
    task_id: str,
    episodes: int,
    seed: int,
    horizon: int | None = None,
    *,
    parallel: int = 10,
    pool: EnvPool | None = None,
) -> dict[str, Any]:
    """Run ``episodes`` deterministic episodes of ``agent`` on task ``task_id``.

    Returns ``returns`` (list), ``successes`` (list of bool, or None when the env reports
    no ``info["success"]``; MetaWorld: success at ANY step), ``lengths``, ``return_mean``,
    ``return_std``, ``success_rate`` (or None) and ``score`` (``TaskSpec.score``). An
    episode ends on termination, truncation or after ``horizon`` (default the task's)
    steps; actions are clipped into the action space. ``pool`` steps the envs (default: in
    this process).

    History-conditioned policies (a Decision-Transformer-style decoder such as OPPO's)
    define ``begin_episodes(n)``: it is called before each wave of ``n`` fresh episodes,
    and their ``act`` then receives ``env_ids=`` (the wave positions of the rows of the
    batch) so each row can be matched to its own episode's history.
    """
    (res,) = evaluate_many(
        [agent], task_id, episodes, [seed], horizon, parallel=parallel, pool=pool
    )
    return res


def evaluate_many(
    agents: list[Any],
    task_id: str,
    episodes: int,
    seeds: list[int],
    horizon: int | None = None,
    *,
    parallel: int = 10,
    pool: EnvPool | None = None,
) -> list[dict[str, Any]]:
    """:func:`evaluate` of each agent with its seed, all at once: each wave holds up to
    ``parallel`` episodes of every agent, stepped together (by ``pool``, default in this
    process). Agent ``k``'s result equals ``evaluate(agents[k], ..., seeds[k])``: its
    episodes are seeded, batched and stepped as they are alone."""
    if len(agents) != len(seeds):
        raise ValueError(f"{len(agents)} agents but {len(seeds)} seeds")
    task = get_task(task_id)
    horizon = int(horizon or task.horizon)
    n_agents = len(agents)
    begins = [getattr(a, "begin_episodes", None) for a in agents]
    returns = np.zeros((n_agents, episodes), dtype=np.float64)
    lengths = np.zeros((n_agents, episodes), dtype=np.int64)
    success = np.zeros((n_agents, episodes), dtype=bool)
    saw_success = False
    envs = pool if pool is not None else EnvPool(0)
    try:
        done_eps = 0
        while done_eps < episodes:
            wave = list(range(done_eps, min(episodes, done_eps + max(1, parallel))))
            n = len(wave)
            slots = [k * n + j for k in range(n_agents) for j in range(n)]
            try:
                opened = envs.open(
                    [
                        (k * n + j, task_id, seeds[k] + EVAL_SEED_OFFSET + i)
                        for k in range(n_agents)
                        for j, i in enumerate(wave)
                    ]
                )
                low, high = opened[0][1], opened[0][2]
                obs = [o for o, _, _ in opened]  # by slot
                live = [list(range(n)) for _ in range(n_agents)]  # wave positions, per agent
                for begin in begins:
                    if callable(begin):
                        begin(n)
                t = 0
                while any(live) and t < horizon:
                    todo: list[tuple[int, np.ndarray]] = []
                    for k, agent in enumerate(agents):
                        if not live[k]:
                            continue
                        batch = np.stack([obs[k * n + j] for j in live[k]])
                        if callable(begins[k]):
                            raw = agent.act(batch, env_ids=list(live[k]))
                        else:
                            raw = agent.act(batch)
                        acts = np.asarray(raw, dtype=np.float32).reshape(len(live[k]), -1)
                        acts = np.clip(acts, low, high)
                        todo += [(k * n + j, acts[m]) for m, j in enumerate(live[k])]
                    stepped = envs.step(todo)
                    for (slot, _), (o, r, ended, succ) in zip(todo, stepped, strict=True):
                        k, j = divmod(slot, n)
                        ep = wave[j]
                        returns[k, ep] += r
                        lengths[k, ep] += 1
                        if succ is not None:
                            saw_success = True
                            success[k, ep] |= succ
                        obs[slot] = o
                        if ended:
                            live[k].remove(j)
                    t += 1
            finally:
                envs.close(slots)
            done_eps = wave[-1] + 1
    finally:
        if pool is None:
            envs.shutdown()
    return [
        _result(task, task_id, seed, returns[k], lengths[k], success[k] if saw_success else None)
        for k, seed in enumerate(seeds)
    ]


def _result(
    task: Any,
    task_id: str,
    seed: int,
    returns: np.ndarray,
    lengths: np.ndarray,
    succ: np.ndarray | None,
) -> dict[str, Any]:
    episodes = len(returns)
    return {
        "task": task_id,
        "episodes": episodes,
        "seed": seed,
        "returns": returns.tolist(),
        "lengths": lengths.tolist(),
        "successes": None if succ is None else succ.tolist(),
        "return_mean": float(returns.mean()) if episodes else float("nan"),
        "return_std": float(returns.std()) if episodes else float("nan"),
        "success_rate": None if succ is None else float(succ.mean()),
        "score": float(task.score(returns, succ)),
    }
