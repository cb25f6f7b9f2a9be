"""Stacked seeds: K IQL learners trained as one, their parameters stacked along a leading
member axis (issue 22's first piece; docs/performance.md, "Stacked seeds").

Each of the K members is an :class:`pbrl.learn.iql.IQLLearner` built as a single run would
build it (so each starts from its own seed's initialisation); their parameters are stacked
with ``torch.func.stack_module_state`` and every loss is computed per member with
``torch.func.vmap`` over ``torch.func.functional_call`` on the first member's modules as
templates. The loss backpropagated is the sum of the members' losses, so each member's
gradient is the one its own loss gives, and one Adam over the stacked tensors updates each
member exactly as its own Adam would (Adam is elementwise). The target critic's Polyak
average and the actor's cosine schedule are elementwise or shared too. A batch holds one
minibatch per member (``(K, B, ...)`` tensors), drawn with the member's own generator.
The result, up to floating-point differences of batched against single matrix products,
is K separate IQL runs (``tests/test_stack.py`` checks it update by update).

Supported: the Gaussian actor without dropout, ``value_for_targets`` ``pre`` and ``post``,
both critic reductions, observation standardisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.func import functional_call, stack_module_state, vmap

from pbrl.errors import PbrlError
from pbrl.learn.iql import awr_weights, expectile_loss, iql_q_loss
from pbrl.learn.nn import GaussianActor

_PARTS = ("v", "q", "q_target", "actor")


class StackedIQL:
    """K :class:`IQLLearner` members (same config) trained as one; see the module docstring."""

    def __init__(self, members: list[Any]) -> None:
        if not members:
            raise PbrlError("stacked seeds: no member")
        first = members[0]
        cfg = first.cfg
        if not isinstance(first.actor, GaussianActor) or cfg.actor_dropout > 0:
            raise PbrlError("stacked seeds: IQL with the Gaussian actor and no dropout only")
        self.cfg = cfg
        self.k = len(members)
        self.templates = {name: getattr(first, name) for name in _PARTS}
        self.params: dict[str, dict[str, torch.Tensor]] = {}
        for name in _PARTS:
            params, _ = stack_module_state([getattr(m, name) for m in members])
            self.params[name] = params
        for p in self.params["q_target"].values():
            p.requires_grad_(False)
        self.obs_mean = torch.stack([m.obs_mean for m in members])
        self.obs_std = torch.stack([m.obs_std for m in members])
        self.v_opt = torch.optim.Adam(list(self.params["v"].values()), lr=cfg.lr)
        self.q_opt = torch.optim.Adam(list(self.params["q"].values()), lr=cfg.lr)
        self.actor_opt = torch.optim.Adam(list(self.params["actor"].values()), lr=cfg.actor_lr)
        self.actor_sched = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_opt, T_max=first.max_steps)
            if cfg.actor_schedule == "cosine"
            else None
        )
        self.max_steps = first.max_steps
        self.steps = 0

    # -- per-member functions (vmapped) ---------------------------------------------------
    def _call(self, name: str, params: dict[str, torch.Tensor], *args: Any) -> torch.Tensor:
        return functional_call(self.templates[name], params, args)

    def _log_prob(self, params: dict[str, torch.Tensor], obs: torch.Tensor, act: torch.Tensor):
        actor = self.templates["actor"]
        mean = functional_call(actor.mean_net, _sub(params, "mean_net."), (obs,))
        log_std = params["log_std"].clamp(actor.log_std_min, actor.log_std_max)
        return torch.distributions.Normal(mean, log_std.exp().expand_as(mean)).log_prob(act).sum(-1)

    def norm(self, obs: torch.Tensor) -> torch.Tensor:
        """(K, B, D) raw observations standardised with each member's statistics."""
        return (obs - self.obs_mean.unsqueeze(1)) / self.obs_std.unsqueeze(1)

    # -- one update of every member --------------------------------------------------------
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One IQL step of every member on its own minibatch (``(K, B, ...)`` tensors: obs,
        act, reward, next_obs, done). Returns each member's losses as ``(K,)`` tensors (no
        host synchronisation)."""
        cfg = self.cfg
        obs_n, next_obs_n = self.norm(batch["obs"]), self.norm(batch["next_obs"])
        act, reward = batch["act"], batch["reward"]
        discount = cfg.gamma * (1.0 - batch["done"])
        v_p, q_p, qt_p, a_p = (self.params[n] for n in _PARTS)
        pre = cfg.value_for_targets == "pre"
        with torch.no_grad():
            target_q = vmap(lambda p, o, a: self._call("q_target", p, o, a).min(0).values)(
                qt_p, obs_n, act
            )
            next_v_pre = vmap(lambda p, o: self._call("v", p, o))(v_p, next_obs_n) if pre else None

        def v_loss(p: dict[str, torch.Tensor], o: torch.Tensor, tq: torch.Tensor):
            v = self._call("v", p, o)
            return expectile_loss(tq - v, cfg.expectile).mean(), v

        v_losses, v_old = vmap(v_loss)(v_p, obs_n, target_q)
        self.v_opt.zero_grad(set_to_none=True)
        v_losses.sum().backward()
        self.v_opt.step()
        with torch.no_grad():
            if pre:
                adv, next_v = target_q - v_old.detach(), next_v_pre
            else:
                adv = target_q - vmap(lambda p, o: self._call("v", p, o))(v_p, obs_n)
                next_v = vmap(lambda p, o: self._call("v", p, o))(v_p, next_obs_n)
            target = reward + discount * next_v

        def q_loss(p: dict[str, torch.Tensor], o: torch.Tensor, a: torch.Tensor, t: torch.Tensor):
            return iql_q_loss(self._call("q", p, o, a), t, cfg.critic_reduction)

        q_losses = vmap(q_loss)(q_p, obs_n, act, target)
        self.q_opt.zero_grad(set_to_none=True)
        q_losses.sum().backward()
        self.q_opt.step()
        with torch.no_grad():
            for key, tp in qt_p.items():
                tp.lerp_(q_p[key], cfg.polyak)

        def a_loss(p: dict[str, torch.Tensor], o: torch.Tensor, a: torch.Tensor, ad: torch.Tensor):
            w = awr_weights(ad, cfg.beta, cfg.max_weight)
            return (w * -self._log_prob(p, o, a)).mean()

        a_losses = vmap(a_loss)(a_p, obs_n, act, adv)
        self.actor_opt.zero_grad(set_to_none=True)
        a_losses.sum().backward()
        self.actor_opt.step()
        if self.actor_sched is not None and self.actor_sched.last_epoch < self.max_steps:
            self.actor_sched.step()
        self.steps += 1
        return {
            "v_loss": v_losses.detach(),
            "q_loss": q_losses.detach(),
            "actor_loss": a_losses.detach(),
        }

    def member_state(self, i: int) -> dict[str, dict[str, torch.Tensor]]:
        """Member ``i``'s parameters per part (``v``, ``q``, ``q_target``, ``actor``), as
        state dicts its own IQLLearner's modules load."""
        return {
            name: {k: t[i].detach().clone() for k, t in self.params[name].items()}
            for name in _PARTS
        }


def _sub(params: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
