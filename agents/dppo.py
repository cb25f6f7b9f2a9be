"""DPPO: Direct Preference-based Policy Optimization, a policy pulled toward preferred windows.

Paper: G. An, J. Lee, X. Zuo, N. Kosaka, K.-M. Kim, H. O. Song, "Direct Preference-based
Policy Optimization without Reward Modeling", NeurIPS 2023 (arXiv 2301.12842); official JAX
code snu-mllab/DPPO (``JaxPref/PrefTransformer.py``, ``learner.py``, ``train.py``).

Summary: (1) a preference predictor (the Preference Transformer's encoder without its
preference-attention head: bidirectional attention over interleaved (a_t, s_t) tokens,
an MLP on the state tokens, the mean over positions) is trained on the labelled pairs;
(2) it scores once every window of the offline dataset (the window of up to ``window`` steps
ending at each row, cut at the episode start); (3) a deterministic tanh policy is trained
with a contrastive loss over a batch of scored windows: each window's distance to the policy
is pulled down relative to every lower-scored window's. No reward model, critic or value.

Losses (y = prefer_b; d_i the mean over window i's real steps of ||(pi(s_t) - a_t) / 2||_2,
windows sorted by predicted score, descending; T the temperature, lambda the weight of
the less-preferred window)::

    L_pred = mean_b CE(softmax[S(sigma_a), S(sigma_b)], [1 - y, y])
             + smooth_w * mean_m (S(tau_m) - S(tau'_m))^2        (tau' = tau slid by ~N(0, M))
    l_ij   = -log( exp(-d_i / T) / (exp(-d_i / T) + exp(-lambda d_j / T)) ),  i ranked above j
    L_pi   = sum_{i<j} l_ij / #{i<j : l_ij != 0 in float32}

T = 0.1 and lambda = 1 are ``train.py``'s flags (the ``Learner`` default T = 1.0 is not used).
The official window score averages the head's output over all positions, padding included
(``pool_padding``); a pair whose float32 probability rounds to 1 drops out of the mean.
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
from pbrl.learn.data import ACTION_CLIP, shares_arrays
from pbrl.learn.kit import (
    bt_pair_losses,
    epoch_minibatches,
    fused_adam,
    greedy_action,
    host_metrics,
    log_due,
    seeded_init,
    split_steps,
    strict_accuracy,
)
from pbrl.learn.nn import MLP, CausalTransformer, LayeredModule, Layers, interleave_steps
from pbrl.learn.stack import (
    StackedModules,
    labels_of_one_shape,
    member_batches,
    member_pairs,
    members_in_turn,
    stacked_metrics,
)
from pbrl.types import PAIR_FIELDS

ACTION_RANGE = 2.0
"""a_max - a_min of the normalised action box [-1, 1] (the official distance divides by it)."""

# ---- pure losses ------------------------------------------------------------------------


def window_distances(pred: torch.Tensor, act: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """d_i = mean over window i's real steps of ||(pi(s_t) - a_t) / 2||_2: (N, W, A) -> (N,)."""
    step = torch.linalg.vector_norm((pred - act) / ACTION_RANGE, dim=-1)
    return (step * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)


def preference_order(score: torch.Tensor) -> torch.Tensor:
    """Indices of ``score`` (..., N) in descending order along its last dim, as the official
    code sorts: a stable ascending argsort flipped (so among equal scores the later index
    comes first)."""
    return torch.flip(torch.argsort(score, dim=-1, stable=True), dims=(-1,))


