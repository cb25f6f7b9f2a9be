"""The preference data type: labelled segment pairs stored by reference into an offline dataset.

A :class:`PreferenceData` holds ``M`` queries. Each query compares segment ``a`` with segment
``b``; both are stored *by reference* (``[episode, start, length]`` rows of ``refs_a`` and
``refs_b``) into the dataset named by ``dataset_id``, never as copies of the steps. The answer
is ``prefer_b`` in [0, 1] (1.0: the second segment ``b`` is preferred, 0.5: a tie) or a skip
(``skipped`` True, ``prefer_b`` NaN). One :class:`~pbrl.types.Feedback` record per query keeps
who answered, when and how fast. :meth:`PreferenceData.to_batch` turns the answered pairs into
the tensors learners train on (:class:`~pbrl.types.PreferenceBatch`). Files: :mod:`pbrl.prefs.io`.

Two special cases:

- *unresolved* data (``meta["unresolved"]``): imported human labels whose published indices
  point into D4RL's ``qlearning_dataset`` rows of a dataset that is not at hand. Their refs are
  ``[-1, k, L]`` with ``k`` the published index; :func:`pbrl.prefs.formats.resolve_qlearning_refs`
  maps them onto a loaded dataset.
- *inline* data: the importer built an :class:`~pbrl.datasets.base.OfflineDataset` from the
  segments in the imported file (each segment one episode); it travels in ``inline`` and in the
  file, and :meth:`PreferenceData.to_batch` uses it when no dataset is passed.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.datasets.base import OfflineDataset
from pbrl.datasets.registry import load_dataset
from pbrl.errors import DataError, PbrlError
from pbrl.types import Feedback, PreferenceBatch, SegmentRef

log = logging.getLogger(__name__)

# Keys of the inline dataset inside a preference file.
INLINE_ARRAYS = (
    "observations",
    "actions",
    "rewards",
    "next_observations",
    "terminals",
    "timeouts",
    "starts",
    "lengths",
)


@dataclass(frozen=True, eq=False)
class PreferenceData:
    """``M`` labelled (or skipped) segment pairs, by reference into one dataset.

    Compared by identity (``eq=False``): the fields are arrays; compare them explicitly.
    """

    dataset_id: str
    refs_a: np.ndarray  # (M, 3) int64 [episode, start, length]
    refs_b: np.ndarray  # (M, 3) int64
    prefer_b: np.ndarray  # (M,) float32 in [0, 1]; NaN where skipped
    skipped: np.ndarray  # (M,) bool
    feedback: tuple[Feedback, ...]  # one per query, same order as the arrays
    meta: dict[str, Any] = field(default_factory=dict)
    # Segments carried by the file itself (CPL / imitation imports); None otherwise.
    inline: OfflineDataset | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        where = self.meta.get("path") or self.dataset_id or "preference data"
        validate_arrays(str(where), self.refs_a, self.refs_b, self.prefer_b, self.skipped)
        if len(self.feedback) != self.prefer_b.shape[0]:
            raise DataError(
                f"{where}: field 'feedback' has {len(self.feedback)} records but there are "
                f"{self.prefer_b.shape[0]} queries"
            )

    # ---- facts -----------------------------------------------------------------------------
    @property
    def num_queries(self) -> int:
        return int(self.prefer_b.shape[0])

    @property
    def num_answered(self) -> int:
        return int((~self.skipped).sum())

    @property
    def resolved(self) -> bool:
        """False while refs still hold published D4RL qlearning indices (episode -1)."""
        return not bool(self.meta.get("unresolved", False))

    @property
    def segment_lengths(self) -> np.ndarray:
        """(M, 2) lengths of segment a and b."""
        return np.stack([self.refs_a[:, 2], self.refs_b[:, 2]], axis=1)

    def dataset(self) -> OfflineDataset:
        """The inline dataset, or ``dataset_id`` (else ``meta["dataset_path"]``) via the registry."""
        if self.inline is not None:
            return self.inline
        try:
            return load_dataset(self.dataset_id)
        except PbrlError:
            # Labelled from a file or folder: its id may not resolve, its path still does.
            path = self.meta.get("dataset_path")
            if path and Path(path).exists():
                return load_dataset(path)
            raise

    # ---- views -----------------------------------------------------------------------------
    def subset(self, idx: np.ndarray) -> PreferenceData:
        """Queries ``idx`` (an index or boolean array), in that order."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return replace(
            self,
            refs_a=self.refs_a[idx],
            refs_b=self.refs_b[idx],
            prefer_b=self.prefer_b[idx],
            skipped=self.skipped[idx],
            feedback=tuple(self.feedback[int(i)] for i in idx),
            meta=dict(self.meta),
        )

    def answered(self) -> PreferenceData:
        """The answered queries only (skips removed)."""
        return self.subset(~self.skipped)

    def split(self, frac: float, rng: np.random.Generator) -> tuple[PreferenceData, PreferenceData]:
        """A random (train, held-out) split: ``round(frac * M)`` queries go to train."""
        if not 0.0 <= frac <= 1.0:
            raise PbrlError(f"split: frac must be in [0, 1], got {frac}")
        perm = rng.permutation(self.num_queries)
        n_train = int(round(frac * self.num_queries))
        return self.subset(np.sort(perm[:n_train])), self.subset(np.sort(perm[n_train:]))

    # ---- tensors ---------------------------------------------------------------------------
    def to_batch(self, ds: OfflineDataset | None = None, device: Any = "cpu") -> PreferenceBatch:
        """All answered pairs as one :class:`PreferenceBatch` on ``device``.

        Observations, actions, next observations and termination flags come from ``ds`` (or
        the inline dataset); ground-truth rewards are never read. Segments of unequal length
        are right-padded with zeros and masked out (mask 0.0).
        """
        import torch

        if not self.resolved:
            raise DataError(
                f"{self.meta.get('path') or self.dataset_id}: the segments are unresolved D4RL "
                "qlearning indices; import again with --dataset (or call "
                "pbrl.prefs.resolve_qlearning_refs) before training"
            )
        ds = ds if ds is not None else self.inline
        if ds is None:
            raise PbrlError(
                f"to_batch: preference data for '{self.dataset_id}' needs its dataset "
                "(pass ds=..., e.g. load_dataset(data.dataset_id))"
            )
        if self.dataset_id and ds.id and ds.id != self.dataset_id:
            log.warning(
                "preference data was labelled on '%s' but is read against dataset '%s'",
                self.dataset_id,
                ds.id,
            )
        ans = self.answered()
        obs_a, act_a, nobs_a, term_a, mask_a = _gather(ds, ans.refs_a, "a")
        obs_b, act_b, nobs_b, term_b, mask_b = _gather(ds, ans.refs_b, "b")
        width = max(obs_a.shape[1], obs_b.shape[1])
        parts = [
            _pad(x, width)
            for x in (obs_a, act_a, nobs_a, term_a, mask_a, obs_b, act_b, nobs_b, term_b, mask_b)
        ]
        t = [torch.as_tensor(p, device=device) for p in parts]
        return PreferenceBatch(
            obs_a=t[0],
            act_a=t[1],
            next_obs_a=t[2],
            terminal_a=t[3],
            mask_a=t[4],
            obs_b=t[5],
            act_b=t[6],
            next_obs_b=t[7],
            terminal_b=t[8],
            mask_b=t[9],
            prefer_b=torch.as_tensor(ans.prefer_b.astype(np.float32), device=device),
        )


