"""LiRE's scripted teacher (Choi et al. 2024): preset ``lire``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pbrl.datasets.base import OfflineDataset
from pbrl.errors import PbrlError
from pbrl.teachers.pairs import SegmentPairs, row_sums
from pbrl.teachers.presets import teacher_spec


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
        ret_a = row_sums(np.asarray(pairs.rewards_a, dtype=np.float64))
        ret_b = row_sums(np.asarray(pairs.rewards_b, dtype=np.float64))
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
        return teacher_spec(self)
