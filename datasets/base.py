"""The in-memory offline dataset every learner, oracle and the UI read.

Steps of all episodes are concatenated; episode ``e`` occupies rows
``starts[e] : starts[e] + lengths[e]``. Observations are per step (the Minari T+1-th
observation of an episode is ``next_observations`` of its last step).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pbrl.errors import DataError, PbrlError
from pbrl.types import Segment, SegmentRef

#: dtype kinds of a field that holds real numbers (observations, actions, rewards, qpos, qvel).
REAL_KINDS = "f"
#: dtype kinds of a flag field (terminations, truncations, success); values must be 0 or 1.
FLAG_KINDS = "biuf"


def check_field(
    arr: Any,
    name: str,
    where: str,
    *,
    flag: bool = False,
    rows: int | None = None,
    ndim: int | tuple[int, ...] | None = None,
) -> np.ndarray:
    """One field of a dataset, checked: the array, or DataError naming ``where`` and the field.

    Real fields (``flag=False``) must have a floating-point dtype (float16/32/64) and finite
    values: integers, booleans, complex numbers, strings and objects are refused, since
    every field pbrl reads this way is a continuous quantity and an integer array there
    means the file was written wrongly. Flag fields may be boolean, integer or floating
    point, with every value 0 or 1. Real values must also fit float32 (learners read them
    as float32: a larger value would become inf). ``rows`` is the expected first dimension and ``ndim``
    the allowed number(s) of dimensions. Every loader and the writer use this one rule.
    """
    try:
        a = np.asarray(arr)
    except (ValueError, TypeError) as e:  # ragged nested sequences
        raise DataError(f"{where}: field '{name}' is not a rectangular array ({e})") from None
    if a.ndim == 0:
        raise DataError(f"{where}: field '{name}' is a scalar, expected an array")
    if rows is not None and a.shape[0] != rows:
        raise DataError(f"{where}: field '{name}' has {a.shape[0]} rows, expected {rows}")
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and a.ndim not in allowed:
        want = " or ".join(str(d) for d in allowed)
        raise DataError(
            f"{where}: field '{name}' has shape {a.shape}, expected {want} dimension(s)"
        )
    kinds = FLAG_KINDS if flag else REAL_KINDS
    if a.dtype.kind not in kinds:
        want = "booleans (or numbers 0/1)" if flag else "floating-point numbers"
        raise DataError(f"{where}: field '{name}' has dtype {a.dtype}, expected {want}")
    if flag:
        if a.dtype.kind != "b":
            bad = np.flatnonzero(~np.isin(a.reshape(-1), (0, 1)))
            if bad.size:
                row = int(np.unravel_index(bad[0], a.shape)[0])
                raise DataError(
                    f"{where}: field '{name}' has a value other than 0/1 (row {row}: "
                    f"{a.reshape(-1)[bad[0]].item()!r})"
                )
        return a.astype(bool, copy=False)
    finite = np.isfinite(a)
    if not finite.all():
        row = int(np.argwhere(~finite)[0][0])
        raise DataError(f"{where}: field '{name}' has a NaN or inf value (row {row})")
    big = float(np.finfo(np.float32).max)
    if a.dtype.itemsize > 4 and a.size and float(np.abs(a).max()) > big:
        row = int(np.argwhere(np.abs(a) > big)[0][0])
        raise DataError(f"{where}: field '{name}' has a value beyond float32's range (row {row})")
    return a


@dataclass(frozen=True)
class OfflineDataset:
    """A whole offline dataset, flattened over episodes.

    ``rewards`` is the raw ground-truth reward as stored (None once stripped for a
    preference learner: see :meth:`without_rewards`). ``episode_info[e]`` holds per-episode
    metadata: ``source`` (generator mixture component), ``seed``, ``rand_vec`` (MetaWorld,
    needed to re-render), ``success``.
    """

    id: str
    task_id: str | None
    observations: np.ndarray  # (N, obs_dim) float32
    actions: np.ndarray  # (N, act_dim) float32
    rewards: np.ndarray | None  # (N,) float32, raw scale; None when stripped
    next_observations: np.ndarray  # (N, obs_dim) float32
    terminals: np.ndarray  # (N,) bool: the step ended the episode by termination
    timeouts: np.ndarray  # (N,) bool: the step ended the episode by truncation
    starts: np.ndarray  # (E,) int64, first row of each episode
    lengths: np.ndarray  # (E,) int64, steps in each episode
    qpos: np.ndarray | None = None  # (N, nq) physics state before each step
    qvel: np.ndarray | None = None  # (N, nv)
    successes: np.ndarray | None = None  # (N,) bool, per-step success flag (MetaWorld)
    episode_info: tuple[dict[str, Any], ...] = ()
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    card: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    def __post_init__(self) -> None:
        n = self.observations.shape[0]
        checks = {
            "actions": self.actions,
            "next_observations": self.next_observations,
            "terminals": self.terminals,
            "timeouts": self.timeouts,
        }
        if self.rewards is not None:
            checks["rewards"] = self.rewards
        for name in ("qpos", "qvel", "successes"):
            if getattr(self, name) is not None:
                checks[name] = getattr(self, name)
        where = self.path or self.id
        for name, arr in checks.items():
            if arr.shape[0] != n:
                raise DataError(
                    f"{where}: field '{name}' has {arr.shape[0]} rows but 'observations' has {n}"
                )
        if self.starts.shape != self.lengths.shape:
            raise DataError(f"{where}: episode starts and lengths differ in count")
        if int(self.lengths.sum()) != n:
            raise DataError(
                f"{where}: episode lengths sum to {int(self.lengths.sum())}, expected {n} steps"
            )

    # ---- shape facts -------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return int(self.observations.shape[0])

    @property
    def num_episodes(self) -> int:
        return int(self.starts.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    # ---- episodes and segments ---------------------------------------------------------
    def episode_rows(self, episode: int) -> slice:
        s = int(self.starts[episode])
        return slice(s, s + int(self.lengths[episode]))

    def episode_returns(self) -> np.ndarray:
        """(E,) undiscounted return of each episode (needs rewards)."""
        if self.rewards is None:
            raise DataError(f"{self.path or self.id}: this dataset has no rewards")
        return (
            np.add.reduceat(self.rewards.astype(np.float64), self.starts)
            if self.num_episodes
            else np.zeros(0)
        )

    def segment_index(
        self, refs: Any, what: str = "segments", *, where: str | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Flat rows ``(M, Lmax)`` of segments ``refs`` ``(M, 3)`` = [episode, start, length],
        and the mask ``(M, Lmax)`` of real steps (padding rows repeat the segment's first row).

        The one place segment references become dataset rows. The boundary rule: ``refs`` is
        an integer ``(M, 3)`` array, ``0 <= episode < num_episodes``, ``0 <= start``,
        ``length >= 1`` and ``start + length <= episode length``; a :class:`DataError` names
        ``where`` (default: the dataset), ``what`` and the first query that breaks it.
        """
        where = where or self.path or self.id
        r = np.asarray(refs)
        if r.ndim != 2 or r.shape[1] != 3:
            raise DataError(
                f"{where}: {what} must be (B, 3) [episode, start, length], got shape {r.shape}"
            )
        if r.size and not np.issubdtype(r.dtype, np.integer):
            if not np.issubdtype(r.dtype, np.number) or not np.array_equal(r, np.round(r)):
                raise DataError(f"{where}: {what} hold non-integer values")
        r = r.astype(np.int64)
        ep, start, length = r[:, 0], r[:, 1], r[:, 2]
        bad_ep = (ep < 0) | (ep >= self.num_episodes)
        if bad_ep.any():
            i = int(np.flatnonzero(bad_ep)[0])
            raise DataError(
                f"{where}: {what} query {i}: episode {int(ep[i])} out of range "
                f"(dataset has {self.num_episodes} episodes)"
            )
        ep_len = self.lengths[ep]
        bad = (start < 0) | (length <= 0) | (start + length > ep_len)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{where}: {what} query {i}: segment start={int(start[i])} "
                f"length={int(length[i])} crosses the end of episode {int(ep[i])} "
                f"(length {int(ep_len[i])})"
            )
        width = int(length.max()) if r.shape[0] else 0
        steps = np.arange(width, dtype=np.int64)
        mask = steps[None, :] < length[:, None]
        rows = self.starts[ep][:, None] + start[:, None] + np.where(mask, steps[None, :], 0)
        return rows, mask

    def segment_rows(self, ref: SegmentRef) -> slice:
        """Rows of one segment (:meth:`segment_index` for one reference)."""
        rows, _ = self.segment_index(np.array([[ref.episode, ref.start, ref.length]]))
        return slice(int(rows[0, 0]), int(rows[0, 0]) + ref.length)

    def segment(self, ref: SegmentRef) -> Segment:
        rows = self.segment_rows(ref)
        if self.rewards is None:
            raise DataError(f"{self.id}: rewards were stripped; segments need ground truth here")
        return Segment(self.observations[rows], self.actions[rows], self.rewards[rows], ref)

    def without_rewards(self) -> OfflineDataset:
        """A copy with ground-truth rewards removed, for preference learners."""
        return replace(self, rewards=None)

    def with_rewards(self, rewards: np.ndarray) -> OfflineDataset:
        return replace(self, rewards=np.asarray(rewards, dtype=np.float32))


