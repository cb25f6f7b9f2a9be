"""The B-Pref teacher family (Lee et al. 2021): presets ``oracle``, ``stoc``, ``mistake``,
``skip``, ``equal``, ``myopic`` and the Uni-RLHF scripted teacher ``unirlhf`` (tie when
``|R_a - R_b| <= 10``, else argmax); decisions in docs/oracles.md."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from pbrl.datasets.base import OfflineDataset
from pbrl.errors import PbrlError
from pbrl.teachers.pairs import (
    SegmentPairs,
    bt_label,
    check_bt_knobs,
    chunk_return,
    discount_weights,
    effective_beta,
    positive_scale,
    row_dot,
    row_sums,
    scale_pairs,
)
from pbrl.teachers.presets import teacher_spec


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
        check_bt_knobs(self)
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
        ret_a, ret_b = row_sums(ra), row_sums(rb)
        if self.gamma == 1.0:
            return ret_a, ret_b, ret_a, ret_b
        w = discount_weights(self.gamma, pairs.length)
        return ret_a, ret_b, row_dot(ra, w), row_dot(rb, w)

    # -- Oracle API --------------------------------------------------------------------------
    def label(self, pairs: SegmentPairs, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        skip, equal = self.resolved_thresholds()
        beta = effective_beta(self)
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
            _, _, d_a, d_b = self._scores(scale_pairs(ds, segment_length, with_obs=False))
            upd["score_scale"] = positive_scale(float(np.std(d_b - d_a)), ds.id)
        return replace(self, **upd)

    def spec(self) -> str:
        return teacher_spec(self)
