"""oppo: Offline Preference-guided Policy Optimization (Kang et al., ICML 2023).

Paper: Y. Kang, D. Shi, J. Liu, L. He, D. Wang, "Beyond Reward: Offline Preference-guided
Policy Optimization", ICML 2023 (arXiv 2305.16217); official code bkkgbkjb/OPPO (two code
trees; the departures below are recorded in docs/agents-advanced.md).

Summary. No reward model: a bidirectional transformer encoder I maps a segment to a
context z = I(tau) (hindsight information), a Decision-Transformer-style causal policy
pi(a_t | z, s_<=t, a_<t) reconstructs the segment's actions from z (hindsight information
matching), and a free vector z* (the optimal context) is fitted with a triplet loss to lie
closer to the encodings of preferred segments than to those of the rejected ones, while
the encoder gets the same triplet loss with z* held fixed. At test time the policy is
conditioned on z*. Default: the scripted tree's joint update (``update=joint``); the human
tree's alternating update is the ``human`` preset (``update=alternating``).

pbrl's departures (named options; docs/agents-advanced.md): the labelled pairs of the
preference file replace the scripted tree's unlimited fresh labels (oppo.md Q4); the
encoder and the policy see the same random window of ``context_len`` steps of a labelled
segment (``encode=segment``: the encoder sees the whole segment); timesteps are positions inside the window (PreferenceBatch carries no episode
time); the encoder sums over real tokens only (``pool_over_padding`` restores the official
sum over padding); at evaluation every context position holds z* (``eval_zero_fill``
restores the official zero vectors on all but the last position).

Losses of one joint step (y = prefer_b; d(x, y) = ||x - y + 1e-6||; strict pairs only)::

    L_HIM  = masked_mean (pi(z_a)_t - a_t)^2 + masked_mean (pi(z_b)_t - a_t)^2
    L_pref = mean_strict max(d(z*, z+) - d(z*, z-) + 1, 0)               (z* detached)
    L_norm = mean (||z_a|| - 1)^2 + mean (||z_b|| - 1)^2
    L_enc+dec = L_HIM + 0.1 L_pref + 0.1 L_norm        (clip 0.25 per module, AdamW 1e-4)
    then  L_w = the same triplet loss on re-encoded (detached) z, z* trainable (AdamW 1e-3)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from pbrl.errors import PbrlError
from pbrl.learn.api import AgentSpec, FitContext
from pbrl.learn.data import dataset_windows, shares_arrays
from pbrl.learn.kit import epoch_minibatches, fused_adam, log_due, obs_stats, seeded_init
from pbrl.learn.nn import CausalTransformer, LayeredModule, Layers, interleave_steps
from pbrl.learn.stack import (
    CannotStack,
    StackedModules,
    clip_member_grads_,
    labels_of_one_shape,
    member_batches,
    member_label_rows,
    stacked_metrics,
)
from pbrl.types import PAIR_FIELDS

# ---- losses (pure functions) ------------------------------------------------------------


def triplet_distance(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``||x - y + eps||_2`` over the last axis (torch ``pairwise_distance``'s convention)."""
    return torch.linalg.vector_norm(x - y + eps, dim=-1)


def oppo_triplet_loss(
    anchor: torch.Tensor,
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    prefer_b: torch.Tensor,
    margin: float = 1.0,
    mode: str = "scripted",
) -> torch.Tensor:
    """OPPO's preference loss: pull the preferred encoding towards z*, push the other away.

    ``anchor`` (D,) is z*; ``z_a``, ``z_b`` (B, D) the encodings of the two segments;
    ``prefer_b`` (B,) in [0, 1] (> 0.5: b preferred, < 0.5: a preferred, = 0.5: tie). A
    leading member axis on all four, (K, D) and (K, B, ...), gives one loss per member.
    For each strict pair, ``h = max(d(z*, z+) - d(z*, z-) + margin, 0)``.

    - ``scripted`` (the scripted tree): ties are dropped; mean over the strict pairs
      (0 when there are none, where the official code would produce NaN).
    - ``human`` (the human tree): sum over strict pairs plus, for each tie, the official
      asymmetric hinge ``max(d(z*, z_a) - d(z*, z_b), 0)`` (margin 0); divided by B.
    """
    d_a = triplet_distance(anchor.unsqueeze(-2).expand_as(z_a), z_a)
    d_b = triplet_distance(anchor.unsqueeze(-2).expand_as(z_b), z_b)
    a_pref = prefer_b < 0.5
    b_pref = prefer_b > 0.5
    tie = ~(a_pref | b_pref)
    d_pos = torch.where(b_pref, d_b, d_a)
    d_neg = torch.where(b_pref, d_a, d_b)
    hinge = torch.relu(d_pos - d_neg + margin)
    strict = (a_pref | b_pref).to(hinge.dtype)
    if mode == "scripted":
        return (hinge * strict).sum(-1) / strict.sum(-1).clamp_min(1.0)
    if mode == "human":
        tie_term = torch.relu(d_a - d_b) * tie.to(hinge.dtype)
        return ((hinge * strict).sum(-1) + tie_term.sum(-1)) / prefer_b.shape[-1]
    raise ValueError(f"oppo_triplet_loss: unknown mode '{mode}' (scripted|human)")


