"""Helpers shared by the reward-learning agents of docs/agents-advanced.md (regret, hprior, pt).

Not a learner (the leading underscore keeps it out of the registry). It holds only glue
that the three agents would otherwise repeat: epoch-style minibatch indices over the
labelled pairs, the phase split of a run's step budget, and the "relabel then IQL"
phase on the shared IQL core (:mod:`pbrl.iql`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from pbrl.data import TransitionTensors
from pbrl.errors import PbrlError
from pbrl.iql import IQLLearner, reward_normalize

REWARD_INPUTS = ("obs_act", "obs")
"""What a learned reward model reads: ``obs_act`` = r(s, a), as the official reward learners
do; ``obs`` = r(s), the action input held at zero (same network, so checkpoints keep their
shapes). Why the ``quick`` presets read states only: docs/agents.md, "The action shortcut"."""


def check_reward_input(mode: str) -> None:
    """Raise a clear error for an unknown ``--agent.reward_input``."""
    if mode not in REWARD_INPUTS:
        raise PbrlError(f"--agent.reward_input: {' | '.join(REWARD_INPUTS)}, got '{mode}'")


def reward_action(act: torch.Tensor, mode: str) -> torch.Tensor:
    """The action a reward model is fed under ``mode`` (zeros for state-only rewards)."""
    return act if mode == "obs_act" else torch.zeros_like(act)


def pair_minibatches(
    n: int, batch_size: int, generator: torch.Generator, device: str
) -> Iterator[torch.Tensor]:
    """Endless minibatch index tensors over ``n`` labelled pairs, one permutation per epoch.

    This is how the official reward learners (B-Pref, PT) walk their label sets: shuffle,
    cut into minibatches of ``batch_size`` (the last one shorter), repeat.
    """
    if n <= 0:
        raise PbrlError("no answered preference pairs to learn from")
    bs = max(1, min(int(batch_size), n))
    while True:
        perm = torch.randperm(n, generator=generator, device=generator.device).to(device)
        for s in range(0, n, bs):
            yield perm[s : s + bs]


def split_steps(total: int, fractions: tuple[float, ...]) -> list[int]:
    """Split ``total`` updates into phases: ``fractions`` for all phases but the last.

    Every phase but the last gets at least one update when ``total`` allows it; the last
    phase gets the remainder, so the counts always sum to ``total``.
    """
    counts: list[int] = []
    left = int(total)
    for f in fractions:
        c = min(left, max(1 if total > len(fractions) else 0, int(round(f * total))))
        counts.append(c)
        left -= c
    counts.append(left)
    return counts


def log_due(step: int, total: int, interval: int) -> bool:
    """The agent API's rule: yield when ``step % interval == 0`` and after the last update."""
    return step == total or (interval > 0 and step % interval == 0)


def obs_stats(observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dataset mean and std (+ 1e-3, CORL's epsilon) of the observations, float32."""
    obs = np.asarray(observations, dtype=np.float64)
    return obs.mean(0).astype(np.float32), (obs.std(0) + 1e-3).astype(np.float32)


def iql_phase(
    iql: IQLLearner,
    ds: Any,
    rewards: np.ndarray,
    steps: int,
    batch_size: int,
    ctx: Any,
    step0: int,
    reward_norm: str = "none",
    phase: float = 2.0,
) -> Iterator[dict[str, float]]:
    """Run ``steps`` IQL updates on ``ds`` relabelled with ``rewards``, yielding metrics.

    ``rewards`` is the learned reward of every transition (never the ground truth: the
    dataset handed to a preference learner has none). ``reward_norm`` is one of
    :data:`pbrl.iql.REWARD_NORMS`. Step numbers continue from ``step0``.
    """
    r = reward_normalize(rewards, ds.starts, ds.lengths, reward_norm, ds.task_id)
    data = TransitionTensors.from_dataset(ds, ctx.device, r)
    iql.set_obs_stats(ds.observations)
    total = step0 + steps
    for i in range(1, steps + 1):
        m = iql.update(data.sample(batch_size, ctx.generator))
        step = step0 + i
        if log_due(step, ctx.steps, ctx.log_interval) or step == total:
            yield {"step": step, "phase": phase, **m}


def batched_numpy(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    obs: np.ndarray,
    act: np.ndarray,
    device: str,
    batch_size: int = 8192,
) -> np.ndarray:
    """Evaluate a torch function of (obs, act) over numpy arrays in batches, no grad."""
    obs = np.asarray(obs, dtype=np.float32)
    act = np.asarray(act, dtype=np.float32)
    single = obs.ndim == 1
    if single:
        obs, act = obs[None], act[None]
    out = np.empty(obs.shape[0], dtype=np.float32)
    with torch.no_grad():
        for s in range(0, obs.shape[0], batch_size):
            o = torch.as_tensor(obs[s : s + batch_size], device=device)
            a = torch.as_tensor(act[s : s + batch_size], device=device)
            out[s : s + batch_size] = fn(o, a).float().cpu().numpy().reshape(-1)
    return out[0:1].reshape(()) if single else out


def dataset_windows(
    ds: Any, length: int, batch: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``batch`` windows of ``length`` rows starting at uniform rows, cut at episode ends.

    Returns (rows (batch, length) with padding pointing at the window's first row, mask).
    """
    ep_end = np.repeat(np.asarray(ds.starts) + np.asarray(ds.lengths), np.asarray(ds.lengths))
    first = rng.integers(0, ds.num_steps, batch)
    offs = np.arange(length)
    rows = first[:, None] + offs[None, :]
    mask = rows < ep_end[first][:, None]
    return np.where(mask, rows, first[:, None]), mask
