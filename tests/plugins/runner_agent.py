"""A deterministic do-little learner for runner tests: it can sleep, crash or act.

Not an algorithm: it lets the runner tests control how long a run takes and whether it
fails, while still going through the real train/evaluate/summary path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pbrl.learn.api import AgentSpec, FitContext


@dataclass
class Config:
    """Runner-test knobs."""

    sleep_s: float = 0.0
    """Seconds to sleep over the whole fit (spread over the steps)."""
    fail: bool = False
    """Raise in the middle of fit."""
    action: float = 0.0
    """The constant action value."""
    needs_prefs: bool = False
    """Whether the runner should label preferences for this learner."""


TEST_OVERRIDES: dict[str, Any] = {}


class Agent:
    requires_true_reward = False

    def __init__(self, cfg: Config, spec: AgentSpec) -> None:
        self.cfg = cfg
        self.spec = spec
        self.requires_preferences = cfg.needs_prefs
        self.updates = 0

    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        for step in range(1, ctx.steps + 1):
            if self.cfg.sleep_s:
                time.sleep(self.cfg.sleep_s / ctx.steps)
            if self.cfg.fail and step > ctx.steps // 2:
                raise RuntimeError("runner_agent was told to fail")
            self.updates = step
            if step % ctx.log_interval == 0 or step == ctx.steps:
                yield {"step": step, "loss": 1.0 / step}

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        shape = (*obs.shape[:-1], self.spec.act_dim)
        return np.clip(
            np.full(shape, self.cfg.action, np.float32), self.spec.act_low, self.spec.act_high
        )

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
