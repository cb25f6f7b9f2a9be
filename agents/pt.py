"""pt: Preference Transformer reward model, relabel, IQL (Kim et al., ICLR 2023).

Paper: C. Kim, J. Park, J. Shin, H. Lee, P. Abbeel, K. Lee, "Preference Transformer:
Modeling Human Preferences using Transformers for RL", ICLR 2023; official JAX code
csmile-1006/PreferenceTransformer.

Summary. A causal GPT over the interleaved tokens (a_1, s_1, ..., a_H, s_H) (state and
action embeddings plus a learned timestep embedding, timesteps restarting at 1 in every
segment) gives a hidden state h_t at every state token. The preference-attention layer maps
h_t to a query q_t, key k_t and non-Markovian reward r_t; the segment score is the mean over
steps of the bidirectional attention output z_t = sum_j softmax_j(q_t . k_j) r_j (unscaled,
as the official code). ``preference_attention=false`` is the variant the official README
command actually runs (r_t = MLP(h_t), score = mean_t r_t). The dataset is then relabelled
with r_t at the last position of the window of the last ``relabel_len`` steps ending at each
transition, normalised, and the shared IQL core is trained on it.

Loss (ties stay in as 0.5; y = prefer_b, 1 = segment b preferred)::

    S(sigma) = (1/H) sum_t z_t,   z_t = sum_j softmax_j(q_t . k_j) r_j
    L = mean_pairs -[(1 - y) log softmax(S_a, S_b)_a + y log softmax(S_a, S_b)_b]

AdamW (weight decay 1e-4) on a warm-up-cosine schedule 1e-4 -> 1e-3 (10% of the reward
steps) -> 1e-4.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pbrl.errors import PbrlError
from pbrl.learn.api import AgentSpec, FitContext
from pbrl.learn.data import shares_arrays
from pbrl.learn.iql import QUICK_IQL, IQLConfig, IQLLearner, IQLPlan, iql_config_from
from pbrl.learn.kit import (
    bt_pair_losses,
    check_reward_input,
    epoch_minibatches,
    fused_adam,
    host_metrics,
    log_due,
    reward_action,
    seeded_init,
    split_steps,
    strict_accuracy,
)
from pbrl.learn.nn import MLP, CausalTransformer, LayeredModule, Layers, interleave_steps
from pbrl.learn.stack import (
    StackedModules,
    fit_stacked_before_iql,
    labels_of_one_shape,
    member_pairs,
    members_in_turn,
    stacked_metrics,
)
from pbrl.types import PAIR_FIELDS

# ---- losses (pure functions) ------------------------------------------------------------


def preference_attention(
    q: torch.Tensor, k: torch.Tensor, r: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """PT's preference-attention output ``z_t = sum_j softmax_j(q_t . k_j) r_j``.

    q, k: (..., B, T, D); r: (..., B, T); mask (..., B, T). Non-causal, single head and, as
    in the official code, NOT scaled by 1/sqrt(D) (the official attention divides by the
    square root of the value width, which is 1). Padded keys get the official additive -1e4.
    """
    logits = q @ k.transpose(-2, -1)
    logits = logits + (1.0 - mask.to(logits.dtype)).unsqueeze(-2) * -1e4
    w = torch.softmax(logits, dim=-1)
    return (w @ r.unsqueeze(-1)).squeeze(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (..., T) values over the real steps of each row."""
    m = mask.to(x.dtype)
    return (x * m).sum(dim=-1) / m.sum(dim=-1).clamp_min(1.0)


def pt_cross_entropy(
    score_a: torch.Tensor, score_b: torch.Tensor, prefer_b: torch.Tensor
) -> torch.Tensor:
    """Softmax cross-entropy on the logits [S_a, S_b] with soft label [1-y, y], the mean over
    the batch: (..., B) -> (...), one loss per member of a leading member axis.

    Ties (y = 0.5) stay in the loss as -0.5 log p_a - 0.5 log p_b (PT keeps them). The
    ``softmax`` form of :func:`pbrl.learn.kit.bt_pair_losses`.
    """
    return bt_pair_losses(score_a, score_b, prefer_b, "softmax").mean(-1)


