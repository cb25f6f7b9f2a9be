"""Policy evaluation on a separately seeded environment.

Episodes run in waves of up to ``parallel`` envs stepped in lockstep: one batched
``agent.act`` call per step for every live env, which keeps small networks efficient on
a GPU. Evaluation seeds never overlap training data seeds: episode ``i`` of an
evaluation with seed ``s`` resets its env with ``s + EVAL_SEED_OFFSET + i``
(``EVAL_SEED_OFFSET = 10_000``; generated datasets use seeds below that).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from pbrl.envs import get_task

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
) -> dict[str, Any]:
    """Run ``episodes`` deterministic episodes of ``agent`` on task ``task_id``.

    Returns ``returns`` (list), ``successes`` (list of bool, or None when the env reports
    no ``info["success"]``; MetaWorld: success at ANY step), ``lengths``, ``return_mean``,
    ``return_std``, ``success_rate`` (or None) and ``score`` (``TaskSpec.score``). An
    episode ends on termination, truncation or after ``horizon`` (default the task's)
    steps; actions are clipped into the action space.

    History-conditioned policies (a Decision-Transformer-style decoder such as OPPO's)
    define ``begin_episodes(n)``: it is called before each wave of ``n`` fresh episodes,
    and their ``act`` then receives ``env_ids=`` (the wave positions of the rows of the
    batch) so each row can be matched to its own episode's history.
    """

    begin = getattr(agent, "begin_episodes", None)
    task = get_task(task_id)
    horizon = int(horizon or task.horizon)
    returns = np.zeros(episodes, dtype=np.float64)
    lengths = np.zeros(episodes, dtype=np.int64)
    success = np.zeros(episodes, dtype=bool)
    saw_success = False
    done_eps = 0
    while done_eps < episodes:
        wave = list(range(done_eps, min(episodes, done_eps + max(1, parallel))))
        envs = [task.make(seed=seed + EVAL_SEED_OFFSET + i) for i in wave]
        try:
            low = np.asarray(envs[0].action_space.low, dtype=np.float32)
            high = np.asarray(envs[0].action_space.high, dtype=np.float32)
            obs = [
                np.asarray(env.reset(seed=seed + EVAL_SEED_OFFSET + i)[0], dtype=np.float32)
                for env, i in zip(envs, wave, strict=True)
            ]
            live = list(range(len(wave)))
            if callable(begin):
                begin(len(wave))
            t = 0
            while live and t < horizon:
                batch = np.stack([obs[j] for j in live])
                raw = agent.act(batch, env_ids=list(live)) if callable(begin) else agent.act(batch)
                acts = np.asarray(raw, dtype=np.float32).reshape(len(live), -1)
                acts = np.clip(acts, low, high)
                still: list[int] = []
                for k, j in enumerate(live):
                    o, r, term, trunc, info = envs[j].step(acts[k])
                    ep = wave[j]
                    returns[ep] += float(r)
                    lengths[ep] += 1
                    if "success" in info:
                        saw_success = True
                        success[ep] |= bool(info["success"])
                    obs[j] = np.asarray(o, dtype=np.float32)
                    if not (term or trunc):
                        still.append(j)
                live = still
                t += 1
        finally:
            for env in envs:
                env.close()
        done_eps = wave[-1] + 1
    succ = success if saw_success else None
    score = float(task.score(returns, succ))
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
        "score": score,
    }