def oppo_norm_loss(z: torch.Tensor, kind: str = "square") -> torch.Tensor:
    """Norm regulariser on encodings (B, D): mean of ``(||z||-1)^2`` (scripted tree) or of
    ``relu(||z||-1)`` (human tree, one-sided and not squared); (..., B, D) -> (...)."""
    n = torch.linalg.vector_norm(z, dim=-1) - 1.0
    if kind == "square":
        return n.pow(2).mean(-1)
    if kind == "relu":
        return torch.relu(n).mean(-1)
    raise ValueError(f"oppo_norm_loss: unknown kind '{kind}' (square|relu)")


def him_action_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked action MSE: mean over real steps (mask 1) x action dimensions; (..., B, k, A)
    -> (...), one loss per member of a leading member axis."""
    m = mask.to(pred.dtype)[..., None]
    dims = (-3, -2, -1)
    return ((pred - target).pow(2) * m).sum(dims) / (m.sum(dims) * pred.shape[-1]).clamp_min(1.0)


def pool_tokens(h: torch.Tensor, mask: torch.Tensor, over_padding: bool = False) -> torch.Tensor:
    """Sum the encoder's hidden states (..., B, N, H) over tokens.

    pbrl sums over the real tokens only (mask 1). ``over_padding=True`` is the official
    behaviour: padded keys are masked inside attention but their query outputs are
    still added, so padding leaks into z and z scales with the window length.
    """
    if over_padding:
        return h.sum(dim=-2)
    return (h * mask.to(h.dtype)[..., None]).sum(dim=-2)


# ---- networks -----------------------------------------------------------------------------


class HIMEncoder(LayeredModule):
    """I(tau): bidirectional transformer over (s_t, a_t) tokens, summed, then Linear -> z."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        z_dim: int,
        embed_dim: int = 128,
        n_layers: int = 3,
        n_heads: int = 2,
        max_len: int = 64,
        dropout: float = 0.1,
        pool_over_padding: bool = False,
    ) -> None:
        super().__init__()
        self.embed_s = nn.Linear(obs_dim, embed_dim)
        self.embed_a = nn.Linear(act_dim, embed_dim)
        self.embed_t = nn.Embedding(max_len, embed_dim)
        self.embed_ln = nn.LayerNorm(embed_dim)
        self.tf = CausalTransformer(
            embed_dim,
            n_layers,
            n_heads,
            2 * max_len,
            dropout,
            pos_embedding=False,
            causal=False,
            activation="relu",
        )
        self.out = nn.Linear(embed_dim, z_dim)
        self.max_len = max_len
        self.pool_over_padding = pool_over_padding

    def forward_layers(
        self, layers: Layers, obs_n: torch.Tensor, act: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Encodings (B, z_dim) of (B, T, ...) segments; members
        (:meth:`forward_members`): segments (K, B, T, ...), encodings (K, B, z_dim)."""
        t = obs_n.shape[-2]
        if t > self.max_len:
            raise PbrlError(f"oppo: segment of {t} steps exceeds the encoder's {self.max_len}")
        ts = torch.arange(t, device=obs_n.device)
        e_t = layers.embedding("embed_t", ts, shared=True).unsqueeze(-3)
        streams = [layers("embed_s", obs_n) + e_t, layers("embed_a", act) + e_t]
        tok, key_mask = interleave_steps(streams, lambda x: layers("embed_ln", x), mask)
        h, _ = layers("tf", tok, key_mask)
        return layers("out", pool_tokens(h, key_mask, self.pool_over_padding))


class ContextualPolicy(LayeredModule):
    """pi(a_t | z, s_<=t, a_<t): a DT whose return-to-go token is a z token.

    Tokens per step (phi_t, s_t, a_t), phi_t = Linear(z_t) (+ time embedding unless
    ``phi_time`` is off, as in the human tree); the action is tanh(Linear(h at s_t)) and the
    state reconstruction Linear(h at a_t) (used by the alternating update only).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        z_dim: int,
        embed_dim: int = 128,
        n_layers: int = 3,
        n_heads: int = 1,
        max_len: int = 20,
        dropout: float = 0.1,
        phi_time: bool = True,
    ) -> None:
        super().__init__()
        self.embed_z = nn.Linear(z_dim, embed_dim)
        self.embed_s = nn.Linear(obs_dim, embed_dim)
        self.embed_a = nn.Linear(act_dim, embed_dim)
        self.embed_t = nn.Embedding(max_len, embed_dim)
        self.embed_ln = nn.LayerNorm(embed_dim)
        self.tf = CausalTransformer(
            embed_dim,
            n_layers,
            n_heads,
            3 * max_len,
            dropout,
            pos_embedding=False,
            activation="relu",
        )
        self.act_head = nn.Linear(embed_dim, act_dim)
        self.state_head = nn.Linear(embed_dim, obs_dim)
        self.max_len = max_len
        self.phi_time = phi_time

    def forward_layers(
        self,
        layers: Layers,
        z: torch.Tensor,
        obs_n: torch.Tensor,
        act: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, K, z_dim) per position -> (actions (B, K, A), states (B, K, S)); members
        (:meth:`forward_members`): every input and output with a leading member axis."""
        ts = torch.arange(obs_n.shape[-2], device=obs_n.device)
        e_t = layers.embedding("embed_t", ts, shared=True).unsqueeze(-3)
        phi = layers("embed_z", z) + (e_t if self.phi_time else 0.0)
        streams = [phi, layers("embed_s", obs_n) + e_t, layers("embed_a", act) + e_t]
        tok, key_mask = interleave_steps(streams, lambda x: layers("embed_ln", x), mask)
        h, _ = layers("tf", tok, key_mask)
        act_out = torch.tanh(layers("act_head", h[..., 1::3, :]))
        return act_out, layers("state_head", h[..., 2::3, :])


def crop_windows(
    mask: torch.Tensor, k: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row random windows of ``k`` steps inside each segment's real steps, drawn with
    ``generator`` (:func:`windows_at` of one uniform number per row).

    Returns (index (B, k) into the segment axis, window mask (B, k)).
    """
    u = torch.rand(mask.shape[:-1], generator=generator, device=generator.device)
    return windows_at(mask, k, u.to(mask.device))