# ---- model --------------------------------------------------------------------------------


class PTRewardModel(LayeredModule):
    """The Preference Transformer: GPT over (a_t, s_t) tokens + preference attention."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        embed_dim: int = 256,
        n_layers: int = 1,
        n_heads: int = 4,
        max_len: int = 100,
        dropout: float = 0.1,
        max_timestep: int = 1000,
        preference_attention: bool = True,
        pref_attn_dim: int = 256,
    ) -> None:
        super().__init__()
        self.embed_s = nn.Linear(obs_dim, embed_dim)
        self.embed_a = nn.Linear(act_dim, embed_dim)
        self.embed_t = nn.Embedding(max_timestep + 1, embed_dim)
        self.embed_ln = nn.LayerNorm(embed_dim)
        # no positional table: the timestep embedding is the only position signal (official)
        self.gpt = CausalTransformer(
            embed_dim,
            n_layers,
            n_heads,
            2 * max_len,
            dropout,
            pos_embedding=False,
            activation="relu",
        )
        self.max_len = max_len
        self.max_timestep = max_timestep
        self.preference_attention = preference_attention
        self.pref_attn_dim = pref_attn_dim
        if preference_attention:
            self.head: nn.Module = nn.Linear(embed_dim, 2 * pref_attn_dim + 1)
        else:
            self.head = MLP(embed_dim, 1, (embed_dim // 2,), "relu")

    def _hidden(
        self,
        layers: Layers,
        obs: torch.Tensor,
        act: torch.Tensor,
        mask: torch.Tensor,
        at: torch.Tensor | None,
    ) -> torch.Tensor:
        h = obs.shape[-2]
        if h > self.max_len:
            raise PbrlError(f"pt: segment of {h} steps exceeds max_len {self.max_len}")
        ts = torch.arange(1, h + 1, device=obs.device).clamp(max=self.max_timestep)
        e_t = layers.embedding("embed_t", ts, shared=True).unsqueeze(-3)
        streams = [layers("embed_a", act) + e_t, layers("embed_s", obs) + e_t]
        tok, key_mask = interleave_steps(streams, lambda x: layers("embed_ln", x), mask)
        if at is not None:  # step t's state token is token 2t + 1 (its action token is 2t)
            out, _ = layers("gpt", tok, key_mask, 2 * at + 1)
            return out
        out, _ = layers("gpt", tok, key_mask)
        return out[..., 1::2, :]

    def forward_layers(
        self, layers: Layers, obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(segment score (B,), per-step reward r_t (B, H)) of (B, H, ...) segments; members
        (:meth:`forward_members`): inputs (K, B, H, ...), scores (K, B), rewards (K, B, H)."""
        h = self._hidden(layers, obs, act, mask, None)
        if self.preference_attention:
            d = self.pref_attn_dim
            out = layers("head", h)
            q, k, r = out[..., :d], out[..., d : 2 * d], out[..., 2 * d]
            z = preference_attention(q, k, r, mask)
            return masked_mean(z, mask), r
        r = layers("head", h).squeeze(-1)
        return masked_mean(r, mask), r

    def reward_at(
        self, obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor, at: torch.Tensor
    ) -> torch.Tensor:
        """r_t at step ``at[b]`` of each row, (B,): the per-step reward :meth:`forward` gives
        there (r_t reads the causal hidden state h_t alone), with the transformer's last
        layer computing that one token per row (PT's relabelling)."""
        return self._reward_at(Layers(self), obs, act, mask, at)

    def reward_at_members(
        self,
        params: dict[str, torch.Tensor],
        obs: torch.Tensor,
        act: torch.Tensor,
        mask: torch.Tensor,
        at: torch.Tensor,
    ) -> torch.Tensor:
        """K stacked models' :meth:`reward_at` at once: inputs (K, B, ...), rewards (K, B)."""
        return self._reward_at(Layers(self, params), obs, act, mask, at)

    def _reward_at(
        self,
        layers: Layers,
        obs: torch.Tensor,
        act: torch.Tensor,
        mask: torch.Tensor,
        at: torch.Tensor,
    ) -> torch.Tensor:
        h = self._hidden(layers, obs, act, mask, at)[..., 0, :]
        if self.preference_attention:
            return layers("head", h)[..., 2 * self.pref_attn_dim]
        return layers("head", h).squeeze(-1)


