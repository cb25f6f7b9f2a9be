"""The regret teacher (Knox et al. 2022): preset ``regret``, with the expert value functions
it scores segments with (the SAC critic saved beside a generated dataset, loaded by
:mod:`pbrl.datasets.critic`, or :class:`FittedValueFunction` regressed on expert episodes)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pbrl.datasets import critic as expert_critic
from pbrl.datasets.base import OfflineDataset
from pbrl.envs import find_task
from pbrl.errors import DataError, PbrlError
from pbrl.teachers.pairs import (
    SegmentPairs,
    bt_label,
    check_bt_knobs,
    effective_beta,
    positive_scale,
    row_dot,
    row_sums,
    scale_pairs,
)
from pbrl.teachers.presets import teacher_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegretTeacher:
    """Prefers the segment with the larger sum of optimal advantages (Knox et al. 2022).

    Score (deterministic dynamics, discounted with ``discount``; None = the value function's
    own ``gamma`` (the SAC critic's), 0.99 when it has none; ``prepare`` resolves it):
    ``S = sum_t discount^t r_t + discount^L V(s_L) - V(s_0)`` with ``V(s_L) = 0`` when the
    last step terminated the episode (bootstrap on time-limit truncation). ``undiscounted``
    gives CPL's ``rl_sum`` / the OA code's ``sum_t r_t + V(s_L) - V(s_0)``. Label:
    ``beta = inf`` argmax of S, else Bernoulli(sigmoid(beta (S_b - S_a))) (``beta_units="std"``
    divides beta by the std of ``S_b - S_a`` over random dataset pairs), then mistake flips.
    ``decimals`` rounds each S first (OA's official regret labels: 2; off by default).
    ``bootstrap``: ``"next"`` scores all L steps and bootstraps from the state after the last
    one (above); ``"last"`` is CPL's ``rl_sum`` window, the first L-1 rewards plus
    ``V(s_{L-1}) - V(s_0)`` (the segment's last reward is left out). Rewards are multiplied by
    the value function's ``reward_scale`` when it has one (CPL's SAC critic learned from the
    reward / 10), so S is in the critic's units.
    ``ties``: with ``beta = inf``, an exact tie of the scores goes to segment a (``"first"``,
    B-Pref's argmax) or is labelled 0.5 (``"half"``: the official rule of both CPL's
    ``FeedbackBuffer`` and OA's deterministic labels).

    ``value_source``: ``"auto"`` (a critic beside the dataset -> ``"sb3"``, else MetaWorld ->
    ``"fitted"``, otherwise ``"sb3"``), ``"sb3"``
    (the SAC critic saved beside a generated dataset, via
    ``pbrl.datasets.critic.load_expert_value_fn``), ``"fitted"`` (:class:`FittedValueFunction`
    regressed on the dataset's ``expert`` episodes), or ``"callable"`` (``value_fn`` given).
    """

    name: str = "regret"
    beta: float = math.inf
    beta_units: str = "raw"
    eps_mistake: float = 0.0
    discount: float | None = None
    undiscounted: bool = False
    value_source: str = "auto"
    expert_source: str = "expert"
    score_scale: float | None = None
    decimals: int | None = None
    ties: str = "first"
    bootstrap: str = "next"
    value_fn: Callable[[np.ndarray], np.ndarray] | None = field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        check_bt_knobs(self)
        if self.discount is not None and not (0.0 < self.discount <= 1.0):
            raise PbrlError(
                f"teacher '{self.name}': discount must be in (0, 1], got {self.discount}"
            )
        if self.ties not in ("first", "half"):
            raise PbrlError(f"teacher '{self.name}': ties must be first or half, got {self.ties!r}")
        if self.ties == "half" and not math.isinf(self.beta):
            raise PbrlError(
                f"teacher '{self.name}': ties=half labels exact ties of a deterministic teacher; "
                f"it needs beta=inf, got beta={self.beta}"
            )
        if self.bootstrap not in ("next", "last"):
            raise PbrlError(
                f"teacher '{self.name}': bootstrap must be next or last, got {self.bootstrap!r}"
            )
        if self.decimals is not None and self.decimals < 0:
            raise PbrlError(f"teacher '{self.name}': decimals must be >= 0, got {self.decimals}")
        if self.value_source not in ("auto", "sb3", "fitted", "callable"):
            raise PbrlError(
                f"teacher '{self.name}': value_source must be auto, sb3, fitted or callable, "
                f"got {self.value_source!r}"
            )

    def scores(self, pairs: SegmentPairs) -> tuple[np.ndarray, np.ndarray]:
        """(S_a, S_b), each (B,)."""
        if self.value_fn is None:
            raise PbrlError(
                f"teacher '{self.name}': no value function; call .prepare(dataset, L) or pass "
                f"value_fn=callable"
            )
        out = []
        for side in ("a", "b"):
            obs = getattr(pairs, f"obs_{side}")
            last = getattr(pairs, f"next_obs_last_{side}")
            if obs is None or last is None:
                raise PbrlError(
                    f"teacher '{self.name}' needs observations: build SegmentPairs with obs_* and "
                    f"next_obs_last_* (SegmentPairs.from_dataset does)"
                )
            r = np.asarray(getattr(pairs, f"rewards_{side}"), dtype=np.float64)
            r = r * float(getattr(self.value_fn, "reward_scale", 1.0))
            gamma = self.resolved_discount()
            v0 = np.asarray(self.value_fn(np.asarray(obs[:, 0])), dtype=np.float64).reshape(-1)
            if self.bootstrap == "last":
                # CPL's rl_sum: r_0 .. r_{L-2}, then V(s_{L-1}) (a state inside the segment)
                r = r[:, :-1]
                vl = np.asarray(self.value_fn(np.asarray(obs[:, -1])), dtype=np.float64)
                vl = vl.reshape(-1)
            else:
                vl = np.asarray(self.value_fn(np.asarray(last)), dtype=np.float64).reshape(-1)
                term = getattr(pairs, f"terminal_{side}")
                if term is not None:
                    vl = np.where(np.asarray(term)[:, -1], 0.0, vl)
            L = r.shape[1]
            if self.undiscounted:
                s = row_sums(r) + vl - v0
            else:
                w = gamma ** np.arange(L, dtype=np.float64)
                s = row_dot(r, w) + gamma**L * vl - v0
            if self.decimals is not None:
                s = np.round(s, self.decimals)
            out.append(s)
        return out[0], out[1]

    def resolved_discount(self) -> float:
        """``discount``, else the value function's own ``gamma`` (the SAC critic's), else 0.99."""
        if self.discount is not None:
            return float(self.discount)
        return float(getattr(self.value_fn, "gamma", 0.99))

    def label(self, pairs: SegmentPairs, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        beta = effective_beta(self)
        s_a, s_b = self.scores(pairs)
        # ties=half: |S_a - S_b| <= 0 is a tie (0.5); no random numbers are drawn for it
        tie: dict[str, Any] = (
            {"equal_threshold": 0.0, "equal_inclusive": True} if self.ties == "half" else {}
        )
        return bt_label(s_a, s_b, s_a, s_b, rng, beta=beta, eps_mistake=self.eps_mistake, **tie)

    def prepare(self, ds: OfflineDataset, segment_length: int) -> RegretTeacher:
        t = self
        if t.value_fn is None:
            source = resolve_value_source(ds, t.value_source)
            vf = resolve_value_fn(ds, source, t.discount or 0.99, t.expert_source)
            t = replace(t, value_fn=vf, value_source=source)  # the spec names the source used
        t = replace(t, discount=t.resolved_discount())
        if t.beta_units == "std" and 0.0 < t.beta < math.inf:
            s_a, s_b = t.scores(scale_pairs(ds, segment_length, with_obs=True))
            t = replace(t, score_scale=positive_scale(float(np.std(s_b - s_a)), ds.id))
        return t

    def spec(self) -> str:
        return teacher_spec(self)


@dataclass(frozen=True)
class FittedValueFunction:
    """V(s) regressed on discounted Monte-Carlo returns of expert episodes.

    Ridge regression on random Fourier features (RBF kernel approximation) of standardised
    observations: closed form, deterministic, seconds on CPU. Targets:
    ``G_t = r_t + discount G_{t+1}``; at a time-limit truncation the tail is bootstrapped with
    ``G_T = r_{T-1} / (1 - discount)`` (the expert keeps collecting its last reward, which
    holds for a scripted expert that has reached the goal); ``G_T = 0`` at a termination.
    """

    mean: np.ndarray  # (D,)
    std: np.ndarray  # (D,)
    proj: np.ndarray  # (D, F)
    phase: np.ndarray  # (F,)
    coef: np.ndarray  # (F,)
    bias: float
    discount: float
    r2: float

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return self._features(np.asarray(obs, dtype=np.float64)) @ self.coef + self.bias

    def _features(self, obs: np.ndarray) -> np.ndarray:
        z = (obs - self.mean) / self.std
        return np.cos(z @ self.proj + self.phase) * math.sqrt(2.0 / self.proj.shape[1])

    @staticmethod
    def fit(
        ds: OfflineDataset,
        discount: float = 0.99,
        *,
        source: str = "expert",
        n_features: int = 1024,
        max_states: int = 30000,
        ridge: float = 1e-3,
        seed: int = 0,
    ) -> FittedValueFunction:
        if ds.rewards is None:
            raise DataError(f"{ds.path or ds.id}: a fitted value function needs rewards")
        eps = [
            e
            for e, info in enumerate(ds.episode_info)
            if isinstance(info, Mapping) and info.get("source") == source
        ]
        if not eps:
            raise DataError(
                f"{ds.path or ds.id}: no episode has source '{source}' in its episode info; the "
                f"regret teacher's fitted value function needs expert episodes (or pass "
                f"value_fn=..., or expert_source=...)"
            )
        xs, ys = [], []
        for e in eps:
            rows = ds.episode_rows(e)
            r = ds.rewards[rows].astype(np.float64)
            g = np.empty(r.shape[0] + 1)
            terminated = bool(ds.terminals[rows][-1]) if r.size else True
            g[-1] = 0.0 if terminated or discount >= 1.0 else r[-1] / (1.0 - discount)
            for t in range(r.shape[0] - 1, -1, -1):
                g[t] = r[t] + discount * g[t + 1]
            xs.append(ds.observations[rows])
            ys.append(g[:-1])
        x = np.concatenate(xs).astype(np.float64)
        y = np.concatenate(ys)
        rng = np.random.default_rng(seed)
        if x.shape[0] > max_states:
            keep = rng.choice(x.shape[0], max_states, replace=False)
            x, y = x[keep], y[keep]
        mean = x.mean(axis=0)
        std = x.std(axis=0) + 1e-6
        d = x.shape[1]
        # RBF length scale sqrt(D) on standardised inputs: the median pairwise distance.
        proj = rng.standard_normal((d, n_features)) / math.sqrt(d)
        phase = rng.uniform(0.0, 2.0 * math.pi, n_features)
        vf = FittedValueFunction(mean, std, proj, phase, np.zeros(n_features), 0.0, discount, 0.0)
        phi = vf._features(x)
        bias = float(y.mean())
        a = phi.T @ phi + ridge * x.shape[0] * np.eye(n_features)
        coef = np.linalg.solve(a, phi.T @ (y - bias))
        pred = phi @ coef + bias
        r2 = 1.0 - float(((y - pred) ** 2).sum() / max(((y - bias) ** 2).sum(), 1e-12))
        log.info(
            "fitted expert value function on %d states of %d episodes: R^2 %.3f",
            len(y),
            len(eps),
            r2,
        )
        return FittedValueFunction(mean, std, proj, phase, coef, bias, discount, r2)


def resolve_value_source(ds: OfflineDataset, source: str) -> str:
    """``auto`` -> ``sb3`` when a SAC critic lies beside the dataset (SAC-generated data,
    MetaWorld ``rollouts``), else the dataset's task's ``value_source`` (``fitted`` for
    MetaWorld, ``sb3`` elsewhere and for a dataset that names no known task)."""
    if source == "callable":
        raise PbrlError("regret teacher: value_source='callable' but no value_fn was given")
    if source == "auto" and expert_critic.has_expert_critic(ds.id):
        return "sb3"
    if source == "auto":
        spec = find_task(ds.task_id)
        return spec.value_source if spec is not None else "sb3"
    return source


def resolve_value_fn(
    ds: OfflineDataset, source: str, discount: float, expert_source: str = "expert"
) -> Callable[[np.ndarray], np.ndarray]:
    """The expert value function the regret teacher uses on ``ds``."""
    source = resolve_value_source(ds, source)
    if source == "fitted":
        return FittedValueFunction.fit(ds, discount, source=expert_source)
    vf: Any = expert_critic.load_expert_value_fn(ds.id)
    if isinstance(vf, tuple):
        vf = vf[0]
    if not callable(vf) and callable(getattr(vf, "value", None)):
        vf = vf.value
    if not callable(vf):
        raise PbrlError(f"regret teacher: load_expert_value_fn({ds.id!r}) gave no callable")
    return vf
