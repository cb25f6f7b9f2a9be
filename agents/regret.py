"""regret: learning the optimal advantage from regret-model preferences (Knox et al.).

Papers: W. B. Knox, S. Hatgis-Kessell, S. Booth, S. Niekum, P. Stone, A. Allievi, "Models
of human preference for learning reward functions" (TMLR 2024) and W. B. Knox,
S. Hatgis-Kessell, S. O. Adalgeirsson, S. Booth, A. Dragan, P. Stone, S. Niekum, "Learning
Optimal Advantage from Preferences and Mistaking it for Reward" (AAAI 2024); official code
Stephanehk/Learning-OA-From-Prefs (tabular only).

Summary. Under the regret preference model, P(sigma_b > sigma_a) is a logistic function of
the difference of the segments' summed optimal advantages, so fitting the standard
Bradley-Terry learner to such preferences learns A-hat ~ A*, not a reward. pbrl lifts the
AAAI algorithm to continuous control as the project's design notes (regret, Part C) say:
A-hat is an ensemble MLP on (s, a) with MR's sizes and no output activation, trained
first; then either the policy is extracted greedily (``use=greedy``, default) by
advantage-weighted regression on dataset actions with A-hat frozen and centred per batch,
or A-hat is handed to the shared IQL core as a reward (``use=reward``, the "mistaking
advantage for reward" case the AAAI paper studies).

Loss (per ensemble member, summed over members; m_t = 1 on real steps, 0 on padding and
on the absorbing steps after a true termination; the terminating step counts)::

    S(sigma)  = sum_t m_t A(s_t, a_t)
    L_pref    = mean_pairs -[(1 - y) log sigmoid(S_a - S_b) + y log sigmoid(S_b - S_a)]
    L_A       = L_pref + c_reg * mean_{real steps}(A^2)                  (c_reg = 0.1)
    greedy:  L_pi = mean_batch min(exp(beta (A(s,a) - mean_batch A)), 100) * NLL(a | s)

with y = prefer_b (1: segment b preferred; ties 0.5 stay in).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pbrl.errors import PbrlError
from pbrl.learn.api import AgentSpec, FitContext
from pbrl.learn.data import TransitionTensors
from pbrl.learn.iql import IQLConfig, IQLLearner, IQLPlan, awr_weights, iql_config_from
from pbrl.learn.kit import (
    batched_numpy,
    bt_pair_losses,
    epoch_minibatches,
    epochs_until_accurate,
    fused_adam,
    host_metrics,
    log_due,
    segment_sum,
    split_steps,
    strict_accuracy,
)
from pbrl.learn.nn import EnsembleMLP
from pbrl.learn.stack import (
    StackedIQL,
    StackedModules,
    fit_stacked_before_iql,
    labels_of_one_shape,
    member_pairs,
    members_in_turn,
    stackable_iql,
    stacked_metrics,
)
from pbrl.types import PAIR_FIELDS

# ---- losses (pure functions) ------------------------------------------------------------


def logistic_pref_loss(
    score_a: torch.Tensor, score_b: torch.Tensor, prefer_b: torch.Tensor
) -> torch.Tensor:
    """Bradley-Terry / regret-model cross-entropy with soft labels, mean over pairs.

    ``-[(1 - y) log sigma(S_a - S_b) + y log sigma(S_b - S_a)]`` with ``y = prefer_b``;
    ``score_*`` are (..., B) and the mean runs over the last axis only, so an ensemble
    axis in front gives one loss per member. Written with logsigmoid (no clamping): the
    ``logistic`` form of :func:`pbrl.learn.kit.bt_pair_losses`.
    """
    return bt_pair_losses(score_a, score_b, prefer_b, "logistic").mean(dim=-1)


def advantage_anchor(a_hat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean(A^2)`` over the real steps (mask 1), one value per leading (member) index:
    ``a_hat`` (..., B, L) and ``mask`` (..., B, L), broadcast against each other.

    The logistic loss cannot see a constant shift of A when both segments of every pair
    have the same number of real steps; this small L2 pull towards 0 fixes the level.
    """
    m = mask.to(a_hat.dtype)
    return (a_hat.pow(2) * m).sum(dim=(-2, -1)) / m.sum(dim=(-2, -1)).clamp_min(1.0)


