"""The shared IQL core (Kostrikov, Nair, Levine, "Offline RL with Implicit Q-Learning", ICLR 2022).

Used by ``iql``, ``mr``, ``pt``, ``ipl``, ``regret`` and ``hprior``. Default semantics are
CORL's (corl-team/CORL ``algorithms/offline/iql.py``), as docs/agents.md records:

- value:  u = min_k Qbar_k(s, a) - V(s);  L_V = mean(|tau - 1[u < 0]| * u^2)
- critic: y = r + gamma * (1 - done) * V(s');  L_Q = (mean((Q1 - y)^2) + mean((Q2 - y)^2)) / 2
- actor:  w = min(exp(beta * A), 100);  L_pi = mean(w * NLL(a | s))
- Polyak: Qbar <- (1 - 0.005) Qbar + 0.005 Q after every critic step.

CORL uses V *before* its update for both the target y and the advantage A = u;
``value_for_targets="post"`` and ``critic_reduction="sum"`` give the JAX semantics of the
code PT used (V after its update, the two Q MSEs summed). The weight is clipped from
above only. ``NLL`` is the Gaussian negative log-density (full constants) or, for the
deterministic actor, sum_d (mu_d(s) - a_d)^2.

A preference learner that relabels the dataset with a learned reward and then trains this
core runs :func:`iql_phase`.

Reward normalisations (:func:`reward_normalize`): ``none``, ``corl`` (locomotion
r / (max_ret - min_ret) * 1000, antmaze r - 1), ``pt_true`` (PT's IQL on the true reward)
and ``pt_learned`` (PT's normalisation of a learned reward, with the +0.5 / -1 shifts).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pbrl.envs import find_task
from pbrl.errors import PbrlError
from pbrl.learn.data import TransitionTensors
from pbrl.learn.kit import (
    ActorLr,
    CapturedStep,
    deterministic_logp,
    fused_adam,
    greedy_action,
    log_due,
)
from pbrl.learn.nn import GaussianActor, TanhDeterministicActor, TwinQ, ValueNet, soft_update

# ---- pure losses ---------------------------------------------------------------------------


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Elementwise |tau - 1[diff < 0]| * diff^2 (no reduction)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff.pow(2)


def iql_value_loss(target_q: torch.Tensor, v: torch.Tensor, expectile: float) -> torch.Tensor:
    """Mean expectile loss of ``target_q - v`` (target_q = min over target critics)."""
    return expectile_loss(target_q - v, expectile).mean()


def iql_q_loss(qs: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Critic loss for an ensemble ``qs`` (K, B) against ``target`` (B,).

    ``mean``: the average over members of each member's MSE (CORL); ``sum``: their sum (JAX).
    Leading dims are kept: ``qs`` (S, K, B) against ``target`` (S, B) gives (S,) losses
    (S stacked seeds, :class:`pbrl.learn.stack.StackedIQL`).
    """
    per_member = (qs - target.unsqueeze(-2)).pow(2).mean(-1)
    if reduction == "mean":
        return per_member.mean(-1)
    if reduction == "sum":
        return per_member.sum(-1)
    raise ValueError(f"critic_reduction must be 'mean' or 'sum', got {reduction!r}")


