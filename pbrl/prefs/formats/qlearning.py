"""D4RL ``qlearning_dataset`` index space, shared by the index-based formats (pt, uni-rlhf).

Published labels of these formats give each segment as the index of its first row in D4RL's
``qlearning_dataset`` (which drops each episode's timeout step and the dataset's last row).
Without the dataset an import keeps the published indices: refs are ``[-1, k, L]`` and
``meta["unresolved"]`` is True until :func:`resolve_qlearning_refs`. Writing goes the other
way (:func:`export_starts`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from pbrl.datasets.base import OfflineDataset
from pbrl.datasets.d4rl import qlearning_index_map, raw_row_to_episode
from pbrl.errors import DataError, PbrlError
from pbrl.prefs.data import PreferenceData, make_preference_data
from pbrl.prefs.io import dataset_fingerprint, dataset_mismatch
from pbrl.types import SegmentRef


def qlearning_refs(
    ds: OfflineDataset, starts: np.ndarray, length: int, where: str = ""
) -> np.ndarray:
    """(M, 3) [episode, start, length] refs of segments given by D4RL qlearning start indices.

    A segment covers qlearning rows ``k .. k+L-1``; it must map to ``L`` consecutive raw rows
    of one episode. Raises :class:`DataError` for indices past the end of the qlearning rows
    and for segments that cross an episode end (including a skipped timeout row).
    """

    where = where or (ds.path or ds.id)
    qmap = qlearning_index_map(ds.terminals, ds.timeouts)
    ks = np.asarray(starts, dtype=np.int64).reshape(-1)
    n_q = int(qmap.shape[0])
    past = (ks < 0) | (ks + length > n_q)
    if past.any():
        i = int(np.flatnonzero(past)[0])
        raise DataError(
            f"{where}: index {int(ks[i])} (query {i}) with segment length {length} runs past the "
            f"end of dataset {ds.id} ({n_q} qlearning rows)"
        )
    refs = np.empty((ks.shape[0], 3), dtype=np.int64)
    for i, k in enumerate(ks):
        first, last = int(qmap[k]), int(qmap[k + length - 1])
        ep, off = raw_row_to_episode(ds, first)
        ep_last, _ = raw_row_to_episode(ds, last)
        if last - first != length - 1 or ep_last != ep:
            raise DataError(
                f"{where}: index {int(k)} (query {i}): the {length}-step segment crosses the end "
                f"of episode {ep} of dataset {ds.id}"
            )
        refs[i] = (ep, off, length)
    return refs


def qlearning_starts(ds: OfflineDataset, refs: np.ndarray, where: str = "") -> np.ndarray:
    """Inverse of :func:`qlearning_refs`: D4RL qlearning start index of each segment."""

    where = where or (ds.path or ds.id)
    rows, mask = ds.segment_index(refs)
    qmap = qlearning_index_map(ds.terminals, ds.timeouts)
    out = np.empty(rows.shape[0], dtype=np.int64)
    for i in range(rows.shape[0]):
        r = rows[i][mask[i]]
        k = int(np.searchsorted(qmap, r[0]))
        ks = k + np.arange(r.shape[0])
        if ks[-1] >= qmap.shape[0] or not np.array_equal(qmap[ks], r):
            raise DataError(
                f"{where}: query {i}: the segment uses a row D4RL's qlearning_dataset drops (an "
                "episode's timeout step or the dataset's last row); not representable by index"
            )
        out[i] = k
    return out


def resolve_qlearning_refs(data: PreferenceData, ds: OfflineDataset) -> PreferenceData:
    """Map unresolved published indices (refs ``[-1, k, L]``) onto episodes of ``ds``."""
    if data.resolved:
        return data
    where = str(data.meta.get("source_path") or data.meta.get("path") or data.dataset_id)
    ra = qlearning_refs(
        ds, data.refs_a[:, 1], int(data.refs_a[0, 2]) if data.num_queries else 1, where
    )
    rb = qlearning_refs(
        ds, data.refs_b[:, 1], int(data.refs_b[0, 2]) if data.num_queries else 1, where
    )
    if data.num_queries and (
        np.unique(data.refs_a[:, 2]).size > 1 or np.unique(data.refs_b[:, 2]).size > 1
    ):
        raise DataError(f"{where}: unresolved segments must share one length")
    fb = tuple(
        replace(
            f,
            a=SegmentRef(ds.id, int(ra[i, 0]), int(ra[i, 1]), int(ra[i, 2])),
            b=SegmentRef(ds.id, int(rb[i, 0]), int(rb[i, 1]), int(rb[i, 2])),
        )
        for i, f in enumerate(data.feedback)
    )
    meta = dict(
        data.meta,
        unresolved=False,
        resolved_against=ds.id,
        task_id=ds.task_id,
        dataset_fingerprint=dataset_fingerprint(ds),
    )
    return replace(data, dataset_id=ds.id, refs_a=ra, refs_b=rb, feedback=fb, meta=meta)


def index_import(
    fmt: str,
    where: str,
    idx_a: np.ndarray,
    idx_b: np.ndarray,
    prefer_b: np.ndarray,
    length: int,
    dataset: OfflineDataset | None,
    dataset_id: str,
    meta: dict[str, Any],
    labeler: str,
    allow_mismatch: bool = False,
) -> PreferenceData:
    if (idx_a < 0).any() or (idx_b < 0).any():
        raise DataError(f"{where}: negative segment index")
    if length <= 0:
        raise PbrlError(f"{where}: segment length must be positive, got {length}")
    m = prefer_b.shape[0]
    meta = dict(meta, format=fmt, segment_length=length, index_space="d4rl_qlearning")
    ids = [f"{fmt}:{meta.get('source_tag', '')}:{i}" for i in range(m)]
    refs_a = np.stack([np.full(m, -1), idx_a, np.full(m, length)], axis=1)
    refs_b = np.stack([np.full(m, -1), idx_b, np.full(m, length)], axis=1)
    meta["unresolved"] = True
    # When a published label was given is unknown: time 0.0 marks "unknown".
    data = make_preference_data(
        dataset_id,
        refs_a,
        refs_b,
        prefer_b,
        None,
        labeler=labeler,
        meta=meta,
        query_ids=ids,
        when=0.0,
    )
    if dataset is None:
        return data
    if dataset.id != dataset_id:
        dataset_mismatch(
            f"the label set is for dataset '{dataset_id}' (from its file names, or "
            f"--dataset-id), not '{dataset.id}'",
            where=where,
            allow_mismatch=allow_mismatch,
        )
    return resolve_qlearning_refs(data, dataset)


def export_starts(
    data: PreferenceData, dataset: OfflineDataset | None, fmt: str
) -> tuple[np.ndarray, np.ndarray]:
    if not data.resolved:
        return data.refs_a[:, 1].copy(), data.refs_b[:, 1].copy()
    if dataset is None:
        if data.inline is not None:
            raise DataError(
                f"{fmt} export: these segments were imported with their own steps "
                f"({data.meta.get('format')}); they have no D4RL index"
            )
        raise PbrlError(f"{fmt} export: pass the dataset (--dataset) to compute D4RL indices")
    where = str(data.meta.get("path") or data.dataset_id)
    return qlearning_starts(dataset, data.refs_a, where), qlearning_starts(
        dataset, data.refs_b, where
    )
