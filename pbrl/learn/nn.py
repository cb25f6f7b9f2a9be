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
from collections.abc import Callable, Sequence
from typing import Any

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


def make_activation(name: str | None, *, inplace: bool = False) -> nn.Module:
    """An activation module by name (None -> identity). ``inplace``: a ReLU that overwrites
    its input, for a block that applies it to a layer's own fresh output (a Linear's, a
    LayerNorm's or a dropout's), whose gradient does not need it: no second tensor of the
    layer's size is written. Not on a view (a reshaped output): autograd would then copy
    the whole base back in the backward pass (docs/performance.md, "Host time per
    update")."""
    if name is None or name in ("none", "identity"):
        return nn.Identity()
    if name not in _ACTS:
        raise ValueError(f"unknown activation '{name}' (known: {', '.join(_ACTS)})")
    if name == "relu" and inplace:
        return nn.ReLU(inplace=True)
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


def linear_members(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """K Linear layers at once: ``weight`` ``(K, out, in)`` and ``bias`` ``(K, out)`` stacked
    as ``nn.Linear`` stores them, ``x`` ``(K, ..., in)`` with one batch per member; returns
    ``(K, ..., out)``. One batched product; the dims between K and the features are
    flattened and restored; a ``(K, B, in)`` input gets the product itself, not a view of it
    (what an in-place activation after it needs, :func:`make_activation`)."""
    flat = x.dim() == 3
    h = x if flat else x.reshape(x.shape[0], -1, x.shape[-1])
    out = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
    return out if flat else out.reshape(*x.shape[:-1], weight.shape[1])


class Layers:
    """A module's named layers, applied with the module's own parameters or, given
    ``params``, with K stacked members' (``torch.func.stack_module_state``'s names and
    ``(K, ...)`` shapes), every activation then carrying a leading member axis.

    A model writes its computation once against a ``Layers``, in ``forward_layers(layers,
    ...)`` (:class:`LayeredModule`), and gets both ``forward`` (``Layers(self)``) and a
    member-batched ``forward_members(params, ...)`` (``Layers(self, params)``): one batched
    product per Linear for all members, rather than a per-member forward mapped with
    ``torch.func.vmap``, whose input handling costs every operator host time (docs/
    performance.md, "Stacked seeds"). Parameter-free layers (activations, dropout) act
    elementwise, so each member draws its own dropout mask.
    """

    __slots__ = ("module", "params", "prefix")

    def __init__(
        self, module: nn.Module, params: dict[str, torch.Tensor] | None = None, prefix: str = ""
    ) -> None:
        self.module = module
        self.params = params
        self.prefix = prefix

    @property
    def members(self) -> bool:
        """Whether these are K stacked members' layers."""
        return self.params is not None

    def child(self, name: str) -> Layers:
        """The layers of child module ``name``."""
        return Layers(getattr(self.module, name), self.params, f"{self.prefix}{name}.")

    def param(self, name: str) -> torch.Tensor:
        """Parameter ``name`` (members: stacked, ``(K, *its shape)``)."""
        if self.params is None:
            return getattr(self.module, name)
        return self.params[self.prefix + name]

    def linear(self, name: str, x: torch.Tensor, rows: slice | None = None) -> torch.Tensor:
        """Linear layer ``name`` on ``x``; ``rows``: only those output features."""
        if self.params is None:
            layer = getattr(self.module, name)
            if rows is None:
                return layer(x)
            return nn.functional.linear(x, layer.weight[rows], layer.bias[rows])
        w = self.params[f"{self.prefix}{name}.weight"]
        b = self.params[f"{self.prefix}{name}.bias"]
        if rows is not None:
            w, b = w[:, rows], b[:, rows]
        return linear_members(x, w, b)

    def layer_norm(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm ``name`` (over the last dim) on ``x``."""
        norm = getattr(self.module, name)
        if self.params is None:
            return norm(x)
        g = self.params[f"{self.prefix}{name}.weight"]
        b = self.params[f"{self.prefix}{name}.bias"]
        shape = (g.shape[0],) + (1,) * (x.dim() - 2) + (g.shape[-1],)
        h = nn.functional.layer_norm(x, norm.normalized_shape, eps=norm.eps)
        return torch.addcmul(b.view(shape), h, g.view(shape))

    def embedding(self, name: str, idx: torch.Tensor, *, shared: bool = False) -> torch.Tensor:
        """Rows ``idx`` of embedding table ``name``: ``(*idx.shape, E)``. Members: ``idx``
        carries the member axis, ``(K, ...)``, unless ``shared`` (the same indices for
        every member); either way ``(K, *rest, E)``."""
        if self.params is None:
            return getattr(self.module, name)(idx)
        w = self.params[f"{self.prefix}{name}.weight"]
        if shared:
            return w[:, idx]
        k = w.shape[0]
        member = torch.arange(k, device=idx.device).view(k, *([1] * (idx.dim() - 1)))
        return w[member, idx]

    def __call__(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Child module ``name`` on ``args``: its forward, or for members its member-batched
        form (Linear and LayerNorm here, a module's ``forward_layers`` or ``forward_members``)."""
        mod = getattr(self.module, name)
        if self.params is None:
            return mod(*args, **kwargs)
        if isinstance(mod, nn.Linear):
            return self.linear(name, *args)
        if isinstance(mod, nn.LayerNorm):
            return self.layer_norm(name, *args)
        run = getattr(mod, "forward_layers", None)
        if run is not None:
            return run(self.child(name), *args, **kwargs)
        if hasattr(mod, "forward_members"):
            sub = member_params(self.params, f"{self.prefix}{name}.")
            return mod.forward_members(sub, *args, **kwargs)
        if next(mod.parameters(), None) is not None:
            raise TypeError(f"{type(mod).__name__} '{name}' has no member-batched form")
        return mod(*args, **kwargs)


class LayeredModule(nn.Module):
    """A module whose computation is written once, in the ``forward_layers(layers, ...)``
    that each subclass defines, against a :class:`Layers`: :meth:`forward` runs it with the module's own parameters,
    :meth:`forward_members` with K stacked members' (``params`` as
    ``torch.func.stack_module_state`` names them; every input and output then has a leading
    member axis, ``StackedModules.members`` calls it)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward_layers(Layers(self), *args, **kwargs)

    def forward_members(self, params: dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> Any:
        """K stacked copies' :meth:`forward` at once."""
        return self.forward_layers(Layers(self, params), *args, **kwargs)


def take_steps(x: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """Token ``at[...]`` of each sequence: ``x`` ``(..., T, E)``, ``at`` ``(...)``; returns
    ``(..., 1, E)``."""
    t, e = x.shape[-2:]
    flat = x.reshape(-1, t, e)
    rows = torch.arange(flat.shape[0], device=x.device)
    return flat[rows, at.reshape(-1)].reshape(*x.shape[:-2], 1, e)


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
            layers.append(make_activation(act, inplace=True))
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
        self.layer_norm = layer_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in)`` to ``(..., out)``, the leading dims flattened into one batch first, so
        every Linear's output is its product itself rather than a view of it (what the
        in-place ReLU needs, :func:`make_activation`)."""
        out = self.net(x.reshape(-1, x.shape[-1]))
        return out.reshape(*x.shape[:-1], out.shape[-1])

    def forward_members(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """K copies of this MLP at once: ``params`` are its parameters stacked along a
        leading member axis (``torch.func.stack_module_state``'s names and ``(K, ...)``
        shapes), ``x`` is ``(K, B, in)``, one batch per member; returns ``(K, B, out)``, each
        member's :meth:`forward` of its own batch with its own parameters. One batched
        matrix product per layer, written out rather than mapped with ``torch.func.vmap``,
        which costs a stacked update two to three times the host time
        (docs/performance.md, "Stacked seeds"). Activations and dropout act elementwise,
        so each member's dropout mask is its own. Dims between K and the features are
        flattened and restored, so ``(K, B, L, in)`` gives ``(K, B, L, out)``.

        Without LayerNorm the activations run features first, ``(K, features, rows)``: each
        layer is ``W @ h + b``, whose weight gradient autograd then computes in the
        weight's own layout. In ``h @ W^T`` form every weight's gradient came out
        transposed and was copied into the weight's layout before the optimizer saw it
        (docs/performance.md, "Stacked MLPs features first"). The output is a transposed
        view."""
        if not self.layer_norm:
            h = x.reshape(x.shape[0], -1, x.shape[-1]).mT
            for i, layer in enumerate(self.net):
                if isinstance(layer, nn.Linear):
                    b = params[f"net.{i}.bias"].unsqueeze(-1)
                    h = torch.baddbmm(b, params[f"net.{i}.weight"], h)
                else:
                    h = layer(h)
            return h.mT.reshape(*x.shape[:-1], h.shape[-2])
        h = x.reshape(x.shape[0], -1, x.shape[-1])
        for i, layer in enumerate(self.net):
            if isinstance(layer, nn.Linear):
                h = linear_members(h, params[f"net.{i}.weight"], params[f"net.{i}.bias"])
            elif isinstance(layer, nn.LayerNorm):
                g, b = params[f"net.{i}.weight"], params[f"net.{i}.bias"]
                h = nn.functional.layer_norm(h, layer.normalized_shape, eps=layer.eps)
                h = torch.addcmul(b.unsqueeze(1), h, g.unsqueeze(1))
            else:
                h = layer(h)
        return h.reshape(*x.shape[:-1], h.shape[-1])


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
        self.act = make_activation(act, inplace=True)
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
                    # each copy's gain and shift, repeated for its n members: (k * n, 1, H)
                    g, beta = (
                        params[f"norms.{i}.{name}"]
                        .unsqueeze(1)
                        .expand(k, n, -1)
                        .reshape(k * n, 1, -1)
                        for name in ("weight", "bias")
                    )
                    h = nn.functional.layer_norm(h, norm.normalized_shape, eps=norm.eps)
                    h = torch.addcmul(beta, h, g)
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


HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """log N(act; mean, diag(exp(log_std))^2) summed over the last dim: the full Gaussian
    log-density, as ``torch.distributions.Normal(mean, exp(log_std)).log_prob(act).sum(-1)``
    (to float32 rounding) in fewer operators. ``log_std`` broadcasts against ``mean``."""
    z = (act - mean) * torch.exp(-log_std)
    return -(0.5 * z.square() + log_std).sum(-1) - act.shape[-1] * HALF_LOG_2PI


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

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        log_std = self.log_std.clamp(self.log_std_min, self.log_std_max)
        return gaussian_log_prob(self.mean_net(obs), log_std, act)

    def log_prob_members(
        self, params: dict[str, torch.Tensor], obs: torch.Tensor, act: torch.Tensor
    ) -> torch.Tensor:
        """K stacked copies' :meth:`log_prob` at once (see :meth:`MLP.forward_members`):
        ``obs`` ``(K, B, D)``, ``act`` ``(K, B, A)``; returns ``(K, B)``."""
        mean = self.mean_net.forward_members(member_params(params, "mean_net."), obs)
        log_std = params["log_std"].clamp(self.log_std_min, self.log_std_max)
        return gaussian_log_prob(mean, log_std.unsqueeze(1), act)


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


class CausalSelfAttention(LayeredModule):
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

    def forward_layers(
        self,
        layers: Layers,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        query: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs (B, T, E) and weights (B, H, T, T) of ``x`` (B, T, E), ``key_mask`` (B,
        T) (any leading dims: the projections per member, the attention over every
        sequence at once, as it has no parameters). ``query`` (B,): only token ``query[b]``
        of each row is a query (every token is still a key and value); the output is then
        (B, 1, E) and the weights (B, H, 1, T)."""
        *lead, t, e = x.shape
        if query is None:
            q, k, v = layers.linear("qkv", x).split(e, dim=-1)
        else:
            k, v = layers.linear("qkv", x, slice(e, None)).split(e, dim=-1)
            q = layers.linear("qkv", take_steps(x, query), slice(0, e))
        nq = q.shape[-2]  # query tokens per row
        if len(lead) == 1:  # one batch dim: as it is (no reshape on a single model's path)
            y, weights = self.attend(q, k, v, key_mask, query)
            return self.resid_drop(layers.linear("proj", y)), weights
        y, weights = self.attend(
            q.reshape(-1, nq, e),
            k.reshape(-1, t, e),
            v.reshape(-1, t, e),
            None if key_mask is None else key_mask.reshape(-1, t),
            None if query is None else query.reshape(-1),
        )
        y = layers.linear("proj", y.reshape(*lead, nq, e))
        return self.resid_drop(y), weights.reshape(*lead, *weights.shape[1:])

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None,
        query: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Multi-head attention of queries ``q`` (B, nq, E) over keys and values (B, T, E):
        the heads' outputs joined, (B, nq, E), and the weights (B, H, nq, T). ``query``
        (B,): the position of row b's one query token (nq = 1)."""
        b, t, e = k.shape
        h, nq = self.n_heads, q.shape[1]
        q = q.view(b, nq, h, e // h).transpose(1, 2)
        k = k.view(b, t, h, e // h).transpose(1, 2)
        v = v.view(b, t, h, e // h).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(e // h)
        if query is None:
            pos = torch.arange(t, device=k.device).view(1, t)
        else:
            pos = query.view(b, 1)
        allowed = torch.ones(pos.shape[0], nq, t, dtype=torch.bool, device=k.device)
        if self.causal:  # a query at position i sees the keys at positions <= i
            allowed = torch.arange(t, device=k.device).view(1, 1, t) <= pos.unsqueeze(-1)
        allowed = allowed.unsqueeze(1)
        if key_mask is not None:
            allowed = allowed & key_mask.bool().view(b, 1, 1, t)
        scores = scores.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        # a fully masked row (a padding query before any real key) gives NaN: make it 0
        weights = torch.nan_to_num(weights, nan=0.0)
        y = self.attn_drop(weights) @ v
        return y.transpose(1, 2).reshape(b, nq, e), weights


class TransformerBlock(LayeredModule):
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

    def forward_layers(
        self,
        layers: Layers,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        query: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output and attention weights; ``query`` (B,): the output of token
        ``query[b]`` of each row only, (B, 1, E)."""
        a, w = layers("attn", layers("ln1", x), key_mask, query)
        if query is not None:
            x = take_steps(x, query)
        x = x + a
        h = layers("ln2", x)
        if layers.members:
            mlp = layers.child("mlp")
            for i in range(len(self.mlp)):
                h = mlp(str(i), h)
        else:
            h = self.mlp(h)
        return x + h, w


class CausalTransformer(LayeredModule):
    """A GPT-2 style causal transformer over already-embedded tokens.

    ``forward(x (B, T, E), key_mask (B, T) or None)`` returns ``(hidden (B, T, E),
    attentions)`` where ``attentions`` is a list with one (B, n_heads, T, T) tensor per
    layer (row i = how token i attends over tokens <= i). ``key_mask`` is 1 on real tokens
    and 0 on padding (padding keys get no attention). A learned positional embedding of
    ``max_len`` positions is added unless ``pos_embedding=False`` (PT adds its own timestep
    embedding instead). The output passes a final LayerNorm, as in GPT-2. ``causal=False``
    drops the causal mask (OPPO's bidirectional encoder); ``activation`` names the MLP's
    nonlinearity (the DT/OPPO and PT GPT-2 configs use ReLU). ``forward_members`` runs K
    stacked copies at once (:class:`Layers`), every input and output with a leading member
    axis.
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

    def forward_layers(
        self,
        layers: Layers,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        query: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``query`` (B,): the hidden state of token ``query[b]`` of each row only, (B, 1,
        E): the last layer computes that token alone (the layers before it every token,
        which the last one reads as keys and values); its attention map is (B, H, 1, T).
        For a read-out at one position per row (PT's relabelling). Members
        (:meth:`forward_members`): ``x`` (K, B, T, E), ``key_mask`` (K, B, T), ``query``
        (K, B); hidden states (K, B, T, E) and maps (K, B, H, T, T)."""
        t = x.shape[-2]
        if t > self.max_len:
            raise ValueError(f"sequence of {t} tokens exceeds max_len {self.max_len}")
        if self.pos is not None:
            x = x + layers.param("pos")[..., :t, :]
        h = self.drop(x)
        attentions: list[torch.Tensor] = []
        blocks = layers.child("blocks")
        last = len(self.blocks) - 1
        for i in range(last + 1):
            h, w = blocks(str(i), h, key_mask, query if i == last else None)
            attentions.append(w)
        return layers("ln_f", h), attentions


def interleave_steps(
    streams: Sequence[torch.Tensor],
    norm: Callable[[torch.Tensor], torch.Tensor],
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence models' tokens from per-step embeddings.

    ``streams`` are k tensors (..., T, E), one per token kind (e.g. action and state, each
    with its time embedding added); the tokens are ordered step by step
    (s_1^1, ..., s_1^k, s_2^1, ...), i.e. (..., k*T, E), then ``norm``-ed. ``mask`` (..., T)
    becomes the key mask (..., k*T) of the interleaved sequence. Preference Transformer and
    OPPO's encoder and decoder build their inputs this way.
    """
    *lead, t, e = streams[0].shape
    tok = torch.stack(list(streams), dim=-2).reshape(*lead, len(streams) * t, e)
    return norm(tok), mask.repeat_interleave(len(streams), dim=-1)


@torch.no_grad()
def soft_update(
    target: nn.Module | Sequence[torch.Tensor],
    source: nn.Module | Sequence[torch.Tensor],
    tau: float,
) -> None:
    """Polyak averaging: target <- (1 - tau) * target + tau * source (parameters only).
    Modules or their parameter lists: a learner that averages every update lists them once
    (walking a module's parameters costs more host time than the averaging itself at small
    sizes)."""
    tps = target.parameters() if isinstance(target, nn.Module) else target
    sps = source.parameters() if isinstance(source, nn.Module) else source
    for tp, sp in zip(tps, sps, strict=True):
        tp.lerp_(sp, tau)
