"""Simulated teachers (oracles) that answer segment-pair queries from ground truth.

Every teacher is a frozen dataclass with an explicit ``numpy.random.Generator`` passed to
:meth:`label`. ``prefer_b`` follows the project convention: 1.0 means the SECOND segment (b)
is preferred, 0.0 the first, 0.5 a tie; skipped queries get ``answered = False`` and
``prefer_b = NaN``. Decisions and the order of operations are written up in docs/oracles.md.

Families:

- :class:`BPrefTeacher` - the B-Pref teacher (Lee et al. 2021) with every knob; presets
  ``oracle``, ``stoc``, ``mistake``, ``skip``, ``equal``, ``myopic`` and the Uni-RLHF
  scripted teacher ``unirlhf`` (tie when ``|R_a - R_b| <= 10``, else argmax).
- :class:`LiReTeacher` - LiRE's scripted teacher (tie within ``0.5 x L``; noise turns a strict
  label into the flipped label or a tie, 50/50, and a tie into a random strict label).
- :class:`RegretTeacher` - prefers the larger sum of optimal advantages under an expert
  value function, ``sum_t gamma^t r_t + gamma^L V(s_L) - V(s_0)``, Bradley-Terry noise on top.

Composition without new classes: ``make_teacher("myopic+mistake")`` merges presets left to
right, ``make_teacher("oracle", gamma=0.9)`` or ``make_teacher("oracle(gamma=0.9)")`` sets
knobs; ``make_teacher("path/to/preset.json")`` loads a saved (e.g. human-fitted) teacher.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pbrl.datasets.base import OfflineDataset
from pbrl.errors import DataError, PbrlError, UnknownIdError

log = logging.getLogger(__name__)

# Random pairs used by ``prepare`` to measure the spread of segment scores (beta_units="std").
_SCALE_PAIRS = 4096
PRESET_FORMAT = "pbrl-teacher"


# ------------------------------------------------------------------------------------------
# What a teacher sees
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentPairs:
    """B segment pairs of equal length L, with ground truth (teachers only, never learners)."""

    rewards_a: np.ndarray  # (B, L) float64 raw rewards
    rewards_b: np.ndarray  # (B, L)
    obs_a: np.ndarray | None = None  # (B, L, D): s_0 .. s_{L-1}
    obs_b: np.ndarray | None = None
    act_a: np.ndarray | None = None  # (B, L, A)
    act_b: np.ndarray | None = None
    next_obs_last_a: np.ndarray | None = None  # (B, D) s_L, the state after the last step
    next_obs_last_b: np.ndarray | None = None
    terminal_a: np.ndarray | None = None  # (B, L) bool: the step ended the episode by termination
    terminal_b: np.ndarray | None = None

    def __post_init__(self) -> None:
        ra, rb = np.asarray(self.rewards_a), np.asarray(self.rewards_b)
        if ra.ndim != 2 or ra.shape != rb.shape:
            raise DataError(
                f"SegmentPairs: rewards_a {ra.shape} and rewards_b {rb.shape} must both be (B, L)"
            )

    @property
    def size(self) -> int:
        return int(self.rewards_a.shape[0])

    @property
    def length(self) -> int:
        return int(self.rewards_a.shape[1])

    @staticmethod
    def from_dataset(
        ds: OfflineDataset,
        refs_a: np.ndarray,
        refs_b: np.ndarray,
        *,
        with_obs: bool = True,
    ) -> SegmentPairs:
        """Pull both segments of each pair out of ``ds``.

        ``refs_*`` are ``(B, 3)`` int ``[episode, start, length]``, all of one length. Raises
        :class:`DataError` naming the dataset and the first bad row for out-of-range episodes,
        segments crossing an episode end, or unequal lengths. ``with_obs=False`` skips the
        observation/action copies (partial-return teachers never read them).
        """
        if ds.rewards is None:
            raise DataError(f"{ds.path or ds.id}: rewards were stripped; teachers need them")
        ra = _check_refs(ds, refs_a, "refs_a")
        rb = _check_refs(ds, refs_b, "refs_b")
        if ra.shape[0] != rb.shape[0]:
            raise DataError(
                f"{ds.id}: refs_a has {ra.shape[0]} segments but refs_b has {rb.shape[0]}"
            )
        if ra.shape[0] == 0:
            return SegmentPairs(np.zeros((0, 0)), np.zeros((0, 0)))
        lengths = np.concatenate([ra[:, 2], rb[:, 2]])
        if (lengths != lengths[0]).any():
            raise DataError(
                f"{ds.id}: segment lengths differ ({sorted(set(lengths.tolist()))[:5]}); "
                f"a batch of pairs needs one length"
            )
        L = int(lengths[0])
        steps = np.arange(L)
        ia = (ds.starts[ra[:, 0]] + ra[:, 1])[:, None] + steps
        ib = (ds.starts[rb[:, 0]] + rb[:, 1])[:, None] + steps
        rewards = ds.rewards
        kw: dict[str, Any] = {}
        if with_obs:
            kw = {
                "obs_a": ds.observations[ia],
                "obs_b": ds.observations[ib],
                "act_a": ds.actions[ia],
                "act_b": ds.actions[ib],
                "next_obs_last_a": ds.next_observations[ia[:, -1]],
                "next_obs_last_b": ds.next_observations[ib[:, -1]],
                "terminal_a": ds.terminals[ia].astype(bool),
                "terminal_b": ds.terminals[ib].astype(bool),
            }
        return SegmentPairs(rewards[ia].astype(np.float64), rewards[ib].astype(np.float64), **kw)


def _check_refs(ds: OfflineDataset, refs: np.ndarray, name: str) -> np.ndarray:
    """``refs`` as int64 after the dataset's boundary rule (:meth:`OfflineDataset.segment_index`)."""
    ds.segment_index(refs, name)
    return np.asarray(refs).astype(np.int64)


