"""The learner kit: the pieces several learners share, one implementation each.

A learner in ``agents/`` imports what it needs from here (and from :mod:`pbrl.learn.nn`,
:mod:`pbrl.learn.data`, :mod:`pbrl.learn.iql`), never from another learner. Everything here
is a pure function of its inputs or of an explicit random generator, so the numbers a
learner produces do not depend on which learner it is:

- segments: :func:`segment_sum` (a per-step value summed over a segment's real steps);
- preferences: :func:`bt_pair_losses` (the Bradley-Terry cross-entropy of segment scores,
  in the three numerical forms the official codes use);
- policies: :func:`deterministic_logp` (the deterministic actors' "log-prob"
  ``-sum_d (mu_d - a_d)^2``);
- minibatches: :func:`shuffled_epoch` and :func:`epoch_minibatches` (one permutation per
  epoch cut into minibatches, the last one shorter), :func:`uniform_minibatches` (rows
  drawn with replacement, a block of minibatches per draw);
- reward inputs: :data:`REWARD_INPUTS`, :func:`check_reward_input`, :func:`reward_action`;
- the run's budget and logging: :func:`split_steps`, :func:`log_due`, :func:`host_metrics`;
- numpy glue: :func:`obs_stats`, :func:`batched_numpy`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.optim.adam import adam as adam_functional

from pbrl.errors import PbrlError

# ---- segments and preferences ---------------------------------------------------------------


def segment_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of per-step values over the real steps of each segment: (..., B, L) -> (..., B).

    ``mask`` (B, L) is 1 on real steps and 0 on padding; a leading ensemble axis on
    ``values`` gives one sum per member. Padding after a true termination is the absorbing
    state and counts 0 (the terminating step itself has mask 1 and counts).
    """
    return (values * mask).sum(-1)


BT_FORMS = ("logistic", "softmax", "bce")
"""The numerical forms of :func:`bt_pair_losses` (equal in exact arithmetic)."""


def bt_pair_losses(
    score_a: torch.Tensor, score_b: torch.Tensor, prefer_b: torch.Tensor, form: str = "logistic"
) -> torch.Tensor:
    """Bradley-Terry cross-entropy of each pair with soft labels, not reduced.

    ``-[(1 - y) log P(a > b) + y log P(b > a)]`` with ``P(b > a) = sigmoid(S_b - S_a)`` and
    ``y = prefer_b`` (1: segment b preferred; ties 0.5 stay in). ``score_*`` are (..., B)
    and ``prefer_b`` (B,) broadcasts over a leading ensemble axis. The caller reduces (mean
    over pairs, then e.g. a sum over members).

    ``form`` picks how the logarithms are computed; the three agree in exact arithmetic and
    differ in the last bits, so each learner keeps the one its official code uses:

    - ``logistic``: ``logsigmoid(S_b - S_a)`` and ``logsigmoid(S_a - S_b)`` (regret, hprior);
    - ``softmax``: ``log_softmax([S_a, S_b])`` (B-Pref / Uni-RLHF's MR, PT);
    - ``bce``: torch's ``binary_cross_entropy_with_logits(S_b - S_a, y)`` (IPL).
    """
    if form == "logistic":
        diff = score_b - score_a
        y = prefer_b.to(diff.dtype)
        return -(y * F.logsigmoid(diff) + (1.0 - y) * F.logsigmoid(-diff))
    if form == "softmax":
        logp = torch.log_softmax(torch.stack([score_a, score_b], dim=-1), dim=-1)
        y = prefer_b.to(logp.dtype)
        return -((1.0 - y) * logp[..., 0] + y * logp[..., 1])
    if form == "bce":
        diff = score_b - score_a
        target = torch.broadcast_to(prefer_b.to(diff.dtype), diff.shape)
        return F.binary_cross_entropy_with_logits(diff, target, reduction="none")
    raise ValueError(f"bt_pair_losses: unknown form '{form}' ({' | '.join(BT_FORMS)})")


def strict_accuracy(
    score_a: torch.Tensor, score_b: torch.Tensor, prefer_b: torch.Tensor
) -> torch.Tensor:
    """Fraction of non-tie pairs whose higher score is the preferred segment (0 if none).

    ``score_*`` and ``prefer_b`` are (..., B), reduced over B (a leading member axis keeps
    one fraction per member); a tensor, so it can stay on the device.
    """
    strict = prefer_b != 0.5
    ok = ((score_b > score_a) == (prefer_b > 0.5)) & strict
    return ok.float().sum(-1) / strict.float().sum(-1).clamp_min(1.0)


