"""What a teacher is: the :class:`Oracle` protocol every teacher family implements, and the
:class:`ValueFunction` protocol of the expert value estimates the regret teacher uses.

``prefer_b`` follows the project convention: 1.0 means the SECOND segment (b) is preferred,
0.0 the first, 0.5 a tie; skipped queries get ``answered = False`` and ``prefer_b = NaN``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from pbrl.datasets.base import OfflineDataset
from pbrl.teachers.pairs import SegmentPairs


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