def warmup_cosine(
    step: int, total: int, warmup: int, init: float, peak: float, end: float
) -> float:
    """optax.warmup_cosine_decay_schedule: linear init->peak over ``warmup``, cosine to ``end``."""
    if warmup > 0 and step < warmup:
        return init + (peak - init) * step / warmup
    decay = max(total - warmup, 1)
    frac = min(max(step - warmup, 0) / decay, 1.0)
    return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * frac))


@torch.no_grad()
def relabel_windows(
    ds: Any,
    relabel_len: int,
    reward_at: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    device: str,
    batch_size: int = 2048,
    lead: tuple[int, ...] = (),
) -> np.ndarray:
    """PT's relabelling of dataset ``ds``: each transition t gets r_t at the last position of
    the window of (up to) the last ``relabel_len`` steps of its episode ending at t,
    timesteps 1..k. ``reward_at(obs, act, mask, last)`` gives the reward of (B, k, ...)
    windows at step ``last[b]`` of each, (*lead, B) (``lead`` ``(K,)``: K stacked models'
    rewards of the same windows); returns (*lead, N)."""
    n, k = ds.num_steps, relabel_len
    ep_start = np.repeat(np.asarray(ds.starts), np.asarray(ds.lengths))
    rows = np.arange(n)
    first = np.maximum(ep_start, rows - k + 1)
    win_len = rows - first + 1
    out = np.empty((*lead, n), dtype=np.float32)
    offs = np.arange(k)
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        idx = first[s:e, None] + offs[None, :]
        mask = offs[None, :] < win_len[s:e, None]
        idx = np.where(mask, idx, first[s:e, None])  # padding: any row, masked out
        obs = torch.as_tensor(ds.observations[idx], dtype=torch.float32, device=device)
        act = torch.as_tensor(ds.actions[idx], dtype=torch.float32, device=device)
        m = torch.as_tensor(mask, dtype=torch.float32, device=device)
        last = torch.as_tensor(win_len[s:e] - 1, device=device)
        out[..., s:e] = reward_at(obs, act, m, last).cpu().numpy()
    return out


# ---- agent --------------------------------------------------------------------------------


@dataclass
class Config(IQLConfig):
    """pt options: the IQL core's fields plus the Preference Transformer's."""

    preference_attention: bool = True
    """Preference-attention layer (the paper's model); false = the official README variant."""
    embed_dim: int = 256
    """Transformer width (README: 256)."""
    n_layers: int = 1
    """GPT layers (README: 1)."""
    n_heads: int = 4
    """Attention heads (README: 4)."""
    dropout: float = 0.1
    """Embedding, attention and residual dropout."""
    pref_attn_dim: int = 256
    """Query/key width of the preference-attention layer."""
    rm_batch: int = 256
    """Labelled pairs per reward minibatch (README: 256)."""
    rm_lr: float = 1e-4
    """Initial and final learning rate; the warm-up peak is 10x this (official)."""
    rm_weight_decay: float = 1e-4
    """AdamW weight decay (optax default)."""
    rm_warmup: float = 0.1
    """Warm-up fraction of the reward steps."""
    rm_frac: float = 0.2
    """Fraction of the run's updates spent on the reward model (the rest is IQL)."""
    relabel_len: int = 25
    """Relabelling window: r_t is read at the last position of the last relabel_len steps."""
    reward_norm: str = "pt_learned"
    """Normalisation of the relabelled reward: none | corl | pt_true | pt_learned."""
    reward_input: str = "obs_act"
    """What the reward model reads: 'obs_act' (state and action tokens, the paper's) or 'obs'
    (action tokens fed zeros: a reward of the states alone)."""
    batch_size: int = 256
    """Transitions per IQL update."""