# ---- policies -------------------------------------------------------------------------------


def deterministic_logp(mu: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """The deterministic actors' "log-prob" ``-sum_d (mu_d - a_d)^2`` over the last dim.

    No 1/2 and no constant (CPL's convention; its conservative bias makes constants
    matter). Its negation is the behaviour-cloning error of a deterministic actor.
    """
    return -((mu - act) ** 2).sum(-1)


# ---- minibatches ----------------------------------------------------------------------------


def shuffled_epoch(
    n: int,
    batch_size: int,
    generator: torch.Generator,
    device: str,
    members: int | None = None,
) -> list[torch.Tensor]:
    """One epoch over ``n`` items: a permutation cut into minibatches (the last one shorter).

    The permutation is drawn from ``generator`` (on the generator's device) and moved to
    ``device``. With ``members``, each ensemble member gets its own permutation (drawn one
    after the other) and every minibatch is an (members, b) index tensor.
    """
    if n <= 0:
        raise PbrlError("no answered preference pairs to learn from")
    bs = max(1, min(int(batch_size), n))
    if members is None:
        perm = torch.randperm(n, generator=generator, device=generator.device).to(device)
    else:
        perm = torch.stack(
            [
                torch.randperm(n, generator=generator, device=generator.device)
                for _ in range(members)
            ]
        ).to(device)
    return [perm[..., s : s + bs] for s in range(0, n, bs)]


def epochs_until_accurate(
    n: int,
    batch_size: int,
    generator: torch.Generator,
    device: str,
    step: Callable[[torch.Tensor], dict[str, float | torch.Tensor]],
    *,
    epochs: int,
    stop_acc: float,
    max_updates: int | None = None,
    members: int | None = None,
    acc_key: str = "reward_acc",
) -> Iterator[dict[str, float | torch.Tensor]]:
    """B-Pref's reward-training loop: up to ``epochs`` passes over ``n`` labelled pairs in
    :func:`shuffled_epoch` minibatches (per member with ``members``), ``step(idx)`` doing one
    update and returning its metrics; stops after an epoch whose mean ``acc_key`` (nan values
    skipped) exceeds ``stop_acc``, or after ``max_updates`` updates. Yields each step's
    metrics. The reward phase of ``mr``, and the online ``train_reward`` of ``regret``,
    ``hprior`` and the online track's own reward models.

    The metrics may be floats or 0-dim tensors left on the device: the accuracies are then
    read on the host once per epoch, not after every update (:func:`host_metrics`)."""
    updates = 0
    for _epoch in range(epochs):
        accs: list[torch.Tensor] = []
        for idx in shuffled_epoch(n, batch_size, generator, device, members=members):
            if max_updates is not None and updates >= max_updates:
                return
            metrics = step(idx)
            updates += 1
            acc = metrics.get(acc_key, float("nan"))
            # a tensor stays where it is (one read per epoch); a float needs no copy to the device
            accs.append(torch.as_tensor(acc, dtype=torch.float32).reshape(()))
            yield metrics
        if accs:
            mean = float(torch.stack(accs).nanmean())  # nan when no update had an accuracy
            if mean > stop_acc:
                return


def host_metrics(metrics: dict[str, float | torch.Tensor]) -> dict[str, float]:
    """A metric dict with every 0-dim tensor read into a float: what a learner yields at a
    log interval. Learners keep a step's metrics on the device and call this only where they
    yield, so the host does not wait for the device after every update."""
    return {k: float(v) for k, v in metrics.items()}


def epoch_minibatches(
    n: int, batch_size: int, generator: torch.Generator, device: str
) -> Iterator[torch.Tensor]:
    """Endless minibatch index tensors over ``n`` items, one permutation per epoch.

    This is how the official codes walk their label sets (B-Pref, PT, CPL, IPL): shuffle,
    cut into minibatches of ``batch_size`` (the last one shorter), repeat. The next
    epoch's permutation is drawn only when its first minibatch is asked for.
    """
    while True:
        yield from shuffled_epoch(n, batch_size, generator, device)


UNIFORM_BLOCK = 32
"""Minibatches of row indices :func:`uniform_minibatches` draws at once."""


def uniform_minibatches(
    n: int, batch_size: int, generator: torch.Generator, device: str, block: int = UNIFORM_BLOCK
) -> Iterator[torch.Tensor]:
    """Endless ``(batch_size,)`` index tensors of rows drawn uniformly with replacement from
    ``n``, as the official offline codes sample transitions.

    The indices are drawn ``block`` minibatches at a time (one ``randint`` on the
    generator's device, moved to ``device``), then handed out one view at a time: a stacked
    run asks K generators for a minibatch every step, and on a GPU each draw is a kernel
    launch (docs/performance.md, "The CUDA path"). A run and the same seed stacked draw the
    same blocks at the same points, so they see the same rows; the rows are the same
    uniform draws as one ``randint`` per minibatch, in another order of the stream.
    """
    if n <= 0:
        raise PbrlError("no transitions to sample minibatches from")
    while True:
        rows = torch.randint(
            0, n, (block, batch_size), generator=generator, device=generator.device
        ).to(device)
        yield from rows.unbind(0)


# ---- reward inputs --------------------------------------------------------------------------

REWARD_INPUTS = ("obs_act", "obs")
"""What a learned reward model reads: ``obs_act`` = r(s, a), as the official reward learners
do; ``obs`` = r(s), the action input held at zero (same network, so checkpoints keep their
shapes). Why the ``quick`` presets read states only: docs/agents.md, "The action shortcut"."""


@torch.no_grad()
def greedy_action(
    actor: torch.nn.Module,
    obs: np.ndarray,
    device: torch.device | str,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> np.ndarray:
    """The actor's deterministic action for ``obs`` (one observation or a batch), clamped to
    [-1, 1]; ``transform`` (e.g. observation normalisation) is applied first. The actor runs
    in eval mode and its train/eval mode is restored afterwards."""
    was_training = actor.training
    actor.eval()
    x = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=device)
    single = x.dim() == 1
    if single:
        x = x.unsqueeze(0)
    a = actor(transform(x) if transform is not None else x).clamp(-1.0, 1.0)
    actor.train(was_training)
    out = a.cpu().numpy()
    return out[0] if single else out


def check_reward_input(mode: str) -> None:
    """Raise a clear error for an unknown ``--agent.reward_input``."""
    if mode not in REWARD_INPUTS:
        raise PbrlError(f"--agent.reward_input: {' | '.join(REWARD_INPUTS)}, got '{mode}'")


def reward_action(act: torch.Tensor, mode: str) -> torch.Tensor:
    """The action a reward model is fed under ``mode`` (zeros for state-only rewards)."""
    return act if mode == "obs_act" else torch.zeros_like(act)


# ---- budget and logging ---------------------------------------------------------------------


def split_steps(total: int, fractions: tuple[float, ...]) -> list[int]:
    """Split ``total`` updates into phases: ``fractions`` for all phases but the last.

    Every phase but the last gets at least one update when ``total`` allows it; the last
    phase gets the remainder, so the counts always sum to ``total``.
    """
    counts: list[int] = []
    left = int(total)
    for f in fractions:
        c = min(left, max(1 if total > len(fractions) else 0, int(round(f * total))))
        counts.append(c)
        left -= c
    counts.append(left)
    return counts


def fused_adam(
    params: Iterator[torch.Tensor] | list[torch.Tensor],
    lr: float | torch.Tensor,
    capturable: bool = False,
    *,
    weight_decay: float = 0.0,
    decoupled: bool = False,
) -> FusedAdam:
    """Adam with PyTorch's fused kernel (one kernel over all parameters instead of a loop of
    small elementwise ops per tensor): the same update to float32 rounding, 4-8% more IQL
    updates per second on one CPU core (``bench/adam_foreach.py --kind fused``,
    docs/performance.md). ``capturable``: its step counters on the parameters' device, so
    the step can be captured in a CUDA graph (``lr`` may then be a device tensor that a
    schedule fills between replays). ``decoupled``: AdamW (``weight_decay`` applied to the
    parameters, as ``torch.optim.AdamW``); otherwise ``weight_decay`` is Adam's L2 term.
    Every learner's Adam and AdamW are built here (:class:`FusedAdam`)."""
    return FusedAdam(
        params,
        lr=lr,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled,
        fused=True,
        capturable=capturable,
    )


class FusedAdam(torch.optim.Adam):
    """``torch.optim.Adam`` (fused) whose steps after the first cost less host time: the
    first :meth:`step` is torch's own (it creates the state), every later one hands the
    state tensors, listed once, with the current gradients to torch's functional
    ``torch.optim.adam.adam``, the same call ``Adam.step`` ends in, without rebuilding the
    lists, the hooks and the profiler records around it every step. :meth:`zero_grad` sets
    the gradients to None directly. The arithmetic is torch's, bit for bit
    (``tests/test_losses_core.py``); a step with a closure, a parameter without a gradient, a
    capturable optimizer (its step is captured once in a CUDA graph), AMSGrad or a
    ``GradScaler``'s step takes torch's own ``step``. What it saves: docs/performance.md,
    "Host time per update"."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lists: list[tuple[list[torch.Tensor], ...]] | None = None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.lists = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self.lists = None

    def zero_grad(self, set_to_none: bool = True) -> None:
        if not set_to_none:
            super().zero_grad(set_to_none=False)
            return
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def state_lists(self) -> list[tuple[list[torch.Tensor], ...]] | None:
        """Per group: (params, first moments, second moments, step counters), once every
        parameter has its state; None while the lean step does not apply."""
        if self.lists is None:
            groups = self.param_groups
            if any(g["capturable"] or g["amsgrad"] or not g["fused"] for g in groups):
                return None
            if getattr(self, "grad_scale", None) is not None:  # a GradScaler's fused step
                return None
            if not all(p in self.state for g in groups for p in g["params"]):
                return None
            self.lists = [
                tuple(
                    [self.state[p][key] for p in g["params"]] if key else list(g["params"])
                    for key in ("", "exp_avg", "exp_avg_sq", "step")
                )
                for g in groups
            ]
        return self.lists

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        lists = None if closure is not None else self.state_lists()
        grads = None if lists is None else [[p.grad for p in ps] for ps, *_ in lists]
        if grads is None or any(g is None for group in grads for g in group):
            return super().step(closure)
        with torch.no_grad():
            for group, (params, avgs, sqs, steps), gs in zip(
                self.param_groups, lists, grads, strict=True
            ):
                beta1, beta2 = group["betas"]
                adam_functional(
                    params,
                    gs,
                    avgs,
                    sqs,
                    [],
                    steps,
                    fused=True,
                    decoupled_weight_decay=group["decoupled_weight_decay"],
                    amsgrad=False,
                    beta1=beta1,
                    beta2=beta2,
                    lr=group["lr"],
                    weight_decay=group["weight_decay"],
                    eps=group["eps"],
                    maximize=group["maximize"],
                )
        return None


class CudaGraphs:
    """The CUDA calls :class:`CapturedStep` makes, in one place (a test stands in for them on
    a CPU: ``tests/test_stack.py``)."""

    def device(self, device: torch.device) -> Any:
        return torch.cuda.device(device)

    def eager(self, fn: Callable[[Any], Any], batch: Any) -> Any:
        """``fn(batch)`` on a side stream, as the calls before a capture must run."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            out = fn(batch)
        torch.cuda.current_stream().wait_stream(side)
        return out

    def capture(self, fn: Callable[[Any], Any], static_in: Any) -> tuple[Any, Any]:
        """``fn`` recorded (not run) on ``static_in``: the graph and its output tensors."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = fn(static_in)
        return graph, out

    def replay(self, graph: Any) -> None:
        graph.replay()


class CapturedStep:
    """``fn(batch)`` replayed as one CUDA graph (the whole update: forwards, backwards,
    optimizer steps): the first ``warmup`` calls run ``fn`` eagerly on a side stream (a
    capture needs the optimizers' state and the libraries' workspaces to exist), the next
    call captures ``fn`` on a copy of its batch and replays it, and every later call copies
    its batch into that copy and replays. Replaying launches one graph instead of the
    hundreds of small kernels ``fn`` issues one by one from Python, which is what limits a
    GPU at these network sizes (docs/performance.md, "The CUDA path").

    ``fn`` must read nothing on the host, allocate the same shapes on every call, and keep
    everything that changes between calls in tensors (a learning rate a schedule fills
    between calls, not a Python float); its outputs are the graph's own tensors, overwritten
    by the next call. CUDA only (``backend``: the CUDA calls, :class:`CudaGraphs`)."""

    backend: Any = CudaGraphs()

    def __init__(self, fn: Callable[[dict[str, torch.Tensor]], Any], warmup: int = 3) -> None:
        self.fn, self.warmup, self.calls = fn, warmup, 0
        self.graph: Any = None
        self.static_in: dict[str, torch.Tensor] = {}
        self.static_out: Any = None

    def __call__(self, batch: dict[str, torch.Tensor]) -> Any:
        self.calls += 1
        # the batch's device is the learner's (cuda:N need not be the current device)
        with self.backend.device(next(iter(batch.values())).device):
            if self.calls <= self.warmup:
                return self.backend.eager(self.fn, batch)
            if self.graph is None:
                self.static_in = {k: v.clone() for k, v in batch.items()}
                self.graph, self.static_out = self.backend.capture(self.fn, self.static_in)
            else:
                for k, v in batch.items():
                    self.static_in[k].copy_(v)
            self.backend.replay(self.graph)
        return self.static_out


def cosine_lr(base: float, step: int, total: int) -> float:
    """The learning rate after ``step`` of ``total`` steps of a cosine decay to 0 from
    ``base`` (``CosineAnnealingLR`` with ``eta_min=0``, in closed form)."""
    return base * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


class ActorLr:
    """An optimizer's learning rate, decayed from ``base`` to 0 by a cosine over ``total``
    steps (``cosine``) or held. Every step writes the closed form (:func:`cosine_lr`, torch's
    ``CosineAnnealingLR`` with ``eta_min=0``) into the groups' rates: a float, or, for an
    update captured as a CUDA graph, the device tensor the graph reads, filled without
    reading anything back. torch's scheduler would cost a float rate about as much host time
    per step as a small optimizer step, and read a tensor rate on the host.
    :meth:`restart` begins again over a new total; :meth:`step` after each update (held
    once ``total`` is done)."""

    def __init__(self, opt: torch.optim.Optimizer, base: float, total: int, cosine: bool) -> None:
        self.opt, self.base, self.cosine = opt, float(base), cosine
        self.tensor = isinstance(opt.param_groups[0]["lr"], torch.Tensor)
        self.restart(total)

    def restart(self, total: int) -> None:
        self.total, self.done = max(int(total), 1), 0
        self.set(self.base)

    def set(self, rate: float) -> None:
        for g in self.opt.param_groups:
            if self.tensor:
                g["lr"].fill_(rate)
            else:
                g["lr"] = rate

    def step(self) -> None:
        if not self.cosine or self.done >= self.total:
            return
        self.done += 1
        self.set(cosine_lr(self.base, self.done, self.total))


@contextlib.contextmanager
def seeded_init(seed: int, salt: int = 1) -> Iterator[None]:
    """Build networks inside this block to draw their initialisation from the run's ``seed``
    (salted, so it does not repeat the stream the agent's constructor drew from) instead of
    from wherever the process's generator stands; the process's generator is left as it was.
    For networks built inside ``fit`` (when the labels' segment length is known): a seed
    then gives the same networks whether its run trains alone or stacked with others."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(np.random.SeedSequence([int(seed), salt]).generate_state(1)[0]))
        yield


def log_due(step: int, total: int, interval: int) -> bool:
    """The agent API's rule: yield when ``step % interval == 0`` and after the last update."""
    return step == total or (interval > 0 and step % interval == 0)


# ---- numpy glue -----------------------------------------------------------------------------


def obs_stats(observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dataset mean and std (+ 1e-3, CORL's epsilon) of the observations, float32."""
    obs = np.asarray(observations, dtype=np.float64)
    return obs.mean(0).astype(np.float32), (obs.std(0) + 1e-3).astype(np.float32)


def batched_numpy(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    obs: np.ndarray,
    act: np.ndarray,
    device: str,
    batch_size: int = 8192,
    lead: tuple[int, ...] = (),
) -> np.ndarray:
    """Evaluate a torch function of (obs, act) over numpy arrays in batches, no grad. With
    ``lead`` (e.g. ``(K,)`` for K stacked members), ``fn`` gives ``(*lead, b)`` values for
    ``b`` rows and the result is ``(*lead, N)``."""
    obs = np.asarray(obs, dtype=np.float32)
    act = np.asarray(act, dtype=np.float32)
    single = obs.ndim == 1
    if single:
        obs, act = obs[None], act[None]
    out = np.empty((*lead, obs.shape[0]), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, obs.shape[0], batch_size):
            o = torch.as_tensor(obs[s : s + batch_size], device=device)
            a = torch.as_tensor(act[s : s + batch_size], device=device)
            out[..., s : s + batch_size] = fn(o, a).float().cpu().numpy().reshape(*lead, -1)
    return out[0:1].reshape(()) if single else out
