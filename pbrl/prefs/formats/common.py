"""Helpers the format readers and writers share.

- reading: file picking (:func:`expand_paths`, :func:`pick_files`), plain-value validators
  (:func:`int_array`, :func:`labels_012`, :func:`same_lengths`), and the *inline* dataset of
  the segment-carrying formats (:func:`segments_dataset`, one episode per segment);
- writing: the answered hard labels (:func:`hard_labels`), one segment length
  (:func:`uniform_length`) and the steps of each segment (:func:`export_steps`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.datasets.base import OfflineDataset, check_field
from pbrl.errors import DataError, PbrlError
from pbrl.prefs.data import PreferenceData

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------
def int_array(where: str, what: str, x: Any) -> np.ndarray:
    try:
        a = np.asarray(x)
    except (ValueError, TypeError) as e:  # ragged nested sequences
        raise DataError(f"{where}: {what} is not a flat sequence of integers ({e})") from None
    if a.ndim != 1:
        raise DataError(f"{where}: {what} must be a 1-D sequence, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if (
            np.issubdtype(a.dtype, np.floating)
            and np.all(np.isfinite(a))
            and np.all(a == a.round())
        ):
            a = a.astype(np.int64)
        else:
            raise DataError(f"{where}: {what} must hold integers, got dtype {a.dtype}")
    return a.astype(np.int64)


def labels_012(where: str, x: Any) -> np.ndarray:
    """0 / 1 / -1 labels (first / second / tie) -> prefer_b 0 / 1 / 0.5."""
    lab = int_array(where, "labels", x)
    bad = ~np.isin(lab, (0, 1, -1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: label {int(lab[i])} at position {i} is outside this format's values "
            "0 (first preferred), 1 (second), -1 (tie)"
        )
    return np.where(lab == -1, 0.5, lab.astype(np.float64)).astype(np.float32)


def same_lengths(where: str, **arrays: Any) -> int:
    lens = {k: len(v) for k, v in arrays.items()}
    if len(set(lens.values())) != 1:
        desc = ", ".join(f"{k} has {n}" for k, n in lens.items())
        raise DataError(f"{where}: arrays of different lengths ({desc})")
    return next(iter(lens.values()))


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return out


def pick_files(
    files: list[Path], patterns: dict[str, re.Pattern[str]], what: str
) -> dict[str, Path]:
    found: dict[str, list[Path]] = {k: [] for k in patterns}
    for f in files:
        for k, pat in patterns.items():
            if pat.match(f.name):
                found[k].append(f)
    out = {}
    for k, lst in found.items():
        if not lst:
            names = ", ".join(p.pattern for p in patterns.values())
            raise DataError(
                f"{what}: no file matching '{patterns[k].pattern}' among "
                f"{', '.join(str(f) for f in files) or 'the given paths'} (expected {names})"
            )
        if len(lst) > 1:
            raise DataError(
                f"{what}: several files match '{patterns[k].pattern}': "
                f"{', '.join(str(f) for f in lst)}; pass one set"
            )
        out[k] = lst[0]
    return out


def segments_dataset(
    dataset_id: str,
    obs: list[np.ndarray],
    next_obs: list[np.ndarray],
    act: list[np.ndarray],
    rew: list[np.ndarray],
    terminal: list[bool],
    *,
    where: str,
) -> OfflineDataset:
    """An OfflineDataset with one episode per segment (a truncation at each segment's end)."""
    if not obs:
        raise DataError(f"{where}: no segments")
    lengths = np.array([a.shape[0] for a in act], dtype=np.int64)
    for i, (o, no, a, r) in enumerate(zip(obs, next_obs, act, rew, strict=True)):
        n = a.shape[0]
        if n == 0 or o.shape[0] != n or no.shape[0] != n or r.shape[0] != n:
            raise DataError(
                f"{where}: segment {i}: observations {o.shape[0]}, actions {n}, rewards "
                f"{r.shape[0]} steps do not match"
            )
        for name, arr in (("observations", o), ("actions", a), ("rewards", r)):
            check_field(arr, name, f"{where}: segment {i}")
    dims = {o.shape[1:] for o in obs} | {o.shape[1:] for o in next_obs}
    if len(dims) != 1 or len({a.shape[1:] for a in act}) != 1:
        raise DataError(f"{where}: segments have different observation or action sizes")
    terminals = np.zeros(int(lengths.sum()), dtype=bool)
    timeouts = np.zeros_like(terminals)
    ends = np.cumsum(lengths) - 1
    term = np.asarray(terminal, dtype=bool)
    terminals[ends] = term
    timeouts[ends] = ~term
    return OfflineDataset(
        id=dataset_id,
        task_id=None,
        observations=np.concatenate(obs).astype(np.float32).reshape(int(lengths.sum()), -1),
        actions=np.concatenate(act).astype(np.float32).reshape(int(lengths.sum()), -1),
        rewards=np.concatenate(rew).astype(np.float32),
        next_observations=np.concatenate(next_obs)
        .astype(np.float32)
        .reshape(int(lengths.sum()), -1),
        terminals=terminals,
        timeouts=timeouts,
        starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
        lengths=lengths,
        path=where,
    )


def segment_refs(lengths: np.ndarray, episodes: np.ndarray) -> np.ndarray:
    return np.stack([episodes, np.zeros_like(episodes), lengths[episodes]], axis=1)


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------
def hard_labels(data: PreferenceData, fmt: str) -> tuple[PreferenceData, np.ndarray]:
    """Answered queries and their 0/1/-1 labels; soft labels cannot be written."""
    ans = data.answered()
    if ans.num_queries < data.num_queries:
        log.warning(
            "%s export: %d skipped queries are not written (the format has no skip)",
            fmt,
            data.num_queries - ans.num_queries,
        )
    pb = ans.prefer_b
    soft = ~np.isin(pb, (0.0, 0.5, 1.0))
    if soft.any():
        i = int(np.flatnonzero(soft)[0])
        raise DataError(
            f"{fmt} export: query {i} has prefer_b={float(pb[i])}; this format only holds "
            "first / second / tie (0, 1, 0.5)"
        )
    if ans.num_queries == 0:
        raise DataError(f"{fmt} export: no answered queries to write")
    return ans, np.where(pb == 0.5, -1, pb).astype(np.int64)


def uniform_length(data: PreferenceData, fmt: str) -> int:
    lens = np.unique(data.segment_lengths)
    if lens.size != 1:
        raise DataError(
            f"{fmt} export: segments have lengths {lens.tolist()}; this format needs one length"
        )
    return int(lens[0])


def export_steps(
    ans: PreferenceData, dataset: OfflineDataset | None, fmt: str
) -> tuple[OfflineDataset, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The dataset whose steps a segment-carrying format writes (``dataset``, else the inline
    one), with the (rows, mask) of segments a and b (:meth:`OfflineDataset.segment_index`)."""
    ds = dataset if dataset is not None else ans.inline
    if ds is None:
        raise PbrlError(f"{fmt} export: pass the dataset (--dataset): {fmt} files hold the steps")
    if ds.rewards is None:
        raise DataError(f"{fmt} export: dataset {ds.id} has no rewards; {fmt} files store them")
    rows_a, mask_a = ds.segment_index(ans.refs_a, "segment a of")
    rows_b, mask_b = ds.segment_index(ans.refs_b, "segment b of")
    return ds, (rows_a, mask_a), (rows_b, mask_b)