def windows_at(mask: torch.Tensor, k: int, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The windows of ``k`` steps that uniform numbers ``u`` (..., B) in [0, 1) pick inside
    each segment's real steps (``mask`` (..., B, L)): (index (..., B, k) into the segment
    axis, window mask (..., B, k)). Any leading dims (a member axis) pass through."""
    length = mask.shape[-1]
    k = min(k, length)
    n_real = mask.sum(-1).round().long()
    room = (n_real - k).clamp(min=0)
    start = torch.floor(u * (room + 1).to(u.dtype)).long().clamp(max=length - k)
    idx = start[..., None] + torch.arange(k, device=mask.device)
    return idx, torch.gather(mask, -1, idx)


def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather (..., B, L, D) -> (..., B, k, D) along the step axis."""
    return torch.gather(x, -2, idx[..., None].expand(*idx.shape, x.shape[-1]))


def recon_windows(
    prefix: str,
    obs: torch.Tensor,
    act: torch.Tensor,
    mask: torch.Tensor,
    k: int,
    u: torch.Tensor,
    noise: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """A HIM reconstruction's inputs: the K-window of each segment that ``u`` picks
    (:func:`windows_at`), and the policy's input states (with ``noise`` added, if any), keyed
    ``prefix`` + o, o_in, a, m. Any leading dims pass through."""
    idx, m = windows_at(mask, k, u)
    o = take(obs, idx)
    o_in = o if noise is None else o + noise
    return {prefix + "o": o, prefix + "o_in": o_in, prefix + "a": take(act, idx), prefix + "m": m}


def standardize(obs: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Observations standardised with dataset statistics (any leading dims on all three)."""
    return (obs - mean) / std


def warmup_lambda(cfg: Any, steps: int) -> Callable[[int], float]:
    """The policy's linear learning-rate warm-up over ``dec_warmup`` of the run's updates."""
    warm = max(1, int(round(cfg.dec_warmup * steps)))
    return lambda st: min((st + 1) / warm, 1.0)


# ---- agent --------------------------------------------------------------------------------


@dataclass
class Config:
    """oppo options (scripted-tree defaults; the ``human`` preset is the human tree)."""

    update: str = "joint"
    """'joint' (scripted tree: one encoder+decoder step on L_HIM + triplet + norm) or
    'alternating' (human tree: HIM steps on dataset windows every other step with 0.1 state
    noise and state reconstruction; an encoder-only preference step every step with the
    decoder frozen, sum/B triplet with the asymmetric tie term and a one-sided norm)."""
    encode: str = "window"
    """What the encoder sees of a labelled segment: 'window' (the same random K-step
    window as the policy, as in the scripted tree, whose label also covers more steps than
    the encoder sees) or 'segment' (the whole labelled segment; the policy a window of it)."""
    z_dim: int = 8
    """Context size (scripted 8, human 16)."""
    context_len: int = 20
    """Policy context K in steps (scripted 20, human 100; capped by the segment length)."""
    embed_dim: int = 128
    """Width of the encoder and the policy."""
    enc_layers: int = 3
    """Encoder layers."""
    enc_heads: int = 2
    """Encoder heads."""
    dec_layers: int = 3
    """Policy layers."""
    dec_heads: int = 1
    """Policy heads (scripted 1, human 2)."""
    dropout: float = 0.1
    """Dropout of both transformers."""
    phi_time: bool = True
    """Add the time embedding to the z token (scripted yes, human no)."""
    batch_size: int = 64
    """Labelled pairs per step (and dataset windows per HIM step when alternating)."""
    lr: float = 1e-4
    """AdamW learning rate of the encoder and the policy."""
    weight_decay: float = 1e-4
    """AdamW weight decay (encoder, policy and z*)."""
    dec_warmup: float = 0.1
    """Linear warm-up of the policy's lr, as a fraction of the run (10k of 100k steps)."""
    grad_clip: float = 0.25
    """Gradient-norm clip, applied separately to the encoder and the policy."""
    pref_coef: float = 0.1
    """lambda_pref (scripted 0.1, human 10)."""
    norm_coef: float = 0.1
    """lambda_norm."""
    margin: float = 1.0
    """Triplet margin."""
    w_lr: float = 1e-3
    """AdamW learning rate of z* (scripted 1e-3, human 1e-2)."""
    w_init_std: float = 2.0
    """z* initial N(0, std^2) (scripted 2, human 1)."""
    state_noise: float = 0.1
    """Gaussian noise on the policy's input states in HIM steps (alternating only)."""
    pool_over_padding: bool = False
    """Official encoder pooling: also sum the outputs of padded tokens."""
    eval_zero_fill: bool = False
    """Official evaluation: z* only at the last context position, zero vectors before it."""


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "human": {
        "update": "alternating",
        "z_dim": 16,
        "context_len": 100,
        "dec_heads": 2,
        "phi_time": False,
        "pref_coef": 10.0,
        "w_lr": 1e-2,
        "w_init_std": 1.0,
    },
    "official_eval": {"eval_zero_fill": True, "pool_over_padding": True},
    "quick": {"batch_size": 16},
}

STACK_CHECK_OVERRIDES: dict[str, Any] = {"dropout": 0.0}
"""The stacked-seeds check compares actions, so dropout (masks drawn from the process's
generator, which stands elsewhere when members train stacked) is off there."""

TEST_OVERRIDES: dict[str, Any] = {
    "embed_dim": 16,
    "enc_layers": 1,
    "dec_layers": 1,
    "context_len": 4,
    "batch_size": 4,
}


class Agent:
    """HIM encoder + contextual DT policy + learned optimal context z*."""

    def __init__(self, cfg: Config, spec: AgentSpec) -> None:
        if cfg.update not in ("joint", "alternating"):
            raise PbrlError(f"--agent.update: 'joint' or 'alternating', got '{cfg.update}'")
        if cfg.encode not in ("window", "segment"):
            raise PbrlError(f"--agent.encode: 'window' or 'segment', got '{cfg.encode}'")
        if cfg.context_len < 1:
            raise PbrlError(f"--agent.context_len: must be >= 1, got {cfg.context_len}")
        self.cfg = cfg
        self.spec = spec
        self.device = spec.device
        self.obs_mean = torch.zeros(spec.obs_dim, device=self.device)
        self.obs_std = torch.ones(spec.obs_dim, device=self.device)
        self.z_star = torch.zeros(cfg.z_dim, device=self.device)
        self.enc: HIMEncoder | None = None
        self.dec: ContextualPolicy | None = None
        self._build(enc_len=64, k=cfg.context_len)
        self._hist: list[tuple[list[np.ndarray], list[np.ndarray]]] | None = None

    def _build(self, enc_len: int, k: int) -> None:
        c, s = self.cfg, self.spec
        self.enc = HIMEncoder(
            s.obs_dim,
            s.act_dim,
            c.z_dim,
            c.embed_dim,
            c.enc_layers,
            c.enc_heads,
            enc_len,
            c.dropout,
            c.pool_over_padding,
        ).to(self.device)
        self.dec = ContextualPolicy(
            s.obs_dim,
            s.act_dim,
            c.z_dim,
            c.embed_dim,
            c.dec_layers,
            c.dec_heads,
            k,
            c.dropout,
            c.phi_time,
        ).to(self.device)

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """Observations standardised with the dataset statistics the agent was fitted on."""
        return standardize(obs, self.obs_mean, self.obs_std)

    def draw_numbers(
        self, ctx: FitContext, step: int, data: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """Everything random in update ``step``, drawn from the run's generators in the order
        the update uses it: the labelled pairs' rows (``rows``) and the uniform numbers that
        place their K-windows (``u_a``, ``u_b``); on the alternating update's HIM steps, the
        dataset windows' rows and masks (``h_rows``, ``h_m``, from the run's numpy
        generator), their reconstruction windows (``u_h``) and state noise (``eps_h``); then
        the pairs' reconstruction windows (``u_ra``, ``u_rb``). :meth:`build_step` makes the
        update's inputs of them; the update itself is then deterministic but for dropout
        (:meth:`him_loss`, :meth:`main_losses`, :meth:`z_star_loss`)."""
        assert self.dec is not None
        cfg, g, k = self.cfg, ctx.generator, self.dec.max_len

        def uniform(n: int) -> torch.Tensor:
            return torch.rand(n, generator=g, device=g.device).to(self.device)

        rows = next(data["batches"])
        n = int(rows.shape[0])
        out = {"rows": rows}
        if cfg.encode == "window":
            out["u_a"], out["u_b"] = uniform(n), uniform(n)
        if cfg.update == "alternating" and (step - 1) % 2 == 0:  # official: cont % 2 == 0
            h_rows, h_m = dataset_windows(ctx.dataset, k, cfg.batch_size, ctx.rng)
            out["h_rows"] = torch.as_tensor(h_rows, device=self.device)
            out["h_m"] = torch.as_tensor(h_m, dtype=torch.float32, device=self.device)
            out["u_h"] = uniform(h_rows.shape[0])
            if cfg.state_noise > 0:
                shape = (h_rows.shape[0], min(k, h_rows.shape[1]), self.spec.obs_dim)
                eps = torch.randn(shape, generator=g, device=g.device)
                out["eps_h"] = cfg.state_noise * eps.to(self.device)
        out["u_ra"], out["u_rb"] = uniform(n), uniform(n)
        return out

    def build_step(
        self,
        nums: dict[str, torch.Tensor],
        pairs: dict[str, torch.Tensor],
        mean: torch.Tensor,
        std: torch.Tensor,
        dataset_rows: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """The update's inputs: the pairs ``pairs`` (:data:`~pbrl.types.PAIR_FIELDS`, the
        rows ``nums["rows"]``) with observations standardised by ``mean`` and ``std`` and cut
        to the windows of :meth:`draw_numbers`' numbers ``nums``, the HIM step's dataset
        windows (``dataset_rows(rows)``: their observations and actions) and the
        reconstruction windows. Every tensor may carry a leading member axis (``mean`` and
        ``std`` then (K, 1, 1, D)): the stacked update builds all members' inputs at once."""
        assert self.dec is not None
        k = self.dec.max_len
        oa, ob = standardize(pairs["obs_a"], mean, std), standardize(pairs["obs_b"], mean, std)
        aa, ab, ma, mb = pairs["act_a"], pairs["act_b"], pairs["mask_a"], pairs["mask_b"]
        if "u_a" in nums:  # scripted tree: encoder and policy see the same K-step window
            ia, ma = windows_at(ma, k, nums["u_a"])
            ib, mb = windows_at(mb, k, nums["u_b"])
            oa, aa, ob, ab = take(oa, ia), take(aa, ia), take(ob, ib), take(ab, ib)
        d = {"oa": oa, "aa": aa, "ma": ma, "ob": ob, "ab": ab, "mb": mb}
        d["prefer_b"] = pairs["prefer_b"]
        if "h_rows" in nums:  # HIM step on unlabelled dataset windows
            o, a = dataset_rows(nums["h_rows"])
            o, m = standardize(o, mean, std), nums["h_m"]
            d.update({"h_o": o, "h_a": a, "h_m": m})
            d.update(recon_windows("h_r_", o, a, m, k, nums["u_h"], nums.get("eps_h")))
        d.update(recon_windows("ra_", oa, aa, ma, k, nums["u_ra"]))
        d.update(recon_windows("rb_", ob, ab, mb, k, nums["u_rb"]))
        return d

    def draw_step(
        self, ctx: FitContext, step: int, data: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """One run's inputs of update ``step``: :meth:`build_step` of its own
        :meth:`draw_numbers`."""
        nums = self.draw_numbers(ctx, step, data)
        pairs = ctx.prefs.rows(nums["rows"], PAIR_FIELDS)
        return self.build_step(
            nums, pairs, self.obs_mean, self.obs_std, lambda r: (data["obs"][r], data["act"][r])
        )

    def _recon_loss(
        self, dec: Callable[..., Any], z: torch.Tensor, d: dict[str, torch.Tensor], prefix: str
    ) -> torch.Tensor:
        """HIM reconstruction loss of the drawn windows ``prefix*`` given their z."""
        o, a, m = d[prefix + "o"], d[prefix + "a"], d[prefix + "m"]
        zs = z.unsqueeze(-2).expand(*z.shape[:-1], o.shape[-2], z.shape[-1])
        pred_a, pred_s = dec(zs, d[prefix + "o_in"], a, m)
        loss = him_action_loss(pred_a, a, m)
        if self.cfg.update == "alternating":  # the human tree also reconstructs states
            loss = loss + him_action_loss(pred_s, o, m)
        return loss

    def him_loss(
        self, enc: Callable[..., Any], dec: Callable[..., Any], d: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The alternating update's HIM step on dataset windows."""
        return self._recon_loss(dec, enc(d["h_o"], d["h_a"], d["h_m"]), d, "h_r_")

    def main_losses(
        self,
        enc: Callable[..., Any],
        dec: Callable[..., Any],
        z_star: torch.Tensor,
        d: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The encoder (and, joint, policy) loss on the labelled pairs: (loss, HIM
        reconstruction, norm loss, mean ||z_a||)."""
        cfg = self.cfg
        mode, norm_kind = (
            ("human", "relu") if cfg.update == "alternating" else ("scripted", "square")
        )
        z_a = enc(d["oa"], d["aa"], d["ma"])
        z_b = enc(d["ob"], d["ab"], d["mb"])
        l_pref = oppo_triplet_loss(z_star.detach(), z_a, z_b, d["prefer_b"], cfg.margin, mode)
        l_norm = oppo_norm_loss(z_a, norm_kind) + oppo_norm_loss(z_b, norm_kind)
        l_rec = self._recon_loss(dec, z_a, d, "ra_") + self._recon_loss(dec, z_b, d, "rb_")
        loss = l_rec + cfg.pref_coef * l_pref + cfg.norm_coef * l_norm
        return loss, l_rec, l_norm, z_a.detach().norm(dim=-1).mean(-1)

    def z_star_loss(
        self, enc: Callable[..., Any], z_star: torch.Tensor, d: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """z*'s triplet loss on the pairs re-encoded (train mode, no gradient to the encoder)."""
        mode = "human" if self.cfg.update == "alternating" else "scripted"
        with torch.no_grad():
            z_a = enc(d["oa"], d["aa"], d["ma"])
            z_b = enc(d["ob"], d["ab"], d["mb"])
        return oppo_triplet_loss(z_star, z_a, z_b, d["prefer_b"], self.cfg.margin, mode)

    # -- training --------------------------------------------------------------------------
    def begin_fit(self, ctx: FitContext) -> dict[str, Any]:
        """Build the networks for the labels' segment length (initialised from the run's
        seed, so a seed gives the same networks alone and stacked), take the dataset's
        observation statistics, draw z*'s start; returns what :meth:`draw_step` reads."""
        if ctx.prefs is None or ctx.prefs.size == 0:
            raise PbrlError("oppo needs preferences (--prefs)")
        cfg = self.cfg
        ds = ctx.dataset
        seg_len = int(ctx.prefs.obs_a.shape[1])
        with seeded_init(ctx.seed):
            self._build(enc_len=seg_len, k=min(cfg.context_len, seg_len))
        mean, std = obs_stats(ds.observations)
        self.obs_mean = torch.as_tensor(mean, device=self.device)
        self.obs_std = torch.as_tensor(std, device=self.device)
        g = ctx.generator
        z0 = torch.randn(cfg.z_dim, generator=g, device=g.device).to(self.device)
        self.z_star = (z0 * cfg.w_init_std).requires_grad_(True)
        data: dict[str, Any] = {
            "batches": epoch_minibatches(ctx.prefs.size, cfg.batch_size, g, ctx.device)
        }
        if cfg.update == "alternating":
            data["obs"] = torch.as_tensor(ds.observations, dtype=torch.float32, device=self.device)
            data["act"] = torch.as_tensor(
                np.asarray(ds.actions, np.float32), dtype=torch.float32, device=self.device
            )
        return data

    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        cfg = self.cfg
        data = self.begin_fit(ctx)
        enc, dec = self.enc, self.dec
        assert enc is not None and dec is not None
        enc_opt = fused_adam(
            enc.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, decoupled=True
        )
        dec_opt = fused_adam(
            dec.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, decoupled=True
        )
        dec_sched = torch.optim.lr_scheduler.LambdaLR(dec_opt, warmup_lambda(cfg, ctx.steps))
        w_opt = fused_adam(
            [self.z_star], lr=cfg.w_lr, weight_decay=cfg.weight_decay, decoupled=True
        )
        human = cfg.update == "alternating"
        enc.train()
        dec.train()
        him = torch.tensor(float("nan"))
        for step in range(1, ctx.steps + 1):
            d = self.draw_step(ctx, step, data)
            if "h_o" in d:
                loss_h = self.him_loss(enc, dec, d)
                enc_opt.zero_grad(set_to_none=True)
                dec_opt.zero_grad(set_to_none=True)
                loss_h.backward()
                nn.utils.clip_grad_norm_(enc.parameters(), cfg.grad_clip)
                nn.utils.clip_grad_norm_(dec.parameters(), cfg.grad_clip)
                enc_opt.step()
                dec_opt.step()
                him = loss_h.detach()
            if human:
                # encoder-only step: the decoder is frozen but stays in train mode
                dec.requires_grad_(False)
                loss, l_rec, l_norm, z_norm = self.main_losses(enc, dec, self.z_star, d)
                enc_opt.zero_grad(set_to_none=True)
                loss.backward()
                dec.requires_grad_(True)
                nn.utils.clip_grad_norm_(enc.parameters(), cfg.grad_clip)
                enc_opt.step()
            else:
                loss, l_rec, l_norm, z_norm = self.main_losses(enc, dec, self.z_star, d)
                enc_opt.zero_grad(set_to_none=True)
                dec_opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(enc.parameters(), cfg.grad_clip)
                nn.utils.clip_grad_norm_(dec.parameters(), cfg.grad_clip)
                enc_opt.step()
                dec_opt.step()
                him = l_rec.detach()
            dec_sched.step()
            l_w = self.z_star_loss(enc, self.z_star, d)
            w_opt.zero_grad(set_to_none=True)
            l_w.backward()
            w_opt.step()
            if log_due(step, ctx.steps, ctx.log_interval):
                yield {
                    "step": step,
                    "him_loss": float(him),
                    "rec_loss": float(l_rec.detach()),
                    "pref_loss": float(l_w.detach()),
                    "norm_loss": float(l_norm.detach()),
                    "z_star_norm": float(self.z_star.detach().norm()),
                    "z_norm": float(z_norm),
                }
        self.z_star = self.z_star.detach()
        enc.eval()
        dec.eval()

    # -- acting ----------------------------------------------------------------------------
    def begin_episodes(self, n: int) -> None:
        """Start ``n`` fresh episode histories (called by the evaluator before each wave)."""
        self._hist = [([], []) for _ in range(int(n))]

    @torch.no_grad()
    def act(self, obs: np.ndarray, env_ids: list[int] | None = None) -> np.ndarray:
        """Action from the last ``context_len`` steps of each episode, conditioned on z*.

        With ``env_ids`` (after :meth:`begin_episodes`) each row extends its episode's
        history; without, the call is stateless (a context of the current state only).
        """
        assert self.dec is not None
        self.dec.eval()
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        if single:
            x = x[None]
        k = self.dec.max_len
        a_dim = self.spec.act_dim
        use_hist = env_ids is not None and self._hist is not None
        if use_hist:
            assert self._hist is not None and env_ids is not None
            for row, j in enumerate(env_ids):
                self._hist[j][0].append(x[row])
            n = min(k, len(self._hist[env_ids[0]][0]))
            o = np.stack([np.stack(self._hist[j][0][-n:]) for j in env_ids])
            a = np.zeros((len(env_ids), n, a_dim), dtype=np.float32)
            if n > 1:
                a[:, :-1] = np.stack([np.stack(self._hist[j][1][-(n - 1) :]) for j in env_ids])
        else:
            n = 1
            o = x[:, None]
            a = np.zeros((x.shape[0], 1, a_dim), dtype=np.float32)
        ot = self.normalize_obs(torch.as_tensor(o, device=self.device))
        at = torch.as_tensor(a, device=self.device)
        z = self.z_star.detach()[None, None].expand(ot.shape[0], n, -1).clone()
        if self.cfg.eval_zero_fill:
            z[:, :-1] = 0.0
        pred, _ = self.dec(z, ot, at, torch.ones(ot.shape[0], n, device=self.device))
        out = pred[:, -1].clamp(-1.0, 1.0).cpu().numpy()
        out = np.clip(out, self.spec.act_low, self.spec.act_high).astype(np.float32)
        if use_hist:
            assert self._hist is not None and env_ids is not None
            for row, j in enumerate(env_ids):
                self._hist[j][1].append(out[row])
        return out[0] if single else out

    def state_dict(self) -> dict[str, Any]:
        assert self.enc is not None and self.dec is not None
        return {
            "enc": self.enc.state_dict(),
            "dec": self.dec.state_dict(),
            "enc_len": self.enc.max_len,
            "context_len": self.dec.max_len,
            "z_star": self.z_star.detach().cpu(),
            "obs_mean": self.obs_mean.cpu(),
            "obs_std": self.obs_std.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._build(int(state["enc_len"]), int(state["context_len"]))
        assert self.enc is not None and self.dec is not None
        self.enc.load_state_dict(state["enc"])
        self.dec.load_state_dict(state["dec"])
        self.enc.eval()
        self.dec.eval()
        self.z_star = state["z_star"].to(self.device)
        self.obs_mean = state["obs_mean"].to(self.device)
        self.obs_std = state["obs_std"].to(self.device)


def fit_stacked(agents: list[Agent], ctxs: list[FitContext]) -> Iterator[list[Any]]:
    """K seeds of one config trained as one (``pbrl bench --stack-seeds K``): the members'
    encoders and policies stacked (:class:`pbrl.learn.stack.StackedModules`), z* a ``(K, D)``
    tensor; each member draws its own pairs, windows and crops with its own generators
    (:meth:`Agent.draw_numbers`), every member's inputs are then built at once
    (:meth:`Agent.build_step`: one gather of the members' labels per field), and each
    network's gradient norm is clipped per member.
    Members whose labels differ in shape (pairs, segment length) cannot stack
    (:class:`pbrl.learn.stack.CannotStack`)."""
    if not labels_of_one_shape([c.prefs for c in ctxs], PAIR_FIELDS):
        raise CannotStack("oppo: stacked seeds need labels of one shape (pairs, segment length)")
    first, ctx0 = agents[0], ctxs[0]
    cfg = first.cfg
    datas = [a.begin_fit(c) for a, c in zip(agents, ctxs, strict=True)]
    enc = StackedModules([a.enc for a in agents])  # type: ignore[misc]
    dec = StackedModules([a.dec for a in agents])  # type: ignore[misc]
    enc.train(True)
    dec.train(True)
    z_star = torch.stack([a.z_star.detach() for a in agents]).requires_grad_(True)
    enc_opt = fused_adam(enc.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, decoupled=True)
    dec_opt = fused_adam(dec.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, decoupled=True)
    dec_sched = torch.optim.lr_scheduler.LambdaLR(dec_opt, warmup_lambda(cfg, ctx0.steps))
    w_opt = fused_adam([z_star], lr=cfg.w_lr, weight_decay=cfg.weight_decay, decoupled=True)
    human = cfg.update == "alternating"

    him = torch.full((len(agents),), float("nan"), device=first.device)
    labels = member_label_rows([c.prefs for c in ctxs], PAIR_FIELDS)
    mean = torch.stack([a.obs_mean for a in agents])[:, None, None]
    std = torch.stack([a.obs_std for a in agents])[:, None, None]
    if all(shares_arrays(c.dataset, ctx0.dataset) for c in ctxs):  # one table, one gather

        def dataset_rows(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return datas[0]["obs"][r], datas[0]["act"][r]

    else:

        def dataset_rows(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            pairs = zip(datas, r, strict=True)
            o, a = zip(*[(x["obs"][ri], x["act"][ri]) for x, ri in pairs], strict=True)
            return torch.stack(o), torch.stack(a)

    for step in range(1, ctx0.steps + 1):
        # each member's numbers from its own generators; every member's inputs built at once
        nums = member_batches(
            [a.draw_numbers(c, step, x) for a, c, x in zip(agents, ctxs, datas, strict=True)]
        )
        d = first.build_step(nums, labels(nums["rows"]), mean, std, dataset_rows)
        if "h_o" in d:
            loss_h = first.him_loss(enc.members, dec.members, d)  # (K,)
            enc_opt.zero_grad(set_to_none=True)
            dec_opt.zero_grad(set_to_none=True)
            loss_h.sum().backward()
            clip_member_grads_(enc.parameters(), cfg.grad_clip)
            clip_member_grads_(dec.parameters(), cfg.grad_clip)
            enc_opt.step()
            dec_opt.step()
            him = loss_h.detach()
        # the alternating update's encoder-only step sees the policy's parameters detached
        policy = dec.members_detached if human else dec.members
        loss, l_rec, l_norm, z_norm = first.main_losses(enc.members, policy, z_star, d)
        enc_opt.zero_grad(set_to_none=True)
        if not human:
            dec_opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        clip_member_grads_(enc.parameters(), cfg.grad_clip)
        enc_opt.step()
        if not human:
            clip_member_grads_(dec.parameters(), cfg.grad_clip)
            dec_opt.step()
            him = l_rec.detach()
        dec_sched.step()
        l_w = first.z_star_loss(enc.members, z_star, d)
        w_opt.zero_grad(set_to_none=True)
        l_w.sum().backward()
        w_opt.step()
        if log_due(step, ctx0.steps, ctx0.log_interval):
            enc.write_back()
            dec.write_back()
            for i, a in enumerate(agents):
                a.z_star = z_star[i].detach().clone()
            yield stacked_metrics(
                step,
                {
                    "him_loss": him,
                    "rec_loss": l_rec,
                    "pref_loss": l_w,
                    "norm_loss": l_norm,
                    "z_star_norm": z_star.detach().norm(dim=-1),
                    "z_norm": z_norm,
                },
            )
    for a in agents:
        assert a.enc is not None and a.dec is not None
        a.enc.eval()
        a.dec.eval()
