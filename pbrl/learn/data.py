"""Dataset-to-tensor loading shared by the learners.

- :class:`TransitionTensors`: every (s, a, r, s', done) row of an OfflineDataset on one
  device, with uniform minibatches drawn from an explicit torch Generator
  (:meth:`TransitionTensors.minibatches`); :meth:`TransitionTensors.stacked` is the one
  table K stacked seeds share (their rows gathered in one indexing per field).
- :func:`segments_tensor`: (M, L, D) windows of any per-step array for segment refs.
- :func:`relabel`: a learned reward over every transition, in batches.
- :func:`dataset_windows`: random windows of consecutive rows, cut at episode ends.

Dataset actions are clipped to +-(1 - 1e-5) when loaded, as CPL, IPL and PT's IQL do
(Gaussian log-densities of actions on the box edge stay finite under the tanh mean).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pbrl.errors import DataError
from pbrl.learn.kit import uniform_minibatches

ACTION_CLIP = 1.0 - 1e-5


@dataclass(frozen=True)
class TransitionTensors:
    """All transitions of a dataset as tensors on ``device``.

    ``reward`` is None when no reward was supplied (a preference learner before it
    relabels). ``done`` is 1.0 on terminal steps only: timeouts are not terminal. A table
    :meth:`stacked` for K members holds each member's ``reward`` as a row of a ``(K, N)``
    tensor where the members' rewards differ.
    """

    obs: torch.Tensor  # (N, obs_dim)
    act: torch.Tensor  # (N, act_dim)
    reward: torch.Tensor | None  # (N,), or (K, N): one row per stacked member
    next_obs: torch.Tensor  # (N, obs_dim)
    done: torch.Tensor  # (N,) float

    @classmethod
    def from_dataset(
        cls,
        ds,
        device: str = "cpu",
        rewards: np.ndarray | None = None,
        *,
        clip_actions: float | None = ACTION_CLIP,
    ) -> TransitionTensors:
        """Tensors for ``ds``; ``rewards`` (N,) is whichever reward the learner trains on.

        The dataset's own ``rewards`` field is never read here: a caller that wants the
        ground truth passes ``ds.rewards`` explicitly (after scaling).
        """
        n = ds.num_steps
        if rewards is not None:
            rewards = np.asarray(rewards, dtype=np.float32).reshape(-1)
            if rewards.shape[0] != n:
                raise DataError(f"{ds.id}: {rewards.shape[0]} rewards given for {n} transitions")
        act = np.asarray(ds.actions, dtype=np.float32)
        if clip_actions is not None:
            act = np.clip(act, -clip_actions, clip_actions)

        def t(x: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=device)

        return cls(
            obs=t(ds.observations),
            act=t(act),
            reward=None if rewards is None else t(rewards),
            next_obs=t(ds.next_observations),
            done=t(np.asarray(ds.terminals, dtype=np.float32)),
        )

    @property
    def size(self) -> int:
        return int(self.obs.shape[0])

    def with_reward(self, rewards: np.ndarray | torch.Tensor) -> TransitionTensors:
        """A copy holding a new reward column (e.g. after relabelling)."""
        r = torch.as_tensor(rewards, dtype=torch.float32, device=self.obs.device).reshape(-1)
        if r.shape[0] != self.size:
            raise DataError(f"relabelled rewards: {r.shape[0]} values for {self.size} rows")
        return TransitionTensors(self.obs, self.act, r, self.next_obs, self.done)

    def rows(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows ``idx`` as a minibatch: obs, act, [reward], next_obs, done. ``idx`` may be
        ``(B,)`` or, for K stacked members, ``(K, B)`` (each member's own rows), giving
        ``(K, B, ...)`` fields; a ``(K, N)`` reward is read from each member's own row."""
        out = {
            "obs": self.obs[idx],
            "act": self.act[idx],
            "next_obs": self.next_obs[idx],
            "done": self.done[idx],
        }
        if self.reward is not None:
            out["reward"] = (
                self.reward.gather(1, idx) if self.reward.dim() == 2 else self.reward[idx]
            )
        return out

    def minibatches(
        self, batch_size: int, generator: torch.Generator
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Endless uniform minibatches (with replacement) of rows, drawn with ``generator``
        (:func:`pbrl.learn.kit.uniform_minibatches`)."""
        for idx in uniform_minibatches(self.size, batch_size, generator, self.obs.device):
            yield self.rows(idx)

    def member_minibatches(
        self, batch_size: int, generators: list[torch.Generator]
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Endless ``(K, B, ...)`` minibatches of a :meth:`stacked` table: member i's rows
        drawn with ``generators[i]`` exactly as its own :meth:`minibatches` would draw them,
        all K gathered with one indexing per field."""
        draws = [uniform_minibatches(self.size, batch_size, g, self.obs.device) for g in generators]
        while True:
            yield self.rows(torch.stack([next(d) for d in draws]))

    @classmethod
    def stacked(
        cls, datasets: list, device: str, rewards: list[np.ndarray | None]
    ) -> TransitionTensors:
        """One table for K stacked members (``datasets[i]`` relabelled with ``rewards[i]``,
        as :meth:`from_dataset` takes them): the members' transitions must be the same rows
        and are held once (a dataset whose arrays are member 0's is not even copied); the
        rewards form a ``(K, N)`` tensor, or one ``(N,)`` where all are equal. :meth:`rows`
        then gathers every member's minibatch with one indexing per field."""
        if len(datasets) != len(rewards) or not datasets:
            raise DataError("stacked seeds: one dataset and one reward per member")
        first = cls.from_dataset(datasets[0], device, rewards[0])
        members = [first]
        for i, (ds, r) in enumerate(zip(datasets[1:], rewards[1:], strict=True), 1):
            if shares_arrays(ds, datasets[0], ("next_observations", "terminals")):
                reward = None if r is None else first.with_reward(r).reward
                members.append(cls(first.obs, first.act, reward, first.next_obs, first.done))
                continue
            m = cls.from_dataset(ds, device, r)
            for name in ("obs", "act", "next_obs", "done"):
                x, y = getattr(first, name), getattr(m, name)
                if x.shape != y.shape or not torch.equal(x, y):
                    raise DataError(
                        f"stacked seeds: member {i}'s transitions differ from member 0's "
                        f"({name}); run these seeds without --stack-seeds"
                    )
            members.append(m)
        rs = [m.reward for m in members]
        if any(r is None for r in rs) != all(r is None for r in rs):
            raise DataError("stacked seeds: some members have a reward and some do not")
        reward = None
        if rs[0] is not None:
            same = all(r is rs[0] or torch.equal(r, rs[0]) for r in rs[1:])
            reward = rs[0] if same else torch.stack(rs)
        return cls(first.obs, first.act, reward, first.next_obs, first.done)


def shares_arrays(ds: Any, other: Any, extra: tuple[str, ...] = ()) -> bool:
    """Whether dataset ``ds`` holds ``other``'s very arrays (not copies) of observations,
    actions, episode starts and lengths, and of the ``extra`` fields: the same rows, which
    stacked members then read once."""
    fields = ("observations", "actions", "starts", "lengths", *extra)
    return all(getattr(ds, f) is getattr(other, f) for f in fields)


def segments_tensor(
    ds, refs: np.ndarray, device: str = "cpu", key: str = "observations"
) -> torch.Tensor:
    """(M, L, D) windows of the per-step array ``ds.<key>`` (observations, actions, ...).

    ``rewards`` is refused: ground truth does not reach learners through this path.
    """
    if key == "rewards":
        raise DataError("segments_tensor: rewards are not served to learners")
    arr = getattr(ds, key, None)
    if arr is None:
        raise DataError(f"{ds.id}: dataset has no per-step array '{key}'")
    rows, mask = ds.segment_index(np.asarray(refs).reshape(-1, 3))
    if not mask.all():
        raise DataError(f"{ds.id}: segments of different lengths cannot be stacked")
    out = np.asarray(arr)[rows].astype(np.float32)
    return torch.as_tensor(out, device=device)


def relabel(
    ds, reward_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], batch_size: int = 4096
) -> np.ndarray:
    """(N,) float32 rewards ``reward_fn(obs, act)`` over every transition, in batches."""
    n = ds.num_steps
    out = np.empty(n, dtype=np.float32)
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        r = np.asarray(reward_fn(ds.observations[s:e], ds.actions[s:e]), dtype=np.float32)
        out[s:e] = r.reshape(-1)
    return out


def dataset_windows(
    ds, length: int, batch: int, rng: np.random.Generator
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
