"""What a teacher sees and the labelling core every Bradley-Terry teacher shares.

:class:`SegmentPairs` holds B segment pairs of one length with their ground truth (rewards,
and for the regret teacher observations and terminals), pulled out of a dataset by
:meth:`SegmentPairs.from_dataset`. :func:`bt_label` is B-Pref's labelling order (skip, tie,
label, mistake) on precomputed sums; :func:`discount_weights`, :func:`row_sums` and
:func:`row_dot` compute those sums. :func:`chunk_return`, :func:`scale_pairs`,
:func:`positive_scale` and :func:`effective_beta` resolve the dataset-dependent scales of
relative thresholds and of ``beta_units="std"``. Decisions are written up in docs/oracles.md.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pbrl.datasets.base import OfflineDataset, sample_segments
from pbrl.errors import DataError, PbrlError

log = logging.getLogger(__name__)

# Random pairs used by ``prepare`` to measure the spread of segment scores (beta_units="std").
_SCALE_PAIRS = 4096


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


def discount_weights(gamma: float, length: int) -> np.ndarray:
    """B-Pref's myopic weights: the LAST step has weight 1, the first ``gamma^(L-1)``."""
    return gamma ** np.arange(length - 1, -1, -1, dtype=np.float64)


def row_sums(r: np.ndarray) -> np.ndarray:
    """(B, L) -> (B,): einsum is several times faster than ``sum(axis=1)`` for short rows."""
    return np.einsum("ij->i", r)


def row_dot(r: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B, L) x (L,) -> (B,): weighted row sums."""
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


def scale_pairs(ds: OfflineDataset, segment_length: int, with_obs: bool) -> SegmentPairs:
    """4096 random pairs of ``ds`` (fixed seed) on which ``prepare`` measures the spread of
    score gaps for ``beta_units="std"``."""
    # A fixed seed: the scale is a property of the dataset, not of the labeling seed.
    refs = sample_segments(ds, 2 * _SCALE_PAIRS, segment_length, np.random.default_rng(0))
    return SegmentPairs.from_dataset(
        ds, refs[:_SCALE_PAIRS], refs[_SCALE_PAIRS:], with_obs=with_obs
    )


def positive_scale(std: float, what: str) -> float:
    """``std`` as a scale; 1 (with a warning) when it is zero or not finite."""
    if not np.isfinite(std) or std <= 0.0:
        log.warning("%s: score differences have no spread; beta_units='std' uses scale 1", what)
        return 1.0
    return float(std)


def check_bt_knobs(obj: Any) -> None:
    """Check the Bradley-Terry knobs a teacher shares: ``beta``, ``beta_units``, ``eps_mistake``."""
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


def effective_beta(obj: Any) -> float:
    """``beta`` in score units: divided by ``score_scale`` when ``beta_units="std"``."""
    if obj.beta_units == "raw" or math.isinf(obj.beta) or obj.beta == 0.0:
        return float(obj.beta)
    if obj.score_scale is None:
        raise PbrlError(
            f"teacher '{obj.name}': beta_units='std' needs the dataset's score spread; call "
            f".prepare(dataset, segment_length) first or set score_scale"
        )
    return float(obj.beta) / float(obj.score_scale)
