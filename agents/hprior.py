"""hprior: Hindsight PRIOR reward learning, relabel, IQL (Verma & Metcalf, ICLR 2024).

Paper: M. Verma, K. Metcalf, "Hindsight PRIORs for Reward Learning from Human Preferences",
ICLR 2024 (arXiv 2404.08828). No official code is public; every open detail follows the
project's design proposals, recorded in docs/agents-advanced.md.

Summary. A causal transformer world model over the interleaved tokens (s_1, a_1, ..., s_T,
a_T) is trained first (next-state prediction from each a_t token) and then frozen. For every
labelled segment, the attention of its last token, averaged over heads and layers in eval
mode, gives a state importance alpha_t (summing to 1). The reward model (MR's ensemble) is
trained with the Bradley-Terry loss plus a return-redistribution term that pulls each
per-step reward towards alpha_t times the member's own predicted segment return. The
dataset is relabelled with the ensemble mean and the shared IQL core is trained on it.

Losses (per member e, summed over members; y = prefer_b, 1 = segment b preferred)::

    world model: L_W = mean_{b,t,dims} (f(s_<=t, a_<=t) - s_{t+1})^2   (standardised states)
    R^e(sigma)  = sum_t r^e(s_t, a_t)                                   (undiscounted)
    L_CE^e      = mean_pairs -[(1 - y) log sigmoid(R^e_a - R^e_b) + y log sigmoid(R^e_b - R^e_a)]
    L_prior^e   = mean_{sigma in {a, b}, b, t} (r^e(s_t, a_t) - alpha_t R^e(sigma))^2
    L           = sum_e (L_CE^e + lambda L_prior^e),   lambda = 1
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pbrl.errors import PbrlError
from pbrl.learn.api import AgentSpec, FitContext
from pbrl.learn.data import dataset_windows, shares_arrays
from pbrl.learn.iql import QUICK_IQL, IQLConfig, IQLLearner, IQLPlan, iql_config_from
from pbrl.learn.kit import (
    batched_numpy,
    bt_pair_losses,
    check_reward_input,
    epoch_minibatches,
    epochs_until_accurate,
    fused_adam,
    host_metrics,
    log_due,
    obs_stats,
    reward_action,
    seeded_init,
    segment_sum,
    split_steps,
    strict_accuracy,
)
from pbrl.learn.nn import CausalTransformer, EnsembleMLP, LayeredModule, Layers, interleave_steps
from pbrl.learn.stack import (
    StackedModules,
    clip_member_grads_,
    fit_stacked_before_iql,
    labels_of_one_shape,
    member_pairs,
    members_in_turn,
    stacked_metrics,
)
from pbrl.types import PAIR_FIELDS

# ---- losses (pure functions) ------------------------------------------------------------


def attention_importance(attn: Sequence[torch.Tensor], lengths: torch.Tensor) -> torch.Tensor:
    """Hindsight PRIOR state importance from a causal world model's attention maps.

    ``attn`` holds one tensor per layer, (B, heads, 2T, 2T) or (B, 2T, 2T), rows = queries,
    over interleaved tokens (s_1, a_1, ..., s_T, a_T). ``lengths`` (B,) is the number of
    real steps n of each segment. For each segment the query row is its last real token
    a_n (the only one that sees the whole segment), and

        alpha_t = mean_layers mean_heads ( A[q, s_t] + A[q, a_t] ),   t < n;  0 otherwise.

    With clean softmax rows (eval mode) sum_t alpha_t = 1.
    """
    maps = [a if a.dim() == 4 else a.unsqueeze(1) for a in attn]
    stacked = torch.stack([m.mean(dim=1) for m in maps], dim=0).mean(dim=0)  # (B, 2T, 2T)
    bsz, n_tok, _ = stacked.shape
    q = (2 * lengths.long() - 1).clamp(min=0)
    rows = stacked[torch.arange(bsz, device=stacked.device), q]  # (B, 2T)
    alpha = rows.reshape(bsz, n_tok // 2, 2).sum(dim=-1)
    steps = torch.arange(n_tok // 2, device=stacked.device)
    return alpha * (steps[None, :] < lengths[:, None]).to(alpha.dtype)


def prior_loss(
    r_hat: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor, detach_target: bool = False
) -> torch.Tensor:
    """Return-redistribution loss: mean over real (b, t) of ``(r_t - alpha_t * R)^2``.

    ``r_hat`` (..., B, T) per-step predicted rewards (a leading member axis allowed),
    ``alpha`` (B, T) importance, ``mask`` (B, T) (both may carry leading axes that
    broadcast against ``r_hat``'s: one loss per member of each). ``R = sum_t mask_t r_t`` is the member's
    own predicted (undiscounted) segment return. The target is not detached by default
    (the literal formula, as the only public implementation does), so the gradient also
    flows into R; ``detach_target`` stops it.
    """
    m = mask.to(r_hat.dtype)
    ret = segment_sum(r_hat, m).unsqueeze(-1)
    target = alpha * ret
    if detach_target:
        target = target.detach()
    return ((r_hat - target).pow(2) * m).sum(dim=(-2, -1)) / m.sum(dim=(-2, -1)).clamp_min(1.0)


def world_model_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Next-state MSE, mean over real steps (mask 1) and state dimensions: (..., B, T, S)
    -> (...), one loss per member of a leading member axis."""
    m = mask.to(pred.dtype)
    sq = (pred - target).pow(2).mean(dim=-1)
    return (sq * m).sum(dim=(-2, -1)) / m.sum(dim=(-2, -1)).clamp_min(1.0)


# ---- world model --------------------------------------------------------------------------


class WorldModel(LayeredModule):
    """Causal GPT over (s_t, a_t) tokens predicting s_{t+1} from each a_t token.

    Inputs are standardised states and raw actions; a learned per-position embedding is
    added to both tokens of a step (the only position signal).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        embed_dim: int = 256,
        n_layers: int = 3,
        n_heads: int = 4,
        max_len: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed_s = nn.Linear(obs_dim, embed_dim)
        self.embed_a = nn.Linear(act_dim, embed_dim)
        self.embed_t = nn.Embedding(max_len, embed_dim)
        self.embed_ln = nn.LayerNorm(embed_dim)
        self.gpt = CausalTransformer(
            embed_dim, n_layers, n_heads, 2 * max_len, dropout, pos_embedding=False
        )
        self.head = nn.Linear(embed_dim, obs_dim)
        self.max_len = max_len

    def forward_layers(
        self, layers: Layers, obs_n: torch.Tensor, act: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(predicted next standardised state (B, T, S), per-layer attention maps) of
        (B, T, ...) segments; members (:meth:`forward_members`): inputs (K, B, T, ...),
        predictions (K, B, T, S), maps (K, B, H, 2T, 2T)."""
        t = obs_n.shape[-2]
        if t > self.max_len:
            raise PbrlError(
                f"hprior: segment of {t} steps exceeds the world model's {self.max_len}"
            )
        ts = torch.arange(t, device=obs_n.device)
        e_t = layers.embedding("embed_t", ts, shared=True).unsqueeze(-3)
        streams = [layers("embed_s", obs_n) + e_t, layers("embed_a", act) + e_t]
        tok, key_mask = interleave_steps(streams, lambda x: layers("embed_ln", x), mask)
        h, attn = layers("gpt", tok, key_mask)
        return layers("head", h[..., 1::2, :]), attn


# ---- agent --------------------------------------------------------------------------------


@dataclass
class Config(IQLConfig):
    """hprior options: the IQL core's fields plus the world and reward models'."""

    prior_coef: float = 1.0
    """lambda, the weight of the return-redistribution loss (sweep 0.1, 1, 10)."""
    detach_target: bool = False
    """Stop the gradient through alpha_t * R in the prior loss (default: not detached)."""
    wm_embed_dim: int = 256
    """World-model transformer width."""
    wm_layers: int = 3
    """World-model layers."""
    wm_heads: int = 4
    """World-model attention heads (importance averages over them)."""
    wm_dropout: float = 0.1
    """World-model dropout (off when computing importance: eval mode)."""
    wm_lr: float = 1e-4
    """World-model Adam learning rate (TWM's)."""
    wm_grad_clip: float = 100.0
    """World-model gradient-norm clip (TWM's)."""
    wm_batch: int = 64
    """Dataset windows per world-model minibatch."""
    wm_frac: float = 10 / 1060
    """Fraction of the run's updates for the world model (S1: 10k of 10k + 50k + 1M)."""
    ensemble: int = 3
    """Reward-model ensemble size (MR's)."""
    rm_hidden: tuple[int, ...] = (256, 256, 256)
    """Reward-model hidden widths (MR's)."""
    rm_lr: float = 3e-4
    """Reward-model Adam learning rate."""
    rm_batch: int = 64
    """Labelled pairs per reward minibatch."""
    rm_frac: float = 50 / 1060
    """Fraction of the run's updates for the reward model (S1: 50k)."""
    reward_norm: str = "none"
    """Normalisation of the relabelled reward: none | corl | pt_true | pt_learned."""
    reward_input: str = "obs_act"
    """What the reward model reads: 'obs_act' (r(s, a), the paper's) or 'obs' (r(s))."""
    batch_size: int = 256
    """Transitions per IQL update."""
    early_stop_acc: float = 0.97
    """As an online reward model (:meth:`Agent.train_reward`): stop after an epoch whose mean
    training accuracy exceeds this (B-Pref's rule; the offline ``fit`` runs a fixed number
    of updates instead)."""


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "quick": {
        **QUICK_IQL,
        # A few hundred world-model and reward updates on small batches; IQL gets the rest.
        "wm_frac": 0.03,
        "rm_frac": 0.05,
        "wm_batch": 4,
        "rm_batch": 8,
        "batch_size": 128,
        # r(s): at this budget an r(s, a) model's action shortcut steers IQL to the decoy
        # (docs/agents.md, "The action shortcut").
        "reward_input": "obs",
    },
}

