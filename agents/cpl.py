"""CPL: Contrastive Preference Learning, a policy learned from preferences without RL.

Paper: Hejna, Rafailov, Sikchi, Finn, Niekum, Knox, Sadigh, "Contrastive Preference
Learning: Learning from Human Feedback without RL", ICLR 2024 (arXiv 2310.13639); official
code jhejna/cpl (``research/algs/cpl.py``).

Summary: under the regret preference model, the optimal advantage of a maximum-entropy
policy is alpha * log pi(a|s), so a Bradley-Terry model over segments' summed advantages
becomes a contrastive loss on the policy's own log-likelihoods: no reward model, no
critic. The default policy is the official deterministic tanh MLP whose "log-prob" is
``-sum_d (mu_d(s) - a_d)^2`` (no 1/2 and no constant: the conservative bias lambda makes
constants matter). Training starts with behaviour cloning on every segment for
``bc_fraction`` of the steps, then re-creates Adam and warms the learning rate up linearly.

Loss (y = prefer_b, 1 means segment b preferred; sums over the real steps of a segment):

    l_t   = -sum_d (mu_d(s_t) - a_{t,d})^2
    A     = alpha * sum_t l_t                        (CPL-KL: alpha * sum_t (l_t - l_t^ref))
    L_CPL = mean_i [ y_i softplus(-(A_b - lambda A_a)) + (1 - y_i) softplus(-(A_a - lambda A_b)) ]
    L     = L_CPL + bc_coeff * mean_{t}(-l_t)        (L = BC loss while pre-training)

Modes: ``comparison`` (the labelled pairs as they are), ``rank`` (each segment paired with
a random partner from the pool, labelled by segment score) and ``score`` (all in-batch pairs
ordered by score, the loss and the reported accuracy averaged over the pairs whose loss term
is non-zero). pbrl's preference files hold pairwise labels, so ``rank``/``score`` use each
segment's net preference over the pairs it appears in (wins minus losses per appearance) as
its score: a documented stand-in for the teacher's per-segment ``rl_sum`` that the official
code reads. The BC term always uses the policy's own l_t (CPL-KL too).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pbrl.errors import DataError, PbrlError
from pbrl.learn.api import AgentSpec, FitContext
from pbrl.learn.data import ACTION_CLIP, segments_tensor
from pbrl.learn.kit import (
    deterministic_logp,
    epoch_minibatches,
    fused_adam,
    greedy_action,
    segment_sum,
)
from pbrl.learn.nn import GaussianActor, TanhDeterministicActor
from pbrl.learn.stack import (
    CannotStack,
    StackedModules,
    member_batches,
    member_label_rows,
    stacked_metrics,
    zip_generators,
)
from pbrl.types import PAIR_FIELDS

# ---- pure losses -------------------------------------------------------------------------


def segment_advantage(logp: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * sum over real steps of the per-step log-prob: (B, L) -> (B,)."""
    return alpha * segment_sum(logp, mask)


def softplus_neg(x: torch.Tensor) -> torch.Tensor:
    """softplus(-x) = -log sigmoid(x) the way the official code computes it.

    log(e^-m + e^(-x-m)) + m with m = max(-x, 0): for x >= ~16.64 the float32 sum rounds to 1
    and the term is exactly 0 (which the score-mode mean relies on).
    """
    m = torch.clamp(-x, min=0.0)
    return torch.log(torch.exp(-m) + torch.exp(-x - m)) + m


def biased_bce_with_logits(
    adv_a: torch.Tensor, adv_b: torch.Tensor, prefer_b: torch.Tensor, bias: float
) -> torch.Tensor:
    """CPL's comparison loss; ``bias`` (lambda) scales the non-preferred segment's advantage.
    The mean over the pairs (the last dim; a leading member axis keeps one loss per member)."""
    y = prefer_b
    to_b = softplus_neg(adv_b - bias * adv_a)
    to_a = softplus_neg(adv_a - bias * adv_b)
    return (y * to_b + (1.0 - y) * to_a).mean(-1)


