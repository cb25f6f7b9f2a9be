"""The expert critic saved beside a SAC-generated dataset: its file, its writer and its loader.

``pbrl.datasets.sb3_gen`` trains SAC and, when it builds a dataset, writes the expert
checkpoint's twin critic and actor to ``<dataset folder>/expert_critic.pt``
(:func:`save_expert_critic`). :func:`load_expert_value_fn` reads it back as an
:class:`ExpertValueFunction` (``V(s)``, ``Q(s, a)``), which is what the regret teacher scores
segments with. The file format is documented in ``docs/sb3-data.md``. torch, gymnasium and
stable-baselines3 are imported only when a critic is written or loaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.datasets.minari_io import data_folder
from pbrl.errors import DataError, PbrlError
from pbrl.utils import atomic_path, resolve_device

CRITIC_FILE = "expert_critic.pt"
CRITIC_FORMAT = "pbrl-sac-critic-v1"


def build_sac_policy(obs_space: Any, act_space: Any, net_arch: Sequence[int], device: str) -> Any:
    """An SB3 SAC policy network of the given architecture (weights loaded by the caller)."""
    from stable_baselines3.sac.policies import SACPolicy

    policy = SACPolicy(obs_space, act_space, lambda _: 3e-4, net_arch=list(net_arch))
    return policy.to(device).eval()


def save_expert_critic(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Write the critic payload of :func:`pbrl.datasets.sb3_gen.generate` atomically (torch,
    tensors + plain types)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _dataset_folder(dataset_id_or_path: str) -> Path:
    """A folder given as a path (existing or not), else the store's folder of a checked id."""
    p = Path(dataset_id_or_path).expanduser()
    if p.is_dir() or p.is_absolute() or str(dataset_id_or_path).startswith(("./", "../")):
        return p
    return data_folder(dataset_id_or_path).parent


class ExpertValueFunction:
    """V(s) and Q(s, a) from the generating SAC's twin critic and actor.

    ``Q(s, a) = mean(Q1, Q2)(s, a)`` with ``a`` in the env's action units (scaled to SAC's
    [-1, 1] internally); ``V(s) = mean over n_actions actions a' ~ pi(.|s) of Q(s, a')``
    (CPL's estimator: a hard value without the entropy term). Calling the object gives V.
    ``reward_scale``: the factor SAC's rewards were multiplied by; V and Q are in those units.
    """

    def __init__(self, payload: dict[str, Any], *, n_actions: int, device: str, seed: int) -> None:
        import gymnasium as gym
        import torch

        if payload.get("format") != CRITIC_FORMAT:
            raise DataError(
                f"critic file: format {payload.get('format')!r}, expected {CRITIC_FORMAT}"
            )
        if n_actions <= 0:
            raise PbrlError(f"n_actions must be positive, got {n_actions}")
        self.device = resolve_device(device)
        self.gamma = float(payload["gamma"])
        # The critic learned from the env reward times this (CPL's MetaWorld SAC: 0.1), so its
        # values are in those units; files written before the field existed used 1.
        self.reward_scale = float(payload.get("reward_scale", 1.0))
        self.n_actions = int(n_actions)
        self.obs_dim = int(payload["obs_dim"])
        self.act_dim = int(payload["act_dim"])
        self.step = int(payload["step"])
        self.reduction = "mean"
        self.low = np.asarray(payload["action_low"], dtype=np.float64)
        self.high = np.asarray(payload["action_high"], dtype=np.float64)
        obs_space = gym.spaces.Box(-np.inf, np.inf, (self.obs_dim,), np.float32)
        act_space = gym.spaces.Box(self.low.astype(np.float32), self.high.astype(np.float32))
        policy = build_sac_policy(obs_space, act_space, payload["net_arch"], self.device)
        policy.actor.load_state_dict(payload["actor"])
        policy.critic.load_state_dict(payload["critic"])
        self.actor = policy.actor
        self.critic = policy.critic
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))

    def _obs(self, obs: np.ndarray) -> Any:
        import torch

        o = np.asarray(obs, dtype=np.float32)
        if o.ndim != 2 or o.shape[1] != self.obs_dim:
            raise DataError(
                f"observations of shape {o.shape}; the critic expects (N, {self.obs_dim})"
            )
        return torch.as_tensor(o, device=self.device)

    def _q(self, obs_t: Any, act_scaled_t: Any) -> Any:
        import torch

        qs = self.critic(obs_t, act_scaled_t)
        return torch.stack(qs, dim=0).mean(dim=0).squeeze(-1)

    def q(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """(N,) Q(s, a) for env-unit actions (N, act_dim)."""
        import torch

        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.act_dim:
            raise DataError(f"actions of shape {a.shape}; the critic expects (N, {self.act_dim})")
        scaled = 2.0 * (a - self.low) / (self.high - self.low) - 1.0
        with torch.no_grad():
            out = self._q(
                self._obs(obs), torch.as_tensor(scaled, dtype=torch.float32, device=self.device)
            )
        return out.cpu().numpy().astype(np.float64)

    def v(self, obs: np.ndarray, *, chunk: int = 4096) -> np.ndarray:
        """(N,) V(s) = mean over n_actions sampled policy actions of Q(s, a')."""
        import torch

        o = self._obs(obs)
        out = []
        k = self.n_actions
        with torch.no_grad():
            for s in range(0, o.shape[0], chunk):
                part = o[s : s + chunk]
                mean, log_std, _ = self.actor.get_action_dist_params(part)
                noise = torch.randn((k, *mean.shape), generator=self.generator, device=self.device)
                acts = torch.tanh(mean[None] + log_std.exp()[None] * noise)  # (k, n, A) in [-1, 1]
                rep = part[None].expand(k, *part.shape).reshape(-1, part.shape[1])
                q = self._q(rep, acts.reshape(-1, acts.shape[-1])).reshape(k, -1)
                out.append(q.mean(dim=0))
        if not out:
            return np.zeros(0)
        return torch.cat(out).cpu().numpy().astype(np.float64)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self.v(obs)


def has_expert_critic(dataset_id: str) -> bool:
    """Whether a critic file lies beside the dataset (an id in the store or a folder path)."""
    try:
        return (_dataset_folder(dataset_id) / CRITIC_FILE).is_file()
    except PbrlError:
        return False


def load_expert_value_fn(
    dataset_id: str, *, n_actions: int = 64, device: str = "cpu", seed: int = 0
) -> ExpertValueFunction:
    """The value function saved beside a generated dataset (id or folder path)."""
    import torch

    folder = _dataset_folder(dataset_id)
    p = folder / CRITIC_FILE
    if not p.exists():
        raise DataError(
            f"{p}: no expert critic beside dataset '{dataset_id}' (only SAC-generated "
            "MuJoCo/DMC datasets and MetaWorld rollouts have one)"
        )
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt files
        raise DataError(f"{p}: unreadable critic file ({e})") from e
    return ExpertValueFunction(payload, n_actions=n_actions, device=device, seed=seed)
