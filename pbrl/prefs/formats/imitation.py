"""The ``imitation`` library's preference datasets (``imitation``): reader and writer.

``PreferenceDataset.save`` pickles fragments1, fragments2 (``TrajectoryWithRew``) and
``preferences`` = P(first preferred). The pickle is read through
:func:`~pbrl.prefs.formats.unpickle.safe_load_pickle` with imitation's classes mapped onto inert
records, and written with those records under imitation's class names (imitation need not be
installed). The segments travel as an *inline* dataset (one episode per segment).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.datasets.base import OfflineDataset, check_field
from pbrl.errors import DataError
from pbrl.prefs.data import PreferenceData, make_preference_data
from pbrl.prefs.formats.common import export_steps, same_lengths, segment_refs, segments_dataset
from pbrl.prefs.formats.unpickle import Record, dump_pickle, safe_load_pickle
from pbrl.utils import atomic_path

log = logging.getLogger(__name__)


class _ImitationPreferenceDataset(Record):
    _pickle_as = ("imitation.algorithms.preference_comparisons", "PreferenceDataset")


class _ImitationTrajectoryWithRew(Record):
    _pickle_as = ("imitation.data.types", "TrajectoryWithRew")


class _ImitationTrajectory(Record):
    _pickle_as = ("imitation.data.types", "Trajectory")


IMITATION_CLASSES: dict[str, type[Record]] = {
    ".".join(c._pickle_as): c
    for c in (_ImitationPreferenceDataset, _ImitationTrajectoryWithRew, _ImitationTrajectory)
}


def _fields(where: str, obj: Any, what: str) -> dict[str, Any]:
    if isinstance(obj, Record):
        return obj.fields
    if isinstance(obj, dict):
        return obj
    raise DataError(f"{where}: {what} is a {type(obj).__name__}, expected a record or dict")


def import_imitation(
    paths: Sequence[str | Path], *, dataset_id: str | None = None
) -> PreferenceData:
    """imitation ``PreferenceDataset.save`` pickle (or a plain dict with the same fields)."""
    if len(paths) != 1:
        raise DataError(f"imitation import: expected one pickle file, got {len(paths)} paths")
    path = Path(paths[0])
    where = str(path)
    top = _fields(where, safe_load_pickle(path, records=IMITATION_CLASSES), "the pickle")
    for key in ("fragments1", "fragments2", "preferences"):
        if key not in top:
            raise DataError(f"{where}: missing field '{key}' of imitation's PreferenceDataset")
    for key in ("fragments1", "fragments2"):
        if not isinstance(top[key], list | tuple):
            raise DataError(
                f"{where}: field '{key}' is a {type(top[key]).__name__}, expected a list of "
                "trajectories"
            )
    f1, f2 = list(top["fragments1"]), list(top["fragments2"])
    pref = top["preferences"]
    if isinstance(pref, list | tuple | np.ndarray) and np.asarray(pref).dtype.kind in "iu":
        pref = np.asarray(pref, dtype=np.float64)  # plain 0/1 lists
    p_first = check_field(pref, "preferences", where).astype(np.float64).reshape(-1)
    n = same_lengths(where, fragments1=f1, fragments2=f2, preferences=p_first)
    if not np.all(np.isfinite(p_first)) or (p_first < 0).any() or (p_first > 1).any():
        i = int(np.flatnonzero(~(np.isfinite(p_first) & (p_first >= 0) & (p_first <= 1)))[0])
        raise DataError(
            f"{where}: preference {p_first[i]!r} at position {i} is outside imitation's "
            "convention P(first preferred) in [0, 1]"
        )
    obs, nobs, act, rew, term = [], [], [], [], []
    for j, frag in enumerate(f1 + f2):
        fd = _fields(where, frag, f"fragment {j}")
        for key in ("obs", "acts", "rews"):
            if key not in fd or not isinstance(fd[key], np.ndarray):
                raise DataError(
                    f"{where}: fragment {j}: field '{key}' missing or not an array "
                    "(dict observations are not supported)"
                )
            check_field(fd[key], key, f"{where}: fragment {j}")
        o, a, r = fd["obs"], fd["acts"], fd["rews"]
        if o.shape[0] != a.shape[0] + 1:
            raise DataError(
                f"{where}: fragment {j}: obs has {o.shape[0]} rows, expected acts + 1 = "
                f"{a.shape[0] + 1}"
            )
        o2 = o.reshape(o.shape[0], -1)
        obs.append(o2[:-1])
        nobs.append(o2[1:])
        act.append(a.reshape(a.shape[0], -1))
        rew.append(r.reshape(-1))
        term.append(bool(fd.get("terminal", False)))
    ds_id = dataset_id or f"imitation:{path.stem}"
    inline = segments_dataset(ds_id, obs, nobs, act, rew, term, where=where)
    i = np.arange(n)
    meta = {"source": "imitation", "format": "imitation", "source_path": where}
    return make_preference_data(
        ds_id,
        segment_refs(inline.lengths, i),
        segment_refs(inline.lengths, i + n),
        (1.0 - p_first).astype(np.float32),
        None,
        labeler="import:imitation",
        meta=meta,
        query_ids=[f"imitation:{path.stem}:{k}" for k in range(n)],
        when=0.0,
        inline=inline,
    )


def export_imitation(
    data: PreferenceData, out: Path, *, dataset: OfflineDataset | None = None
) -> list[Path]:
    """Write the answered queries as one imitation ``PreferenceDataset`` pickle at ``out``
    (atomic); soft labels are kept (imitation stores P(first preferred))."""
    ans = data.answered()
    if ans.num_queries == 0:
        raise DataError("imitation export: no answered queries to write")
    if ans.num_queries < data.num_queries:
        log.warning(
            "imitation export: %d skipped queries are not written (the format has no skip)",
            data.num_queries - ans.num_queries,
        )
    ds, side_a, side_b = export_steps(ans, dataset, "imitation")
    frags = []
    for rows, mask in (side_a, side_b):
        side = []
        for r, mk in zip(rows, mask, strict=True):
            r = r[mk]
            side.append(
                _ImitationTrajectoryWithRew(
                    {
                        "obs": np.concatenate(
                            [ds.observations[r], ds.next_observations[r[-1:]]]
                        ).astype(np.float32),
                        "acts": ds.actions[r].astype(np.float32),
                        "infos": None,
                        "terminal": bool(ds.terminals[r[-1]]),
                        "rews": ds.rewards[r].astype(np.float32),
                    }
                )
            )
        frags.append(side)
    obj = _ImitationPreferenceDataset(
        {
            "fragments1": frags[0],
            "fragments2": frags[1],
            "max_size": None,
            "preferences": (1.0 - ans.prefer_b).astype(np.float32),
        }
    )
    with atomic_path(out) as tmp:
        dump_pickle(obj, tmp)
    return [out]