# ------------------------------------------------------------------------------------------
# Protocols
# ------------------------------------------------------------------------------------------
@runtime_checkable
class Oracle(Protocol):
    """A teacher: frozen, configured once, ``prepare``-d per dataset, then asked in batches."""

    name: str

    def label(self, pairs: SegmentPairs, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """-> (prefer_b (B,) float in {0, 0.5, 1} (NaN where skipped), answered (B,) bool)."""
        ...

    def prepare(self, ds: OfflineDataset, segment_length: int) -> Oracle:
        """A copy with dataset-dependent quantities resolved (thresholds, scales, V)."""
        ...

    def spec(self) -> str:
        """A one-line description, e.g. ``mistake(eps_mistake=0.1)``; re-parsable by make_teacher."""
        ...


@runtime_checkable
class ValueFunction(Protocol):
    """An expert state-value estimate: ``obs (N, D) -> (N,)``."""

    def __call__(self, obs: np.ndarray) -> np.ndarray: ...


# ------------------------------------------------------------------------------------------
# The shared B-Pref labeling core
# ------------------------------------------------------------------------------------------
def discount_weights(gamma: float, length: int) -> np.ndarray:
    """B-Pref's myopic weights: the LAST step has weight 1, the first ``gamma^(L-1)``."""
    return gamma ** np.arange(length - 1, -1, -1, dtype=np.float64)


def _row_sums(r: np.ndarray) -> np.ndarray:
    """(B, L) -> (B,): einsum is several times faster than ``sum(axis=1)`` for short rows."""
    return np.einsum("ij->i", r)


def _row_dot(r: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.einsum("ij,j->i", r, w)


def bt_label(
    ret_a: np.ndarray,
    ret_b: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    rng: np.random.Generator,
    *,
    beta: float,
    eps_mistake: float = 0.0,
    skip_threshold: float | None = None,
    equal_threshold: float | None = None,
    equal_inclusive: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """B-Pref's labeling steps on precomputed sums, in B-Pref's order.

    ``ret_*`` are the undiscounted returns (skip and equal tests), ``score_*`` what the label
    compares (the myopically discounted return, or a regret score). Steps:
    skip (answered iff ``max(R_a, R_b) > skip_threshold``) -> tie mask
    (``|R_a - R_b| < equal_threshold``, ``<=`` when ``equal_inclusive``) -> label
    (``beta = inf``: ``score_b > score_a``, an exact tie goes to a as in B-Pref;
    else Bernoulli(sigmoid(beta (score_b - score_a)))) -> mistake flips
    (``u < eps_mistake``) -> ties overwrite with 0.5. Random numbers are drawn for every
    row (skipped or not), so a row's label never depends on the other rows.
    """
    n = ret_a.shape[0]
    answered = np.ones(n, dtype=bool)
    if skip_threshold is not None:
        answered = np.maximum(ret_a, ret_b) > skip_threshold
    tie = None
    if equal_threshold is not None:
        gap = np.abs(ret_a - ret_b)
        tie = gap <= equal_threshold if equal_inclusive else gap < equal_threshold
    if math.isinf(beta):
        lab = score_b > score_a
    elif beta == 0.0:
        lab = rng.random(n) < 0.5
    else:
        # u < sigmoid(x)  <=>  u (1 + exp(-x)) < 1: one exp instead of a slower tanh/logistic
        with np.errstate(over="ignore"):
            lab = rng.random(n) * (1.0 + np.exp(-beta * (score_b - score_a))) < 1.0
    if eps_mistake > 0.0:
        lab ^= rng.random(n) < eps_mistake
    prefer_b = lab.astype(np.float64)
    if tie is not None:
        prefer_b[tie] = 0.5
    prefer_b[~answered] = np.nan
    return prefer_b, answered


def chunk_return(ds: OfflineDataset, segment_length: int) -> float:
    """Mean return of a segment-length chunk: mean episode return x L / mean episode length."""
    if ds.num_episodes == 0:
        raise DataError(f"{ds.id}: the dataset has no episodes")
    return float(ds.episode_returns().mean() * segment_length / ds.lengths.mean())


def _scale_pairs(ds: OfflineDataset, segment_length: int, with_obs: bool) -> SegmentPairs:
    from pbrl.queries import sample_segments

    # A fixed seed: the scale is a property of the dataset, not of the labeling seed.
    refs = sample_segments(ds, 2 * _SCALE_PAIRS, segment_length, np.random.default_rng(0))
    return SegmentPairs.from_dataset(
        ds, refs[:_SCALE_PAIRS], refs[_SCALE_PAIRS:], with_obs=with_obs
    )


def _positive_scale(std: float, what: str) -> float:
    if not np.isfinite(std) or std <= 0.0:
        log.warning("%s: score differences have no spread; beta_units='std' uses scale 1", what)
        return 1.0
    return float(std)


def _check_common(obj: Any) -> None:
    if not (obj.beta >= 0.0):  # also rejects NaN
        raise PbrlError(f"teacher '{obj.name}': beta must be >= 0 (inf allowed), got {obj.beta}")
    if obj.beta_units not in ("raw", "std"):
        raise PbrlError(
            f"teacher '{obj.name}': beta_units must be 'raw' or 'std', got {obj.beta_units!r}"
        )
    if not (0.0 <= obj.eps_mistake <= 1.0):
        raise PbrlError(
            f"teacher '{obj.name}': eps_mistake must be in [0, 1], got {obj.eps_mistake}"
        )


def _effective_beta(obj: Any) -> float:
    if obj.beta_units == "raw" or math.isinf(obj.beta) or obj.beta == 0.0:
        return float(obj.beta)
    if obj.score_scale is None:
        raise PbrlError(
            f"teacher '{obj.name}': beta_units='std' needs the dataset's score spread; call "
            f".prepare(dataset, segment_length) first or set score_scale"
        )
    return float(obj.beta) / float(obj.score_scale)


# ------------------------------------------------------------------------------------------
# B-Pref
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BPrefTeacher:
    """The B-Pref simulated teacher (Lee et al. 2021) with every knob.

    Order of operations (B-Pref ``reward_model.py get_label``): undiscounted sums R -> skip
    (``max(R_a, R_b) > delta_skip`` is answered) -> equal mask (``|R_a - R_b| < delta_equal``)
    -> myopic discounting ``D = sum_t gamma^(L-1-t) r_t`` and the label (``beta = inf``:
    argmax of D, exact ties to a; else Bernoulli(sigmoid(beta (D_b - D_a)))) -> mistake flips
    with probability ``eps_mistake`` -> ties overwrite with 0.5.

    Thresholds: with ``thresholds="relative"`` (B-Pref) ``delta_skip = eps_skip x C`` and
    ``delta_equal = eps_equal x |C|``, C the mean return of a segment-length chunk
    (:func:`chunk_return`, resolved by :meth:`prepare` into ``chunk_return``); with
    ``"absolute"`` ``eps_skip`` and ``eps_equal`` ARE the thresholds in return units. A knob
    at 0 is off. ``bpref_eps_squared_quirk`` reproduces B-Pref's code after its first feedback
    round, where eps multiplies the margin twice (``delta = eps^2 x C``).

    ``beta_units="std"`` divides beta by ``score_scale``, the std of ``D_b - D_a`` over random
    pairs of the dataset (resolved by :meth:`prepare`): beta is then per standard deviation
    of the return gap, so a teacher is equally noisy on every task.
    """

    name: str = "oracle"
    beta: float = math.inf
    gamma: float = 1.0
    eps_mistake: float = 0.0
    eps_skip: float = 0.0
    eps_equal: float = 0.0
    thresholds: str = "relative"
    bpref_eps_squared_quirk: bool = False
    equal_inclusive: bool = False
    beta_units: str = "raw"
    chunk_return: float | None = None
    score_scale: float | None = None

    def __post_init__(self) -> None:
        _check_common(self)
        if not (0.0 < self.gamma <= 1.0):
            raise PbrlError(f"teacher '{self.name}': gamma must be in (0, 1], got {self.gamma}")
        if self.thresholds not in ("relative", "absolute"):
            raise PbrlError(
                f"teacher '{self.name}': thresholds must be 'relative' or 'absolute', "
                f"got {self.thresholds!r}"
            )
        for k in ("eps_skip", "eps_equal"):
            if not (getattr(self, k) >= 0.0):
                raise PbrlError(f"teacher '{self.name}': {k} must be >= 0, got {getattr(self, k)}")

    # -- thresholds ------------------------------------------------------------------------
    def resolved_thresholds(self) -> tuple[float | None, float | None]:
        """(delta_skip, delta_equal) in return units; None where the knob is off."""
        if self.thresholds == "absolute":
            return (self.eps_skip or None, self.eps_equal or None)
        if self.eps_skip == 0.0 and self.eps_equal == 0.0:
            return None, None
        if self.chunk_return is None:
            raise PbrlError(
                f"teacher '{self.name}': relative thresholds need the dataset's chunk return; "
                f"call .prepare(dataset, segment_length) first or use thresholds='absolute'"
            )
        p = 2 if self.bpref_eps_squared_quirk else 1
        skip = self.eps_skip**p * self.chunk_return if self.eps_skip > 0 else None
        equal = self.eps_equal**p * abs(self.chunk_return) if self.eps_equal > 0 else None
        return skip, equal

    def _scores(self, pairs: SegmentPairs) -> tuple[np.ndarray, ...]:
        ra = np.asarray(pairs.rewards_a, dtype=np.float64)
        rb = np.asarray(pairs.rewards_b, dtype=np.float64)
        ret_a, ret_b = _row_sums(ra), _row_sums(rb)
        if self.gamma == 1.0:
            return ret_a, ret_b, ret_a, ret_b
        w = discount_weights(self.gamma, pairs.length)
        return ret_a, ret_b, _row_dot(ra, w), _row_dot(rb, w)

    # -- Oracle API --------------------------------------------------------------------------
    def label(self, pairs: SegmentPairs, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        skip, equal = self.resolved_thresholds()
        beta = _effective_beta(self)
        ret_a, ret_b, d_a, d_b = self._scores(pairs)
        return bt_label(
            ret_a,
            ret_b,
            d_a,
            d_b,
            rng,
            beta=beta,
            eps_mistake=self.eps_mistake,
            skip_threshold=skip,
            equal_threshold=equal,
            equal_inclusive=self.equal_inclusive,
        )

    def prepare(self, ds: OfflineDataset, segment_length: int) -> BPrefTeacher:
        upd: dict[str, Any] = {}
        if self.thresholds == "relative" and (self.eps_skip > 0 or self.eps_equal > 0):
            upd["chunk_return"] = chunk_return(ds, segment_length)
        if self.beta_units == "std" and 0.0 < self.beta < math.inf:
            _, _, d_a, d_b = self._scores(_scale_pairs(ds, segment_length, with_obs=False))
            upd["score_scale"] = _positive_scale(float(np.std(d_b - d_a)), ds.id)
        return replace(self, **upd)

    def spec(self) -> str:
        return _spec(self)


# ------------------------------------------------------------------------------------------
# LiRE
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LiReTeacher:
    """LiRE's scripted teacher (Choi et al. 2024, ``chwoong/LiRE`` ``obtain_labels``).

    Tie iff ``|R_a - R_b| <= threshold x L`` (undiscounted sums), else b iff ``R_a < R_b``.
    With probability ``noise`` a strict label becomes the flipped label or a tie (50/50) and a
    tie becomes a random strict label (50/50), as LiRE's code does. LiRE's defaults:
    ``threshold = 0.5``, ``noise = 0`` (``configs/reward.yaml``).
    """

    name: str = "lire"
    threshold: float = 0.5
    noise: float = 0.0

    def __post_init__(self) -> None:
        if not (self.threshold >= 0.0):
            raise PbrlError(f"teacher '{self.name}': threshold must be >= 0, got {self.threshold}")
        if not (0.0 <= self.noise <= 1.0):
            raise PbrlError(f"teacher '{self.name}': noise must be in [0, 1], got {self.noise}")

    def label(self, pairs: SegmentPairs, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        ret_a = _row_sums(np.asarray(pairs.rewards_a, dtype=np.float64))
        ret_b = _row_sums(np.asarray(pairs.rewards_b, dtype=np.float64))
        n = ret_a.shape[0]
        tie = np.abs(ret_a - ret_b) <= self.threshold * pairs.length
        strict = (ret_b > ret_a).astype(np.float64)
        prefer_b = np.where(tie, 0.5, strict)
        if self.noise > 0.0:
            hit = rng.random(n) < self.noise
            coin = rng.random(n) < 0.5
            noisy_strict = np.where(coin, 1.0 - strict, 0.5)  # flipped or tie
            noisy_tie = np.where(coin, 1.0, 0.0)  # b or a
            prefer_b = np.where(hit, np.where(tie, noisy_tie, noisy_strict), prefer_b)
        return prefer_b, np.ones(n, dtype=bool)

    def prepare(self, ds: OfflineDataset, segment_length: int) -> LiReTeacher:
        return self

    def spec(self) -> str:
        return _spec(self)


# ------------------------------------------------------------------------------------------
# Regret
# ------------------------------------------------------------------------------------------
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

    ``value_source``: ``"auto"`` (MetaWorld -> ``"fitted"``, otherwise ``"sb3"``), ``"sb3"``
    (the SAC critic saved beside a generated dataset, via
    ``pbrl.datasets.sb3_gen.load_expert_value_fn``), ``"fitted"`` (:class:`FittedValueFunction`
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
    value_fn: Callable[[np.ndarray], np.ndarray] | None = field(
        default=None, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        _check_common(self)
        if self.discount is not None and not (0.0 < self.discount <= 1.0):
            raise PbrlError(
                f"teacher '{self.name}': discount must be in (0, 1], got {self.discount}"
            )
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
            gamma = self.resolved_discount()
            L = r.shape[1]
            v0 = np.asarray(self.value_fn(np.asarray(obs[:, 0])), dtype=np.float64).reshape(-1)
            vl = np.asarray(self.value_fn(np.asarray(last)), dtype=np.float64).reshape(-1)
            term = getattr(pairs, f"terminal_{side}")
            if term is not None:
                vl = np.where(np.asarray(term)[:, -1], 0.0, vl)
            if self.undiscounted:
                s = _row_sums(r) + vl - v0
            else:
                w = gamma ** np.arange(L, dtype=np.float64)
                s = _row_dot(r, w) + gamma**L * vl - v0
            out.append(s)
        return out[0], out[1]

    def resolved_discount(self) -> float:
        """``discount``, else the value function's own ``gamma`` (the SAC critic's), else 0.99."""
        if self.discount is not None:
            return float(self.discount)
        return float(getattr(self.value_fn, "gamma", 0.99))

    def label(self, pairs: SegmentPairs, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        beta = _effective_beta(self)
        s_a, s_b = self.scores(pairs)
        return bt_label(s_a, s_b, s_a, s_b, rng, beta=beta, eps_mistake=self.eps_mistake)

    def prepare(self, ds: OfflineDataset, segment_length: int) -> RegretTeacher:
        t = self
        if t.value_fn is None:
            source = resolve_value_source(ds, t.value_source)
            vf = resolve_value_fn(ds, source, t.discount or 0.99, t.expert_source)
            t = replace(t, value_fn=vf, value_source=source)  # the spec names the source used
        t = replace(t, discount=t.resolved_discount())
        if t.beta_units == "std" and 0.0 < t.beta < math.inf:
            s_a, s_b = t.scores(_scale_pairs(ds, segment_length, with_obs=True))
            t = replace(t, score_scale=_positive_scale(float(np.std(s_b - s_a)), ds.id))
        return t

    def spec(self) -> str:
        return _spec(self)


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
    """``auto`` -> ``fitted`` for MetaWorld tasks, ``sb3`` otherwise."""
    if source == "callable":
        raise PbrlError("regret teacher: value_source='callable' but no value_fn was given")
    if source == "auto":
        return "fitted" if (ds.task_id or "").startswith("metaworld") else "sb3"
    return source


def resolve_value_fn(
    ds: OfflineDataset, source: str, discount: float, expert_source: str = "expert"
) -> Callable[[np.ndarray], np.ndarray]:
    """The expert value function the regret teacher uses on ``ds``."""
    source = resolve_value_source(ds, source)
    if source == "fitted":
        return FittedValueFunction.fit(ds, discount, source=expert_source)
    try:
        from pbrl.datasets.sb3_gen import load_expert_value_fn
    except ImportError as e:
        raise PbrlError(
            f"regret teacher: the SAC-critic loader pbrl.datasets.sb3_gen is unavailable ({e}); "
            f"use value_source='fitted' or pass value_fn"
        ) from e
    vf: Any = load_expert_value_fn(ds.id)
    if isinstance(vf, tuple):
        vf = vf[0]
    if not callable(vf) and callable(getattr(vf, "value", None)):
        vf = vf.value
    if not callable(vf):
        raise PbrlError(f"regret teacher: load_expert_value_fn({ds.id!r}) gave no callable")
    return vf


# ------------------------------------------------------------------------------------------
# Presets, composition, specs
# ------------------------------------------------------------------------------------------
_KINDS: dict[str, type] = {"bpref": BPrefTeacher, "lire": LiReTeacher, "regret": RegretTeacher}


@dataclass(frozen=True)
class TeacherPreset:
    """A named teacher: its class (``kind``), the knobs it sets and a one-line description."""

    kind: str
    knobs: Mapping[str, Any]
    doc: str


TEACHER_PRESETS: dict[str, TeacherPreset] = {
    "oracle": TeacherPreset("bpref", {}, "perfectly rational: argmax of the segment return"),
    "stoc": TeacherPreset(
        "bpref",
        {"beta": 5.0, "beta_units": "std"},
        "Bradley-Terry noise, beta = 5 per std of the dataset's return gaps",
    ),
    "mistake": TeacherPreset("bpref", {"eps_mistake": 0.1}, "flips 10% of the labels"),
    "skip": TeacherPreset(
        "bpref", {"eps_skip": 0.1}, "skips pairs whose better return is below 0.1 x chunk return"
    ),
    "equal": TeacherPreset(
        "bpref", {"eps_equal": 0.1}, "ties when the returns differ by < 0.1 x chunk return"
    ),
    "myopic": TeacherPreset("bpref", {"gamma": 0.9}, "weights step t by 0.9^(L-1-t)"),
    "unirlhf": TeacherPreset(
        "bpref",
        {"thresholds": "absolute", "eps_equal": 10.0, "equal_inclusive": True},
        "Uni-RLHF scripted teacher: tie when |R_a - R_b| <= 10, else argmax",
    ),
    "lire": TeacherPreset("lire", {}, "LiRE scripted teacher: tie when |R_a - R_b| <= 0.5 x L"),
    "regret": TeacherPreset(
        "regret", {}, "argmax of sum_t gamma^t r_t + gamma^L V(s_L) - V(s_0), expert V"
    ),
}


def list_teachers() -> list[str]:
    """Names of the built-in presets (sorted)."""
    return sorted(TEACHER_PRESETS)


def _fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls) if f.name != "name"}


def _coerce(cls: type, key: str, value: Any) -> Any:
    """Parse a knob given as text (CLI, spec strings) into the field's type."""
    f = _fields(cls)[key]
    t = str(f.type)
    if not isinstance(value, str):
        return value
    v = value.strip()
    if t.startswith("bool"):
        if v.lower() in ("true", "1", "yes"):
            return True
        if v.lower() in ("false", "0", "no"):
            return False
        raise PbrlError(f"teacher knob {key}: expected true/false, got {value!r}")
    if t.startswith("float"):
        if v.lower() == "none" and "None" in t:
            return None
        try:
            return float(v)
        except ValueError:
            raise PbrlError(f"teacher knob {key}: expected a number, got {value!r}") from None
    if t.startswith("str"):
        return v
    raise PbrlError(f"teacher knob {key} cannot be set from text")


def _parse_name(text: str) -> tuple[list[str], dict[str, str]]:
    """``"myopic+mistake(eps_mistake=0.2,gamma=0.8)"`` -> (["myopic", "mistake"], {...})."""
    text = text.strip()
    args: dict[str, str] = {}
    if "(" in text:
        if not text.endswith(")"):
            raise UnknownIdError(f"teacher '{text}': knobs go in one trailing '(key=value,...)'")
        text, inner = text[:-1].split("(", 1)
        for item in filter(None, (s.strip() for s in inner.split(","))):
            if "=" not in item:
                raise PbrlError(f"teacher knob '{item}': expected key=value")
            k, v = item.split("=", 1)
            args[k.strip()] = v.strip()
    parts = [p.strip() for p in text.split("+")]
    return parts, args


def _apply(cls: type, knobs: dict[str, Any], key: str, value: Any, source: str) -> None:
    fields = _fields(cls)
    if key not in fields:
        kind = next(k for k, c in _KINDS.items() if c is cls)
        raise PbrlError(
            f"teacher knob '{key}' (from {source}) does not apply to {kind} teachers; "
            f"their knobs: {', '.join(fields)}"
        )
    knobs[key] = _coerce(cls, key, value)


def make_teacher(name: str, **overrides: Any) -> Oracle:
    """A teacher from a preset name, a composition, a spec string or a saved preset file.

    - ``"mistake"``: a preset (:data:`TEACHER_PRESETS`);
    - ``"myopic+mistake"``: presets merged left to right (later knobs win); B-Pref knob presets
      (stoc, mistake, ...) also apply to the regret teacher where it has the knob;
    - ``"oracle(gamma=0.9,eps_mistake=0.1)"``: knobs in parentheses (what :meth:`spec` prints);
    - ``"path/to/preset.json"``: a preset saved by :func:`save_teacher` / ``pbrl oracles fit``;
    - ``**overrides`` set knobs last (``value_fn=...`` gives the regret teacher its V).

    Unknown names raise :class:`UnknownIdError` listing the presets.
    """
    text = str(name).strip()
    if text.endswith(".json") or (os.sep in text and Path(text).exists()):
        teacher: Any = load_teacher(text)
        knobs: dict[str, Any] = {}
        for k, v in overrides.items():
            if k == "value_fn" and isinstance(teacher, RegretTeacher):
                knobs[k] = v
            else:
                _apply(type(teacher), knobs, k, v, "overrides")
        return replace(teacher, **knobs) if knobs else teacher
    parts, args = _parse_name(text)
    unknown = [p for p in parts if p not in TEACHER_PRESETS]
    if unknown or not parts:
        raise UnknownIdError(
            f"unknown teacher '{unknown[0] if unknown else text}'; presets: "
            f"{', '.join(list_teachers())} (combine with '+', set knobs with "
            f"name(key=value,...), or give a saved preset .json)"
        )
    kinds = {TEACHER_PRESETS[p].kind for p in parts} - {"bpref"}
    if len(kinds) > 1:
        raise PbrlError(f"teacher '{text}': cannot combine {' and '.join(sorted(kinds))} teachers")
    cls = _KINDS[kinds.pop() if kinds else "bpref"]
    knobs: dict[str, Any] = {}
    for p in parts:
        for k, v in TEACHER_PRESETS[p].knobs.items():
            _apply(cls, knobs, k, v, f"preset '{p}'")
    for k, v in args.items():
        _apply(cls, knobs, k, v, f"'{text}'")
    for k, v in overrides.items():
        if k == "value_fn" and cls is RegretTeacher:
            knobs[k] = v
            continue
        _apply(cls, knobs, k, v, "overrides")
    return cls(name="+".join(parts), **knobs)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _spec(teacher: Any) -> str:
    """``name(knob=value,...)`` listing knobs that differ from the class defaults or that the
    named presets set: ``make_teacher(spec)`` rebuilds the same teacher."""
    cls = type(teacher)
    preset_keys: set[str] = set()
    for p in str(teacher.name).split("+"):
        if p in TEACHER_PRESETS:
            preset_keys |= set(TEACHER_PRESETS[p].knobs)
    items = []
    for k, f in _fields(cls).items():
        if k == "value_fn":
            continue
        v = getattr(teacher, k)
        if k in preset_keys or v != f.default:
            items.append(f"{k}={_fmt(v)}")
    return f"{teacher.name}({','.join(items)})" if items else str(teacher.name)


def teacher_knobs(teacher: Any) -> dict[str, Any]:
    """All knobs of a teacher as JSON-able values (``value_fn`` excluded)."""
    return {k: getattr(teacher, k) for k in _fields(type(teacher)) if k != "value_fn"}


def save_teacher(
    teacher: Any, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None
) -> None:
    """Write a teacher preset JSON (atomic) that :func:`make_teacher` loads back."""
    from pbrl.utils import write_json_atomic

    kind = next((k for k, c in _KINDS.items() if isinstance(teacher, c)), None)
    if kind is None:
        raise PbrlError(f"cannot save a teacher of type {type(teacher).__name__}")
    knobs = {
        k: ("inf" if isinstance(v, float) and math.isinf(v) else v)
        for k, v in teacher_knobs(teacher).items()
    }
    obj = {
        "format": PRESET_FORMAT,
        "version": 1,
        "kind": kind,
        "name": teacher.name,
        "knobs": knobs,
    }
    if extra:
        obj["fit"] = dict(extra)
    write_json_atomic(path, obj)


def load_teacher(path: str | os.PathLike[str]) -> Oracle:
    """Read a preset JSON written by :func:`save_teacher`; DataError naming the file."""
    p = Path(path)
    if not p.exists():
        raise UnknownIdError(f"{p}: no such teacher preset file")
    try:
        obj = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: not a readable JSON teacher preset ({e})") from e
    if not isinstance(obj, dict) or obj.get("format") != PRESET_FORMAT:
        raise DataError(f"{p}: field 'format' must be '{PRESET_FORMAT}'")
    kind = obj.get("kind")
    if kind not in _KINDS:
        raise DataError(f"{p}: field 'kind' must be one of {', '.join(_KINDS)}, got {kind!r}")
    cls = _KINDS[kind]
    knobs_in = obj.get("knobs")
    if not isinstance(knobs_in, dict):
        raise DataError(f"{p}: field 'knobs' must be an object")
    knobs: dict[str, Any] = {}
    for k, v in knobs_in.items():
        if k not in _fields(cls):
            raise DataError(f"{p}: unknown knob '{k}' for a {kind} teacher")
        knobs[k] = float(v) if v == "inf" else v
    try:
        return cls(name=str(obj.get("name", p.stem)), **knobs)
    except PbrlError as e:
        raise DataError(f"{p}: {e}") from e


# ------------------------------------------------------------------------------------------
# Fitting a teacher to a human
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitRecords:
    """Human answers on known segments: rewards left-padded with zeros to a common length
    (zeros in front leave the myopic sum unchanged, since the LAST step has weight 1)."""

    rewards_a: np.ndarray  # (M, L) float64
    rewards_b: np.ndarray  # (M, L)
    prefer_b: np.ndarray  # (M,) float in [0, 1], NaN where skipped

    @staticmethod
    def from_records(records: Iterable[Mapping[str, Any]] | Mapping[str, Any]) -> FitRecords:
        """From dicts ``{rewards_a, rewards_b, prefer_b}`` (prefer_b None/NaN = skipped) or
        one mapping of arrays with those keys."""
        if isinstance(records, Mapping):
            ra = [np.asarray(r, dtype=np.float64).reshape(-1) for r in records["rewards_a"]]
            rb = [np.asarray(r, dtype=np.float64).reshape(-1) for r in records["rewards_b"]]
            pb = [records["prefer_b"][i] for i in range(len(ra))]
        else:
            ra, rb, pb = [], [], []
            for i, rec in enumerate(records):
                try:
                    ra.append(np.asarray(rec["rewards_a"], dtype=np.float64).reshape(-1))
                    rb.append(np.asarray(rec["rewards_b"], dtype=np.float64).reshape(-1))
                    pb.append(rec.get("prefer_b"))
                except (KeyError, TypeError, ValueError) as e:
                    raise DataError(f"record {i}: needs numeric rewards_a, rewards_b ({e})") from e
        if len(ra) != len(rb) or len(ra) != len(pb):
            raise DataError("fit records: rewards_a, rewards_b and prefer_b differ in count")
        if not ra:
            raise DataError("fit records: no records")
        lens = [max(a.size, b.size) for a, b in zip(ra, rb, strict=True)]
        L = max(lens)
        A = np.zeros((len(ra), L))
        B = np.zeros((len(ra), L))
        for i, (a, b) in enumerate(zip(ra, rb, strict=True)):
            if a.size == 0 or b.size == 0:
                raise DataError(f"record {i}: empty segment")
            A[i, L - a.size :] = a
            B[i, L - b.size :] = b
        for name, arr in (("rewards_a", A), ("rewards_b", B)):
            if not np.all(np.isfinite(arr)):
                i = int(np.argwhere(~np.isfinite(arr))[0][0])
                raise DataError(f"record {i}: field '{name}' has NaN or inf")
        p = np.empty(len(pb), dtype=np.float64)
        for i, v in enumerate(pb):
            if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Real)):
                raise DataError(f"record {i}: prefer_b must be a number or null, got {v!r}")
            p[i] = np.nan if v is None else float(v)
        bad = np.flatnonzero(~np.isnan(p) & ((p < 0) | (p > 1)))
        if bad.size:
            raise DataError(f"record {int(bad[0])}: prefer_b must be in [0, 1], got {p[bad[0]]}")
        return FitRecords(A, B, p)


def _fit_threshold(x: np.ndarray, positive: np.ndarray) -> tuple[float, int]:
    """Threshold t minimising #(positive with x >= t) + #(negative with x < t), with t a
    midpoint between sorted values (0 when nothing below is positive). -> (t, mismatches)."""
    order = np.argsort(x, kind="stable")
    xs, ps = x[order], positive[order]
    # k = number of rows predicted positive (the k smallest x)
    neg_below = np.concatenate([[0], np.cumsum(~ps)])
    pos_above = ps.sum() - np.concatenate([[0], np.cumsum(ps)])
    cost = neg_below + pos_above
    # only cut between distinct values
    valid = np.ones(len(xs) + 1, dtype=bool)
    valid[1:-1] = xs[1:] > xs[:-1]
    cost = np.where(valid, cost, np.iinfo(np.int64).max)
    k = int(np.argmin(cost))
    if k == 0:
        return 0.0, int(cost[0])
    if k == len(xs):
        return float(xs[-1]) + 1e-9 + abs(float(xs[-1])) * 1e-9, int(cost[k])
    return float(0.5 * (xs[k - 1] + xs[k])), int(cost[k])


def _mixture_nll(params: Any, x: Any, t: Any) -> Any:
    """Negative log-likelihood of soft targets ``t`` under
    P(b) = (1 - eps) sigmoid(beta x) + eps (1 - sigmoid(beta x)),
    params = (log beta, logit(2 eps)); eps stays in (0, 0.5) (beyond, labels would invert)."""
    import torch

    beta = params[0].clamp(-30, 30).exp()
    eps = 0.5 * torch.sigmoid(params[1])
    s = torch.sigmoid(beta * x)
    p = ((1 - eps) * s + eps * (1 - s)).clamp(1e-12, 1 - 1e-12)
    return -(t * p.log() + (1 - t) * (1 - p).log()).sum()


def _lbfgs(x: Any, t: Any, start: tuple[float, float]) -> tuple[float, float, float]:
    import torch

    params = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [params], max_iter=100, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = _mixture_nll(params, x, t)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        val = float(_mixture_nll(params, x, t))
        beta = float(params[0].clamp(-30, 30).exp())
        eps = float(0.5 * torch.sigmoid(params[1]))
    return beta, eps, val


def _fit_beta_eps(
    dd: np.ndarray, y: np.ndarray, init_beta: float, warm: tuple[float, float] | None = None
) -> tuple[float, float, float]:
    """Maximum-likelihood (beta, eps) for targets ``y`` given score gaps ``dd``:
    -> (beta, eps, negative log-likelihood); torch L-BFGS from a default start and, when
    given, a warm start (a neighbouring gamma's solution)."""
    import torch

    x = torch.as_tensor(dd, dtype=torch.float64)
    t = torch.as_tensor(y, dtype=torch.float64)
    starts = [(math.log(init_beta), -3.0)]
    if warm is not None:
        b, e = warm
        starts.append((math.log(max(b, 1e-12)), math.log(max(2 * e, 1e-9) / max(1 - 2 * e, 1e-9))))
    fits = [_lbfgs(x, t, s) for s in starts]
    return min(fits, key=lambda f: f[2] if np.isfinite(f[2]) else math.inf)


def fit_teacher_details(
    records: Iterable[Mapping[str, Any]] | Mapping[str, Any] | FitRecords,
    *,
    name: str = "fitted",
    gamma_grid: np.ndarray | None = None,
) -> tuple[BPrefTeacher, dict[str, Any]]:
    """Maximum-likelihood B-Pref teacher for a set of human answers, plus fit diagnostics.

    - ``eps_equal`` (absolute): the tie threshold on ``|R_a - R_b|`` that misclassifies the
      fewest answers as tie / strict (the MLE when tie status is observed with small noise);
      ``eps_skip`` likewise on ``max(R_a, R_b)`` when some records were skipped.
    - ``beta``, ``eps_mistake``, ``gamma``: the likelihood of the strict (and soft) answers
      under ``P(b) = (1 - eps) sigmoid(beta dD) + eps (1 - sigmoid(beta dD))``, profiled over a
      gamma grid (0.5..1 by 0.05) then refined by golden-section search. A beta so large that
      ``beta x median |dD| > 100`` is reported as inf (a deterministic annotator).
    """
    fr = records if isinstance(records, FitRecords) else FitRecords.from_records(records)
    ra, rb, pb = fr.rewards_a, fr.rewards_b, fr.prefer_b
    answered = ~np.isnan(pb)
    ret_a, ret_b = ra.sum(axis=1), rb.sum(axis=1)
    info: dict[str, Any] = {"records": int(len(pb)), "answered": int(answered.sum())}

    eps_skip = 0.0
    if (~answered).any():
        # skipped iff max(R) <= delta: "positive" = skipped, sorted by max(R)
        eps_skip, miss = _fit_threshold(np.maximum(ret_a, ret_b), ~answered)
        info["skip_mismatches"] = miss
    gap = np.abs(ret_a - ret_b)[answered]
    p = pb[answered]
    ties = p == 0.5
    eps_equal, miss = _fit_threshold(gap, ties) if ties.any() else (0.0, 0)
    info["equal_mismatches"] = miss
    info["ties"] = int(ties.sum())

    use = ~ties
    if use.sum() < 10:
        raise DataError(f"fit records: only {int(use.sum())} non-tie answers; need at least 10")
    da, db, y = ra[answered][use], rb[answered][use], p[use]
    L = ra.shape[1]

    def profile(g: float, warm: tuple[float, float] | None = None) -> tuple[float, float, float]:
        dd = (db - da) @ discount_weights(g, L)
        scale = float(np.std(dd)) or 1.0
        return _fit_beta_eps(dd, y, 1.0 / scale, warm)

    # coarse gamma grid, then golden-section search inside the best cell's neighbours
    grid = np.round(np.arange(0.5, 1.0001, 0.05), 4) if gamma_grid is None else gamma_grid
    fits: list[tuple[float, float, float]] = []
    for g in grid:
        fits.append(profile(float(g), fits[-1][:2] if fits else None))
    i = int(np.argmin([f[2] for f in fits]))
    best_g, best = float(grid[i]), fits[i]
    phi = (math.sqrt(5) - 1) / 2
    a, b = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, len(grid) - 1)])
    c, d = b - phi * (b - a), a + phi * (b - a)
    fc, fd = profile(c, best[:2]), profile(d, best[:2])
    for _ in range(14):
        if fc[2] < fd[2]:
            b, d, fd = d, c, fc
            c = b - phi * (b - a)
            fc = profile(c, fd[:2])
        else:
            a, c, fc = c, d, fd
            d = a + phi * (b - a)
            fd = profile(d, fc[:2])
    for g, f in ((c, fc), (d, fd)):
        if f[2] < best[2]:
            best_g, best = g, f
    beta, eps_mistake, nll = best
    dd = (db - da) @ discount_weights(best_g, L)
    med = float(np.median(np.abs(dd))) if dd.size else 0.0
    if beta * med > 100.0:
        beta = math.inf
    info.update({"nll": nll, "nll_per_answer": nll / len(y), "strict_or_soft": int(len(y))})
    teacher = BPrefTeacher(
        name=name,
        beta=beta,
        gamma=min(best_g, 1.0),
        eps_mistake=eps_mistake,
        eps_skip=eps_skip,
        eps_equal=eps_equal,
        thresholds="absolute",
    )
    return teacher, info


def fit_teacher(
    records: Iterable[Mapping[str, Any]] | Mapping[str, Any] | FitRecords,
) -> BPrefTeacher:
    """The maximum-likelihood :class:`BPrefTeacher` for human answers on known segments
    (see :func:`fit_teacher_details`)."""
    return fit_teacher_details(records)[0]
