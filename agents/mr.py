"""MR: a Markovian Bradley-Terry reward ensemble, relabel the dataset, then IQL.

Papers: Lee, Smith, Abbeel, "B-Pref: Benchmarking Preference-Based Reinforcement Learning"
(NeurIPS 2021 Datasets and Benchmarks; rll-research/BPref ``reward_model.py``) for the
reward model, and Yuan et al., "Uni-RLHF" (ICLR 2024; Clean-Offline-RLHF
``rlhf/reward_model.py``) for its offline use; "MR" is the baseline name of Kim et al.,
"Preference Transformer" (ICLR 2023).

Summary: an ensemble of 3 MLPs r_k(s, a) (3 x 256 LeakyReLU, tanh output) scores a segment
by the SUM of its per-step rewards; each member is trained by cross-entropy of the
Bradley-Terry model on soft labels (ties stay in as 0.5), each on its own permutation of the
labelled pairs, the member losses summed under one Adam. Training stops after an epoch whose
mean training accuracy (ties excluded) exceeds 0.968. The dataset is then relabelled with the
ensemble mean and the shared IQL core (:mod:`pbrl.learn.iql`) learns the policy.

Loss (y = prefer_b; S_k(sigma) = sum_t r_k(s_t, a_t) over real steps):

    L = sum_k mean_i [ -(1 - y_i) log softmax(S_k(a_i), S_k(b_i))_a - y_i log softmax(...)_b ]

The step budget is shared: the reward phase runs ``reward_epochs`` epochs (capped at
``max_reward_fraction`` of the steps), IQL gets the rest.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pbrl.errors import PbrlError
from pbrl.learn.api import AgentSpec, FitContext
from pbrl.learn.data import relabel
from pbrl.learn.iql import (
    QUICK_IQL,
    IQLConfig,
    IQLLearner,
    IQLPlan,
    iql_config_from,
)
from pbrl.learn.kit import (
    bt_pair_losses,
    check_reward_input,
    epochs_until_accurate,
    fused_adam,
    host_metrics,
    reward_action,
    segment_sum,
    shuffled_epoch,
)
from pbrl.learn.nn import EnsembleMLP
from pbrl.learn.stack import (
    StackedModules,
    fit_stacked_before_iql,
    labels_of_one_shape,
    member_label_rows,
    members_in_turn,
    stacked_metrics,
)
from pbrl.types import PAIR_FIELDS

# ---- pure losses -------------------------------------------------------------------------


def bt_ensemble_loss(
    score_a: torch.Tensor, score_b: torch.Tensor, prefer_b: torch.Tensor, lead: int = 0
) -> torch.Tensor:
    """Soft-label Bradley-Terry cross-entropy, mean over the batch, SUMMED over members.

    ``score_a``, ``score_b``, ``prefer_b``: (M, B) (one batch per member) or (B,). The
    log-softmax form of :func:`pbrl.learn.kit.bt_pair_losses`, as B-Pref computes it. The
    first ``lead`` dims are kept (stacked seeds: ``lead=1`` on (K, M, B) gives (K,)).
    """
    per_member = bt_pair_losses(score_a, score_b, prefer_b, "softmax").mean(-1)
    return per_member.flatten(lead).sum(-1)


def bt_accuracy(
    score_a: torch.Tensor, score_b: torch.Tensor, prefer_b: torch.Tensor, lead: int = 0
) -> torch.Tensor:
    """Fraction of non-tie pairs whose higher score is the preferred segment (nan if none),
    a 0-dim tensor on the scores' device (read on the host only where it is logged); the
    first ``lead`` dims are kept."""
    keep = (prefer_b != 0.5).float().flatten(lead)
    hit = ((score_b > score_a) == (prefer_b > 0.5)).float().flatten(lead)
    return (hit * keep).sum(-1) / keep.sum(-1)  # 0 / 0 = nan when every pair is a tie


# ---- agent ---------------------------------------------------------------------------------


@dataclass
class Config(IQLConfig):
    """MR options: the reward ensemble's, then the IQL core's."""

    n_members: int = 3
    """Reward ensemble size."""
    reward_hidden: tuple[int, ...] = (256, 256, 256)
    """Reward MLP hidden widths (LeakyReLU 0.01)."""
    reward_out: str = "tanh"
    """Reward output activation: 'tanh' (B-Pref), 'sigmoid' or 'none'."""
    reward_lr: float = 3e-4
    """Adam learning rate of the reward ensemble."""
    reward_batch: int = 64
    """Labelled pairs per reward minibatch (per member)."""
    reward_epochs: int = 50
    """Epochs over the labelled pairs (Uni-RLHF MuJoCo: 50)."""
    early_stop_acc: float = 0.968
    """Stop the reward phase after an epoch whose training accuracy exceeds this (1 disables)."""
    max_reward_fraction: float = 0.5
    """Cap of the reward phase as a fraction of the step budget."""
    batch_size: int = 256
    """IQL transitions per update."""
    reward_norm: str = "none"
    """Normalisation of the relabelled reward before IQL (none | corl | pt_true | pt_learned)."""
    reward_input: str = "obs_act"
    """What the reward model reads: 'obs_act' (r(s, a), B-Pref / Uni-RLHF) or 'obs' (r(s))."""


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # CPU scale (docs/agents.md "Scale presets"): 16 pairs per reward batch, 2 epochs, and the
    # learned reward range-normalised as Uni-RLHF/CORL do offline, so that its advantages
    # reach IQL's weights at this budget.
    "quick": {
        **QUICK_IQL,
        "batch_size": 128,
        "reward_batch": 16,
        "reward_epochs": 2,
        "reward_norm": "corl",
        # r(s): at this budget an r(s, a) model's action shortcut steers IQL to the decoy
        # (docs/agents.md, "The action shortcut").
        "reward_input": "obs",
    },
}

TEST_OVERRIDES: dict[str, Any] = {
    "hidden": (16, 16),
    "reward_hidden": (16, 16),
    "batch_size": 8,
    "reward_batch": 4,
    "reward_epochs": 2,
}


class Agent:
    """Reward ensemble + IQL."""

    requires_true_reward = False
    requires_preferences = True

    def __init__(self, cfg: Config, spec: AgentSpec) -> None:
        if cfg.reward_out not in ("tanh", "sigmoid", "none"):
            raise PbrlError(f"--agent.reward_out: tanh | sigmoid | none, got '{cfg.reward_out}'")
        check_reward_input(cfg.reward_input)
        self.cfg = cfg
        self.spec = spec
        self.device = spec.device
        self.reward_net = EnsembleMLP(
            cfg.n_members,
            spec.obs_dim + spec.act_dim,
            1,
            cfg.reward_hidden,
            act="leaky_relu",
            out_act=None if cfg.reward_out == "none" else cfg.reward_out,
        ).to(self.device)
        self.optimizer: torch.optim.Optimizer | None = None  # made at the first train_reward
        self.learner = IQLLearner(
            spec.obs_dim, spec.act_dim, iql_config_from(cfg), max_steps=1, device=self.device
        )

    # -- reward ----------------------------------------------------------------------------------
    def member_rewards(
        self, obs: torch.Tensor, act: torch.Tensor, per_member: bool = False
    ) -> torch.Tensor:
        """(M, *batch) per-member rewards of (*batch, D) rows, or of (M, *batch, D) rows
        holding a different batch per member when ``per_member``."""
        x = torch.cat([obs, reward_action(act, self.cfg.reward_input)], -1)
        return self.reward_net(x, shared=not per_member).squeeze(-1)

    @torch.no_grad()
    def reward(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """Ensemble-mean learned reward of (obs, act) rows."""
        o = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)
        a = torch.as_tensor(np.asarray(act, np.float32), device=self.device)
        return self.member_rewards(o, a).mean(0).cpu().numpy()

    @torch.no_grad()
    def predict_segments(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """(M, N) predicted return of each of N segments ``obs (N, L, D)``, ``act (N, L, A)``
        under each member (the query selectors' :class:`~pbrl.prefs.select.RewardEnsemble`)."""
        o = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)
        a = torch.as_tensor(np.asarray(act, np.float32), device=self.device)
        return self.member_rewards(o, a).sum(-1).cpu().numpy()

    def train_reward(
        self,
        prefs: Any,
        generator: torch.Generator,
        *,
        epochs: int | None = None,
        max_updates: int | None = None,
    ) -> Iterator[dict[str, float]]:
        """Train the ensemble on ``prefs`` (a PreferenceBatch), continuing from its weights:
        up to ``epochs`` passes (default ``reward_epochs``), stopping after an epoch whose mean
        training accuracy exceeds ``early_stop_acc`` or after ``max_updates`` minibatches.
        Yields ``reward_loss`` and ``reward_acc`` after every minibatch. The reward phase of
        :meth:`fit`, and the online track's reward model (``agents/pebble.py``)."""
        cfg = self.cfg
        if self.optimizer is None:
            self.optimizer = fused_adam(self.reward_net.parameters(), lr=cfg.reward_lr)
        opt = self.optimizer

        def step(idx: torch.Tensor) -> dict[str, float]:
            # (M, b) minibatches: each member its own permutation of the pairs
            ra = self.member_rewards(prefs.obs_a[idx], prefs.act_a[idx], True)
            rb = self.member_rewards(prefs.obs_b[idx], prefs.act_b[idx], True)
            sa = segment_sum(ra, prefs.mask_a[idx])
            sb = segment_sum(rb, prefs.mask_b[idx])
            y = prefs.prefer_b[idx]
            loss = bt_ensemble_loss(sa, sb, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            acc = bt_accuracy(sa.detach(), sb.detach(), y)
            return {"reward_loss": loss.detach(), "reward_acc": acc}

        yield from epochs_until_accurate(
            prefs.size,
            cfg.reward_batch,
            generator,
            self.device,
            step,
            epochs=cfg.reward_epochs if epochs is None else epochs,
            stop_acc=cfg.early_stop_acc,
            max_updates=max_updates,
            members=cfg.n_members,
        )

    def before_iql(self, ctx: FitContext) -> Generator[dict[str, float], None, IQLPlan]:
        """The reward phase; returns the IQL phase that follows (:meth:`fit`)."""
        cfg = self.cfg
        max_reward = min(int(cfg.max_reward_fraction * ctx.steps), ctx.steps - 1)
        step = 0
        for m in self.train_reward(ctx.prefs, ctx.generator, max_updates=max(0, max_reward)):
            step += 1
            if step % ctx.log_interval == 0:
                yield {"step": step, "phase": 0.0, **host_metrics(m)}
        return self.iql_plan(ctx, step)

    def iql_plan(self, ctx: FitContext, reward_steps: int) -> IQLPlan:
        """The IQL phase after ``reward_steps`` reward updates: the dataset relabelled with
        the ensemble's mean reward, the rest of the step budget."""
        cfg = self.cfg
        ds = ctx.dataset
        self.learner.set_max_steps(ctx.steps - reward_steps)
        rewards = relabel(ds, self.reward)
        return IQLPlan(
            self.learner,
            ds,
            rewards,
            ctx.steps - reward_steps,
            cfg.batch_size,
            reward_steps,
            cfg.reward_norm,
            1.0,
        )

    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        plan = yield from self.before_iql(ctx)
        yield from plan.run(ctx)

    # -- acting and state ------------------------------------------------------------------------
    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(self.learner.act(obs), self.spec.act_low, self.spec.act_high)

    def state_dict(self) -> dict[str, Any]:
        return {"reward": self.reward_net.state_dict(), "learner": self.learner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reward_net.load_state_dict(state["reward"])
        self.learner.load_state_dict(state["learner"])


def stacked_reward_phase(
    agents: list[Agent], ctxs: list[FitContext]
) -> Generator[list[Any], None, list[IQLPlan]]:
    """The K members' reward phases at once (``pbrl bench --stack-seeds K``): their
    ensembles stacked (:class:`pbrl.learn.stack.StackedModules`, one Adam), each member's
    epochs drawn with its own generator as :meth:`Agent.train_reward` draws them
    (:func:`pbrl.learn.kit.epochs_until_accurate`'s loop, per member), its minibatches
    gathered from one table of the members' labels. A member whose epoch's mean training
    accuracy passes ``early_stop_acc`` stops there, as alone: from then on its parameters
    and Adam moments are put back after every step of the others. Yields one row per
    update (``None`` for stopped members and off log steps); returns the members' IQL
    plans. Members whose labels differ in shape run :meth:`Agent.before_iql` one after the
    other instead."""
    k = len(agents)
    first, ctx0 = agents[0], ctxs[0]
    cfg = first.cfg
    if not labels_of_one_shape([c.prefs for c in ctxs], PAIR_FIELDS):
        phases = [a.before_iql(c) for a, c in zip(agents, ctxs, strict=True)]
        return (yield from members_in_turn(k, phases))
    max_reward = min(int(cfg.max_reward_fraction * ctx0.steps), ctx0.steps - 1)
    stack = StackedModules([a.reward_net for a in agents])
    opt = fused_adam(stack.parameters(), lr=cfg.reward_lr)
    labels = member_label_rows([c.prefs for c in ctxs], PAIR_FIELDS)
    n_pairs = ctx0.prefs.size

    def scores(obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, reward_action(act, cfg.reward_input)], -1)
        return segment_sum(stack.members(x, shared=False).squeeze(-1), mask)

    active, frozen = [True] * k, {}
    step = 0
    steps = [0] * k
    for _epoch in range(cfg.reward_epochs):
        if not any(active):
            break
        # each active member draws its epoch's permutations, as alone, before any update
        epochs = [
            shuffled_epoch(n_pairs, cfg.reward_batch, c.generator, first.device, cfg.n_members)
            if active[i]
            else None
            for i, c in enumerate(ctxs)
        ]
        live = next(e for e in epochs if e is not None)
        accs = []
        for j in range(len(live)):
            if step >= max_reward:
                break
            b = labels(torch.stack([live[j] if e is None else e[j] for e in epochs]))
            sa = scores(b["obs_a"], b["act_a"], b["mask_a"])
            sb = scores(b["obs_b"], b["act_b"], b["mask_b"])
            losses = bt_ensemble_loss(sa, sb, b["prefer_b"], lead=1)  # (K,): no vmap
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
            _put_back(opt, frozen)
            acc = bt_accuracy(sa.detach(), sb.detach(), b["prefer_b"], lead=1)
            accs.append(acc)
            step += 1
            for i in range(k):
                steps[i] += active[i]
            if step % ctx0.log_interval == 0:
                rows = stacked_metrics(
                    step, {"reward_loss": losses, "reward_acc": acc}, {"phase": 0.0}
                )
                yield [r if active[i] else None for i, r in enumerate(rows)]
        if step >= max_reward:
            break
        if accs:  # each member's epoch mean (nan when no pair had an accuracy)
            means = torch.stack(accs).nanmean(0).tolist()
            for i in range(k):
                if active[i] and means[i] > cfg.early_stop_acc:
                    active[i] = False
                    _freeze(opt, frozen, i)
    stack.write_back()
    return [a.iql_plan(c, n) for a, c, n in zip(agents, ctxs, steps, strict=True)]


def _adam_slices(opt: torch.optim.Optimizer) -> Iterator[tuple[Any, torch.Tensor]]:
    """Every stacked tensor an Adam step changes: the parameters and their two moments."""
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state[p]
            yield (id(p), "param"), p
            yield (id(p), "exp_avg"), state["exp_avg"]
            yield (id(p), "exp_avg_sq"), state["exp_avg_sq"]


def _freeze(opt: torch.optim.Optimizer, frozen: dict[Any, dict[int, torch.Tensor]], i: int) -> None:
    """Keep member ``i``'s slice of every stacked parameter and of its Adam moments as they
    are now (:func:`stacked_reward_phase`)."""
    for key, t in _adam_slices(opt):
        frozen.setdefault(key, {})[i] = t.detach()[i].clone()


@torch.no_grad()
def _put_back(opt: torch.optim.Optimizer, frozen: dict[Any, dict[int, torch.Tensor]]) -> None:
    """Restore the frozen members' slices after an Adam step of the others."""
    if frozen:
        for key, t in _adam_slices(opt):
            for i, saved in frozen[key].items():
                t[i] = saved


def fit_stacked(agents: list[Agent], ctxs: list[FitContext]) -> Iterator[list[Any]]:
    """Stacked seeds (``pbrl bench --stack-seeds K``): the members' reward ensembles
    trained together (:func:`stacked_reward_phase`), then the IQL phases stacked
    (:func:`pbrl.learn.stack.fit_stacked_before_iql`)."""
    return fit_stacked_before_iql(agents, ctxs, stacked_reward_phase)