PRESETS: dict[str, dict[str, Any]] = {
    # PT's own IQL (JAX semantics) on its relabelled reward
    "paper": {
        "value_for_targets": "post",
        "critic_reduction": "sum",
        "log_std_min": -5.0,
        "obs_norm": False,
        "reward_norm": "pt_learned",
    },
    # CPU scale: 8 pairs per reward batch, a short reward phase (set when the reward phase
    # and the relabelling of 50k transitions took 3-4 minutes of one core; about a minute
    # since the relabelling computes one token per window, docs/performance.md).
    # reward_input 'obs': at this budget a reward that reads actions takes a shortcut that
    # steers IQL to the decoy (docs/agents.md, "The action shortcut").
    "quick": {
        **QUICK_IQL,
        "rm_batch": 8,
        "batch_size": 128,
        "rm_frac": 0.1,
        "reward_input": "obs",
    },
    "no_pref_attention": {"preference_attention": False},
}

STACK_CHECK_OVERRIDES: dict[str, Any] = {"dropout": 0.0}
"""The stacked-seeds check compares actions, so the transformer's dropout is off there: its
masks come from the process's generator, drawn for all members at once when stacked."""

TEST_OVERRIDES: dict[str, Any] = {
    "embed_dim": 16,
    "n_heads": 2,
    "pref_attn_dim": 8,
    "rm_batch": 4,
    "batch_size": 8,
    "hidden": (16, 16),
    "relabel_len": 5,
}