def centred_awr_weights(a_hat: torch.Tensor, beta: float, clip: float = 100.0) -> torch.Tensor:
    """``min(exp(beta * (A - mean_batch A)), clip)``: AWR weights immune to a shift of A."""
    return torch.exp(beta * (a_hat - a_hat.mean())).clamp(max=clip)


# ---- agent --------------------------------------------------------------------------------


@dataclass
class Config(IQLConfig):
    """regret options: the IQL core's fields (actor; critics only for use=reward) plus A-hat's."""

    use: str = "greedy"
    """How A-hat is used: 'greedy' (AWR on dataset actions with A-hat frozen, centred per
    batch; the core's actor and beta) or 'reward' (A-hat handed to the IQL core as reward)."""
    ensemble: int = 3
    """A-hat ensemble size (MR's)."""
    adv_hidden: tuple[int, ...] = (256, 256, 256)
    """A-hat hidden widths (MR's 3 x 256)."""
    adv_act: str = "leaky_relu"
    """A-hat hidden activation (MR's LeakyReLU 0.01); the output has none."""
    adv_lr: float = 3e-4
    """Adam learning rate of A-hat (MR's)."""
    adv_batch: int = 64
    """Labelled pairs per A-hat minibatch (MR's)."""
    c_reg: float = 0.1
    """Weight of the level anchor c_reg * mean(A^2) over the batch's real steps."""
    adv_frac: float = 0.2
    """Fraction of the run's updates spent learning A-hat (the rest trains the policy)."""
    batch_size: int = 256
    """Transitions per policy (AWR or IQL) minibatch."""
    reward_norm: str = "none"
    """Normalisation of A-hat before IQL (use=reward): none | corl | pt_true | pt_learned."""
    early_stop_acc: float = 0.97
    """As the online reward model (:meth:`Agent.train_reward`): stop after an epoch whose
    mean training accuracy exceeds this (B-Pref's rule; the offline ``fit`` runs a fixed
    number of updates instead)."""


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "quick": {"adv_frac": 0.3, "adv_batch": 32, "batch_size": 128},
    "reward": {"use": "reward"},
}

TEST_OVERRIDES: dict[str, Any] = {
    "ensemble": 2,
    "adv_hidden": (16, 16),
    "hidden": (16, 16),
    "adv_batch": 4,
    "batch_size": 8,
}