def biased_bce_with_scores(adv: torch.Tensor, score: torch.Tensor, bias: float) -> torch.Tensor:
    """CPL's dense (score-mode) loss over all in-batch pairs.

    Segments are ordered by ascending ``score``; each pair i < j contributes
    softplus(-(A_j - bias * A_i)); the sum is divided by the number of non-zero terms
    (float32 terms underflow to exactly 0 for logits >= ~16.6 and drop out). Along the last
    dim: a leading member axis keeps one loss per member.
    """
    a = adv.gather(-1, torch.argsort(score, dim=-1))
    n = a.shape[-1]
    i, j = torch.triu_indices(n, n, offset=1, device=adv.device)
    terms = softplus_neg(a[..., j] - bias * a[..., i])
    nonzero = (terms != 0).sum(-1)
    return terms.sum(-1) / nonzero.clamp(min=1)


def score_accuracy(adv: torch.Tensor, score: torch.Tensor, bias: float) -> torch.Tensor:
    """Official score-mode metric: among the in-batch pairs i < j (ascending ``score``) whose
    loss term softplus(-(A_j - bias * A_i)) is non-zero, the fraction with A_j > A_i (0 if
    none). Along the last dim, as :func:`biased_bce_with_scores`."""
    a = adv.gather(-1, torch.argsort(score, dim=-1))
    n = a.shape[-1]
    i, j = torch.triu_indices(n, n, offset=1, device=adv.device)
    a_i, a_j = a[..., i], a[..., j]
    counted = softplus_neg(a_j - bias * a_i) != 0
    right = (a_j > a_i) & counted
    return right.sum(-1) / counted.sum(-1).clamp(min=1)


def bc_loss(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of -l_t over real (segment, step) entries: (..., B, L) -> (...)."""
    return -(logp * mask).sum((-2, -1)) / mask.sum((-2, -1)).clamp(min=1.0)


def comparison_accuracy_t(
    adv_a: torch.Tensor, adv_b: torch.Tensor, prefer_b: torch.Tensor
) -> torch.Tensor:
    """Official metric: mean[(A_b > A_a) == round(y)] (a tie counts as 'a', round(0.5) = 0),
    as a tensor (no host synchronisation): the mean over the last dim."""
    return ((adv_b > adv_a).float() == torch.round(prefer_b)).float().mean(-1)


def comparison_accuracy(adv_a: torch.Tensor, adv_b: torch.Tensor, prefer_b: torch.Tensor) -> float:
    """:func:`comparison_accuracy_t` as a float."""
    return float(comparison_accuracy_t(adv_a, adv_b, prefer_b))


def warmup_factor(j: int, warmup_steps: int, multiplier: float) -> float:
    """LR factor of CPL step j >= 0 after the switch: multiplier * min(1, (j + 1) / warmup)."""
    return multiplier * min(1.0, (j + 1) / max(1, warmup_steps))


def segment_scores(refs_a: np.ndarray, refs_b: np.ndarray, prefer_b: np.ndarray):
    """Unique segments of a pair list and each one's net preference per appearance.

    Returns ``(unique_refs (U, 3), score (U,), index_a (M,), index_b (M,))``.
    """
    refs = np.concatenate([refs_a, refs_b], 0)
    uniq, inv = np.unique(refs, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    m = refs_a.shape[0]
    y = np.asarray(prefer_b, dtype=np.float64)
    net = np.zeros(uniq.shape[0])
    count = np.zeros(uniq.shape[0])
    np.add.at(net, inv[:m], (1.0 - y) - y)
    np.add.at(net, inv[m:], y - (1.0 - y))
    np.add.at(count, inv, 1.0)
    return uniq, net / np.maximum(count, 1.0), inv[:m], inv[m:]


# ---- agent ---------------------------------------------------------------------------------


@dataclass
class Config:
    """CPL options (defaults: the state MetaWorld ``cpl.yaml``)."""

    alpha: float = 0.1
    """Temperature alpha: A = alpha * sum_t log pi(a_t | s_t)."""
    bias: float = 0.5
    """Conservative bias lambda in (0, 1] on the non-preferred segment's advantage."""
    bc_coeff: float = 0.0
    """Weight of the BC regulariser after pre-training (CPL-BC: 1.0)."""
    bc_data: str = "all"
    """Segments of the BC terms: 'all' or 'pos' (preferred only; ties count both)."""
    bc_fraction: float = 0.4
    """Fraction of the steps spent on BC pre-training (official 200k of 500k)."""
    warmup_fraction: float = 0.02
    """LR warm-up after BC, as a fraction of the steps (official 10k of 500k)."""
    lr_multiplier: float = 1.0
    """LR factor reached after warm-up (CPL-KL: 0.1)."""
    lr: float = 1e-4
    """Adam learning rate."""
    batch_size: int = 96
    """Comparisons per batch (score mode: segments per batch)."""
    mode: str = "comparison"
    """'comparison' (labelled pairs), 'rank' (random partner, label by score) or 'score'."""
    capacity: int = 0
    """Use only the first N comparisons (comparison mode) or segments (rank/score); 0 = all."""
    kl: bool = False
    """CPL-KL: advantages relative to a frozen copy of the policy taken after BC."""
    hidden: tuple[int, ...] = (512, 512)
    """Actor hidden widths."""
    dropout: float = 0.25
    """Actor dropout (before each ReLU), active inside the training loss."""
    policy: str = "deterministic"
    """'deterministic' (official: l_t = -sum (mu - a)^2) or 'gaussian' (l_t = log N(a; mu, sigma))."""


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpl_bc": {"bias": 1.0, "bc_coeff": 1.0},
    "cpl_kl": {"alpha": 0.2, "bias": 0.75, "kl": True, "lr_multiplier": 0.1},
    # CPU scale: widths and constants kept; fewer comparisons per batch.
    "quick": {"batch_size": 16},
}

