"""Stacked seeds: K learners of one config trained as one, their parameters stacked along a
leading member axis (issue 22; docs/performance.md, "Stacked seeds").

:class:`StackedModules` is the general piece: K modules of one architecture (each built as
its own run would build it, so each starts from its own seed's initialisation) have their
parameters stacked with ``torch.func.stack_module_state``. A loss is computed for every
member at once through the template's member-batched forward (:meth:`StackedModules.members`:
``forward_members`` of the networks in :mod:`pbrl.learn.nn` and of the learners' sequence
models, written once against :class:`pbrl.learn.nn.Layers`: one batched matrix product per
layer for all members), and the loss arithmetic takes the leading member axis as it comes
(each loss reduces over its own dims only). A template without a member forward (a plug-in
learner's own network) can still stack with ``torch.func.vmap`` over
``torch.func.functional_call`` (:meth:`StackedModules.vmap`), which does the same arithmetic
at more host time per step (``bench/stack_vmap.py``; docs/performance.md, "Stacked seeds").
The loss backpropagated is the sum of the members' losses, so each member's gradient is the
one its own loss gives. One Adam over the stacked tensors then updates each member exactly
as its own Adam would (Adam is elementwise). A batch holds one minibatch per member
(``(K, B, ...)`` tensors), drawn with the member's own generator. :meth:`write_back` copies
each member's parameters into its own module, so the members' agents evaluate, act and save
checkpoints as single runs do.

:class:`StackedIQL` is IQL's update on the member forwards (``agents/iql.py`` and every
learner whose last phase is IQL). Every built-in learner's stacked path runs without
``vmap``: ``agents/bc.py``, ``agents/cpl.py``, ``agents/ipl.py``, ``agents/oppo.py``,
``agents/dppo.py`` (predictor and policy), and the reward phases of ``agents/mr.py``,
``agents/regret.py``, ``agents/pt.py`` and ``agents/hprior.py`` (world model, importance and
reward ensembles). PT's and Hindsight PRIOR's relabelling runs every member at once; DPPO's
scoring of its windows runs one member after the other (each member scores its own pool).
The result, up to floating-point differences of batched against single matrix products, is
K separate runs (``tests/test_stack.py`` checks it update by update). Dropout is drawn per
member from the process's generator (elementwise over the stacked activations), so with
dropout the members are K runs identical in distribution, not bit for bit, to the separate
ones.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Generator, Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from pbrl.errors import PbrlError
from pbrl.learn.data import TransitionTensors
from pbrl.learn.iql import (
    awr_weights,
    expectile_loss,
    iql_metrics,
    iql_optimizers,
    iql_q_loss,
    reward_normalize,
    row_mean,
)
from pbrl.learn.kit import CapturedStep, epoch_minibatches, log_due
from pbrl.learn.nn import GaussianActor
from pbrl.types import PAIR_FIELDS, PreferenceBatch

logger = logging.getLogger(__name__)


class CannotStack(PbrlError):
    """These members cannot train stacked (their labels differ in size, or the config has no
    stacked form): a learner's ``fit_stacked`` raises it before it trains anything, and
    :func:`fit_stacked_or_in_turn` then trains the members one after the other."""


def fit_stacked_or_in_turn(
    fit_stacked: Callable[[list[Any], list[Any]], Iterator[list[Any]]],
    agents: list[Any],
    ctxs: list[Any],
) -> Iterator[list[Any]]:
    """``fit_stacked(agents, ctxs)``'s rows, or, when it raises :class:`CannotStack` before
    its first row, each member's own ``fit`` one after the other in the same row form
    (:func:`members_in_turn`): what the runner's stacked seeds train with, so a sweep whose
    seeds cannot stack still trains (``pbrl bench --stack-seeds``, the default on CUDA)."""
    rows = fit_stacked(agents, ctxs)
    try:
        first = next(rows)
    except StopIteration:
        return
    except CannotStack as why:
        logger.info("stacked seeds: %s; the %d members train one after the other", why, len(agents))
        yield from members_in_turn(
            len(agents), [a.fit(c) for a, c in zip(agents, ctxs, strict=True)]
        )
        return
    yield first
    yield from rows


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

    def members(self, *args: Any, method: str = "forward_members", **kwargs: Any) -> Any:
        """Every member at once through the template's member-batched form of a forward
        (``forward_members`` of :class:`pbrl.learn.nn.ValueNet`, :class:`~pbrl.learn.nn.TwinQ`,
        ``log_prob_members`` of :class:`~pbrl.learn.nn.GaussianActor`, ...): ``(K, ...)``
        inputs, ``(K, ...)`` outputs, no :meth:`vmap`."""
        return getattr(self.template, method)(self.params, *args, **kwargs)

    def members_detached(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`members` (``forward_members``) with the parameters detached: no gradient
        reaches them."""
        params = {k: v.detach() for k, v in self.params.items()}
        return self.template.forward_members(params, *args, **kwargs)

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