def dppo_policy_loss(
    dist: torch.Tensor, score: torch.Tensor, lambd: float, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """DPPO's contrastive policy loss over all ordered pairs of a batch of windows.

    ``dist`` (..., N) are the windows' distances to the policy and ``score`` (..., N) their
    predicted preference scores (a leading member axis gives one loss per member). For windows sorted by score (descending), every pair i < j
    contributes ``softplus((d_i - lambda d_j) / T)`` = -log P(i preferred); the sum is divided
    by the number of pairs whose float32 probability ``exp(-d_i/T) / (exp(-d_i/T) +
    exp(-lambda d_j/T))`` is below 1 (the official mean over the non-zero log terms; the
    others are dropped). Returns (loss, number of pairs kept).
    """
    d = dist.gather(-1, preference_order(score)) / temperature
    n = d.shape[-1]
    i, j = torch.triu_indices(n, n, offset=1, device=d.device)
    terms = nn.functional.softplus(d[..., i] - lambd * d[..., j])
    with torch.no_grad():
        d32 = d.detach().float()
        e_i, e_j = torch.exp(-d32[..., i]), torch.exp(-lambd * d32[..., j])
        keep = (e_i / (e_i + e_j)) != 1.0
    kept = keep.sum(-1)
    loss = (terms * keep).sum(-1) / kept.clamp_min(1)
    return loss, kept


def predictor_loss(
    score_a: torch.Tensor, score_b: torch.Tensor, prefer_b: torch.Tensor
) -> torch.Tensor:
    """Softmax cross-entropy of the pair logits [S_a, S_b] against [1 - y, y], batch mean:
    (..., B) -> (...), one loss per member of a leading member axis."""
    return bt_pair_losses(score_a, score_b, prefer_b, "softmax").mean(-1)


def smoothness_loss(score: torch.Tensor, score_shifted: torch.Tensor) -> torch.Tensor:
    """mean (S(tau) - S(tau'))^2 over the smoothness pairs (the last dim)."""
    return ((score - score_shifted) ** 2).mean(-1)


def warmup_cosine(
    step: int, total: int, warmup: int, init: float, peak: float, end: float
) -> float:
    """optax.warmup_cosine_decay_schedule: linear init->peak over ``warmup``, cosine to ``end``
    at ``total`` (the official predictor's schedule)."""
    if warmup > 0 and step < warmup:
        return init + (peak - init) * step / warmup
    frac = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
    return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * frac))


# ---- windows ------------------------------------------------------------------------------


