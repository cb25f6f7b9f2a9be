"""IQL on the true reward (oracle upper bound) or on a zero reward (the control every table needs).

Paper: Kostrikov, Nair, Levine, "Offline Reinforcement Learning with Implicit Q-Learning",
ICLR 2022 (arXiv 2110.06169); semantics of CORL's single-file IQL (corl-team/CORL).

Summary: IQL never queries actions outside the dataset. A value net V is fitted to an upper
expectile of the target critics, the twin critic Q is fitted to r + gamma V(s'), and the
policy is extracted by advantage-weighted regression on dataset actions. With
``reward=true`` it trains on the dataset's ground-truth reward times the benchmark's reward
scale (the task's ``TaskSpec.reward_scale``): the upper bound a preference learner can hope to approach. With
``reward=zero`` every reward is 0, so Q = V = 0 up to noise, the AWR weights are ~1 and the
policy is behaviour cloning of the whole dataset: the control that shows what preferences
bought. It is the same core (:mod:`pbrl.learn.iql`) that every reward-learning agent uses.

Loss (one step, u = min_k Qbar_k(s, a) - V(s), V before its update):

    L_V  = E[ |tau - 1(u < 0)| u^2 ]
    L_Q  = 1/2 sum_k E[ (Q_k(s, a) - r - gamma (1 - d) V(s'))^2 ]
    L_pi = E[ min(exp(beta u), 100) * (-log pi(a | s)) ]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pbrl.errors import PbrlError
from pbrl.learn.api import AgentSpec, FitContext
from pbrl.learn.data import TransitionTensors
from pbrl.learn.iql import QUICK_IQL, IQLConfig, IQLLearner, iql_config_from, reward_normalize
from pbrl.learn.stack import StackedIQL, stacked_metrics


@dataclass
class Config(IQLConfig):
    """IQL agent options (the IQL core's fields plus the reward source)."""

    reward: str = "true"
    """Reward to train on: 'true' (ground truth x reward scale; oracle upper bound) or 'zero'."""
    reward_norm: str = "none"
    """Normalisation of the true reward: none | corl | pt_true | pt_learned (pbrl.learn.iql)."""
    batch_size: int = 256
    """Transitions per update."""


PRESETS: dict[str, dict[str, Any]] = {
    # CORL's locomotion config (1M steps in the paper; pass --steps).
    "paper": {"expectile": 0.7, "beta": 3.0, "batch_size": 256, "hidden": (256, 256)},
    # PT's JAX IQL: post-update V, summed Q losses, log-std floor -5, no obs norm, PT reward norm.
    "pt": {
        "value_for_targets": "post",
        "critic_reduction": "sum",
        "log_std_min": -5.0,
        "obs_norm": False,
        "reward_norm": "pt_true",
    },
    # CPU scale: same networks and constants, smaller batches (docs/agents.md "Scale presets").
    "quick": {**QUICK_IQL, "batch_size": 128},
}

TEST_OVERRIDES: dict[str, Any] = {"hidden": (16, 16), "batch_size": 8}


class Agent:
    """IQL on the true or the zero reward."""

    requires_preferences = False

    def __init__(self, cfg: Config, spec: AgentSpec) -> None:
        if cfg.reward not in ("true", "zero"):
            raise PbrlError(f"--agent.reward: 'true' or 'zero', got '{cfg.reward}'")
        self.cfg = cfg
        self.spec = spec
        self.requires_true_reward = cfg.reward == "true"
        self.learner = IQLLearner(
            spec.obs_dim, spec.act_dim, iql_config_from(cfg), max_steps=1, device=spec.device
        )

    def _rewards(self, ctx: FitContext) -> np.ndarray:
        ds = ctx.dataset
        if self.cfg.reward == "zero":
            return np.zeros(ds.num_steps, dtype=np.float32)
        if ds.rewards is None:
            raise PbrlError("iql --agent.reward true needs the dataset's rewards")
        scaled = np.asarray(ds.rewards, dtype=np.float32) * ctx.reward_scale
        return reward_normalize(scaled, ds.starts, ds.lengths, self.cfg.reward_norm, ds.task_id)

    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        data = TransitionTensors.from_dataset(ctx.dataset, ctx.device, self._rewards(ctx))
        self.learner.set_obs_stats(ctx.dataset.observations)
        self.learner.set_max_steps(ctx.steps)
        batches = data.minibatches(self.cfg.batch_size, ctx.generator)
        for step in range(1, ctx.steps + 1):
            m = self.learner.update(next(batches))
            if step % ctx.log_interval == 0 or step == ctx.steps:
                yield {"step": step, **self.learner.metrics(m)}

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(self.learner.act(obs), self.spec.act_low, self.spec.act_high)

    def state_dict(self) -> dict[str, Any]:
        return {"learner": self.learner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])


def fit_stacked(agents: list[Agent], ctxs: list[FitContext]) -> Iterator[list[dict[str, float]]]:
    """K seeds of one config trained as one (``pbrl bench --stack-seeds K``;
    :class:`pbrl.learn.stack.StackedIQL`): each member samples its own minibatches with its
    own generator, as its single run would (rows gathered for all members at once:
    :meth:`TransitionTensors.stacked`); yields one metric dict per member."""
    first, ctx0 = agents[0], ctxs[0]
    data = TransitionTensors.stacked(
        [c.dataset for c in ctxs],
        ctx0.device,
        [a._rewards(c) for a, c in zip(agents, ctxs, strict=True)],
    )
    for agent, ctx in zip(agents, ctxs, strict=True):
        agent.learner.set_obs_stats(ctx.dataset.observations)
        agent.learner.set_max_steps(ctx.steps)
    stack = StackedIQL([a.learner for a in agents])
    batches = data.member_minibatches(first.cfg.batch_size, [c.generator for c in ctxs])
    for step in range(1, ctx0.steps + 1):
        out = stack.update(next(batches))
        if step % ctx0.log_interval == 0 or step == ctx0.steps:
            stack.write_back()
            yield stacked_metrics(step, stack.metrics(out))
