"""Network building blocks shared by every learner.

One implementation of each block: MLPs (plain and vectorised ensembles), the two actor
heads the official codes use, IQL's twin critic and value net, a GPT-style causal
transformer that also returns its attention maps, the Polyak update, and the dropout
they all use (:class:`Dropout`, cheaper on a CPU than torch's).

Conventions:

- Actors work in the normalised action box [-1, 1] (tanh output); agents clamp to the
  task's bounds when acting (every pbrl task has a [-1, 1] box).
- ``init="orthogonal"`` is orthogonal weights with the given gain and zero biases (the
  research-lightning codes of CPL/IPL; PT's JAX code uses gain sqrt(2)); ``"default"`` is
  PyTorch's own Linear init (CORL, B-Pref, Uni-RLHF).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

_ACTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,  # slope 0.01, B-Pref's reward model
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
}


def make_activation(name: str | None) -> nn.Module:
    """An activation module by name (None -> identity)."""
    if name is None or name in ("none", "identity"):
        return nn.Identity()
    if name not in _ACTS:
        raise ValueError(f"unknown activation '{name}' (known: {', '.join(_ACTS)})")
    return _ACTS[name]()


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a cheaper CPU training path: the mask is drawn as ``rand >= p``
    and applied, scaled by ``1 / (1 - p)``, with one product, where torch's CPU dropout fills
    its mask with ``bernoulli_``, which alone costs about as much as a matrix product of the
    same width (docs/performance.md, "BC's and CPL's updates: dropout on a CPU"). Every
    element is kept with probability ``1 - p`` and scaled as torch's dropout scales it,
    independently, from the same default generator, so the two are identical in
    distribution (not mask for mask). Evaluation, ``p`` of 0 or 1, ``inplace`` and other
    devices (CUDA's dropout is one fused kernel) use ``nn.Dropout``'s own path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = float(self.p)
        if not self.training or self.inplace or not 0.0 < p < 1.0 or x.device.type != "cpu":
            return super().forward(x)
        return x * (torch.rand_like(x) >= p).to(x.dtype).mul_(1.0 / (1.0 - p))


def init_linear_(layer: nn.Linear, init: str = "default", gain: float = 1.0) -> None:
    """Initialise one Linear layer in place (see the module docstring)."""
    if init == "default":
        return
    if init == "orthogonal":
        nn.init.orthogonal_(layer.weight, gain=gain)
        nn.init.zeros_(layer.bias)
        return
    raise ValueError(f"unknown init '{init}' (default | orthogonal)")


def member_params(params: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of stacked ``params`` under ``prefix`` (a child module's), prefix removed."""
    return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}