def _pad(x: np.ndarray, width: int) -> np.ndarray:
    if x.shape[1] == width:
        return x
    pad = [(0, 0)] * x.ndim
    pad[1] = (0, width - x.shape[1])
    return np.pad(x, pad)


def _gather(
    ds: OfflineDataset, refs: np.ndarray, side: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rows, mask = ds.segment_index(refs, f"segment {side} of")
    m = mask.astype(np.float32)
    obs = ds.observations[rows].astype(np.float32) * m[..., None]
    act = ds.actions[rows].astype(np.float32) * m[..., None]
    nobs = ds.next_observations[rows].astype(np.float32) * m[..., None]
    term = ds.terminals[rows].astype(np.float32) * m
    return obs, act, nobs, term, m


def validate_arrays(where: str, refs_a: Any, refs_b: Any, prefer_b: Any, skipped: Any) -> None:
    """Shapes, dtypes, value ranges and skip consistency; DataError naming the field."""
    for name, arr in (("refs_a", refs_a), ("refs_b", refs_b)):
        if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.shape[1] != 3:
            raise DataError(
                f"{where}: field '{name}' must be an (M, 3) array [episode, start, length], "
                f"got shape {getattr(arr, 'shape', None)}"
            )
        if not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"{where}: field '{name}' must hold integers, got {arr.dtype}")
    for name, arr in (("prefer_b", prefer_b), ("skipped", skipped)):
        if not isinstance(arr, np.ndarray) or arr.ndim != 1:
            raise DataError(
                f"{where}: field '{name}' must be a 1-D array, got {getattr(arr, 'shape', None)}"
            )
    m = prefer_b.shape[0]
    for name, arr in (("refs_a", refs_a), ("refs_b", refs_b), ("skipped", skipped)):
        if arr.shape[0] != m:
            raise DataError(
                f"{where}: field '{name}' has {arr.shape[0]} rows but 'prefer_b' has {m}"
            )
    if skipped.dtype != bool:
        raise DataError(f"{where}: field 'skipped' must be boolean, got {skipped.dtype}")
    if not np.issubdtype(prefer_b.dtype, np.floating):
        raise DataError(f"{where}: field 'prefer_b' must be floating point, got {prefer_b.dtype}")
    if (refs_a[:, 2] <= 0).any() or (refs_b[:, 2] <= 0).any():
        raise DataError(f"{where}: field 'refs_a'/'refs_b': segment lengths must be positive")
    ans = ~skipped
    pa = prefer_b[ans]
    if not np.all(np.isfinite(pa)) or (pa < 0).any() or (pa > 1).any():
        i = int(np.flatnonzero(ans)[np.flatnonzero(~(np.isfinite(pa) & (pa >= 0) & (pa <= 1)))[0]])
        raise DataError(
            f"{where}: field 'prefer_b': answered query {i} has prefer_b={float(prefer_b[i])}, "
            "outside [0, 1]"
        )
    if not np.all(np.isnan(prefer_b[skipped])):
        i = int(np.flatnonzero(skipped & ~np.isnan(prefer_b))[0])
        raise DataError(
            f"{where}: field 'skipped': query {i} is skipped but has prefer_b={float(prefer_b[i])} "
            "(must be NaN)"
        )