def row_mean(per_row: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The mean of per-row losses over the last dim, or, with ``weights`` (summing to 1 over
    it), their weighted sum (IPL's replay balancing); leading (stacked-seed) dims are kept."""
    return per_row.mean(-1) if weights is None else (per_row * weights).sum(-1)


def awr_weights(adv: torch.Tensor, beta: float, max_weight: float = 100.0) -> torch.Tensor:
    """exp(beta * adv) clipped at ``max_weight`` from above only."""
    return torch.exp(beta * adv).clamp(max=max_weight)


def iql_metrics(out: dict[str, Any], beta: float, max_weight: float = 100.0) -> dict[str, Any]:
    """An IQL step's log metrics from the tensors its steps return, for one learner (rows
    last: ``v`` (B,), ``qs`` (n, B), ``adv`` (B,)) or stacked members (a member axis first).
    ``v``, ``qs`` and ``adv`` become ``v_mean``, ``q_mean``, ``adv_mean`` and
    ``awr_weight_mean``; every other key (the losses, a variant's own terms) is kept as it
    is. Taken at log steps only, so the steps between issue no reductions."""
    metrics: dict[str, Any] = {}
    for key, value in out.items():
        if key == "v":
            metrics["v_mean"] = value.mean(-1)
        elif key == "qs":
            metrics["q_mean"] = value.mean((-2, -1))
        elif key == "adv":
            metrics["adv_mean"] = value.mean(-1)
            metrics["awr_weight_mean"] = awr_weights(value, beta, max_weight).mean(-1)
        else:
            metrics[key] = value
    return metrics


def awr_policy_loss(
    nll: torch.Tensor, adv: torch.Tensor, beta: float, max_weight: float = 100.0
) -> torch.Tensor:
    """mean(min(exp(beta * adv), max_weight) * nll); ``adv`` is treated as a constant."""
    return (awr_weights(adv.detach(), beta, max_weight) * nll).mean()


# ---- reward normalisation ------------------------------------------------------------------

REWARD_NORMS = ("none", "corl", "pt_true", "pt_learned")


def reward_normalize(
    rewards: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
    mode: str,
    task_id: str | None = None,
) -> np.ndarray:
    """Apply a named reward normalisation; returns a new float32 array.

    Episode returns come from the dataset's own episode boundaries (``starts``,
    ``lengths``). CORL instead cuts at terminals or every 1000 steps and drops a trailing
    partial episode; with pbrl's exact boundaries the two agree on complete episodes.

    - ``none``: unchanged.
    - ``corl``: antmaze r - 1; everything else r / (max_ret - min_ret) * 1000.
    - ``pt_true``: antmaze r - 1; adroit unchanged; everything else as ``corl``.
    - ``pt_learned``: antmaze r - min_ret / len(episode), then the range scaling, then - 1;
      hopper/halfcheetah/walker2d range scaling then + 0.5; others range scaling only.
    """
    if mode not in REWARD_NORMS:
        raise PbrlError(f"reward_norm: unknown '{mode}' (known: {', '.join(REWARD_NORMS)})")
    r = np.asarray(rewards, dtype=np.float64).copy()
    if mode == "none":
        return r.astype(np.float32)
    spec = find_task(task_id)
    family = spec.family if spec is not None else "other"

    def ep_returns(x: np.ndarray) -> np.ndarray:
        return np.add.reduceat(x, starts) if len(starts) else np.zeros(1)

    def range_scale(x: np.ndarray) -> np.ndarray:
        rets = ep_returns(x)
        span = float(rets.max() - rets.min())
        return x / span * 1000.0 if span > 0 else x

    if mode in ("corl", "pt_true"):
        if family == "antmaze":
            return (r - 1.0).astype(np.float32)
        if mode == "pt_true" and family == "adroit":
            return r.astype(np.float32)
        return range_scale(r).astype(np.float32)
    # pt_learned
    if family == "antmaze":
        min_ret = float(ep_returns(r).min())
        per_step = np.repeat(min_ret / np.maximum(lengths, 1), lengths)
        return (range_scale(r - per_step) - 1.0).astype(np.float32)
    r = range_scale(r)
    if family == "locomotion":
        r = r + 0.5
    return r.astype(np.float32)


# ---- the quick scale -----------------------------------------------------------------------

QUICK_IQL: dict[str, Any] = {"beta": 10.0}
"""IQL constants changed at the ``quick`` scale, merged into the ``quick`` preset of every
learner that ends in IQL on a reward (``iql``, ``mr``, ``pt``, ``hprior``). A few thousand
updates leave the critics far from their fixed point (Q about 4 against discounted returns of
15-80 on MetaWorld at x 0.1), so advantages are ~10x smaller than at convergence and beta = 3
weights every action about equally; beta = 10 (IQL's AntMaze value) restores the ranking.
Measured in docs/agents.md, "IQL at the quick scale"."""


# ---- the learner ---------------------------------------------------------------------------


@dataclass
class IQLConfig:
    """IQL hyper-parameters (CORL locomotion defaults)."""

    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the actor, both critics and the value net."""
    actor: str = "gaussian"
    """Policy head: 'gaussian' (state-independent log-std, not squashed) or 'deterministic'."""
    actor_dropout: float = 0.0
    """Dropout after every hidden activation of the actor."""
    lr: float = 3e-4
    """Adam learning rate of the critics and the value net."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor."""
    actor_schedule: str = "cosine"
    """Actor learning-rate schedule: 'cosine' (to 0 over the run, CORL and PT) or 'constant'."""
    gamma: float = 0.99
    """Discount."""
    expectile: float = 0.7
    """Expectile tau of the value loss."""
    beta: float = 3.0
    """Inverse temperature of the AWR weight exp(beta * A)."""
    max_weight: float = 100.0
    """Upper clip of the AWR weight."""
    polyak: float = 0.005
    """Polyak rate of the target critics."""
    critic_reduction: str = "mean"
    """'mean' (CORL: the two Q MSEs averaged) or 'sum' (JAX/PT)."""
    value_for_targets: str = "pre"
    """'pre' (CORL: V before its update for the Q target and advantage) or 'post' (JAX/PT)."""
    log_std_min: float = -20.0
    """Lower clamp of the Gaussian log-std (CORL -20; PT/IPL -5)."""
    obs_norm: bool = True
    """Standardise observations with dataset mean/std (std + 1e-3), as CORL does."""
    init: str = "default"
    """Layer init: 'default' (PyTorch, CORL) or 'orthogonal' (research-lightning, gain 1)."""
    cuda_graph: bool = False
    """On CUDA: capture the IQL update (single or stacked) once as a CUDA graph and replay it,
    one launch per step instead of hundreds (:class:`pbrl.learn.kit.CapturedStep`). No
    effect on a CPU. The same arithmetic, to float32 rounding."""

    def check(self) -> None:
        if self.actor not in ("gaussian", "deterministic"):
            raise PbrlError(f"actor: must be 'gaussian' or 'deterministic', got '{self.actor}'")
        if self.critic_reduction not in ("mean", "sum"):
            raise PbrlError(f"critic_reduction: 'mean' or 'sum', got '{self.critic_reduction}'")
        if self.value_for_targets not in ("pre", "post"):
            raise PbrlError(f"value_for_targets: 'pre' or 'post', got '{self.value_for_targets}'")
        if self.actor_schedule not in ("cosine", "constant"):
            raise PbrlError(f"actor_schedule: 'cosine' or 'constant', got '{self.actor_schedule}'")
        if not 0.0 < self.expectile < 1.0:
            raise PbrlError(f"expectile: must lie in (0, 1), got {self.expectile}")


IQL_FIELDS = tuple(IQLConfig.__dataclass_fields__)


def iql_config_from(cfg: Any, **extra: Any) -> IQLConfig:
    """An IQLConfig from the same-named fields of an agent's Config (plus overrides)."""
    values = {k: getattr(cfg, k) for k in IQL_FIELDS if hasattr(cfg, k)}
    values.update(extra)
    return IQLConfig(**values)


def captures_updates(cfg: IQLConfig, device: torch.device) -> bool:
    """Whether an IQL update on ``device`` is captured as a CUDA graph (``cuda_graph`` on a
    CUDA device; a CPU ignores the flag)."""
    return bool(cfg.cuda_graph) and device.type == "cuda"


def iql_optimizers(
    v: Any, q: Any, actor: Any, cfg: IQLConfig, max_steps: int
) -> tuple[torch.optim.Adam, torch.optim.Adam, torch.optim.Adam, ActorLr, bool]:
    """The fused Adams of an IQL update's value, critic and actor parameters, the actor's
    schedule, and whether the update is to be captured as a CUDA graph (``cuda_graph`` with
    the parameters on CUDA): the Adams are then capturable and the actor's rate a device
    tensor that :class:`ActorLr` fills between replays."""
    v, q, actor = list(v), list(q), list(actor)
    device = actor[0].device
    graph = captures_updates(cfg, device)
    rate: float | torch.Tensor = cfg.actor_lr
    if graph:
        rate = torch.tensor(float(cfg.actor_lr), device=device)
    v_opt = fused_adam(v, lr=cfg.lr, capturable=graph)
    q_opt = fused_adam(q, lr=cfg.lr, capturable=graph)
    actor_opt = fused_adam(actor, lr=rate, capturable=graph)
    schedule = ActorLr(actor_opt, cfg.actor_lr, max_steps, cfg.actor_schedule == "cosine")
    return v_opt, q_opt, actor_opt, schedule, graph


class IQLLearner(nn.Module):
    """Actor, twin critic (+ target), value net and their optimizers; one ``update`` per step.

    ``update(batch)`` takes a dict of tensors on the learner's device: ``obs`` (B, D),
    ``act`` (B, A), ``reward`` (B,), ``next_obs`` (B, D), ``done`` (B,) float (1 =
    terminal; ``discount`` (B,) may replace ``gamma * (1 - done)``). Observations are raw:
    the learner standardises them itself when ``obs_norm`` is on (:meth:`set_obs_stats`).
    The individual steps (:meth:`value_step`, :meth:`critic_step`, :meth:`actor_step`) are
    public so variants (IPL) can replace one of them. They return the step's detached
    tensors (the loss, and V, the critics' values or the advantages it came from), never
    read on the host inside the update (on CUDA a ``float()`` per step would wait for the
    device every update) and never reduced between log steps: :meth:`metrics` turns them
    into the log metrics at a log interval, and the runner converts what a learner yields.
    """

    def __init__(
        self, obs_dim: int, act_dim: int, cfg: IQLConfig, max_steps: int, device: str = "cpu"
    ) -> None:
        super().__init__()
        cfg.check()
        self.cfg = cfg
        self.max_steps = max(int(max_steps), 1)
        if cfg.actor == "gaussian":
            self.actor: nn.Module = GaussianActor(
                obs_dim,
                act_dim,
                cfg.hidden,
                cfg.actor_dropout,
                log_std_min=cfg.log_std_min,
                init=cfg.init,
            )
        else:
            self.actor = TanhDeterministicActor(
                obs_dim,
                act_dim,
                cfg.hidden,
                cfg.actor_dropout,
                dropout_before_act=False,
                init=cfg.init,
            )
        self.q = TwinQ(obs_dim, act_dim, cfg.hidden, init=cfg.init)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.v = ValueNet(obs_dim, cfg.hidden, init=cfg.init)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.to(device)
        self.device = device
        self.v_opt, self.q_opt, self.actor_opt, self.actor_lr, graph = iql_optimizers(
            self.v.parameters(), self.q.parameters(), self.actor.parameters(), cfg, self.max_steps
        )
        self.captured = CapturedStep(self._update) if graph else None
        self.steps = 0
        self.polyak_pairs = (list(self.q_target.parameters()), list(self.q.parameters()))

    def set_max_steps(self, max_steps: int) -> None:
        """Restart the actor's cosine schedule over ``max_steps`` updates (call before fit)."""
        self.max_steps = max(int(max_steps), 1)
        self.actor_lr.restart(self.max_steps)

    # -- observation statistics ------------------------------------------------------------
    def set_obs_stats(self, observations: np.ndarray) -> None:
        """Standardisation statistics from the dataset (no-op unless ``obs_norm``)."""
        if not self.cfg.obs_norm:
            return
        obs = np.asarray(observations, dtype=np.float64)
        self.obs_mean.copy_(torch.as_tensor(obs.mean(0), dtype=torch.float32))
        self.obs_std.copy_(torch.as_tensor(obs.std(0) + 1e-3, dtype=torch.float32))

    def norm(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    # -- the steps -------------------------------------------------------------------------
    def policy_nll(self, obs_n: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Per-row NLL of dataset actions under the actor (normalised observations)."""
        if isinstance(self.actor, GaussianActor):
            return -self.actor.log_prob(obs_n, act)
        return -deterministic_logp(self.actor(obs_n), act)

    def value_step(
        self, obs_n: torch.Tensor, act: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """One V update. Returns (target_q (B,), V(s) before the update (B,), the step's
        tensors ``v_loss`` and ``v`` for :meth:`metrics`).

        ``weights`` (B,), when given, replaces the plain mean by a weighted mean (IPL's
        replay balancing); they should sum to 1.
        """
        with torch.no_grad():
            target_q = self.q_target(obs_n, act).min(0).values
        v = self.v(obs_n)
        loss = row_mean(expectile_loss(target_q - v, self.cfg.expectile), weights)
        self.v_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.v_opt.step()
        v_old = v.detach()
        return target_q, v_old, {"v_loss": loss.detach(), "v": v_old}

    def critic_step(
        self,
        obs_n: torch.Tensor,
        act: torch.Tensor,
        reward: torch.Tensor,
        next_obs_n: torch.Tensor,
        discount: torch.Tensor,
        next_v: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One TD update of the twin critic, then the Polyak update of its target. Returns
        the step's tensors ``q_loss`` and ``qs`` (the critics' values) for :meth:`metrics`."""
        with torch.no_grad():
            if next_v is None:
                next_v = self.v(next_obs_n)
            target = reward + discount * next_v
        qs = self.q(obs_n, act)
        loss = iql_q_loss(qs, target, self.cfg.critic_reduction)
        self.q_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.q_opt.step()
        self.polyak()
        return {"q_loss": loss.detach(), "qs": qs.detach()}

    def polyak(self) -> None:
        """The Polyak update of the target critics towards the critics (``polyak``)."""
        soft_update(*self.polyak_pairs, self.cfg.polyak)

    def actor_step(
        self,
        obs_n: torch.Tensor,
        act: torch.Tensor,
        adv: torch.Tensor,
        weights: torch.Tensor | None = None,
        schedule: bool = True,
    ) -> dict[str, torch.Tensor]:
        """One AWR step on advantages ``adv`` (B,), then (``schedule``) the actor's lr
        schedule step. Returns the step's tensors ``actor_loss`` and ``adv`` for
        :meth:`metrics`."""
        w = awr_weights(adv.detach(), self.cfg.beta, self.cfg.max_weight)
        loss = row_mean(w * self.policy_nll(obs_n, act), weights)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        if schedule:
            self.actor_lr.step()
        return {"actor_loss": loss.detach(), "adv": adv.detach()}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One IQL step on a transition batch (see the class docstring for the keys).
        Returns the steps' tensors (``v_loss``, ``v``, ``q_loss``, ``qs``, ``actor_loss``,
        ``adv``), which :meth:`metrics` reduces at a log step; with a CUDA graph
        (``cuda_graph``) they are the graph's tensors, valid until the next update. The step
        count and the actor's schedule move outside the graph."""
        out = self._update(batch) if self.captured is None else self.captured(batch)
        self.steps += 1
        self.actor_lr.step()
        return out

    def _update(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        obs_n = self.norm(batch["obs"])
        next_obs_n = self.norm(batch["next_obs"])
        act = batch["act"]
        if "discount" in batch:
            discount = batch["discount"]
        else:
            discount = self.cfg.gamma * (1.0 - batch["done"])
        pre = self.cfg.value_for_targets == "pre"
        next_v_pre = None
        if pre:
            with torch.no_grad():
                next_v_pre = self.v(next_obs_n)
        target_q, v_old, metrics = self.value_step(obs_n, act)
        if pre:
            adv = target_q - v_old
            next_v = next_v_pre
        else:
            with torch.no_grad():
                adv = target_q - self.v(obs_n)
                next_v = self.v(next_obs_n)
        metrics.update(self.critic_step(obs_n, act, batch["reward"], next_obs_n, discount, next_v))
        metrics.update(self.actor_step(obs_n, act, adv, schedule=False))
        return metrics

    def metrics(self, out: dict[str, Any]) -> dict[str, Any]:
        """The log metrics of the tensors an update or a step returned (:func:`iql_metrics`)."""
        return iql_metrics(out, self.cfg.beta, self.cfg.max_weight)

    # -- acting ----------------------------------------------------------------------------
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action(s) (the actor mean, eval mode) clamped to [-1, 1]."""
        return greedy_action(self.actor, obs, self.device, self.norm)


@dataclass
class IQLPlan:
    """A learner's last phase: ``steps`` IQL updates of ``learner`` on ``ds`` relabelled with
    ``rewards``, numbered from ``step0`` (what :func:`iql_phase` runs). A learner whose
    ``before_iql(ctx)`` generator returns one gets stacked seeds for free
    (:func:`pbrl.learn.stack.fit_stacked_before_iql`)."""

    learner: IQLLearner
    ds: Any
    rewards: np.ndarray
    steps: int
    batch_size: int
    step0: int
    reward_norm: str = "none"
    phase: float = 2.0

    def run(self, ctx: Any) -> Iterator[dict[str, float]]:
        return iql_phase(
            self.learner,
            self.ds,
            self.rewards,
            self.steps,
            self.batch_size,
            ctx,
            self.step0,
            self.reward_norm,
            self.phase,
        )


def iql_phase(
    iql: IQLLearner,
    ds: Any,
    rewards: np.ndarray,
    steps: int,
    batch_size: int,
    ctx: Any,
    step0: int,
    reward_norm: str = "none",
    phase: float = 2.0,
) -> Iterator[dict[str, float]]:
    """Run ``steps`` IQL updates on ``ds`` relabelled with ``rewards``, yielding metrics.

    ``rewards`` is the learned reward of every transition (never the ground truth: the
    dataset handed to a preference learner has none). ``reward_norm`` is one of
    :data:`REWARD_NORMS`. Step numbers continue from ``step0``.
    """
    r = reward_normalize(rewards, ds.starts, ds.lengths, reward_norm, ds.task_id)
    data = TransitionTensors.from_dataset(ds, ctx.device, r)
    iql.set_obs_stats(ds.observations)
    total = step0 + steps
    batches = data.minibatches(batch_size, ctx.generator)
    for i in range(1, steps + 1):
        m = iql.update(next(batches))
        step = step0 + i
        if log_due(step, ctx.steps, ctx.log_interval) or step == total:
            yield {"step": step, "phase": phase, **iql.metrics(m)}
