"""Stacked seeds: K learners of one config trained as one, their parameters stacked along a
leading member axis (issue 22; docs/performance.md, "Stacked seeds").

:class:`StackedModules` is the general piece: K modules of one architecture (each built as
its own run would build it, so each starts from its own seed's initialisation) have their
parameters stacked with ``torch.func.stack_module_state``; a loss is computed per member
with ``torch.func.vmap`` over ``torch.func.functional_call`` on a template module, and the
loss backpropagated is the sum of the members' losses, so each member's gradient is the one
its own loss gives. One Adam over the stacked tensors then updates each member exactly as
its own Adam would (Adam is elementwise). A batch holds one minibatch per member
(``(K, B, ...)`` tensors), drawn with the member's own generator. :meth:`write_back` copies
each member's parameters into its own module, so the members' agents evaluate, act and save
checkpoints as single runs do.

:class:`StackedIQL` is IQL's update on it (``agents/iql.py``); ``agents/bc.py`` and
``agents/cpl.py`` use :class:`StackedModules` directly for their actor. The result, up to
floating-point differences of batched against single matrix products, is K separate runs
(``tests/test_stack.py`` checks it update by update). Dropout is drawn per member
(``vmap(randomness="different")``) from the process's generator, so with dropout the members
are K runs identical in distribution, not bit for bit, to the separate ones.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from pbrl.errors import PbrlError
from pbrl.learn.iql import awr_weights, expectile_loss, iql_q_loss
from pbrl.learn.nn import GaussianActor


class StackedModules:
    """K modules of one architecture with their parameters stacked (see the module docstring).

    ``params`` maps each parameter name to a ``(K, ...)`` leaf tensor (the optimizer's);
    buffers are stacked too and not trained. :meth:`call` runs the template with one
    member's (vmapped) parameters; :meth:`vmap` maps a per-member function over the members.
    """

    def __init__(self, modules: list[nn.Module], *, trainable: bool = True) -> None:
        if not modules:
            raise PbrlError("stacked seeds: no member")
        kinds = {type(m) for m in modules}
        if len(kinds) != 1:
            raise PbrlError(f"stacked seeds: members of different kinds ({kinds})")
        self.modules = modules
        self.k = len(modules)
        self.template = copy.deepcopy(modules[0])
        params, buffers = stack_module_state(modules)
        self.params: dict[str, torch.Tensor] = params
        self.buffers: dict[str, torch.Tensor] = buffers
        for t in self.params.values():
            t.requires_grad_(trainable)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def call(self, params: dict[str, torch.Tensor], *args: Any) -> Any:
        """The template's forward with one member's parameters (inside :meth:`vmap`)."""
        return functional_call(self.template, params, args)

    def vmap(self, fn: Callable[..., Any], *batched: Any, randomness: str = "different") -> Any:
        """``fn(params, *member_args)`` for every member: ``batched`` are ``(K, ...)`` tensors
        (or dicts of them); returns ``fn``'s outputs stacked along a leading member axis."""
        return vmap(fn, randomness=randomness)(self.params, *batched)

    def train(self, mode: bool = True) -> None:
        self.template.train(mode)

    def member_state(self, i: int) -> dict[str, torch.Tensor]:
        """Member ``i``'s parameters and buffers as a state dict its own module loads."""
        out = {k: t[i].detach().clone() for k, t in self.params.items()}
        out.update({k: t[i].detach().clone() for k, t in self.buffers.items()})
        return out

    @torch.no_grad()
    def write_back(self) -> None:
        """Copy every member's stacked parameters into its own module."""
        for i, m in enumerate(self.modules):
            for name, t in m.named_parameters():
                t.copy_(self.params[name][i])

    def lerp_(self, other: StackedModules, weight: float) -> None:
        """Polyak: these parameters move ``weight`` of the way to ``other``'s."""
        with torch.no_grad():
            for key, t in self.params.items():
                t.lerp_(other.params[key], weight)


def member_batches(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """K members' minibatches (same keys and shapes) as one dict of ``(K, ...)`` tensors."""
    keys = batches[0].keys()
    shapes = {k: {tuple(b[k].shape) for b in batches} for k in keys}
    uneven = [k for k, s in shapes.items() if len(s) > 1]
    if uneven:
        raise PbrlError(
            f"stacked seeds: the members' minibatches differ in shape ({uneven[0]}: "
            f"{sorted(shapes[uneven[0]])}); run these seeds without --stack-seeds"
        )
    return {k: torch.stack([b[k] for b in batches]) for k in keys}


def stacked_metrics(
    step: int, per_member: dict[str, torch.Tensor], extra: dict[str, float] | None = None
) -> list[dict[str, float]]:
    """One metric dict per member from ``(K,)`` tensors (one host copy for all of them)."""
    names = list(per_member)
    values = torch.stack([per_member[n].detach().float().reshape(-1) for n in names]).cpu()
    k = values.shape[1]
    return [
        {"step": step, **(extra or {}), **{n: float(values[j, i]) for j, n in enumerate(names)}}
        for i in range(k)
    ]


def zip_generators(gens: list[Iterator[Any]]) -> Iterator[list[Any]]:
    """The members' endless batch generators advanced together."""
    while True:
        yield [next(g) for g in gens]


_PARTS = ("v", "q", "q_target", "actor")


class StackedIQL:
    """K :class:`IQLLearner` members (same config) trained as one; see the module docstring.

    Supported: the Gaussian actor without dropout, ``value_for_targets`` ``pre`` and
    ``post``, both critic reductions, observation standardisation."""

    def __init__(self, members: list[Any]) -> None:
        if not members:
            raise PbrlError("stacked seeds: no member")
        first = members[0]
        cfg = first.cfg
        if not isinstance(first.actor, GaussianActor) or cfg.actor_dropout > 0:
            raise PbrlError("stacked seeds: IQL with the Gaussian actor and no dropout only")
        self.cfg = cfg
        self.members = members
        self.k = len(members)
        self.parts = {
            name: StackedModules([getattr(m, name) for m in members], trainable=name != "q_target")
            for name in _PARTS
        }
        self.obs_mean = torch.stack([m.obs_mean for m in members])
        self.obs_std = torch.stack([m.obs_std for m in members])
        self.v_opt = torch.optim.Adam(self.parts["v"].parameters(), lr=cfg.lr)
        self.q_opt = torch.optim.Adam(self.parts["q"].parameters(), lr=cfg.lr)
        self.actor_opt = torch.optim.Adam(self.parts["actor"].parameters(), lr=cfg.actor_lr)
        self.actor_sched = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_opt, T_max=first.max_steps)
            if cfg.actor_schedule == "cosine"
            else None
        )
        self.max_steps = first.max_steps
        self.steps = 0

    @property
    def params(self) -> dict[str, dict[str, torch.Tensor]]:
        return {name: part.params for name, part in self.parts.items()}

    def refresh_obs_stats(self) -> None:
        """Take the members' observation statistics again (after ``set_obs_stats``)."""
        self.obs_mean = torch.stack([m.obs_mean for m in self.members])
        self.obs_std = torch.stack([m.obs_std for m in self.members])

    # -- per-member functions (vmapped) ---------------------------------------------------
    def _call(self, name: str, params: dict[str, torch.Tensor], *args: Any) -> torch.Tensor:
        return self.parts[name].call(params, *args)

    def _log_prob(self, params: dict[str, torch.Tensor], obs: torch.Tensor, act: torch.Tensor):
        actor = self.parts["actor"].template
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
        v_p, q_p, qt_p, a_p = (self.parts[n].params for n in _PARTS)
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
        self.parts["q_target"].lerp_(self.parts["q"], cfg.polyak)

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
        return {name: part.member_state(i) for name, part in self.parts.items()}

    def write_back(self) -> None:
        """Copy every member's parameters into its own IQLLearner (to act, evaluate, save)."""
        for part in self.parts.values():
            part.write_back()


def _sub(params: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}
