"""Core data types shared by datasets, oracles, learners, the runner and the UI.

Conventions (docs/preferences.md):

- ``prefer_b`` in [0, 1]: 1.0 means the *second* segment (b) is preferred, 0.0 the
  first (a), 0.5 a tie. Every importer converts to it.
- A segment is stored *by reference* into its dataset: (dataset id, episode, start,
  length). ``start`` counts steps from the episode's first step; a segment never crosses
  an episode end: ``0 <= start`` and ``start + length <= episode_length``.
- Skipped queries never enter a ``PreferenceBatch``; they only spend budget.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SegmentRef:
    """Where a segment lives: enough to pull its steps (and qpos/qvel for rendering)."""

    dataset_id: str
    episode: int
    start: int
    length: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentRef:
        return cls(str(d["dataset_id"]), int(d["episode"]), int(d["start"]), int(d["length"]))


@dataclass(frozen=True)
class Segment:
    """A materialised segment.

    ``reward`` is the ground truth, for oracles and diagnostics only: it never reaches a
    preference learner (the runner strips it; tests check provenance).
    """

    obs: np.ndarray  # (L, obs_dim)
    act: np.ndarray  # (L, act_dim)
    reward: np.ndarray  # (L,)
    ref: SegmentRef


@dataclass(frozen=True)
class Feedback:
    """One answered (or skipped) query, persisted by oracles and the labeling UI alike.

    ``labeler`` is ``teacher:<spec>`` for synthetic teachers (e.g. ``teacher:stoc(beta=1)``)
    or ``human:<annotator>``. ``time`` is a unix timestamp; ``latency_s`` the answer's
    latency for humans (None for teachers).
    """

    query_id: str
    a: SegmentRef
    b: SegmentRef
    prefer_b: float | None  # None iff skipped
    skipped: bool
    labeler: str
    time: float = field(default_factory=time.time)
    latency_s: float | None = None

    def __post_init__(self) -> None:
        if self.skipped and self.prefer_b is not None:
            raise ValueError("Feedback: a skipped query has no prefer_b")
        if not self.skipped:
            if self.prefer_b is None or not (0.0 <= float(self.prefer_b) <= 1.0):
                raise ValueError(f"Feedback: prefer_b must be in [0, 1], got {self.prefer_b!r}")

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["a"] = self.a.to_dict()
        d["b"] = self.b.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Feedback:
        pb = d.get("prefer_b")
        return cls(
            query_id=str(d["query_id"]),
            a=SegmentRef.from_dict(d["a"]),
            b=SegmentRef.from_dict(d["b"]),
            prefer_b=None if pb is None else float(pb),
            skipped=bool(d["skipped"]),
            labeler=str(d["labeler"]),
            time=float(d.get("time", 0.0)),
            latency_s=None if d.get("latency_s") is None else float(d["latency_s"]),
        )


PAIR_FIELDS = ("obs_a", "act_a", "mask_a", "obs_b", "act_b", "mask_b", "prefer_b")
"""The fields of a :class:`PreferenceBatch` that learners without s' read: both segments'
observations, actions and masks, and the labels (:meth:`PreferenceBatch.rows`)."""


@dataclass(frozen=True)
class PreferenceBatch:
    """A batch of labelled segment pairs as torch tensors on one device.

    Masks are 1.0 on real steps and 0.0 on padding (segments of unequal length) so that
    learners sum over real steps only. ``next_obs_*`` and ``terminal_*`` serve learners
    that need s' (IPL's implicit reward, regret's boundary values).
    """

    obs_a: Any  # torch.Tensor (B, L, obs_dim)
    act_a: Any  # (B, L, act_dim)
    obs_b: Any  # (B, L, obs_dim)
    act_b: Any  # (B, L, act_dim)
    prefer_b: Any  # (B,) float in [0, 1]
    mask_a: Any  # (B, L) float
    mask_b: Any  # (B, L) float
    next_obs_a: Any  # (B, L, obs_dim)
    next_obs_b: Any  # (B, L, obs_dim)
    terminal_a: Any  # (B, L) float, 1.0 where the step ended the episode by termination
    terminal_b: Any  # (B, L) float

    @property
    def size(self) -> int:
        return int(self.prefer_b.shape[0])

    def to(self, device: Any) -> PreferenceBatch:
        return PreferenceBatch(**{k: v.to(device) for k, v in self.__dict__.items()})

    def index(self, idx: Any) -> PreferenceBatch:
        """Rows ``idx`` (a LongTensor on the same device) of every field."""
        return PreferenceBatch(**{k: v[idx] for k, v in self.__dict__.items()})

    def rows(self, idx: Any, fields: tuple[str, ...]) -> dict[str, Any]:
        """Rows ``idx`` of the named fields only, by name (what a learner reads of a batch)."""
        return {f: getattr(self, f)[idx] for f in fields}


def as_float32(x: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.float32))