class Agent:
    """A-hat ensemble from preferences, then a greedy (AWR) policy or IQL on A-hat."""

    def __init__(self, cfg: Config, spec: AgentSpec) -> None:
        if cfg.use not in ("greedy", "reward"):
            raise PbrlError(f"--agent.use: 'greedy' or 'reward', got '{cfg.use}'")
        if cfg.ensemble < 1:
            raise PbrlError(f"--agent.ensemble: must be >= 1, got {cfg.ensemble}")
        self.cfg = cfg
        self.spec = spec
        self.device = spec.device
        d_in = spec.obs_dim + spec.act_dim
        self.adv = EnsembleMLP(cfg.ensemble, d_in, 1, cfg.adv_hidden, cfg.adv_act).to(self.device)
        self.optimizer: torch.optim.Optimizer | None = None  # train_reward's, made at first use
        # greedy uses only the core's actor (its AWR step); reward uses all of it
        self.iql = IQLLearner(spec.obs_dim, spec.act_dim, iql_config_from(cfg), 1, self.device)

    def advantage(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """A-hat per member, shape (E, *batch)."""
        return self.adv(torch.cat([obs, act], -1), shared=True).squeeze(-1)

    # -- training --------------------------------------------------------------------------
    def adv_losses(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Summed-over-members regret loss on labelled pairs' :data:`~pbrl.types.PAIR_FIELDS`."""
        adv_a = self.advantage(batch["obs_a"], batch["act_a"])  # (E, B, L)
        adv_b = self.advantage(batch["obs_b"], batch["act_b"])
        return self.adv_terms(adv_a, adv_b, batch)

    def adv_terms(
        self, adv_a: torch.Tensor, adv_b: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """:meth:`adv_losses` from the ensemble's A-hat of both segments, (E, B, L) each. The
        stacked path passes every member's, (K, E, B, L), with a batch whose fields carry the
        member axis too: each term then has one value per member."""
        mask_a = batch["mask_a"].unsqueeze(-3)  # broadcast over the ensemble axis
        mask_b = batch["mask_b"].unsqueeze(-3)
        s_a, s_b = segment_sum(adv_a, mask_a), segment_sum(adv_b, mask_b)
        pref = logistic_pref_loss(s_a, s_b, batch["prefer_b"].unsqueeze(-2))  # (..., E)
        both = torch.cat([adv_a, adv_b], dim=-2)
        anchor = advantage_anchor(both, torch.cat([mask_a, mask_b], dim=-2))
        loss = (pref + self.cfg.c_reg * anchor).sum(-1)
        with torch.no_grad():
            acc = strict_accuracy(s_a.mean(-2), s_b.mean(-2), batch["prefer_b"])
            abs_mean = both.abs().mean((-3, -2, -1))
        return loss, {  # on the device: read at log intervals (host_metrics)
            "adv_loss": pref.detach().mean(-1),
            "adv_anchor": anchor.detach().mean(-1),
            "adv_acc": acc,
            "adv_abs_mean": abs_mean,
        }

    @torch.no_grad()
    def predict_segments(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """(E, N) summed A-hat of each of N segments ``obs (N, L, D)``, ``act (N, L, A)``
        under each member (the query selectors' ensemble)."""
        o = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)
        a = torch.as_tensor(np.asarray(act, np.float32), device=self.device)
        return self.advantage(o, a).sum(-1).cpu().numpy()

    def train_reward(
        self,
        prefs: Any,
        generator: torch.Generator,
        *,
        epochs: int | None = None,
        max_updates: int | None = None,
    ) -> Iterator[dict[str, float]]:
        """Online use (``agents/pebble.py``): train A-hat on ``prefs`` (a PreferenceBatch),
        continuing from its weights, for up to ``epochs`` passes of ``adv_batch`` pairs
        (default 1), stopping after an epoch whose mean accuracy exceeds ``early_stop_acc``
        or after ``max_updates`` minibatches. Yields the loss terms after every minibatch."""
        if self.optimizer is None:
            self.optimizer = fused_adam(self.adv.parameters(), lr=self.cfg.adv_lr)
        opt = self.optimizer
        self.adv.train().requires_grad_(True)

        def step(idx: torch.Tensor) -> dict[str, float]:
            loss, m = self.adv_losses(prefs.rows(idx, PAIR_FIELDS))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"reward_loss": m["adv_loss"], "reward_acc": m["adv_acc"], **m}

        yield from epochs_until_accurate(
            prefs.size,
            self.cfg.adv_batch,
            generator,
            self.device,
            step,
            epochs=1 if epochs is None else epochs,
            stop_acc=self.cfg.early_stop_acc,
            max_updates=max_updates,
        )

    def _adv_phase(self, ctx: FitContext) -> Generator[dict[str, float], None, tuple[int, int]]:
        """A-hat's phase; returns (its updates, the policy phase's updates)."""
        if ctx.prefs is None or ctx.prefs.size == 0:
            raise PbrlError("regret needs preferences (--prefs)")
        cfg = self.cfg
        n_adv, n_pol = split_steps(ctx.steps, (cfg.adv_frac,))
        opt = fused_adam(self.adv.parameters(), lr=cfg.adv_lr)
        batches = epoch_minibatches(ctx.prefs.size, cfg.adv_batch, ctx.generator, ctx.device)
        self.adv.train()
        for step in range(1, n_adv + 1):
            loss, m = self.adv_losses(ctx.prefs.rows(next(batches), PAIR_FIELDS))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if log_due(step, ctx.steps, ctx.log_interval) or step == n_adv:
                yield {"step": step, "phase": 1.0, **host_metrics(m)}
        self.adv.eval().requires_grad_(False)
        self.iql.set_max_steps(n_pol)
        return n_adv, n_pol

    def before_iql(self, ctx: FitContext) -> Generator[dict[str, float], None, IQLPlan]:
        """``use=reward``: A-hat's phase; returns the IQL phase on A-hat as the reward."""
        n_adv, n_pol = yield from self._adv_phase(ctx)
        return self.iql_plan(ctx, n_adv, n_pol)

    def iql_plan(self, ctx: FitContext, n_adv: int, n_pol: int) -> IQLPlan:
        """``use=reward``'s IQL phase after A-hat's ``n_adv`` updates: the dataset relabelled
        with A-hat, ``n_pol`` updates."""
        ds, cfg = ctx.dataset, self.cfg
        rewards = self.reward(ds.observations, ds.actions)
        return IQLPlan(self.iql, ds, rewards, n_pol, cfg.batch_size, n_adv, cfg.reward_norm)

    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        cfg = self.cfg
        if cfg.use == "reward":
            plan = yield from self.before_iql(ctx)
            yield from plan.run(ctx)
            return
        n_adv, n_pol = yield from self._adv_phase(ctx)
        yield from self._greedy_phase(ctx, n_adv, n_pol)

    def _greedy_phase(self, ctx: FitContext, n_adv: int, n_pol: int) -> Iterator[dict[str, float]]:
        """``use=greedy``: AWR of the actor on the centred A-hat of dataset actions."""
        cfg = self.cfg
        ds = ctx.dataset
        self.iql.set_obs_stats(ds.observations)
        batches = TransitionTensors.from_dataset(ds, ctx.device).minibatches(
            cfg.batch_size, ctx.generator
        )
        for i in range(1, n_pol + 1):
            b = next(batches)
            with torch.no_grad():
                a_hat = self.advantage(b["obs"], b["act"]).mean(0)
            # centring makes the weights blind to A-hat's unidentified constant
            m = self.iql.actor_step(self.iql.norm(b["obs"]), b["act"], a_hat - a_hat.mean())
            step = n_adv + i
            if log_due(step, ctx.steps, ctx.log_interval) or i == n_pol:
                w = centred_awr_weights(a_hat, cfg.beta, cfg.max_weight)
                yield {
                    "step": step,
                    "phase": 2.0,
                    **self.iql.metrics(m),
                    "awr_weight_max": float(w.max()),
                }

    # -- acting / reward -------------------------------------------------------------------
    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(self.iql.act(obs), self.spec.act_low, self.spec.act_high)

    def reward(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """A-hat (ensemble mean) of each (s, a): the learned optimal advantage."""
        self.adv.eval()
        return batched_numpy(lambda o, a: self.advantage(o, a).mean(0), obs, act, self.device)

    def state_dict(self) -> dict[str, Any]:
        return {"adv": self.adv.state_dict(), "iql": self.iql.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adv.load_state_dict(state["adv"])
        self.iql.load_state_dict(state["iql"])


def stacked_adv_phase(
    agents: list[Agent], ctxs: list[FitContext]
) -> Generator[list[Any], None, tuple[int, int]]:
    """A-hat's phase of K members at once (``pbrl bench --stack-seeds K``): their ensembles
    stacked (:class:`pbrl.learn.stack.StackedModules`, one Adam) and run through their member
    forwards, each member's pairs drawn with its own generator as alone and gathered from one
    table of the members' labels, the loss arithmetic (:meth:`Agent.adv_terms`) on every
    member at once. Returns (A-hat's updates, the policy phase's updates). Members whose labels
    differ in shape run :meth:`Agent._adv_phase` one after the other instead."""
    k = len(agents)
    if any(c.prefs is None or c.prefs.size == 0 for c in ctxs):
        raise PbrlError("regret needs preferences (--prefs)")
    if not labels_of_one_shape([c.prefs for c in ctxs], PAIR_FIELDS):
        alone = [a._adv_phase(c) for a, c in zip(agents, ctxs, strict=True)]
        phases = yield from members_in_turn(k, alone)
        return phases[0]
    first, ctx0 = agents[0], ctxs[0]
    cfg = first.cfg
    n_adv, n_pol = split_steps(ctx0.steps, (cfg.adv_frac,))
    stack = StackedModules([a.adv for a in agents])
    stack.train(True)
    opt = fused_adam(stack.parameters(), lr=cfg.adv_lr)
    pairs = member_pairs(
        [c.prefs for c in ctxs], [c.generator for c in ctxs], cfg.adv_batch, ctx0.device
    )

    def advantage(obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], -1)
        return stack.members(x, shared=True).squeeze(-1)  # (K, E, ...)

    for step in range(1, n_adv + 1):
        b = next(pairs)
        adv_a, adv_b = advantage(b["obs_a"], b["act_a"]), advantage(b["obs_b"], b["act_b"])
        losses, m = first.adv_terms(adv_a, adv_b, b)  # (K,) each: no vmap
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        if log_due(step, ctx0.steps, ctx0.log_interval) or step == n_adv:
            yield stacked_metrics(step, m, {"phase": 1.0})
    stack.write_back()
    for a in agents:
        a.adv.eval().requires_grad_(False)
        a.iql.set_max_steps(n_pol)
    return n_adv, n_pol


def stacked_before_iql(
    agents: list[Agent], ctxs: list[FitContext]
) -> Generator[list[Any], None, list[IQLPlan]]:
    """``use=reward``: A-hat's phases stacked (:func:`stacked_adv_phase`), then each
    member's IQL plan on its own A-hat."""
    n_adv, n_pol = yield from stacked_adv_phase(agents, ctxs)
    return [a.iql_plan(c, n_adv, n_pol) for a, c in zip(agents, ctxs, strict=True)]


def fit_stacked(agents: list[Agent], ctxs: list[FitContext]) -> Iterator[list[Any]]:
    """Stacked seeds (``pbrl bench --stack-seeds K``): the members' A-hat phases stacked
    (:func:`stacked_adv_phase`), then the policy phases stacked: IQL on A-hat for ``use=reward``
    (:func:`pbrl.learn.stack.fit_stacked_before_iql`), else the members' AWR actors stacked
    (:class:`pbrl.learn.stack.StackedIQL`'s actor step), each on its own A-hat and batches."""
    if agents[0].cfg.use == "reward":
        yield from fit_stacked_before_iql(agents, ctxs, stacked_before_iql)
        return
    k = len(agents)
    n_adv, n_pol = yield from stacked_adv_phase(agents, ctxs)
    cfg, ctx0 = agents[0].cfg, ctxs[0]
    if not stackable_iql(agents[0].iql):
        greedy = [a._greedy_phase(c, n_adv, n_pol) for a, c in zip(agents, ctxs, strict=True)]
        yield from members_in_turn(k, greedy)
        return
    for agent, ctx in zip(agents, ctxs, strict=True):
        agent.iql.set_obs_stats(ctx.dataset.observations)
    data = TransitionTensors.stacked([c.dataset for c in ctxs], ctx0.device, [None] * k)
    batches = data.member_minibatches(cfg.batch_size, [c.generator for c in ctxs])
    stack = StackedIQL([a.iql for a in agents])
    adv_stack = StackedModules([a.adv for a in agents], trainable=False)
    adv_stack.train(False)
    for i in range(1, n_pol + 1):
        batch = next(batches)
        with torch.no_grad():  # every member's A-hat ensemble mean on its own batch
            x = torch.cat([batch["obs"], batch["act"]], -1)
            a_hat = adv_stack.members(x, shared=True).squeeze(-1).mean(1)
        adv = a_hat - a_hat.mean(-1, keepdim=True)
        losses = stack.actor_step(stack.norm(batch["obs"]), batch["act"], adv)
        step = n_adv + i
        if log_due(step, ctx0.steps, ctx0.log_interval) or i == n_pol:
            stack.write_back()
            w_max = awr_weights(adv, cfg.beta, cfg.max_weight).max(-1).values
            yield stacked_metrics(
                step,
                {**stack.metrics({"actor_loss": losses, "adv": adv}), "awr_weight_max": w_max},
                {"phase": 2.0},
            )