TEST_OVERRIDES: dict[str, Any] = {"hidden": (16, 16), "batch_size": 4}
STACK_CHECK_OVERRIDES: dict[str, Any] = {"dropout": 0.0}
"""Config under which the conformance check compares stacked seeds with single runs (dropout
masks are drawn differently when stacked; docs/performance.md)."""


def comparison_batch(rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The comparison mode's batch from labelled pairs' :data:`PAIR_FIELDS` (which may carry
    a leading member axis): the actions clipped to +-ACTION_CLIP, the rest as they are."""
    out = dict(rows)
    for f in ("act_a", "act_b"):
        out[f] = rows[f].clamp(-ACTION_CLIP, ACTION_CLIP)
    return out


class Agent:
    """A CPL policy."""

    requires_true_reward = False
    requires_preferences = True

    def __init__(self, cfg: Config, spec: AgentSpec) -> None:
        if not 0.0 < cfg.bias <= 1.0:
            raise PbrlError(f"--agent.bias: lambda must lie in (0, 1], got {cfg.bias}")
        if cfg.mode not in ("comparison", "rank", "score"):
            raise PbrlError(f"--agent.mode: comparison | rank | score, got '{cfg.mode}'")
        if cfg.bc_data not in ("all", "pos"):
            raise PbrlError(f"--agent.bc_data: 'all' or 'pos', got '{cfg.bc_data}'")
        if cfg.bc_data == "pos" and cfg.mode == "score":
            raise PbrlError("--agent.bc_data pos needs labelled pairs (not mode score)")
        if cfg.policy not in ("deterministic", "gaussian"):
            raise PbrlError(f"--agent.policy: deterministic | gaussian, got '{cfg.policy}'")
        self.cfg = cfg
        self.spec = spec
        self.device = spec.device
        if cfg.policy == "deterministic":
            self.actor: torch.nn.Module = TanhDeterministicActor(
                spec.obs_dim,
                spec.act_dim,
                cfg.hidden,
                cfg.dropout,
                dropout_before_act=True,
                init="orthogonal",
            )
        else:
            self.actor = GaussianActor(
                spec.obs_dim, spec.act_dim, cfg.hidden, cfg.dropout, log_std_min=-5.0
            )
        self.actor.to(self.device)
        self.ref_actor: torch.nn.Module | None = None

    # -- log-probs -----------------------------------------------------------------------------
    def _logp(self, net: torch.nn.Module, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        if isinstance(net, GaussianActor):
            return net.log_prob(obs, act)
        return deterministic_logp(net(obs), act)

    def logp(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step (l_t of the policy, l_t of the advantage).

        The two are equal except for CPL-KL, whose advantage uses l_t minus the frozen
        reference's; the BC term and its metric always use the policy's own l_t (official
        ``cpl_kl.py``).
        """
        lp = self._logp(self.actor, obs, act)
        if self.ref_actor is None:
            return lp, lp
        with torch.no_grad():
            ref = self._logp(self.ref_actor, obs, act)
        return lp, lp - ref

    # -- batches ---------------------------------------------------------------------------------
    def pair_indices(self, ctx: FitContext) -> Iterator[torch.Tensor]:
        """The comparison mode's batches of label indices: epochs of the first ``capacity``
        pairs (all when 0), each a random permutation cut into batches (last smaller)."""
        p = ctx.prefs
        n = p.size if self.cfg.capacity <= 0 else min(self.cfg.capacity, p.size)
        return epoch_minibatches(n, self.cfg.batch_size, ctx.generator, self.device)

    def _batches(self, ctx: FitContext) -> Iterator[dict[str, torch.Tensor]]:
        """Endless batches: epochs are random permutations cut into batches (last smaller)."""
        cfg = self.cfg
        gen = ctx.generator
        clip = ACTION_CLIP
        if cfg.mode == "comparison":
            for idx in self.pair_indices(ctx):
                yield comparison_batch(ctx.prefs.rows(idx, PAIR_FIELDS))
        pd = ctx.pref_data
        if pd is None:
            raise PbrlError(f"cpl --agent.mode {cfg.mode}: needs the preference data's references")
        lengths = np.concatenate([pd.refs_a[:, 2], pd.refs_b[:, 2]])
        if np.any(lengths != lengths[0]):
            raise DataError(f"cpl --agent.mode {cfg.mode}: segments of unequal length")
        uniq, score, _, _ = segment_scores(pd.refs_a, pd.refs_b, pd.prefer_b)
        if cfg.capacity > 0:
            uniq, score = uniq[: cfg.capacity], score[: cfg.capacity]
        obs = segments_tensor(ctx.dataset, uniq, self.device, "observations")
        act = segments_tensor(ctx.dataset, uniq, self.device, "actions").clamp(-clip, clip)
        sc = torch.as_tensor(score, dtype=torch.float32, device=self.device)
        n = obs.shape[0]
        ones = torch.ones(obs.shape[:2], device=self.device)
        for i in epoch_minibatches(n, cfg.batch_size, gen, self.device):
            if cfg.mode == "score":
                yield {"obs": obs[i], "act": act[i], "mask": ones[i], "score": sc[i]}
                continue
            j = torch.randint(0, n, (i.shape[0],), generator=gen, device=gen.device)
            j = j.to(self.device)
            y = (sc[i] < sc[j]).float() + 0.5 * (sc[i] == sc[j]).float()
            yield {
                "obs_a": obs[i],
                "act_a": act[i],
                "mask_a": ones[i],
                "obs_b": obs[j],
                "act_b": act[j],
                "mask_b": ones[j],
                "prefer_b": y,
            }

    # -- losses on one batch ---------------------------------------------------------------------
    @staticmethod
    def segment_keys(batch: dict[str, torch.Tensor]) -> tuple[str, ...]:
        """The suffixes of a batch's segment fields: ``""`` (scored segments: ``obs``,
        ``act``) or ``"_a"`` and ``"_b"`` (pairs: ``obs_a``, ``act_a``, ...)."""
        return ("",) if "score" in batch else ("_a", "_b")

    def losses(
        self,
        batch: dict[str, torch.Tensor],
        logps: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The loss terms and metrics of one batch, as tensors. ``logps`` maps each of the
        batch's :meth:`segment_keys` to (l_t of the policy, l_t of the advantage) on that
        segment (default: :meth:`logp` of this agent's actor). The stacked path passes every
        member's, computed at once, with a batch whose fields carry a leading member axis:
        each term then has one value per member."""
        cfg = self.cfg
        if logps is None:
            keys = self.segment_keys(batch)
            logps = {k: self.logp(batch["obs" + k], batch["act" + k]) for k in keys}
        if "score" in batch:
            lp, rel = logps[""]
            adv = segment_advantage(rel, batch["mask"], cfg.alpha)
            cpl = biased_bce_with_scores(adv, batch["score"], cfg.bias)
            bc = bc_loss(lp, batch["mask"])
            acc = score_accuracy(adv.detach(), batch["score"], cfg.bias)
            return {"cpl_loss": cpl, "bc_loss": bc, "accuracy": acc, "adv_mean": adv.mean(-1)}
        (lp_a, rel_a), (lp_b, rel_b) = logps["_a"], logps["_b"]
        adv_a = segment_advantage(rel_a, batch["mask_a"], cfg.alpha)
        adv_b = segment_advantage(rel_b, batch["mask_b"], cfg.alpha)
        y = batch["prefer_b"]
        cpl = biased_bce_with_logits(adv_a, adv_b, y, cfg.bias)
        if cfg.bc_data == "pos":
            mask_a = batch["mask_a"] * (y <= 0.5).float().unsqueeze(-1)
            mask_b = batch["mask_b"] * (y >= 0.5).float().unsqueeze(-1)
        else:
            mask_a, mask_b = batch["mask_a"], batch["mask_b"]
        lp = torch.cat([lp_a, lp_b], -2)
        bc = bc_loss(lp, torch.cat([mask_a, mask_b], -2))
        acc = comparison_accuracy_t(adv_a.detach(), adv_b.detach(), y)
        adv_mean = torch.cat([adv_a, adv_b], -1).mean(-1)
        return {"cpl_loss": cpl, "bc_loss": bc, "accuracy": acc, "adv_mean": adv_mean}

    # -- training --------------------------------------------------------------------------------
    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        cfg = self.cfg
        steps = ctx.steps
        bc_steps = int(round(cfg.bc_fraction * steps))
        warmup = max(1, int(round(cfg.warmup_fraction * steps)))
        if cfg.kl and bc_steps == 0:
            raise PbrlError("cpl --agent.kl true needs a BC phase (--agent.bc_fraction > 0)")
        batches = self._batches(ctx)
        self.actor.train()
        opt = fused_adam(self.actor.parameters(), lr=cfg.lr)
        for step in range(1, steps + 1):
            k = step - 1  # 0-based update index
            in_bc = k < bc_steps
            if not in_bc and bc_steps > 0:
                # Official: the warm-up schedule exists only when there was a BC phase.
                lr = cfg.lr * warmup_factor(k - bc_steps, warmup, cfg.lr_multiplier)
                for g in opt.param_groups:
                    g["lr"] = lr
            parts = self.losses(next(batches))
            loss = (
                parts["bc_loss"] if in_bc else parts["cpl_loss"] + cfg.bc_coeff * parts["bc_loss"]
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if k == bc_steps - 1:
                # End of BC: fresh Adam (moments reset); CPL-KL freezes its reference here.
                opt = fused_adam(self.actor.parameters(), lr=cfg.lr)
                if cfg.kl:
                    self.ref_actor = copy.deepcopy(self.actor).eval().requires_grad_(False)
            if step % ctx.log_interval == 0 or step == steps:
                yield {
                    "step": step,
                    "phase": 0.0 if in_bc else 1.0,
                    "loss": float(loss.detach()),
                    "lr": float(opt.param_groups[0]["lr"]),
                    **{k2: float(v.detach()) for k2, v in parts.items()},
                }

    # -- acting and state ------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        a = greedy_action(self.actor, obs, self.device)
        return np.clip(a, self.spec.act_low, self.spec.act_high)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"actor": self.actor.state_dict()}
        if self.ref_actor is not None:
            state["ref_actor"] = self.ref_actor.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        if "ref_actor" in state:
            self.ref_actor = copy.deepcopy(self.actor).eval().requires_grad_(False)
            self.ref_actor.load_state_dict(state["ref_actor"])


def _pool_size(cfg: Config, ctx: FitContext) -> int:
    """How many items the batches of ``ctx`` are drawn from (pairs, or unique segments)."""
    if cfg.mode == "comparison":
        n = ctx.prefs.size
    else:
        pd = ctx.pref_data
        n = 0 if pd is None else len(np.unique(np.concatenate([pd.refs_a, pd.refs_b]), axis=0))
    return n if cfg.capacity <= 0 else min(cfg.capacity, n)


def fit_stacked(agents: list[Agent], ctxs: list[FitContext]) -> Iterator[list[dict[str, float]]]:
    """K seeds of one config trained as one (``pbrl bench --stack-seeds K``): the members'
    actors stacked (:class:`pbrl.learn.stack.StackedModules`), each member's batches drawn
    from its own labels with its own generator, the same schedule as :meth:`Agent.fit`
    (BC, fresh Adam, warm-up, CPL-KL's frozen reference). The deterministic policy only."""
    first, ctx0 = agents[0], ctxs[0]
    cfg = first.cfg
    if cfg.policy != "deterministic":
        raise CannotStack("cpl: stacked seeds support the deterministic policy only")
    sizes = sorted({_pool_size(cfg, c) for c in ctxs})
    if len(sizes) > 1:
        raise CannotStack(f"cpl: stacked seeds need labels of one size (the members have {sizes})")
    steps = ctx0.steps
    bc_steps = int(round(cfg.bc_fraction * steps))
    warmup = max(1, int(round(cfg.warmup_fraction * steps)))
    if cfg.kl and bc_steps == 0:
        raise PbrlError("cpl --agent.kl true needs a BC phase (--agent.bc_fraction > 0)")
    if cfg.mode == "comparison":  # every member's pairs in one gather per field
        labels = member_label_rows([c.prefs for c in ctxs], PAIR_FIELDS)
        indices = zip_generators([a.pair_indices(c) for a, c in zip(agents, ctxs, strict=True)])
        batches = (comparison_batch(labels(torch.stack(i))) for i in indices)
    else:
        pairs = zip_generators([a._batches(c) for a, c in zip(agents, ctxs, strict=True)])
        batches = (member_batches(b) for b in pairs)
    for a in agents:
        a.actor.train()
    stack = StackedModules([a.actor for a in agents])
    stack.train(True)
    ref: StackedModules | None = None

    def member_logps(b: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Every member's (l_t, l_t of the advantage) per segment field, all members at once
        through the actors' member forwards (:meth:`Agent.logp`, stacked)."""
        out = {}
        for key in first.segment_keys(b):
            obs, act = b["obs" + key], b["act" + key]
            lp = deterministic_logp(stack.members(obs), act)
            if ref is None:
                out[key] = (lp, lp)
            else:
                with torch.no_grad():
                    ref_lp = deterministic_logp(ref.members(obs), act)
                out[key] = (lp, lp - ref_lp)
        return out

    opt = fused_adam(stack.parameters(), lr=cfg.lr)
    for step in range(1, steps + 1):
        k = step - 1
        in_bc = k < bc_steps
        if not in_bc and bc_steps > 0:
            for g in opt.param_groups:
                g["lr"] = cfg.lr * warmup_factor(k - bc_steps, warmup, cfg.lr_multiplier)
        batch = next(batches)
        parts = first.losses(batch, member_logps(batch))  # (K,) each: no vmap
        losses = parts["bc_loss"] if in_bc else parts["cpl_loss"] + cfg.bc_coeff * parts["bc_loss"]
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        if k == bc_steps - 1:
            opt = fused_adam(stack.parameters(), lr=cfg.lr)
            if cfg.kl:
                stack.write_back()
                for a in agents:
                    a.ref_actor = copy.deepcopy(a.actor).eval().requires_grad_(False)
                ref = StackedModules([a.ref_actor for a in agents], trainable=False)
                ref.train(False)
        if step % ctx0.log_interval == 0 or step == steps:
            stack.write_back()
            extra = {"phase": 0.0 if in_bc else 1.0, "lr": float(opt.param_groups[0]["lr"])}
            yield stacked_metrics(step, {"loss": losses, **parts}, extra)