def episode_bounds(starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last row index of each dataset row's episode, (N,) each."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.repeat(starts, lengths), np.repeat(starts + lengths - 1, lengths)


def row_windows(
    ends: np.ndarray, ep_start: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """The official windows ending at rows ``ends``: rows max(episode start, i - window + 1)
    .. i, left-aligned, padded at the end (``ep_start`` is each end row's episode start).

    Returns (rows (..., M, window) with padding pointing at the window's first row, mask
    (..., M, window)) for ends of any shape (..., M); built per batch, so no (N, window)
    table is ever held.
    """
    ends = np.asarray(ends, dtype=np.int64)
    first = np.maximum(np.asarray(ep_start, dtype=np.int64), ends - window + 1)
    rows = first[..., None] + np.arange(window, dtype=np.int64)
    mask = rows <= ends[..., None]
    return np.where(mask, rows, first[..., None]), mask


# ---- the preference predictor -----------------------------------------------------------


class ScoreModel(LayeredModule):
    """The DPPO preference predictor: PT's encoder (bidirectional), an MLP head, a mean."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        embed_dim: int,
        n_layers: int,
        n_heads: int,
        max_len: int,
        dropout: float,
        max_timestep: int = 1000,
        pool_padding: bool = True,
    ) -> None:
        super().__init__()
        self.embed_s = nn.Linear(obs_dim, embed_dim)
        self.embed_a = nn.Linear(act_dim, embed_dim)
        self.embed_t = nn.Embedding(max_timestep + 1, embed_dim)
        self.embed_ln = nn.LayerNorm(embed_dim)
        self.encoder = CausalTransformer(
            embed_dim,
            n_layers,
            n_heads,
            2 * max_len,
            dropout,
            pos_embedding=False,
            causal=False,
            activation="relu",
        )
        self.head = MLP(embed_dim, 1, (embed_dim // 2,), "relu")
        self.max_len = max_len
        self.max_timestep = max_timestep
        self.pool_padding = pool_padding

    def forward_layers(
        self, layers: Layers, obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Scores (B,) of (B, L) windows; padded steps have timestep 0 and zero inputs.
        Members (:meth:`forward_members`): windows (K, B, L, ...), scores (K, B)."""
        h = obs.shape[-2]
        if h > self.max_len:
            raise PbrlError(f"dppo: window of {h} steps exceeds max_len {self.max_len}")
        m = mask.to(obs.dtype)
        ts = torch.arange(1, h + 1, device=obs.device).clamp(max=self.max_timestep)
        e_t = layers.embedding("embed_t", ts * mask.long())  # padding: timestep 0
        obs, act = obs * m[..., None], act * m[..., None]
        streams = [layers("embed_a", act) + e_t, layers("embed_s", obs) + e_t]
        tok, key_mask = interleave_steps(streams, lambda x: layers("embed_ln", x), mask)
        out, _ = layers("encoder", tok, key_mask)
        r = layers("head", out[..., 1::2, :]).squeeze(-1)
        if self.pool_padding:
            return r.mean(-1)
        return (r * m).sum(-1) / m.sum(-1).clamp_min(1.0)


# ---- agent --------------------------------------------------------------------------------


@dataclass
class PredictorSetup:
    """Phase (1)'s fixed parts (:meth:`Agent.predictor_setup`): the predictor, the window
    builder, the labelled window ends and episode bounds the smoothness pairs are drawn
    from, and the lengths of the predictor and policy phases."""

    model: nn.Module
    windows: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    in_rows: np.ndarray
    ep_lo: np.ndarray
    ep_hi: np.ndarray
    n_rm: int
    n_pi: int


@dataclass
class PolicyPlan:
    """What phase (3) trains on: the scored windows (rows of ``pool``, scores on the device),
    the window builder, the step at which it starts, its updates and batch size."""

    pool: np.ndarray
    scores: torch.Tensor
    windows: Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    step0: int
    steps: int
    batch_size: int
    score_std: float

    @property
    def pairs(self) -> int:
        return max(1, self.batch_size * (self.batch_size - 1) // 2)

    def draw(self, ctx: FitContext) -> np.ndarray:
        """One policy batch's positions in the pool, drawn with the run's numpy generator."""
        return ctx.rng.choice(self.pool.shape[0], self.batch_size, replace=False)

    def batch(self, ctx: FitContext) -> dict[str, torch.Tensor]:
        """One policy batch (:meth:`draw`): windows and their scores."""
        pick = self.draw(ctx)
        obs, act, mask = self.windows(self.pool[pick])
        score = self.scores[torch.as_tensor(pick, device=self.scores.device)]
        return {"obs": obs, "act": act, "mask": mask, "score": score}


@dataclass
class Config:
    """DPPO options (defaults: the official ``train.py`` flags and PT's predictor config)."""

    lambd: float = 1.0
    """lambda: weight of the less-preferred window's distance (train.py --lambd; tuned per task)."""
    temperature: float = 0.1
    """Distance temperature T (train.py --dist_temperature 0.1)."""
    batch_size: int = 256
    """Windows per policy update (all their ordered pairs enter the loss)."""
    lr: float = 3e-4
    """Policy Adam learning rate (constant)."""
    hidden: tuple[int, ...] = (256, 256)
    """Policy hidden widths (ReLU, tanh output, orthogonal init gain sqrt 2)."""
    dropout: float = 0.0
    """Policy dropout after each hidden activation (train.py --dropout; 0 = none)."""
    window: int = 0
    """Window length of the scored dataset windows; 0 = the labelled segments' length (official
    seq_len 100 = the query length)."""
    score_windows: int = 0
    """Score only this many random dataset windows and train on them; 0 = every window."""
    embed_dim: int = 256
    """Predictor transformer width."""
    n_layers: int = 1
    """Predictor transformer layers."""
    n_heads: int = 4
    """Predictor attention heads."""
    rm_dropout: float = 0.1
    """Predictor embedding, attention and residual dropout."""
    pool_padding: bool = True
    """Window score = mean of the head over all positions, padding included (official)."""
    rm_batch: int = 256
    """Labelled pairs per predictor update."""
    rm_lr: float = 1e-4
    """Predictor initial and final learning rate; the warm-up peak is 10x this."""
    rm_weight_decay: float = 1e-4
    """Predictor AdamW weight decay (optax default)."""
    rm_warmup: float = 0.1
    """Warm-up fraction of the predictor steps."""
    rm_frac: float = 0.1
    """Fraction of the run's updates spent on the predictor (the rest trains the policy)."""
    smooth_w: float = 0.0
    """nu: weight of the smoothness regulariser (official default 0, set per task)."""
    smooth_sigma: float = 0.0
    """M: std (in steps) of the slide between a smoothness window and its partner."""


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    # CPU scale: a small predictor, 2,048 scored windows, 64 windows (2,016 pairs) per update.
    "quick": {
        "embed_dim": 64,
        "n_heads": 2,
        "rm_batch": 32,
        "batch_size": 64,
        "score_windows": 2048,
        "rm_frac": 0.2,
    },
}

STACK_CHECK_OVERRIDES: dict[str, Any] = {"dropout": 0.0, "rm_dropout": 0.0}
"""The stacked-seeds check compares actions, so dropout is off there: its masks come from the
process's generator, which stands elsewhere when a member's phases run stacked or in turn."""

TEST_OVERRIDES: dict[str, Any] = {
    "hidden": (16, 16),
    "embed_dim": 16,
    "n_heads": 2,
    "rm_batch": 4,
    "batch_size": 6,
    "smooth_w": 0.1,
    "smooth_sigma": 2.0,
}


class Agent:
    """The DPPO predictor and policy."""

    requires_true_reward = False
    requires_preferences = True

    def __init__(self, cfg: Config, spec: AgentSpec) -> None:
        if cfg.temperature <= 0:
            raise PbrlError(f"--agent.temperature: must be > 0, got {cfg.temperature}")
        if cfg.lambd < 0:
            raise PbrlError(f"--agent.lambd: must be >= 0, got {cfg.lambd}")
        if cfg.batch_size < 2:
            raise PbrlError(f"--agent.batch_size: needs >= 2 windows, got {cfg.batch_size}")
        if cfg.window < 0 or cfg.score_windows < 0:
            raise PbrlError("--agent.window and --agent.score_windows: must be >= 0")
        if not 0.0 < cfg.rm_frac < 1.0:
            raise PbrlError(f"--agent.rm_frac: must lie in (0, 1), got {cfg.rm_frac}")
        self.cfg = cfg
        self.spec = spec
        self.device = spec.device
        self.actor = MLP(
            spec.obs_dim,
            spec.act_dim,
            cfg.hidden,
            "relu",
            "tanh",
            cfg.dropout,
            init="orthogonal",
            gain=math.sqrt(2.0),
        ).to(self.device)
        self.model: ScoreModel | None = None

    def _build(self, max_len: int) -> ScoreModel:
        c = self.cfg
        self.model = ScoreModel(
            self.spec.obs_dim,
            self.spec.act_dim,
            c.embed_dim,
            c.n_layers,
            c.n_heads,
            max_len,
            c.rm_dropout,
            pool_padding=c.pool_padding,
        ).to(self.device)
        return self.model

    # -- training --------------------------------------------------------------------------
    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        plan = yield from self.score_windows(ctx)
        pi_opt = fused_adam(self.actor.parameters(), lr=self.cfg.lr)
        self.actor.train()
        for k in range(1, plan.steps + 1):
            b = plan.batch(ctx)
            loss, dist, kept = self.policy_loss(self.actor(b["obs"]), b)
            pi_opt.zero_grad(set_to_none=True)
            loss.backward()
            pi_opt.step()
            step = plan.step0 + k
            if log_due(step, ctx.steps, ctx.log_interval):
                yield {
                    "step": step,
                    "phase": 2.0,
                    "dppo_loss": float(loss.detach()),
                    "distance": float(dist.detach()),
                    "pairs_kept": float(kept) / plan.pairs,
                    "score_std": plan.score_std,
                }

    def policy_loss(
        self, pred: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The policy loss of one batch of scored windows given the policy's actions ``pred``
        (B, W, A): (loss, mean window distance, pairs kept); with a leading member axis on
        every input, one of each per member."""
        dist = window_distances(pred, batch["act"], batch["mask"])
        loss, kept = dppo_policy_loss(dist, batch["score"], self.cfg.lambd, self.cfg.temperature)
        return loss, dist.mean(-1), kept

    def score_windows(self, ctx: FitContext) -> Generator[dict[str, float], None, PolicyPlan]:
        """Phases (1) and (2): train the preference predictor, score the dataset's windows.
        Yields the predictor's metrics; returns what the policy phase trains on."""
        setup = self.predictor_setup(ctx)
        model, n_rm = setup.model, setup.n_rm
        cfg = self.cfg
        opt = fused_adam(
            model.parameters(), lr=cfg.rm_lr, weight_decay=cfg.rm_weight_decay, decoupled=True
        )
        batches = epoch_minibatches(ctx.prefs.size, cfg.rm_batch, ctx.generator, self.device)
        model.train()
        for step in range(1, n_rm + 1):
            lr = self.rm_lr(step, n_rm)
            for g in opt.param_groups:
                g["lr"] = lr
            b = ctx.prefs.rows(next(batches), PAIR_FIELDS)
            smooth_rows = self.smooth_rows(ctx, setup, int(b["prefer_b"].shape[0]))
            loss, terms = self.predictor_terms(model, b, setup.windows, smooth_rows)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if log_due(step, ctx.steps, ctx.log_interval) or step == n_rm:
                yield {"step": step, "phase": 1.0, **host_metrics(terms), "rm_lr": lr}
        return self.score_pool(ctx, setup)

    def predictor_setup(self, ctx: FitContext) -> PredictorSetup:
        """Phase (1)'s fixed parts: the predictor (built from the run's seed now that the
        segment length is known), the window builder, the phases' lengths."""
        if ctx.prefs is None or ctx.prefs.size == 0:
            raise PbrlError("dppo needs preferences (--prefs)")
        cfg = self.cfg
        ds = ctx.dataset
        seg_len = int(ctx.prefs.obs_a.shape[1])
        win = cfg.window or seg_len
        # built here, when the segment length is known
        with seeded_init(ctx.seed):
            model = self._build(max(seg_len, win))
        n_rm, n_pi = split_steps(ctx.steps, (cfg.rm_frac,))
        obs_all = torch.as_tensor(np.asarray(ds.observations, np.float32), device=self.device)
        act_all = torch.as_tensor(
            np.clip(np.asarray(ds.actions, np.float32), -ACTION_CLIP, ACTION_CLIP),
            device=self.device,
        )
        ep_lo, ep_hi = episode_bounds(ds.starts, ds.lengths)

        def windows(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            rows, mask = row_windows(idx, ep_lo[idx], win)
            r = torch.as_tensor(rows, device=self.device)
            m = torch.as_tensor(mask, dtype=torch.float32, device=self.device)
            return obs_all[r], act_all[r], m

        in_rows = self._labelled_window_ends(ctx, win)
        return PredictorSetup(model, windows, in_rows, ep_lo, ep_hi, n_rm, n_pi)

    def rm_lr(self, step: int, n_rm: int) -> float:
        """The predictor's learning rate at ``step`` (1-based) of ``n_rm``."""
        cfg = self.cfg
        warm = int(cfg.rm_warmup * n_rm)
        return warmup_cosine(step - 1, n_rm, warm, cfg.rm_lr, 10 * cfg.rm_lr, cfg.rm_lr)

    def smooth_rows(
        self, ctx: FitContext, setup: PredictorSetup, n: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """This update's smoothness windows and their slid partners, drawn with the run's
        numpy generator (None when ``smooth_w`` is 0)."""
        if self.cfg.smooth_w <= 0:
            return None
        return self._smooth_pairs(
            ctx.rng, n, setup.in_rows, setup.ep_lo, setup.ep_hi, self.cfg.smooth_sigma
        )

    def predictor_terms(
        self,
        model: Callable[..., torch.Tensor],
        b: dict[str, torch.Tensor],
        windows: Callable[[np.ndarray], tuple[torch.Tensor, ...]] | None,
        smooth_rows: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Phase (1)'s loss of one batch of pairs ``b`` (:data:`~pbrl.types.PAIR_FIELDS`) and
        its metrics: the predictor's cross-entropy, plus ``smooth_w`` times the smoothness
        loss of the windows ``smooth_rows`` (row indices for ``windows``, or the windows
        themselves when ``windows`` is None: the stacked path builds them per member)."""
        cfg = self.cfg
        act_a = b["act_a"].clamp(-ACTION_CLIP, ACTION_CLIP)
        act_b = b["act_b"].clamp(-ACTION_CLIP, ACTION_CLIP)
        s_a = model(b["obs_a"], act_a, b["mask_a"])
        s_b = model(b["obs_b"], act_b, b["mask_b"])
        ce = predictor_loss(s_a, s_b, b["prefer_b"])
        loss, smooth = ce, torch.zeros_like(ce)
        if smooth_rows is not None:
            first, second = smooth_rows
            w1, w2 = (first, second) if windows is None else (windows(first), windows(second))
            smooth = smoothness_loss(model(*w1), model(*w2))
            loss = ce + cfg.smooth_w * smooth
        acc = strict_accuracy(s_a.detach(), s_b.detach(), b["prefer_b"])
        return loss, {"rm_loss": ce.detach(), "rm_smooth": smooth.detach(), "rm_acc": acc}

    def score_pool(self, ctx: FitContext, setup: PredictorSetup) -> PolicyPlan:
        """Phase (2): score the dataset's windows once with the trained predictor."""
        cfg = self.cfg
        model, windows = setup.model, setup.windows
        model.eval()
        n_rows = setup.ep_lo.shape[0]
        if cfg.score_windows and cfg.score_windows < n_rows:
            pool = np.sort(ctx.rng.choice(n_rows, cfg.score_windows, replace=False))
        else:
            pool = np.arange(n_rows)
        scores = np.empty(pool.shape[0], dtype=np.float32)
        with torch.no_grad():
            for s in range(0, pool.shape[0], 1024):
                scores[s : s + 1024] = model(*windows(pool[s : s + 1024])).cpu().numpy()
        model.requires_grad_(False)
        bs = min(cfg.batch_size, pool.shape[0])
        return PolicyPlan(
            pool, torch.as_tensor(scores, device=self.device), windows, setup.n_rm,
            setup.n_pi, bs, float(scores.std()),
        )  # fmt: skip

    def _labelled_window_ends(self, ctx: FitContext, win: int) -> np.ndarray:
        """Rows whose window is a full-length window starting where a labelled segment starts
        (the official ``smooth_in`` half of the smoothness batch); empty without references."""
        pd = ctx.pref_data
        if pd is None:
            return np.zeros(0, dtype=np.int64)
        ds = ctx.dataset
        refs = np.concatenate([np.asarray(pd.refs_a), np.asarray(pd.refs_b)]).astype(np.int64)
        ep, start = refs[:, 0], refs[:, 1]
        end = start + win - 1
        ok = end < np.asarray(ds.lengths)[ep]
        return np.unique(np.asarray(ds.starts)[ep[ok]] + end[ok])

    @staticmethod
    def _smooth_pairs(
        rng: np.random.Generator,
        n: int,
        in_rows: np.ndarray,
        ep_lo: np.ndarray,
        ep_hi: np.ndarray,
        sigma: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Smoothness windows and their partners slid by round(N(0, 1) * sigma) steps, clipped
        to the same episode; half from labelled starts (as many as exist), half uniform."""
        n_in = min(n // 2, in_rows.shape[0])
        first = np.concatenate(
            [
                rng.choice(in_rows, n_in, replace=False),
                rng.choice(ep_lo.shape[0], n - n_in, replace=ep_lo.shape[0] < n - n_in),
            ]
        ).astype(np.int64)
        shift = np.round(rng.standard_normal(n) * sigma).astype(np.int64)
        second = np.clip(first + shift, ep_lo[first], ep_hi[first])
        return first, second

    # -- acting and state ----------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        a = greedy_action(self.actor, obs, self.device)
        return np.clip(a, self.spec.act_low, self.spec.act_high)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"actor": self.actor.state_dict()}
        if self.model is not None:
            state["model"] = self.model.state_dict()
            state["max_len"] = self.model.max_len
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        if "model" in state:
            self._build(int(state["max_len"])).load_state_dict(state["model"])


def stacked_predictor_phase(
    agents: list[Agent], ctxs: list[FitContext]
) -> Generator[list[Any], None, list[PolicyPlan]]:
    """Phase (1) of K members at once (``pbrl bench --stack-seeds K``): their predictors
    stacked (:class:`pbrl.learn.stack.StackedModules`, their member forwards; one AdamW),
    each member's pairs drawn with its own generator and gathered from one table of the
    members' labels, its smoothness windows drawn with its own numpy generator, as alone;
    then each member scores its windows (phase 2). Yields one row per logged update;
    returns the members' policy plans. Members whose labels differ in shape run
    :meth:`Agent.score_windows` one after the other instead."""
    k = len(agents)
    if not labels_of_one_shape([c.prefs for c in ctxs], PAIR_FIELDS):
        phases = [a.score_windows(c) for a, c in zip(agents, ctxs, strict=True)]
        return (yield from members_in_turn(k, phases))
    first, ctx0 = agents[0], ctxs[0]
    cfg = first.cfg
    setups = [a.predictor_setup(c) for a, c in zip(agents, ctxs, strict=True)]
    n_rm = setups[0].n_rm
    shared = all(shares_arrays(c.dataset, ctx0.dataset) for c in ctxs)  # one table of windows
    stack = StackedModules([st.model for st in setups])
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
        b = next(pairs)
        smooth: tuple[Any, ...] = ()
        if cfg.smooth_w > 0:  # each member's rows from its own draws
            n = int(b["prefer_b"].shape[1])
            drawn = [a.smooth_rows(c, st, n) for a, c, st in zip(agents, ctxs, setups, strict=True)]
            if shared:  # every member's windows from the one table at once
                smooth = tuple(
                    setups[0].windows(np.stack([d[side] for d in drawn])) for side in (0, 1)
                )
            else:  # each member's from its own table, then stacked
                slid = [
                    (st.windows(f), st.windows(sec))
                    for st, (f, sec) in zip(setups, drawn, strict=True)
                ]
                smooth = tuple(
                    tuple(torch.stack([w[side][j] for w in slid]) for j in range(3))
                    for side in (0, 1)
                )
        losses, terms = first.predictor_terms(stack.members, b, None, smooth or None)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        if log_due(step, ctx0.steps, ctx0.log_interval) or step == n_rm:
            yield stacked_metrics(step, terms, {"phase": 1.0, "rm_lr": lr})
    stack.write_back()
    return [a.score_pool(c, st) for a, c, st in zip(agents, ctxs, setups, strict=True)]


def fit_stacked(agents: list[Agent], ctxs: list[FitContext]) -> Iterator[list[Any]]:
    """K seeds of one config trained as one (``pbrl bench --stack-seeds K``): the members'
    predictors train stacked and each scores its windows (:func:`stacked_predictor_phase`),
    then the K policies train stacked (:class:`pbrl.learn.stack.StackedModules`), each on
    batches of its own scored windows drawn with its own generator."""
    plans = yield from stacked_predictor_phase(agents, ctxs)
    first, plan0, ctx0 = agents[0], plans[0], ctxs[0]
    for a in agents:
        a.actor.train()
    stack = StackedModules([a.actor for a in agents])
    stack.train(True)
    opt = fused_adam(stack.parameters(), lr=first.cfg.lr)
    score_std = torch.tensor([p.score_std for p in plans], device=first.device)
    batches = policy_batches(plans, ctxs)
    for i in range(1, plan0.steps + 1):
        batch = next(batches)
        mu = stack.members(batch["obs"])  # every member's policy at once (no vmap)
        loss, dist, kept = first.policy_loss(mu, batch)  # (K,) each: no vmap
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        step = plan0.step0 + i
        if log_due(step, ctx0.steps, ctx0.log_interval):
            stack.write_back()
            yield stacked_metrics(
                step,
                {
                    "dppo_loss": loss,
                    "distance": dist,
                    "pairs_kept": kept.float() / plan0.pairs,
                    "score_std": score_std,
                },
                {"phase": 2.0},
            )


def policy_batches(plans: list[PolicyPlan], ctxs: list[FitContext]) -> Iterator[dict[str, Any]]:
    """Endless policy batches of K stacked members, each field ``(K, B, ...)``: member k's
    windows and scores drawn with its own numpy generator (:meth:`PolicyPlan.draw`). When
    the members' datasets share their arrays and their pools have one size, every member's
    windows come from the one table at once and the scores in one gather; otherwise each
    member builds its own batch and the batches are stacked."""
    ctx0 = ctxs[0]
    one = all(shares_arrays(c.dataset, ctx0.dataset) for c in ctxs)
    if not one or len({p.pool.shape[0] for p in plans}) != 1:
        while True:
            yield member_batches([p.batch(c) for p, c in zip(plans, ctxs, strict=True)])
    scores = torch.stack([p.scores for p in plans])  # (K, pool)
    while True:
        picks = np.stack([p.draw(c) for p, c in zip(plans, ctxs, strict=True)])
        rows = np.stack([p.pool[pick] for p, pick in zip(plans, picks, strict=True)])
        obs, act, mask = plans[0].windows(rows)
        score = scores.gather(1, torch.as_tensor(picks, device=scores.device))
        yield {"obs": obs, "act": act, "mask": mask, "score": score}