@dataclass
class EpisodeData:
    """One episode as generators produce it and the Minari writer stores it.

    Minari convention: observations and per-step infos (qpos, qvel, successes) have T+1
    rows (the reset observation included); actions, rewards and flags have T rows.
    ``info`` is per-episode metadata (``source``, ``seed``, ``rand_vec``, ...), JSON-able.
    """

    observations: np.ndarray  # (T+1, obs_dim)
    actions: np.ndarray  # (T, act_dim) float32, inside the action space
    rewards: np.ndarray  # (T,) raw reward
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool
    qpos: np.ndarray | None = None  # (T+1, nq)
    qvel: np.ndarray | None = None  # (T+1, nv)
    successes: np.ndarray | None = None  # (T+1,) bool (first row False: the reset state)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])


def sample_segments(
    ds: OfflineDataset,
    n: int,
    length: int,
    rng: np.random.Generator,
    *,
    episodes: np.ndarray | None = None,
) -> np.ndarray:
    """``(n, 3)`` int64 ``[episode, start, length]``: windows drawn uniformly (with
    replacement) among all length-``length`` windows inside the eligible episodes.

    ``episodes`` restricts the draw to those episode indices. Raises :class:`DataError` when
    no eligible episode has at least ``length`` steps.
    """
    if length <= 0:
        raise PbrlError(f"segment length must be positive, got {length}")
    if n < 0:
        raise PbrlError(f"number of segments must be >= 0, got {n}")
    eps = (
        np.arange(ds.num_episodes, dtype=np.int64)
        if episodes is None
        else np.asarray(episodes, dtype=np.int64).reshape(-1)
    )
    if eps.size and (eps.min() < 0 or eps.max() >= ds.num_episodes):
        raise DataError(
            f"{ds.id}: episode index out of range in 'episodes' (dataset has {ds.num_episodes})"
        )
    windows = np.maximum(ds.lengths[eps].astype(np.int64) - length + 1, 0)
    total = int(windows.sum())
    if total == 0:
        longest = int(ds.lengths[eps].max()) if eps.size else 0
        raise DataError(
            f"{ds.id}: no episode has at least {length} steps (longest: {longest}); "
            f"use a shorter segment length"
        )
    cum = np.cumsum(windows)
    k = rng.integers(0, total, size=n)
    pos = np.searchsorted(cum, k, side="right")
    start = k - (cum[pos] - windows[pos])
    out = np.empty((n, 3), dtype=np.int64)
    out[:, 0] = eps[pos]
    out[:, 1] = start
    out[:, 2] = length
    return out