def labels_of_one_shape(prefs: list[PreferenceBatch | None], fields: tuple[str, ...]) -> bool:
    """Whether every member has labels and their ``fields`` have one shape (the same number
    of pairs and segment length), so that :func:`member_label_rows` can hold them as one
    table."""
    if any(p is None for p in prefs):
        return False
    return len({tuple(tuple(getattr(p, f).shape) for f in fields) for p in prefs}) == 1


def member_label_rows(
    prefs: list[PreferenceBatch], fields: tuple[str, ...]
) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """K members' labels as one table of the ``fields`` a learner reads: returns
    ``index(idx)`` that gives, for a ``(K, ...)`` index tensor (``(K, B)``, or ``(K, M, B)``
    for an ensemble's own minibatches), member k's pairs ``idx[k]`` of its own labels, each
    field ``(K, ..., rest)``, in one gather per field (the labels are held
    once when every member has the same ones; otherwise the fields are copied into one
    table when this is called). :meth:`PreferenceBatch.rows` is one run's form of it."""
    if all(p is prefs[0] for p in prefs):
        return lambda idx: prefs[0].rows(idx, fields)
    if not labels_of_one_shape(prefs, fields):
        raise CannotStack(
            "stacked seeds: the members' labels differ in shape (pairs or segment length)"
        )
    k, n = len(prefs), prefs[0].size
    table = {f: torch.stack([getattr(p, f) for p in prefs]).flatten(0, 1) for f in fields}

    def index(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        offset = n * torch.arange(k, device=idx.device).reshape(k, *[1] * (idx.dim() - 1))
        flat = (idx + offset).reshape(-1)
        return {f: v.index_select(0, flat).unflatten(0, idx.shape) for f, v in table.items()}

    return index


def member_pairs(
    prefs: list[PreferenceBatch],
    generators: list[torch.Generator],
    batch_size: int,
    device: str,
    fields: tuple[str, ...] = PAIR_FIELDS,
) -> Iterator[dict[str, torch.Tensor]]:
    """Endless minibatches of labelled pairs for K members: member k's ``batch_size`` pairs
    of its own labels, drawn with its own generator as
    :func:`pbrl.learn.kit.epoch_minibatches` draws them for a single run (one permutation
    per epoch, drawn when the epoch's first minibatch is asked for), all K gathered at once
    (:func:`member_label_rows`); each field ``(K, B, ...)``."""
    labels = member_label_rows(prefs, fields)
    draws = [
        epoch_minibatches(p.size, batch_size, g, device)
        for p, g in zip(prefs, generators, strict=True)
    ]
    while True:
        yield labels(torch.stack([next(d) for d in draws]))


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


@torch.no_grad()
def clip_member_grads_(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """``nn.utils.clip_grad_norm_`` for each member of stacked ``(K, ...)`` parameters: each
    member's gradients (its slices of every tensor) scaled so their joint norm is at most
    ``max_norm``. Returns the members' norms before clipping, ``(K,)``."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    k = grads[0].shape[0]
    norms = torch.stack([g.reshape(k, -1).pow(2).sum(-1) for g in grads]).sum(0).sqrt()
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.reshape(k, *([1] * (g.dim() - 1))))
    return norms


def zip_generators(gens: list[Iterator[Any]]) -> Iterator[list[Any]]:
    """The members' endless batch generators advanced together."""
    while True:
        yield [next(g) for g in gens]


_PARTS = ("v", "q", "q_target", "actor")


class StackedIQL:
    """K :class:`IQLLearner` members (same config) trained as one; see the module docstring.

    Supported: the Gaussian actor without dropout, ``value_for_targets`` ``pre`` and
    ``post``, both critic reductions, observation standardisation. With ``cuda_graph`` on a
    CUDA device, :meth:`update` is replayed as one CUDA graph (:class:`CapturedStep`): the
    optimizers are then capturable, and the actors' cosine schedule fills a device tensor
    between replays (:class:`pbrl.learn.kit.ActorLr`) instead of torch's scheduler, which
    would bake the learning rate into the graph."""

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
        self.v_opt, self.q_opt, self.actor_opt, self.actor_lr, graph = iql_optimizers(
            *(self.parts[n].parameters() for n in ("v", "q", "actor")), cfg, first.max_steps
        )
        self.max_steps = first.max_steps
        self.steps = 0
        self.captured = CapturedStep(self._update) if graph else None

    @property
    def params(self) -> dict[str, dict[str, torch.Tensor]]:
        return {name: part.params for name, part in self.parts.items()}

    def refresh_obs_stats(self) -> None:
        """Take the members' observation statistics again (after ``set_obs_stats``)."""
        self.obs_mean = torch.stack([m.obs_mean for m in self.members])
        self.obs_std = torch.stack([m.obs_std for m in self.members])

    def norm(self, obs: torch.Tensor) -> torch.Tensor:
        """(K, B, D) raw observations standardised with each member's statistics."""
        return (obs - self.obs_mean.unsqueeze(1)) / self.obs_std.unsqueeze(1)

    # -- the steps, for every member at once --------------------------------------------------
    def values(self, obs_n: torch.Tensor) -> torch.Tensor:
        """(K, B) V of (K, B, D) normalised observations (no gradient)."""
        with torch.no_grad():
            return self.parts["v"].members(obs_n)

    def qs(self, obs_n: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """(K, n, B): every member's critic ensemble on its own (K, B, ...) batch."""
        return self.parts["q"].members(obs_n, act)

    def value_step(
        self, obs_n: torch.Tensor, act: torch.Tensor, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One V update of every member (:meth:`IQLLearner.value_step`; ``weights`` (K, B)
        replace the plain mean). Returns (target_q (K, B), V before the update (K, B), the
        members' losses (K,))."""
        with torch.no_grad():
            target_q = self.parts["q_target"].members(obs_n, act).min(1).values
        v = self.parts["v"].members(obs_n)
        losses = row_mean(expectile_loss(target_q - v, self.cfg.expectile), weights)
        self.v_opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.v_opt.step()
        return target_q, v.detach(), losses.detach()

    def critic_step(
        self, loss_fn: Callable[..., tuple[torch.Tensor, Any]], obs_n: Any, act: Any, *args: Any
    ) -> tuple[torch.Tensor, Any]:
        """One update of every member's critic on ``loss_fn(qs, *args) -> (losses (K,),
        aux)``, ``qs`` (K, n, B) the members' critics on their own ``obs_n``, ``act``; then
        the Polyak update of the target critics. Returns (losses (K,) detached, aux)."""
        losses, aux = loss_fn(self.qs(obs_n, act), *args)
        self.q_opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.q_opt.step()
        self.parts["q_target"].lerp_(self.parts["q"], self.cfg.polyak)
        return losses.detach(), aux

    def actor_step(
        self,
        obs_n: torch.Tensor,
        act: torch.Tensor,
        adv: torch.Tensor,
        weights: torch.Tensor | None = None,
        schedule: bool = True,
    ) -> torch.Tensor:
        """One AWR step of every member (:meth:`IQLLearner.actor_step`), then (``schedule``)
        the shared lr schedule step. Returns the members' losses (K,)."""
        cfg = self.cfg
        nll = -self.parts["actor"].members(obs_n, act, method="log_prob_members")
        per_row = awr_weights(adv.detach(), cfg.beta, cfg.max_weight) * nll
        losses = row_mean(per_row, weights)
        self.actor_opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.actor_opt.step()
        if schedule:
            self.actor_lr.step()
        return losses.detach()

    # -- one update of every member --------------------------------------------------------
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One IQL step of every member on its own minibatch (``(K, B, ...)`` tensors: obs,
        act, reward, next_obs, done). Returns the step's tensors: the members' losses
        (``v_loss``, ``q_loss``, ``actor_loss``, ``(K,)``) and V before the step (``v``),
        the critics' values (``qs``) and the advantages (``adv``) they came from, which
        :meth:`metrics` turns into the members' log metrics at a log interval only (no
        host synchronisation, and no reductions on the steps between; with a CUDA graph,
        the graph's tensors, valid until the next update; the step count and the actors'
        schedule move outside the graph)."""
        out = self._update(batch) if self.captured is None else self.captured(batch)
        self.steps += 1
        self.actor_lr.step()
        return out

    def _update(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        cfg = self.cfg
        obs_n, next_obs_n = self.norm(batch["obs"]), self.norm(batch["next_obs"])
        act, reward = batch["act"], batch["reward"]
        discount = cfg.gamma * (1.0 - batch["done"])
        pre = cfg.value_for_targets == "pre"
        next_v_pre = self.values(next_obs_n) if pre else None
        target_q, v_old, v_losses = self.value_step(obs_n, act)
        if pre:
            adv, next_v = target_q - v_old, next_v_pre
        else:
            adv, next_v = target_q - self.values(obs_n), self.values(next_obs_n)
        target = reward + discount * next_v

        def q_loss(qs: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return iql_q_loss(qs, t, cfg.critic_reduction), qs.detach()

        q_losses, qs = self.critic_step(q_loss, obs_n, act, target)
        a_losses = self.actor_step(obs_n, act, adv, schedule=False)
        return {
            "v_loss": v_losses,
            "v": v_old,
            "q_loss": q_losses,
            "qs": qs,
            "actor_loss": a_losses,
            "adv": adv,
        }

    def metrics(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The members' metrics ``(K,)`` of the tensors an :meth:`update` or a step
        returned, as :meth:`IQLLearner.metrics` reports one learner's
        (:func:`pbrl.learn.iql.iql_metrics`)."""
        return iql_metrics(out, self.cfg.beta, self.cfg.max_weight)

    def member_state(self, i: int) -> dict[str, dict[str, torch.Tensor]]:
        """Member ``i``'s parameters per part (``v``, ``q``, ``q_target``, ``actor``), as
        state dicts its own IQLLearner's modules load."""
        return {name: part.member_state(i) for name, part in self.parts.items()}

    def write_back(self) -> None:
        """Copy every member's parameters into its own IQLLearner (to act, evaluate, save)."""
        for part in self.parts.values():
            part.write_back()


def members_in_turn(
    k: int, gens: list[Generator[Any, None, Any]]
) -> Generator[list[Any], None, list[Any]]:
    """Run the members' generators to their ends, one member after the other (phases that
    are not stacked): each of member i's metric dicts is yielded as a row of K entries with
    ``None`` for the others; returns the generators' return values."""
    out = []
    for i, gen in enumerate(gens):
        while True:
            try:
                m = next(gen)
            except StopIteration as stop:
                out.append(stop.value)
                break
            rows: list[Any] = [None] * k
            rows[i] = m
            yield rows
    return out


def stackable_iql(learner: Any) -> bool:
    """Whether :class:`StackedIQL` takes this IQL learner (Gaussian actor, no dropout)."""
    return isinstance(learner.actor, GaussianActor) and learner.cfg.actor_dropout == 0


def fit_stacked_before_iql(
    agents: list[Any],
    ctxs: list[Any],
    before: Callable[[list[Any], list[Any]], Generator[list[Any], None, list[Any]]] | None = None,
) -> Iterator[list[Any]]:
    """Stacked seeds of a learner that ends in IQL on a learned reward (``mr``, ``pt``,
    ``hprior``): each member's ``before_iql(ctx)`` phases (a generator of metric dicts that
    returns its :class:`pbrl.learn.iql.IQLPlan`) run one member after the other, or, with
    ``before``, all members' at once (``before(agents, ctxs)`` yields rows of one entry per
    member and returns the members' plans: ``mr``'s stacked reward ensembles), then the IQL
    phases run stacked, each member on its own relabelled data and generator.

    Yields one entry per member, ``None`` for a member with nothing to report at that
    yield. Members whose IQL phases differ in length or start (``mr`` stops its reward phase
    early at a training accuracy) cannot share one stacked Adam (its step count and
    learning-rate schedule are one for all members), so the members are grouped by their
    phase's shape: each group of two or more runs stacked, the groups (and members whose
    IQL core cannot be stacked) one after the other. The result is the K separate runs
    either way."""
    k = len(agents)
    if before is not None:
        plans = yield from before(agents, ctxs)
    else:
        plans = yield from members_in_turn(
            k, [a.before_iql(c) for a, c in zip(agents, ctxs, strict=True)]
        )
    groups: dict[Any, list[int]] = {}
    for i, p in enumerate(plans):
        key = (p.steps, p.step0, p.batch_size, p.phase) if stackable_iql(p.learner) else i
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        if len(members) == 1:
            i = members[0]
            run = members_in_turn(1, [plans[i].run(ctxs[i])])
        else:
            run = _stacked_iql_phase([plans[i] for i in members], [ctxs[i] for i in members])
        for rows in run:
            out: list[Any] = [None] * k
            for i, r in zip(members, rows, strict=True):
                out[i] = r
            yield out


def _stacked_iql_phase(plans: list[Any], ctxs: list[Any]) -> Iterator[list[dict[str, float]]]:
    """The IQL phases of members with one phase shape (:func:`fit_stacked_before_iql`)."""
    first, ctx0 = plans[0], ctxs[0]
    rewards = []
    for plan in plans:
        ds = plan.ds
        r = reward_normalize(plan.rewards, ds.starts, ds.lengths, plan.reward_norm, ds.task_id)
        rewards.append(r)
        plan.learner.set_obs_stats(ds.observations)
    data = TransitionTensors.stacked([p.ds for p in plans], ctx0.device, rewards)
    batches = data.member_minibatches(first.batch_size, [c.generator for c in ctxs])
    stack = StackedIQL([p.learner for p in plans])
    total = first.step0 + first.steps
    for i in range(1, first.steps + 1):
        out = stack.update(next(batches))
        step = first.step0 + i
        if log_due(step, ctx0.steps, ctx0.log_interval) or step == total:
            stack.write_back()
            yield stacked_metrics(step, stack.metrics(out), {"phase": first.phase})
