"""PWR: preference-weighted regression, a minimal out-of-tree pbrl learner (an example plug-in).

Not a published method: it shows how little a new algorithm needs. Train it with
``pbrl train --agent examples.my_agent ...`` from the repository root (any importable
dotted path works, and so does a bare module name importable from the working folder);
``pbrl agents show examples.my_agent`` lists its options, ``pbrl agents check
examples.my_agent`` runs the learner contract's checks on it (tiny networks from
``TEST_OVERRIDES``), and the shared conformance test covers it with no other edit. It
imports only the public learner kit (:mod:`pbrl.learn`), never another learner.

Summary: a Markovian reward MLP r(s, a) is fitted to the preferences with the
Bradley-Terry loss on segment sums (both from the kit, :mod:`pbrl.learn.kit`), then a
deterministic tanh actor regresses every dataset action, weighted by how much better than
average the learned reward finds it.

Loss:

    phase 1:  L_r  = mean_i BCE( sum_t r(b_i) - sum_t r(a_i), y_i )
    phase 2:  L_pi = mean_j min(exp(beta (r(s_j, a_j) - mean r)), 100) * sum_d (mu_d(s_j) - a_{j,d})^2
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pbrl.learn.api import AgentSpec, FitContext
from pbrl.learn.data import TransitionTensors, relabel
from pbrl.learn.iql import awr_weights
from pbrl.learn.kit import bt_pair_losses, deterministic_logp, greedy_action, segment_sum
from pbrl.learn.nn import MLP, TanhDeterministicActor


@dataclass
class Config:
    """PWR options."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the reward net and the actor."""
    reward_fraction: float = 0.3
    """Fraction of the steps spent fitting the reward."""
    reward_batch: int = 64
    """Labelled pairs per reward update."""
    batch_size: int = 256
    """Transitions per actor update."""
    beta: float = 3.0
    """Inverse temperature of the weights exp(beta * (r - mean r))."""
    lr: float = 3e-4
    """Adam learning rate of both networks."""


PRESETS: dict[str, dict[str, Any]] = {"paper": {}, "quick": {"batch_size": 128}}

TEST_OVERRIDES: dict[str, Any] = {"hidden": (16, 16), "reward_batch": 4, "batch_size": 8}


class Agent:
    """Preference-weighted regression."""

    requires_true_reward = False
    requires_preferences = True

    def __init__(self, cfg: Config, spec: AgentSpec) -> None:
        self.cfg = cfg
        self.spec = spec
        self.device = spec.device
        self.reward_net = MLP(spec.obs_dim + spec.act_dim, 1, cfg.hidden).to(self.device)
        self.actor = TanhDeterministicActor(spec.obs_dim, spec.act_dim, cfg.hidden).to(self.device)

    def _r(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.reward_net(torch.cat([obs, act], -1)).squeeze(-1)

    @torch.no_grad()
    def reward(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        o = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)
        a = torch.as_tensor(np.asarray(act, np.float32), device=self.device)
        return self._r(o, a).cpu().numpy()

    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        cfg, p = self.cfg, ctx.prefs
        n_reward = min(int(cfg.reward_fraction * ctx.steps), ctx.steps - 1)
        opt = torch.optim.Adam(self.reward_net.parameters(), lr=cfg.lr)
        for step in range(1, n_reward + 1):
            g = ctx.generator
            idx = torch.randint(0, p.size, (cfg.reward_batch,), generator=g, device=g.device)
            b = p.index(idx.to(self.device))
            sa = segment_sum(self._r(b.obs_a, b.act_a), b.mask_a)
            sb = segment_sum(self._r(b.obs_b, b.act_b), b.mask_b)
            loss = bt_pair_losses(sa, sb, b.prefer_b, "softmax").mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % ctx.log_interval == 0:
                yield {"step": step, "reward_loss": float(loss.detach())}
        r = relabel(ctx.dataset, self.reward)
        data = TransitionTensors.from_dataset(ctx.dataset, ctx.device, r - r.mean())
        opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        batches = data.minibatches(cfg.batch_size, ctx.generator)
        for step in range(n_reward + 1, ctx.steps + 1):
            b = next(batches)
            w = awr_weights(b["reward"], cfg.beta)
            loss = (w * -deterministic_logp(self.actor(b["obs"]), b["act"])).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % ctx.log_interval == 0 or step == ctx.steps:
                yield {"step": step, "actor_loss": float(loss.detach())}

    def act(self, obs: np.ndarray) -> np.ndarray:
        a = greedy_action(self.actor, obs, self.device)
        return np.clip(a, self.spec.act_low, self.spec.act_high)

    def state_dict(self) -> dict[str, Any]:
        return {"reward": self.reward_net.state_dict(), "actor": self.actor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reward_net.load_state_dict(state["reward"])
        self.actor.load_state_dict(state["actor"])
