"""A deliberately broken learner plug-in: ``pbrl agents check`` must name what is wrong.

Its ``fit`` yields a NaN loss and its ``act`` returns one action dimension too few; the
rest of the contract (config, presets, state) is fulfilled. Used by
tests/test_agents_conformance.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pbrl.learn.api import AgentSpec, FitContext


@dataclass
class Config:
    """Broken options."""

    hidden: int = 8
    """Width of the one linear layer."""


PRESETS: dict[str, dict[str, Any]] = {"paper": {}, "quick": {}}

TEST_OVERRIDES: dict[str, Any] = {"hidden": 4}


class Agent:
    """Breaks the contract in ``fit`` (a NaN metric) and ``act`` (the wrong shape)."""

    requires_preferences = False

    def __init__(self, cfg: Config, spec: AgentSpec) -> None:
        self.spec = spec
        self.net = torch.nn.Linear(spec.obs_dim, cfg.hidden).to(spec.device)

    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        for step in range(1, ctx.steps + 1):
            if step % ctx.log_interval == 0 or step == ctx.steps:
                yield {"step": step, "loss": float("nan")}

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        return np.zeros((*obs.shape[:-1], self.spec.act_dim - 1), np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
