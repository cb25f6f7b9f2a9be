"""BC: behaviour cloning of the dataset's actions with CPL's actor (and the SFT baseline).

Paper: the SFT baseline of Hejna et al., "Contrastive Preference Learning" (ICLR 2024;
jhejna/cpl ``research/algs/bc.py``, ``BehaviorCloning`` with ``sft.yaml``); plain BC is the
textbook baseline.

Summary: the deterministic tanh MLP of CPL (2 x 512, Dropout 0.25 before ReLU, orthogonal
init) regresses dataset actions. ``data=all`` clones every transition of the dataset and
needs no preferences. ``data=pos`` is CPL's SFT: it first clones every step of both
segments of each labelled pair for ``all_fraction`` of the steps (official 200k of 500k),
then only the preferred segments (a tie counts both), without resetting Adam.

Loss: L = mean over real (row, step) entries of sum_d (mu_d(s) - a_d)^2.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pbrl.errors import PbrlError
from pbrl.learn.api import AgentSpec, FitContext
from pbrl.learn.data import ACTION_CLIP, TransitionTensors
from pbrl.learn.kit import deterministic_logp, epoch_minibatches, greedy_action
from pbrl.learn.nn import TanhDeterministicActor


def bc_mse(mu: torch.Tensor, act: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over (real) entries of sum_d (mu_d - a_d)^2; ``mask`` has mu's shape minus the last."""
    err = -deterministic_logp(mu, act)
    if mask is None:
        return err.mean()
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


@dataclass
class Config:
    """BC options."""

    data: str = "all"
    """'all' (every dataset transition; no preferences) or 'pos' (SFT: preferred segments)."""
    all_fraction: float = 0.4
    """data=pos: fraction of steps on all segments of the labelled pairs before positives only."""
    batch_size: int = 256
    """data=all: transitions per update."""
    pair_batch_size: int = 96
    """data=pos: labelled pairs per update."""
    lr: float = 1e-4
    """Adam learning rate."""
    hidden: tuple[int, ...] = (512, 512)
    """Actor hidden widths."""
    dropout: float = 0.25
    """Actor dropout (before each ReLU)."""


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "sft": {"data": "pos"},
    "quick": {"pair_batch_size": 16, "batch_size": 128},
}

TEST_OVERRIDES: dict[str, Any] = {"hidden": (16, 16), "batch_size": 8, "pair_batch_size": 4}


class Agent:
    """A behaviour-cloned deterministic policy."""

    requires_true_reward = False

    def __init__(self, cfg: Config, spec: AgentSpec) -> None:
        if cfg.data not in ("all", "pos"):
            raise PbrlError(f"--agent.data: 'all' or 'pos', got '{cfg.data}'")
        self.cfg = cfg
        self.spec = spec
        self.device = spec.device
        self.requires_preferences = cfg.data == "pos"
        self.actor = TanhDeterministicActor(
            spec.obs_dim,
            spec.act_dim,
            cfg.hidden,
            cfg.dropout,
            dropout_before_act=True,
            init="orthogonal",
        ).to(self.device)

    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        cfg = self.cfg
        opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.actor.train()
        data = None
        pairs = None
        all_steps = int(round(cfg.all_fraction * ctx.steps))
        if cfg.data == "all":
            data = TransitionTensors.from_dataset(ctx.dataset, ctx.device, None)
        else:
            pairs = epoch_minibatches(
                ctx.prefs.size, cfg.pair_batch_size, ctx.generator, self.device
            )
        for step in range(1, ctx.steps + 1):
            if data is not None:
                b = data.sample(cfg.batch_size, ctx.generator)
                loss = bc_mse(self.actor(b["obs"]), b["act"])
            else:
                p = ctx.prefs.index(next(pairs))
                y = p.prefer_b.unsqueeze(-1)
                pos_phase = step > all_steps
                ma = p.mask_a * ((y <= 0.5).float() if pos_phase else 1.0)
                mb = p.mask_b * ((y >= 0.5).float() if pos_phase else 1.0)
                obs = torch.cat([p.obs_a, p.obs_b])
                act = torch.cat([p.act_a, p.act_b]).clamp(-ACTION_CLIP, ACTION_CLIP)
                loss = bc_mse(self.actor(obs), act, torch.cat([ma, mb]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % ctx.log_interval == 0 or step == ctx.steps:
                yield {"step": step, "bc_loss": float(loss.detach())}

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        a = greedy_action(self.actor, obs, self.device)
        return np.clip(a, self.spec.act_low, self.spec.act_high)

    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