class Agent:
    """Preference Transformer reward, relabel, IQL."""

    def __init__(self, cfg: Config, spec: AgentSpec) -> None:
        if cfg.relabel_len < 1:
            raise PbrlError(f"--agent.relabel_len: must be >= 1, got {cfg.relabel_len}")
        check_reward_input(cfg.reward_input)
        self.cfg = cfg
        self.spec = spec
        self.device = spec.device
        self.model: PTRewardModel | None = None
        self.iql = IQLLearner(spec.obs_dim, spec.act_dim, iql_config_from(cfg), 1, self.device)
        self._build(max_len=max(cfg.relabel_len, 1))

    def _build(self, max_len: int) -> None:
        c = self.cfg
        self.model = PTRewardModel(
            self.spec.obs_dim,
            self.spec.act_dim,
            c.embed_dim,
            c.n_layers,
            c.n_heads,
            max_len,
            c.dropout,
            preference_attention=c.preference_attention,
            pref_attn_dim=c.pref_attn_dim,
        ).to(self.device)

    def _run_model(
        self, obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward model on (obs, act) windows, actions zeroed for ``reward_input='obs'``."""
        assert self.model is not None
        return self.model(obs, reward_action(act, self.cfg.reward_input), mask)

    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        plan = yield from self.before_iql(ctx)
        yield from plan.run(ctx)

    def before_iql(self, ctx: FitContext) -> Generator[dict[str, float], None, IQLPlan]:
        """The reward-model phase; returns the IQL phase that follows (:meth:`fit`)."""
        n_rm, n_iql = self.reward_setup(ctx)
        assert self.model is not None
        cfg = self.cfg
        opt = fused_adam(
            self.model.parameters(), lr=cfg.rm_lr, weight_decay=cfg.rm_weight_decay, decoupled=True
        )
        batches = epoch_minibatches(ctx.prefs.size, cfg.rm_batch, ctx.generator, ctx.device)
        self.model.train()
        for step in range(1, n_rm + 1):
            lr = self.rm_lr(step, n_rm)
            for g in opt.param_groups:
                g["lr"] = lr
            loss, terms = self.rm_terms(self.model, ctx.prefs.rows(next(batches), PAIR_FIELDS))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if log_due(step, ctx.steps, ctx.log_interval) or step == n_rm:
                yield {"step": step, "phase": 1.0, **host_metrics(terms), "rm_lr": lr}
        self.model.eval().requires_grad_(False)
        return self.iql_plan(ctx, self.relabel(ctx.dataset), n_rm, n_iql)

    def reward_setup(self, ctx: FitContext) -> tuple[int, int]:
        """The reward phase's fixed parts: the model, built from the run's seed now that the
        segment length is known; returns the reward and IQL phases' lengths."""
        if ctx.prefs is None or ctx.prefs.size == 0:
            raise PbrlError("pt needs preferences (--prefs)")
        seg_len = int(ctx.prefs.obs_a.shape[1])
        with seeded_init(ctx.seed):
            self._build(max(seg_len, self.cfg.relabel_len))
        n_rm, n_iql = split_steps(ctx.steps, (self.cfg.rm_frac,))
        return n_rm, n_iql

    def rm_lr(self, step: int, n_rm: int) -> float:
        """The reward model's learning rate at ``step`` (1-based) of ``n_rm``."""
        cfg = self.cfg
        warm = int(cfg.rm_warmup * n_rm)
        return warmup_cosine(step - 1, n_rm, warm, cfg.rm_lr, 10 * cfg.rm_lr, cfg.rm_lr)

    def rm_terms(
        self, model: Callable[..., tuple[torch.Tensor, torch.Tensor]], b: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reward loss of one batch of pairs ``b`` (:data:`~pbrl.types.PAIR_FIELDS`)
        under ``model`` (a :class:`PTRewardModel`, or one member of a stacked set) and its
        metrics, left on the device."""
        s_a, _ = model(b["obs_a"], reward_action(b["act_a"], self.cfg.reward_input), b["mask_a"])
        s_b, _ = model(b["obs_b"], reward_action(b["act_b"], self.cfg.reward_input), b["mask_b"])
        loss = pt_cross_entropy(s_a, s_b, b["prefer_b"])
        acc = strict_accuracy(s_a.detach(), s_b.detach(), b["prefer_b"])
        return loss, {"rm_loss": loss.detach(), "rm_acc": acc}

    def iql_plan(self, ctx: FitContext, rewards: np.ndarray, n_rm: int, n_iql: int) -> IQLPlan:
        """The IQL phase on the dataset relabelled with ``rewards``."""
        self.iql.set_max_steps(n_iql)
        cfg = self.cfg
        return IQLPlan(self.iql, ctx.dataset, rewards, n_iql, cfg.batch_size, n_rm, cfg.reward_norm)

    # -- relabelling -----------------------------------------------------------------------
    @torch.no_grad()
    def relabel(
        self, ds: Any, stack: StackedModules | None = None, batch_size: int = 2048
    ) -> np.ndarray:
        """PT's relabelling (:func:`relabel_windows`) with this run's model, (N,); with
        ``stack`` (K stacked models, in evaluation), every member's at once, (K, N),
        ``batch_size // K`` windows per member and call."""
        inp = self.cfg.reward_input
        if stack is not None:
            k = stack.k

            def members(o: Any, a: Any, m: Any, last: Any) -> torch.Tensor:
                xs = [t.expand(k, *t.shape) for t in (o, reward_action(a, inp), m, last)]
                return stack.members(*xs, method="reward_at_members")

            return relabel_windows(
                ds, self.cfg.relabel_len, members, self.device, max(1, batch_size // k), (k,)
            )
        assert self.model is not None
        self.model.eval()
        model = self.model
        return relabel_windows(
            ds, self.cfg.relabel_len,
            lambda o, a, m, last: model.reward_at(o, reward_action(a, inp), m, last),
            self.device, batch_size,
        )  # fmt: skip

    # -- acting / reward -------------------------------------------------------------------
    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(self.iql.act(obs), self.spec.act_low, self.spec.act_high)

    @torch.no_grad()
    def reward(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """r_t of single-step windows (timestep 1) for each (s, a): the Markovian read-out.

        Relabelling a dataset uses :meth:`relabel` (windows of past steps) instead.
        """
        assert self.model is not None
        self.model.eval()
        o = np.asarray(obs, dtype=np.float32)
        a = np.asarray(act, dtype=np.float32)
        single = o.ndim == 1
        o2, a2 = (o[None], a[None]) if single else (o, a)
        ot = torch.as_tensor(o2, device=self.device)[:, None]
        at = torch.as_tensor(a2, device=self.device)[:, None]
        _, r = self._run_model(ot, at, torch.ones(ot.shape[0], 1, device=self.device))
        out = r[:, 0].cpu().numpy()
        return out[0:1].reshape(()) if single else out

    def state_dict(self) -> dict[str, Any]:
        assert self.model is not None
        return {
            "model": self.model.state_dict(),
            "max_len": self.model.max_len,
            "iql": self.iql.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._build(int(state["max_len"]))
        assert self.model is not None
        self.model.load_state_dict(state["model"])
        self.iql.load_state_dict(state["iql"])


def stacked_reward_phase(
    agents: list[Agent], ctxs: list[FitContext]
) -> Generator[list[Any], None, list[IQLPlan]]:
    """The K members' reward phases at once (``pbrl bench --stack-seeds K``): their
    Preference Transformers stacked (:class:`pbrl.learn.stack.StackedModules`; one AdamW,
    elementwise as K of them), each member's pairs drawn with its own
    generator and gathered from one table of the members' labels, its learning rates its
    own run's; then every member's relabelling of the dataset at once. The models run
    through their member forwards (:meth:`PTRewardModel.forward_members`, no ``vmap``).
    Yields one row per logged update; returns the members' IQL plans. Members whose labels
    differ in shape run :meth:`Agent.before_iql` one after the other instead."""
    k = len(agents)
    if not labels_of_one_shape([c.prefs for c in ctxs], PAIR_FIELDS):
        phases = [a.before_iql(c) for a, c in zip(agents, ctxs, strict=True)]
        return (yield from members_in_turn(k, phases))
    first, ctx0 = agents[0], ctxs[0]
    cfg = first.cfg
    n_rm, n_iql = [a.reward_setup(c) for a, c in zip(agents, ctxs, strict=True)][0]  # one config
    stack = StackedModules([a.model for a in agents])
    stack.train(True)
    opt = fused_adam(
        stack.parameters(), lr=cfg.rm_lr, weight_decay=cfg.rm_weight_decay, decoupled=True
    )
    pairs = member_pairs(
        [c.prefs for c in ctxs], [c.generator for c in ctxs], cfg.rm_batch, first.device
    )

    for step in range(1, n_rm + 1):
        lr = first.rm_lr(step, n_rm)
        for g in opt.param_groups:
            g["lr"] = lr
        losses, terms = first.rm_terms(stack.members, next(pairs))  # (K,) each
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        if log_due(step, ctx0.steps, ctx0.log_interval) or step == n_rm:
            yield stacked_metrics(step, terms, {"phase": 1.0, "rm_lr": lr})
    stack.write_back()
    for a in agents:
        assert a.model is not None
        a.model.eval().requires_grad_(False)
    stack.train(False)
    for t in stack.parameters():
        t.requires_grad_(False)
    ds = ctx0.dataset
    if all(shares_arrays(c.dataset, ds) for c in ctxs):  # every member's windows at once
        rewards = list(first.relabel(ds, stack))
    else:
        rewards = [a.relabel(c.dataset) for a, c in zip(agents, ctxs, strict=True)]
    return [a.iql_plan(c, r, n_rm, n_iql) for a, c, r in zip(agents, ctxs, rewards, strict=True)]


def fit_stacked(agents: list[Agent], ctxs: list[FitContext]) -> Iterator[list[Any]]:
    """Stacked seeds (``pbrl bench --stack-seeds K``): the members' reward models trained
    and their relabelling together (:func:`stacked_reward_phase`), then the IQL phases
    stacked (:func:`pbrl.learn.stack.fit_stacked_before_iql`)."""
    return fit_stacked_before_iql(agents, ctxs, stacked_reward_phase)