class MLP(nn.Module):
    """Linear -> [LayerNorm] -> act -> [Dropout] per hidden layer, then Linear -> out_act.

    ``dropout_before_act=True`` puts Dropout before the activation, as CPL's research-
    lightning MLP does (Linear -> Dropout -> ReLU).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int],
        act: str = "relu",
        out_act: str | None = None,
        dropout: float = 0.0,
        layer_norm: bool = False,
        *,
        dropout_before_act: bool = False,
        init: str = "default",
        gain: float = 1.0,
        out_gain: float | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = in_dim
        for width in hidden:
            lin = nn.Linear(last, int(width))
            init_linear_(lin, init, gain)
            layers.append(lin)
            if layer_norm:
                layers.append(nn.LayerNorm(int(width)))
            if dropout > 0 and dropout_before_act:
                layers.append(Dropout(dropout))
            layers.append(make_activation(act))
            if dropout > 0 and not dropout_before_act:
                layers.append(Dropout(dropout))
            last = int(width)
        out = nn.Linear(last, out_dim)
        init_linear_(out, init, gain if out_gain is None else out_gain)
        layers.append(out)
        if out_act is not None:
            layers.append(make_activation(out_act))
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_members(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """K copies of this MLP at once: ``params`` are its parameters stacked along a
        leading member axis (``torch.func.stack_module_state``'s names and ``(K, ...)``
        shapes), ``x`` is ``(K, B, in)``, one batch per member; returns ``(K, B, out)``, each
        member's :meth:`forward` of its own batch with its own parameters. One batched
        matrix product per layer, written out rather than mapped with ``torch.func.vmap``,
        which costs a stacked update two to three times the host time
        (docs/performance.md, "Stacked seeds"). Activations and dropout act elementwise,
        so each member's dropout mask is its own. Dims between K and the features are
        flattened and restored, so ``(K, B, L, in)`` gives ``(K, B, L, out)``."""
        lead = x.shape[1:-1]
        h = x.reshape(x.shape[0], -1, x.shape[-1])
        for i, layer in enumerate(self.net):
            if isinstance(layer, nn.Linear):
                w, b = params[f"net.{i}.weight"], params[f"net.{i}.bias"]
                h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            elif isinstance(layer, nn.LayerNorm):
                g, b = params[f"net.{i}.weight"], params[f"net.{i}.bias"]
                h = nn.functional.layer_norm(h, layer.normalized_shape, eps=layer.eps)
                h = h * g.unsqueeze(1) + b.unsqueeze(1)
            else:
                h = layer(h)
        return h.reshape(x.shape[0], *lead, h.shape[-1])


class EnsembleLinear(nn.Module):
    """``n_members`` independent Linear layers applied as one batched matmul.

    Input (M, B, in) -> (M, B, out). Each member is initialised like ``nn.Linear``
    (uniform +-1/sqrt(fan_in) for weight and bias) or orthogonally.
    """

    def __init__(
        self, n_members: int, in_dim: int, out_dim: int, init: str = "default", gain: float = 1.0
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(n_members, 1, out_dim))
        bound = 1.0 / math.sqrt(in_dim)
        with torch.no_grad():
            if init == "orthogonal":
                for m in range(n_members):
                    # orthogonal on the (out, in) matrix as nn.Linear stores it
                    w = torch.empty(out_dim, in_dim)
                    nn.init.orthogonal_(w, gain=gain)
                    self.weight[m].copy_(w.t())
                self.bias.zero_()
            elif init == "default":
                self.weight.uniform_(-bound, bound)
                self.bias.uniform_(-bound, bound)
            else:
                raise ValueError(f"unknown init '{init}' (default | orthogonal)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """An ensemble of identical MLPs with batched weights (one kernel per layer for all members).

    ``forward`` takes (M, B, in) — a different batch per member — or (B, in), which is
    broadcast to every member; it returns (M, B, out). Leading dims beyond B are flattened
    and restored, so (B, L, in) -> (M, B, L, out) works too.
    """

    def __init__(
        self,
        n_members: int,
        in_dim: int,
        out_dim: int,
        hidden: Sequence[int],
        act: str = "relu",
        out_act: str | None = None,
        dropout: float = 0.0,
        layer_norm: bool = False,
        *,
        init: str = "default",
        gain: float = 1.0,
    ) -> None:
        super().__init__()
        self.n_members = n_members
        self.in_dim = in_dim
        self.out_dim = out_dim
        dims = [in_dim, *[int(h) for h in hidden], out_dim]
        self.linears = nn.ModuleList(
            EnsembleLinear(n_members, dims[i], dims[i + 1], init, gain)
            for i in range(len(dims) - 1)
        )
        self.norms = nn.ModuleList(
            nn.LayerNorm(d) if layer_norm else nn.Identity() for d in dims[1:-1]
        )
        self.act = make_activation(act)
        self.out_act = make_activation(out_act)
        self.dropout = Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, *, shared: bool | None = None) -> torch.Tensor:
        """``shared``: force treating dim 0 as batch (True) or as members (False).

        By default an input whose first dim equals ``n_members`` and has >= 3 dims is taken
        as per-member; pass ``shared=True`` when a (B, L, in) batch could be mistaken.
        """
        per_member = x.dim() >= 3 and x.shape[0] == self.n_members if shared is None else not shared
        if per_member:
            lead = x.shape[1:-1]
            h = x.reshape(self.n_members, -1, x.shape[-1])
        else:
            lead = x.shape[:-1]
            h = x.reshape(1, -1, x.shape[-1]).expand(self.n_members, -1, -1)
        for i, lin in enumerate(self.linears):
            h = lin(h)
            if i < len(self.linears) - 1:
                h = self.dropout(self.act(self.norms[i](h)))
        h = self.out_act(h)
        return h.reshape(self.n_members, *lead, self.out_dim)

    def forward_members(
        self, params: dict[str, torch.Tensor], x: torch.Tensor, *, shared: bool
    ) -> torch.Tensor:
        """K copies of this ensemble at once (see :meth:`MLP.forward_members`): ``params``
        stacked along a leading member axis, ``x`` ``(K, B, in)`` broadcast to each copy's
        ensemble members (``shared``) or ``(K, n_members, B, in)``; returns
        ``(K, n_members, B, out)``."""
        k, n = x.shape[0], self.n_members
        if shared:
            x = x.unsqueeze(1).expand(k, n, *x.shape[1:])
        lead = x.shape[2:-1]
        h = x.reshape(k * n, -1, x.shape[-1])
        last = len(self.linears) - 1
        for i in range(last + 1):
            w, b = params[f"linears.{i}.weight"], params[f"linears.{i}.bias"]
            h = torch.baddbmm(b.reshape(k * n, 1, -1), h, w.reshape(k * n, *w.shape[2:]))
            if i < last:
                norm = self.norms[i]
                if isinstance(norm, nn.LayerNorm):
                    g = params[f"norms.{i}.weight"].reshape(k, 1, 1, -1)
                    beta = params[f"norms.{i}.bias"].reshape(k, 1, 1, -1)
                    h = nn.functional.layer_norm(h, norm.normalized_shape, eps=norm.eps)
                    h = (h.reshape(k, n, -1, h.shape[-1]) * g + beta).reshape(h.shape)
                h = self.dropout(self.act(h))
        h = self.out_act(h)
        return h.reshape(k, n, *lead, self.out_dim)


class TanhDeterministicActor(nn.Module):
    """mu(s) = tanh(MLP(s)) in [-1, 1]: CPL's ContinuousMLPActor (and CORL's DeterministicPolicy).

    CPL's state actor: hidden (512, 512), Dropout(0.25) before ReLU, orthogonal gain 1.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0,
        *,
        dropout_before_act: bool = True,
        init: str = "default",
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.net = MLP(
            obs_dim,
            act_dim,
            hidden,
            "relu",
            "tanh",
            dropout,
            layer_norm,
            dropout_before_act=dropout_before_act,
            init=init,
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)

    def forward_members(self, params: dict[str, torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
        """K stacked copies' :meth:`forward` at once (see :meth:`MLP.forward_members`):
        ``obs`` ``(K, ..., D)``; returns ``(K, ..., A)``."""
        return self.net.forward_members(member_params(params, "net."), obs)


class GaussianActor(nn.Module):
    """N(tanh(MLP(s)), exp(log_std)) with a state-independent log-std, NOT tanh-squashed.

    IQL's policy in CORL (log-std clamp [-20, 2]), PT's JAX IQL and IPL (clamp [-5, 2]).
    ``log_prob`` is the full Gaussian density of the raw action, summed over dims.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.0,
        *,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        init: str = "default",
    ) -> None:
        super().__init__()
        self.mean_net = MLP(obs_dim, act_dim, hidden, "relu", "tanh", dropout, init=init)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The mean action (the deterministic evaluation action)."""
        return self.mean_net(obs)

    def distribution(self, obs: torch.Tensor) -> torch.distributions.Normal:
        mean = self.mean_net(obs)
        std = self.log_std.clamp(self.log_std_min, self.log_std_max).exp()
        # validate_args=False: the checks read tensors on the host (a GPU sync per update)
        return torch.distributions.Normal(mean, std.expand_as(mean), validate_args=False)

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.distribution(obs).log_prob(act).sum(-1)

    def log_prob_members(
        self, params: dict[str, torch.Tensor], obs: torch.Tensor, act: torch.Tensor
    ) -> torch.Tensor:
        """K stacked copies' :meth:`log_prob` at once (see :meth:`MLP.forward_members`):
        ``obs`` ``(K, B, D)``, ``act`` ``(K, B, A)``; returns ``(K, B)``."""
        mean = self.mean_net.forward_members(member_params(params, "mean_net."), obs)
        log_std = params["log_std"].clamp(self.log_std_min, self.log_std_max)
        std = log_std.exp().unsqueeze(1).expand_as(mean)
        return torch.distributions.Normal(mean, std, validate_args=False).log_prob(act).sum(-1)


class TwinQ(nn.Module):
    """An ensemble of ``n`` Q(s, a) MLPs on [s, a]; ``forward`` returns (n, *batch)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        n: int = 2,
        *,
        init: str = "default",
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.net = EnsembleMLP(
            n, obs_dim + act_dim, 1, hidden, "relu", layer_norm=layer_norm, init=init
        )

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, act], -1), shared=True).squeeze(-1)

    def min_q(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.forward(obs, act).min(0).values

    def forward_members(
        self, params: dict[str, torch.Tensor], obs: torch.Tensor, act: torch.Tensor
    ) -> torch.Tensor:
        """K stacked copies' :meth:`forward` at once (see :meth:`MLP.forward_members`):
        ``obs`` ``(K, B, D)``, ``act`` ``(K, B, A)``; returns ``(K, n, B)``."""
        x = torch.cat([obs, act], -1)
        return self.net.forward_members(member_params(params, "net."), x, shared=True).squeeze(-1)


class ValueNet(nn.Module):
    """V(s): an MLP with one output; ``forward`` returns shape obs.shape[:-1]."""

    def __init__(
        self,
        obs_dim: int,
        hidden: Sequence[int] = (256, 256),
        *,
        init: str = "default",
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        self.net = MLP(obs_dim, 1, hidden, "relu", layer_norm=layer_norm, init=init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)

    def forward_members(self, params: dict[str, torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
        """K stacked copies' :meth:`forward` at once (see :meth:`MLP.forward_members`):
        ``obs`` ``(K, B, D)``; returns ``(K, B)``."""
        return self.net.forward_members(member_params(params, "net."), obs).squeeze(-1)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention that returns its attention weights (B, H, T, T).

    ``causal=False`` lets every token attend to every (real) token (a BERT-style encoder).
    """

    def __init__(
        self, embed_dim: int, n_heads: int, dropout: float = 0.0, *, causal: bool = True
    ) -> None:
        super().__init__()
        if embed_dim % n_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.causal = causal
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.attn_drop = Dropout(dropout)
        self.resid_drop = Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        query: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``query`` (B,): only token ``query[b]`` of each row is a query (every token is
        still a key and value); the output is then (B, 1, E) and the weights (B, H, 1, T)."""
        b, t, e = x.shape
        h = self.n_heads
        if query is None:
            q, k, v = self.qkv(x).split(e, dim=-1)
            pos = torch.arange(t, device=x.device).view(1, t)
        else:
            w, bias = self.qkv.weight, self.qkv.bias
            k, v = nn.functional.linear(x, w[e:], bias[e:]).split(e, dim=-1)
            q = nn.functional.linear(x[torch.arange(b, device=x.device), query], w[:e], bias[:e])
            pos = query.view(b, 1)
        nq = t if query is None else 1  # query tokens per row
        q = q.view(b, nq, h, e // h).transpose(1, 2)
        k = k.view(b, t, h, e // h).transpose(1, 2)
        v = v.view(b, t, h, e // h).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(e // h)
        allowed = torch.ones(pos.shape[0], nq, t, dtype=torch.bool, device=x.device)
        if self.causal:  # a query at position i sees the keys at positions <= i
            allowed = torch.arange(t, device=x.device).view(1, 1, t) <= pos.unsqueeze(-1)
        allowed = allowed.unsqueeze(1)
        if key_mask is not None:
            allowed = allowed & key_mask.bool().view(b, 1, 1, t)
        scores = scores.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        # a fully masked row (a padding query before any real key) gives NaN: make it 0
        weights = torch.nan_to_num(weights, nan=0.0)
        y = self.attn_drop(weights) @ v
        y = y.transpose(1, 2).reshape(b, nq, e)
        return self.resid_drop(self.proj(y)), weights


class TransformerBlock(nn.Module):
    """GPT-2 block: x + attn(LN(x)); x + MLP(LN(x)) with a 4x MLP (GELU unless ``activation``)."""

    def __init__(
        self,
        embed_dim: int,
        n_heads: int,
        dropout: float = 0.0,
        *,
        causal: bool = True,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dim)
        self.attn = CausalSelfAttention(embed_dim, n_heads, dropout, causal=causal)
        self.ln2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, 4 * embed_dim),
            make_activation(activation),
            nn.Linear(4 * embed_dim, embed_dim),
            Dropout(dropout),
        )

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        query: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``query`` (B,): the output of token ``query[b]`` of each row only, (B, 1, E)."""
        a, w = self.attn(self.ln1(x), key_mask, query)
        if query is not None:
            x = x[torch.arange(x.shape[0], device=x.device), query].unsqueeze(1)
        x = x + a
        x = x + self.mlp(self.ln2(x))
        return x, w


class CausalTransformer(nn.Module):
    """A GPT-2 style causal transformer over already-embedded tokens.

    ``forward(x (B, T, E), key_mask (B, T) or None)`` returns ``(hidden (B, T, E),
    attentions)`` where ``attentions`` is a list with one (B, n_heads, T, T) tensor per
    layer (row i = how token i attends over tokens <= i). ``key_mask`` is 1 on real tokens
    and 0 on padding (padding keys get no attention). A learned positional embedding of
    ``max_len`` positions is added unless ``pos_embedding=False`` (PT adds its own timestep
    embedding instead). The output passes a final LayerNorm, as in GPT-2. ``causal=False``
    drops the causal mask (OPPO's bidirectional encoder); ``activation`` names the MLP's
    nonlinearity (the DT/OPPO and PT GPT-2 configs use ReLU).
    """

    def __init__(
        self,
        embed_dim: int,
        n_layers: int,
        n_heads: int,
        max_len: int,
        dropout: float = 0.0,
        *,
        pos_embedding: bool = True,
        causal: bool = True,
        activation: str = "gelu",
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.pos = nn.Parameter(torch.zeros(1, max_len, embed_dim)) if pos_embedding else None
        if self.pos is not None:
            nn.init.normal_(self.pos, std=0.02)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, n_heads, dropout, causal=causal, activation=activation)
            for _ in range(n_layers)
        )
        self.ln_f = nn.LayerNorm(embed_dim)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        query: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``query`` (B,): the hidden state of token ``query[b]`` of each row only, (B, 1,
        E): the last layer computes that token alone (the layers before it every token,
        which the last one reads as keys and values); its attention map is (B, H, 1, T).
        For a read-out at one position per row (PT's relabelling)."""
        t = x.shape[1]
        if t > self.max_len:
            raise ValueError(f"sequence of {t} tokens exceeds max_len {self.max_len}")
        if self.pos is not None:
            x = x + self.pos[:, :t]
        h = self.drop(x)
        attentions: list[torch.Tensor] = []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            h, w = block(h, key_mask, query if i == last else None)
            attentions.append(w)
        return self.ln_f(h), attentions


def interleave_steps(
    streams: Sequence[torch.Tensor], norm: nn.Module, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence models' tokens from per-step embeddings.

    ``streams`` are k tensors (B, T, E), one per token kind (e.g. action and state, each
    with its time embedding added); the tokens are ordered step by step
    (s_1^1, ..., s_1^k, s_2^1, ...), i.e. (B, k*T, E), then ``norm``-ed. ``mask`` (B, T)
    becomes the key mask (B, k*T) of the interleaved sequence. Preference Transformer and
    OPPO's encoder and decoder build their inputs this way.
    """
    b, t = streams[0].shape[:2]
    tok = torch.stack(list(streams), dim=2).reshape(b, len(streams) * t, -1)
    return norm(tok), mask.repeat_interleave(len(streams), dim=1)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging: target <- (1 - tau) * target + tau * source (parameters only)."""
    for tp, sp in zip(target.parameters(), source.parameters(), strict=True):
        tp.lerp_(sp, tau)