def make_preference_data(
    dataset_id: str,
    refs_a: np.ndarray,
    refs_b: np.ndarray,
    prefer_b: np.ndarray,
    skipped: np.ndarray | None,
    *,
    labeler: str,
    meta: dict[str, Any] | None = None,
    query_ids: list[str] | None = None,
    when: float | None = None,
    inline: OfflineDataset | None = None,
) -> PreferenceData:
    """Build a :class:`PreferenceData` with one Feedback record per query from plain arrays."""
    refs_a = np.asarray(refs_a, dtype=np.int64).reshape(-1, 3)
    refs_b = np.asarray(refs_b, dtype=np.int64).reshape(-1, 3)
    prefer_b = np.asarray(prefer_b, dtype=np.float32).reshape(-1)
    m = prefer_b.shape[0]
    skipped = np.zeros(m, dtype=bool) if skipped is None else np.asarray(skipped, dtype=bool)
    prefer_b = np.where(skipped, np.float32(np.nan), prefer_b).astype(np.float32)
    meta = dict(meta or {})
    where = str(meta.get("path") or dataset_id)
    validate_arrays(where, refs_a, refs_b, prefer_b, skipped)
    if query_ids is None:
        query_ids = [uuid.uuid4().hex for _ in range(m)]
    if len(query_ids) != m:
        raise DataError(f"{where}: {len(query_ids)} query ids for {m} queries")
    when = time.time() if when is None else float(when)
    fb = []
    for i in range(m):
        ra, rb = refs_a[i], refs_b[i]
        fb.append(
            Feedback(
                query_id=query_ids[i],
                a=SegmentRef(dataset_id, int(ra[0]), int(ra[1]), int(ra[2])),
                b=SegmentRef(dataset_id, int(rb[0]), int(rb[1]), int(rb[2])),
                prefer_b=None if skipped[i] else float(prefer_b[i]),
                skipped=bool(skipped[i]),
                labeler=labeler,
                time=when,
            )
        )
    return PreferenceData(
        dataset_id=dataset_id,
        refs_a=refs_a,
        refs_b=refs_b,
        prefer_b=prefer_b,
        skipped=skipped,
        feedback=tuple(fb),
        meta=meta,
        inline=inline,
    )


def from_feedback(
    records: list[Feedback] | tuple[Feedback, ...],
    *,
    dataset_id: str | None = None,
    meta: dict[str, Any] | None = None,
) -> PreferenceData:
    """Preference data from Feedback records (e.g. the labeling UI's answers)."""
    records = tuple(records)
    if not records and dataset_id is None:
        raise DataError("from_feedback: no records and no dataset id")
    ds_id = dataset_id if dataset_id is not None else records[0].a.dataset_id
    for i, r in enumerate(records):
        for side, ref in (("a", r.a), ("b", r.b)):
            if ref.dataset_id != ds_id:
                raise DataError(
                    f"feedback record {i} ({r.query_id}): segment {side} is in dataset "
                    f"'{ref.dataset_id}', expected '{ds_id}'"
                )
    refs_a = np.array([[r.a.episode, r.a.start, r.a.length] for r in records], np.int64)
    refs_b = np.array([[r.b.episode, r.b.start, r.b.length] for r in records], np.int64)
    skipped = np.array([r.skipped for r in records], dtype=bool)
    prefer_b = np.array(
        [np.nan if r.skipped else float(r.prefer_b) for r in records], dtype=np.float32
    )
    return PreferenceData(
        dataset_id=ds_id,
        refs_a=refs_a.reshape(-1, 3),
        refs_b=refs_b.reshape(-1, 3),
        prefer_b=prefer_b,
        skipped=skipped,
        feedback=records,
        meta=dict(meta or {}),
    )