STACK_CHECK_OVERRIDES: dict[str, Any] = {"wm_dropout": 0.0}
"""The stacked-seeds check compares actions, so the world model's dropout is off there: its
masks come from the process's generator, drawn for all members at once when stacked."""

TEST_OVERRIDES: dict[str, Any] = {
    "wm_embed_dim": 16,
    "wm_layers": 1,
    "wm_heads": 2,
    "wm_batch": 4,
    "ensemble": 2,
    "rm_hidden": (16, 16),
    "rm_batch": 4,
    "hidden": (16, 16),
    "batch_size": 8,
    "wm_frac": 0.2,
    "rm_frac": 0.3,
}


class Agent:
    """World model -> attention importance -> PRIOR reward ensemble -> relabel -> IQL."""

    def __init__(self, cfg: Config, spec: AgentSpec) -> None:
        check_reward_input(cfg.reward_input)
        self.cfg = cfg
        self.spec = spec
        self.device = spec.device
        d_in = spec.obs_dim + spec.act_dim
        self.rm = EnsembleMLP(
            cfg.ensemble, d_in, 1, cfg.rm_hidden, "leaky_relu", out_act="tanh"
        ).to(self.device)
        self.iql = IQLLearner(spec.obs_dim, spec.act_dim, iql_config_from(cfg), 1, self.device)
        self.obs_mean = torch.zeros(spec.obs_dim, device=self.device)
        self.obs_std = torch.ones(spec.obs_dim, device=self.device)
        self.wm: WorldModel | None = None
        self.wm_optimizer: torch.optim.Optimizer | None = None
        self.rm_optimizer: torch.optim.Optimizer | None = None  # train_reward's
        self._build_wm(64)

    def _build_wm(self, max_len: int) -> None:
        c = self.cfg
        self.wm_optimizer = None
        self.wm = WorldModel(
            self.spec.obs_dim,
            self.spec.act_dim,
            c.wm_embed_dim,
            c.wm_layers,
            c.wm_heads,
            max_len,
            c.wm_dropout,
        ).to(self.device)

    def rewards_of(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Per-member reward (E, *batch)."""
        a = reward_action(act, self.cfg.reward_input)
        return self.rm(torch.cat([obs, a], -1), shared=True).squeeze(-1)

    @torch.no_grad()
    def importance(self, obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """alpha (B, T) of segments from the frozen world model in eval mode."""
        assert self.wm is not None
        self.wm.eval()
        _, attn = self.wm((obs - self.obs_mean) / self.obs_std, act, mask)
        return attention_importance(attn, mask.sum(-1).round().long())

    def rm_losses(self, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Sum over members of (BT cross-entropy + lambda * prior) on a pair minibatch ``b``
        (:data:`~pbrl.types.PAIR_FIELDS`)."""
        r_a = self.rewards_of(b["obs_a"], b["act_a"])  # (E, B, T)
        r_b = self.rewards_of(b["obs_b"], b["act_b"])
        alpha = torch.cat(
            [
                self.importance(b["obs_a"], b["act_a"], b["mask_a"]),
                self.importance(b["obs_b"], b["act_b"], b["mask_b"]),
            ]
        )
        return self.rm_terms(r_a, r_b, alpha, b)

    def rm_terms(
        self, r_a: torch.Tensor, r_b: torch.Tensor, alpha: torch.Tensor, b: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reward loss of one pair minibatch ``b`` from its per-step rewards ``r_a``,
        ``r_b`` (E, B, T) and the importance ``alpha`` (2B, T) of its segments a then b,
        with its metrics (left on the device: read at log intervals, host_metrics). The
        stacked path passes every member's, (K, E, B, T) and (K, 2B, T), with a batch whose
        fields carry the member axis too: each term then has one value per member."""
        mask_a = b["mask_a"].unsqueeze(-3)  # broadcast over the ensemble axis
        mask_b = b["mask_b"].unsqueeze(-3)
        s_a, s_b = segment_sum(r_a, mask_a), segment_sum(r_b, mask_b)
        ce = bt_pair_losses(s_a, s_b, b["prefer_b"].unsqueeze(-2), "logistic").mean(dim=-1)
        mask = torch.cat([mask_a, mask_b], -2)
        r_both = torch.cat([r_a, r_b], -2)
        prior = prior_loss(r_both, alpha.unsqueeze(-3), mask, self.cfg.detach_target)
        loss = (ce + self.cfg.prior_coef * prior).sum(-1)
        acc = strict_accuracy(s_a.detach().mean(-2), s_b.detach().mean(-2), b["prefer_b"])
        return loss, {
            "rm_ce": ce.detach().mean(-1),
            "rm_prior": prior.detach().mean(-1),
            "rm_acc": acc,
            "alpha_max": alpha.detach().max(dim=-1).values.mean(-1),
        }

    def train_world_model(
        self,
        ds: Any,
        seg_len: int,
        updates: int,
        rng: np.random.Generator,
        *,
        set_stats: bool = True,
    ) -> Iterator[dict[str, float]]:
        """``updates`` world-model steps on windows of ``seg_len`` steps of ``ds`` (an
        OfflineDataset), continuing from the current weights (a new model only when the
        window length changes); standardisation statistics from ``ds`` when ``set_stats``.
        Phase 0 of :meth:`fit`, and what the online track runs on its replay buffer before
        each feedback session (``agents/pebble.py``). Yields ``wm_loss`` after every step."""
        cfg = self.cfg
        if self.wm is None or self.wm.max_len != seg_len:
            self._build_wm(seg_len)
        assert self.wm is not None
        if set_stats:
            self.set_obs_stats(ds)
        data = self.wm_data(ds)
        if self.wm_optimizer is None:
            self.wm_optimizer = fused_adam(self.wm.parameters(), lr=cfg.wm_lr)
        opt = self.wm_optimizer
        self.wm.train().requires_grad_(True)
        for _ in range(updates):
            rows, mask = self.wm_windows(ds, seg_len, [rng])
            loss = self.wm_loss(self.wm, data, rows[0], mask[0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.wm.parameters(), cfg.wm_grad_clip)
            opt.step()
            yield {"wm_loss": loss.detach()}
        self.wm.eval().requires_grad_(False)

    def set_obs_stats(self, ds: Any) -> None:
        """The world model's state standardisation from dataset ``ds``'s observations."""
        mean, std = obs_stats(ds.observations)
        self.obs_mean = torch.as_tensor(mean, device=self.device)
        self.obs_std = torch.as_tensor(std, device=self.device)

    def wm_data(self, ds: Any) -> dict[str, torch.Tensor]:
        """``ds``'s standardised states and next states and its actions, on the device."""

        def standard(x: np.ndarray) -> torch.Tensor:
            return (torch.as_tensor(x, device=self.device) - self.obs_mean) / self.obs_std

        act = torch.as_tensor(np.asarray(ds.actions, np.float32), device=self.device)
        return {
            "obs": standard(ds.observations),
            "next": standard(ds.next_observations),
            "act": act,
        }

    def wm_windows(
        self, ds: Any, seg_len: int, rngs: list[np.random.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One world-model minibatch of ``ds``'s windows drawn with each of ``rngs`` (one per
        stacked member; a single run passes its own): rows and mask, (K, B, T), moved to the
        device in one copy per field."""
        drawn = [dataset_windows(ds, seg_len, self.cfg.wm_batch, rng) for rng in rngs]
        rows, mask = (np.stack([d[j] for d in drawn]) for j in (0, 1))
        m = torch.as_tensor(mask, dtype=torch.float32, device=self.device)
        return torch.as_tensor(rows, device=self.device), m

    @staticmethod
    def wm_loss(
        model: Callable[..., tuple[torch.Tensor, Any]],
        data: dict[str, torch.Tensor],
        rows: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """The world model's loss on the windows ``rows`` (B, T) of ``data`` (:meth:`wm_data`)."""
        pred, _ = model(data["obs"][rows], data["act"][rows], mask)
        return world_model_loss(pred, data["next"][rows], mask)

    def train_reward(
        self,
        prefs: Any,
        generator: torch.Generator,
        *,
        epochs: int | None = None,
        max_updates: int | None = None,
    ) -> Iterator[dict[str, float]]:
        """Online use: train the PRIOR reward ensemble on ``prefs`` (a PreferenceBatch, its
        segments no longer than the world model's window), continuing from its weights, for
        up to ``epochs`` passes of ``rm_batch`` pairs (default 1), stopping after an epoch
        whose mean accuracy exceeds ``early_stop_acc`` or after ``max_updates`` minibatches."""
        if self.rm_optimizer is None:
            self.rm_optimizer = fused_adam(self.rm.parameters(), lr=self.cfg.rm_lr)
        opt = self.rm_optimizer
        self.rm.train().requires_grad_(True)

        def step(idx: torch.Tensor) -> dict[str, float]:
            loss, m = self.rm_losses(prefs.rows(idx, PAIR_FIELDS))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"reward_loss": m["rm_ce"], "reward_acc": m["rm_acc"], **m}

        yield from epochs_until_accurate(
            prefs.size,
            self.cfg.rm_batch,
            generator,
            self.device,
            step,
            epochs=1 if epochs is None else epochs,
            stop_acc=self.cfg.early_stop_acc,
            max_updates=max_updates,
        )

    @torch.no_grad()
    def predict_segments(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """(E, N) predicted return of each of N segments under each member (selectors)."""
        self.rm.eval()
        o = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)
        a = torch.as_tensor(np.asarray(act, np.float32), device=self.device)
        return self.rewards_of(o, a).sum(-1).cpu().numpy()

    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        plan = yield from self.before_iql(ctx)
        yield from plan.run(ctx)

    def before_iql(self, ctx: FitContext) -> Generator[dict[str, float], None, IQLPlan]:
        """The world-model and reward phases; returns the IQL phase that follows (:meth:`fit`)."""
        seg_len, n_wm, n_rm, n_iql = self.phases_setup(ctx)
        cfg = self.cfg
        ds = ctx.dataset

        # phase 0: the world model on dataset windows of the segment length
        for step, m in enumerate(self.train_world_model(ds, seg_len, n_wm, ctx.rng), 1):
            if log_due(step, ctx.steps, ctx.log_interval) or step == n_wm:
                yield {"step": step, "phase": 0.0, **host_metrics(m)}

        # phase 1: the reward ensemble with the PRIOR term
        opt = fused_adam(self.rm.parameters(), lr=cfg.rm_lr)
        batches = epoch_minibatches(ctx.prefs.size, cfg.rm_batch, ctx.generator, ctx.device)
        self.rm.train()
        for i in range(1, n_rm + 1):
            loss, m = self.rm_losses(ctx.prefs.rows(next(batches), PAIR_FIELDS))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step = n_wm + i
            if log_due(step, ctx.steps, ctx.log_interval) or i == n_rm:
                yield {"step": step, "phase": 1.0, **host_metrics(m)}
        self.rm.eval().requires_grad_(False)

        # phase 2: relabel with the ensemble mean, IQL
        return self.iql_plan(ctx, self.reward(ds.observations, ds.actions), n_wm + n_rm, n_iql)

    def phases_setup(self, ctx: FitContext) -> tuple[int, int, int, int]:
        """The world model, built from the run's seed for the labels' segment length;
        returns that length and the world-model, reward and IQL phases' lengths."""
        if ctx.prefs is None or ctx.prefs.size == 0:
            raise PbrlError("hprior needs preferences (--prefs)")
        seg_len = int(ctx.prefs.obs_a.shape[1])
        with seeded_init(ctx.seed):
            self._build_wm(seg_len)
        n_wm, n_rm, n_iql = split_steps(ctx.steps, (self.cfg.wm_frac, self.cfg.rm_frac))
        return seg_len, n_wm, n_rm, n_iql

    def iql_plan(self, ctx: FitContext, rewards: np.ndarray, step0: int, n_iql: int) -> IQLPlan:
        """The IQL phase on the dataset relabelled with ``rewards``, from update ``step0``."""
        self.iql.set_max_steps(n_iql)
        cfg = self.cfg
        return IQLPlan(
            self.iql, ctx.dataset, rewards, n_iql, cfg.batch_size, step0, cfg.reward_norm
        )

    # -- acting / reward -------------------------------------------------------------------
    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(self.iql.act(obs), self.spec.act_low, self.spec.act_high)

    def reward(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """The learned reward (ensemble mean) of each (s, a)."""
        self.rm.eval()
        return batched_numpy(lambda o, a: self.rewards_of(o, a).mean(0), obs, act, self.device)

    def state_dict(self) -> dict[str, Any]:
        assert self.wm is not None
        return {
            "wm": self.wm.state_dict(),
            "wm_max_len": self.wm.max_len,
            "rm": self.rm.state_dict(),
            "obs_mean": self.obs_mean.cpu(),
            "obs_std": self.obs_std.cpu(),
            "iql": self.iql.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._build_wm(int(state["wm_max_len"]))
        assert self.wm is not None
        self.wm.load_state_dict(state["wm"])
        self.rm.load_state_dict(state["rm"])
        self.obs_mean = state["obs_mean"].to(self.device)
        self.obs_std = state["obs_std"].to(self.device)
        self.iql.load_state_dict(state["iql"])


def stacked_phases(
    agents: list[Agent], ctxs: list[FitContext]
) -> Generator[list[Any], None, list[IQLPlan]]:
    """The K members' world-model and reward phases at once (``pbrl bench --stack-seeds
    K``): their world models stacked (:class:`pbrl.learn.stack.StackedModules` under
    their member forwards; one Adam, each member's gradient clipped to its own norm), each
    member's windows drawn with its own numpy generator; then their reward ensembles
    (member forwards of the stacked ensembles), each member's pairs drawn with its own
    generator and weighted by its own frozen world model's importance; then every member's
    relabelling of the dataset at once. Yields one row per logged update; returns the members' IQL
    plans. Members whose labels differ in shape, or that do not share one dataset, run
    :meth:`Agent.before_iql` one after the other instead."""
    k = len(agents)
    first, ctx0 = agents[0], ctxs[0]
    ds = ctx0.dataset
    if not labels_of_one_shape([c.prefs for c in ctxs], PAIR_FIELDS) or not all(
        shares_arrays(c.dataset, ds, ("next_observations",)) for c in ctxs
    ):
        phases = [a.before_iql(c) for a, c in zip(agents, ctxs, strict=True)]
        return (yield from members_in_turn(k, phases))
    cfg = first.cfg
    seg_len, n_wm, n_rm, n_iql = [a.phases_setup(c) for a, c in zip(agents, ctxs, strict=True)][0]

    # phase 0: the world models
    for a in agents:  # the same data: the same statistics, each member holding its own copy
        a.set_obs_stats(ds)
    data = first.wm_data(ds)
    wms = StackedModules([a.wm for a in agents])
    wms.train(True)
    opt = fused_adam(wms.parameters(), lr=cfg.wm_lr)

    for step in range(1, n_wm + 1):
        rows, mask = first.wm_windows(ds, seg_len, [c.rng for c in ctxs])
        losses = first.wm_loss(wms.members, data, rows, mask)  # (K,)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        clip_member_grads_(wms.parameters(), cfg.wm_grad_clip)
        opt.step()
        if log_due(step, ctx0.steps, ctx0.log_interval) or step == n_wm:
            yield stacked_metrics(step, {"wm_loss": losses}, {"phase": 0.0})
    wms.write_back()
    for a in agents:
        assert a.wm is not None
        a.wm.eval().requires_grad_(False)
    wms.train(False)
    for t in wms.parameters():
        t.requires_grad_(False)

    # phase 1: the reward ensembles with the PRIOR term
    rms = StackedModules([a.rm for a in agents])
    rms.train(True)
    opt = fused_adam(rms.parameters(), lr=cfg.rm_lr)
    pairs = member_pairs(
        [c.prefs for c in ctxs], [c.generator for c in ctxs], cfg.rm_batch, first.device
    )

    def importance(b: dict[str, torch.Tensor], side: str) -> torch.Tensor:  # (K, B, T)
        obs, act, mask = b[f"obs_{side}"], b[f"act_{side}"], b[f"mask_{side}"]
        _, attn = wms.members((obs - first.obs_mean) / first.obs_std, act, mask)
        rows = [a.flatten(0, 1) for a in attn]  # every member's segments as one batch
        alpha = attention_importance(rows, mask.flatten(0, 1).sum(-1).round().long())
        return alpha.view(mask.shape)

    def rewards(obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:  # (K, E, B, T)
        x = torch.cat([obs, reward_action(act, cfg.reward_input)], -1)
        return rms.members(x, shared=True).squeeze(-1)

    for i in range(1, n_rm + 1):
        b = next(pairs)
        with torch.no_grad():
            alpha = torch.cat([importance(b, "a"), importance(b, "b")], dim=1)
        r_a, r_b = rewards(b["obs_a"], b["act_a"]), rewards(b["obs_b"], b["act_b"])
        losses, terms = first.rm_terms(r_a, r_b, alpha, b)  # (K,) each: no vmap
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        step = n_wm + i
        if log_due(step, ctx0.steps, ctx0.log_interval) or i == n_rm:
            yield stacked_metrics(step, terms, {"phase": 1.0})
    rms.write_back()
    for a in agents:
        a.rm.eval().requires_grad_(False)
    rms.train(False)

    # phase 2: every member's relabelling (its ensemble's mean) at once
    def member_means(o: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return rewards(o.expand(k, *o.shape), a.expand(k, *a.shape)).mean(1)

    relabelled = batched_numpy(
        member_means, ds.observations, ds.actions, first.device, max(1, 8192 // k), (k,)
    )
    return [
        a.iql_plan(c, r, n_wm + n_rm, n_iql)
        for a, c, r in zip(agents, ctxs, relabelled, strict=True)
    ]


def fit_stacked(agents: list[Agent], ctxs: list[FitContext]) -> Iterator[list[Any]]:
    """Stacked seeds (``pbrl bench --stack-seeds K``): the members' world-model and reward
    phases and their relabelling together (:func:`stacked_phases`), then the IQL phases
    stacked (:func:`pbrl.learn.stack.fit_stacked_before_iql`)."""
    return fit_stacked_before_iql(agents, ctxs, stacked_phases)
