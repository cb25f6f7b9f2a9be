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
from pbrl.learn.kit import deterministic_logp, epoch_minibatches, fused_adam, greedy_action
from pbrl.learn.nn import TanhDeterministicActor
from pbrl.learn.stack import (
    CannotStack,
    StackedModules,
    member_label_rows,
    stacked_metrics,
    zip_generators,
)
from pbrl.types import PAIR_FIELDS


def bc_mse(
    mu: torch.Tensor, act: torch.Tensor, mask: torch.Tensor | None = None, lead: int = 0
) -> torch.Tensor:
    """Mean over (real) entries of sum_d (mu_d - a_d)^2; ``mask`` has mu's shape minus the
    last. The first ``lead`` dims are kept (stacked seeds: ``lead=1`` gives one loss per
    member)."""
    err = -deterministic_logp(mu, act).flatten(lead)
    if mask is None:
        return err.mean(-1)
    m = mask.flatten(lead)
    return (err * m).sum(-1) / m.sum(-1).clamp(min=1.0)


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
STACK_CHECK_OVERRIDES: dict[str, Any] = {"dropout": 0.0}
"""Config under which the conformance check compares stacked seeds with single runs (to
floating-point tolerance; dropout masks are drawn differently when stacked)."""


def pos_batch(p: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """data=pos's minibatch from labelled pairs' :data:`~pbrl.types.PAIR_FIELDS` (which may
    carry a leading member axis): both segments of every pair, with the masks of every real
    step (``mask``) and of the preferred ones (``mask_pos``; a tie counts both)."""
    y = p["prefer_b"].unsqueeze(-1)
    return {
        "obs": torch.cat([p["obs_a"], p["obs_b"]], -3),
        "act": torch.cat([p["act_a"], p["act_b"]], -3).clamp(-ACTION_CLIP, ACTION_CLIP),
        "mask": torch.cat([p["mask_a"], p["mask_b"]], -2),
        "mask_pos": torch.cat(
            [p["mask_a"] * (y <= 0.5).float(), p["mask_b"] * (y >= 0.5).float()], -2
        ),
    }


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

    def _batches(self, ctx: FitContext) -> Iterator[dict[str, torch.Tensor]]:
        """Endless minibatches: transitions (data=all), or both segments of labelled pairs
        with the masks of every real step (``mask``) and of the preferred ones
        (``mask_pos``; a tie counts both) for data=pos."""
        cfg = self.cfg
        if cfg.data == "all":
            data = TransitionTensors.from_dataset(ctx.dataset, ctx.device, None)
            for b in data.minibatches(cfg.batch_size, ctx.generator):
                yield {"obs": b["obs"], "act": b["act"]}
        for idx in self.pair_indices(ctx):
            yield pos_batch(ctx.prefs.rows(idx, PAIR_FIELDS))

    def pair_indices(self, ctx: FitContext) -> Iterator[torch.Tensor]:
        """data=pos: batches of label indices, epochs of random permutations."""
        return epoch_minibatches(
            ctx.prefs.size, self.cfg.pair_batch_size, ctx.generator, self.device
        )

    def loss(
        self, mu: torch.Tensor, batch: dict[str, torch.Tensor], step: int, steps: int, lead: int = 0
    ) -> torch.Tensor:
        """The BC loss of one batch given the actor's output ``mu`` at update ``step``; with
        ``lead=1`` (stacked seeds), one loss per member of a leading member axis."""
        if "mask" not in batch:
            return bc_mse(mu, batch["act"], lead=lead)
        pos_phase = step > int(round(self.cfg.all_fraction * steps))
        mask = batch["mask_pos"] if pos_phase else batch["mask"]
        return bc_mse(mu, batch["act"], mask, lead)

    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        opt = fused_adam(self.actor.parameters(), lr=self.cfg.lr)
        self.actor.train()
        batches = self._batches(ctx)
        for step in range(1, ctx.steps + 1):
            b = next(batches)
            loss = self.loss(self.actor(b["obs"]), b, step, ctx.steps)
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


def fit_stacked(agents: list[Agent], ctxs: list[FitContext]) -> Iterator[list[dict[str, float]]]:
    """K seeds of one config trained as one (``pbrl bench --stack-seeds K``): the members'
    actors stacked (:class:`pbrl.learn.stack.StackedModules`), each member's minibatches
    drawn with its own generator and gathered for all members at once (``data=all``: from
    one table of the transitions, :meth:`TransitionTensors.stacked`; ``data=pos``: from one
    table of the members' labels, :func:`pbrl.learn.stack.member_label_rows`), one Adam over
    the stacked parameters."""
    first, ctx0 = agents[0], ctxs[0]
    if first.cfg.data == "pos" and len({c.prefs.size for c in ctxs}) > 1:
        raise CannotStack("bc: stacked seeds need labels of one size")
    if first.cfg.data == "all":  # transitions: one table, every member's rows in one gather
        table = TransitionTensors.stacked(
            [c.dataset for c in ctxs], ctx0.device, [None] * len(ctxs)
        )
        rows = table.member_minibatches(first.cfg.batch_size, [c.generator for c in ctxs])
        batches = ({"obs": r["obs"], "act": r["act"]} for r in rows)
    else:  # labelled pairs: every member's from one table of their labels, in one gather
        labels = member_label_rows([c.prefs for c in ctxs], PAIR_FIELDS)
        indices = zip_generators([a.pair_indices(c) for a, c in zip(agents, ctxs, strict=True)])
        batches = (pos_batch(labels(torch.stack(i))) for i in indices)
    for a in agents:
        a.actor.train()
    stack = StackedModules([a.actor for a in agents])
    stack.train(True)
    opt = fused_adam(stack.parameters(), lr=first.cfg.lr)
    steps = ctx0.steps
    for step in range(1, steps + 1):
        batch = next(batches)
        mu = stack.members(batch["obs"])  # every member's actor at once (no vmap)
        losses = first.loss(mu, batch, step, steps, lead=1)  # (K,): no vmap
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        if step % ctx0.log_interval == 0 or step == steps:
            stack.write_back()
            yield stacked_metrics(step, {"bc_loss": losses})
