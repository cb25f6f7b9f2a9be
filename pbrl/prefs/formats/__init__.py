"""Importers and exporters for published preference-label formats.

Formats (docs/preferences.md has the details and the conventions table):

- ``pt``: Preference Transformer ``human_label/<task>/``: ``indices_num<N>`` and
  ``indices_2_num<N>`` (pickled int arrays of segment starts in D4RL ``qlearning_dataset`` rows),
  ``label_human`` (pickled list of ints: 0 first preferred, 1 second, -1 tie). Length 100.
- ``uni-rlhf``: Uni-RLHF crowdsourced ``indices_1_<tag>.pkl``, ``indices_2_<tag>.pkl``,
  ``human_label_<tag>.pkl`` with ``<tag> = domain_<d>_env_<e>_num_<N>_len_<L>_<id>``; same
  index space and 0/1/-1 values as ``pt``.
- ``cpl``: CPL's MetaWorld ``.npz`` of stacked segments ``obs (N, S, D)``, ``action``,
  ``reward`` and per-segment scores (``rl_sum`` by default). Pairs are CPL's ``comparison``
  mode: segment ``i`` against segment ``i + capacity`` (capacity ``N // 2`` by default); the
  label is 1[score_2 > score_1] + 0.5 * 1[score_2 == score_1]. CPL's older pairwise layout
  (``obs_1``, ``obs_2``, ``action_1``, ``action_2``, ``reward_1``, ``reward_2``, ``label`` with
  label = P(second)) is read too.
- ``imitation``: the ``imitation`` library's ``PreferenceDataset.save`` pickle: fragments1,
  fragments2 (``TrajectoryWithRew``) and ``preferences`` = P(first preferred).

Pickles are read only through :func:`safe_load_pickle`, a restricted unpickler admitting plain
data (containers, numbers, strings, numpy arrays and scalars); the two imitation classes are
mapped onto inert records that hold their fields and run no code of theirs.

Index-based formats (pt, uni-rlhf) need the D4RL dataset to turn published indices into
(episode, start) references. Without it the import keeps the published indices: refs are
``[-1, k, L]`` and ``meta["unresolved"]`` is True until :func:`resolve_qlearning_refs`.
Segment-based formats (cpl, imitation) carry their own steps: the import builds an *inline*
dataset (one episode per segment) that travels with the preference file.
"""

from __future__ import annotations

import codecs
import copyreg
import hashlib
import io
import logging
import pickle
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray as _np_multiarray
from numpy._core import numeric as _np_numeric

from pbrl.datasets.base import OfflineDataset, check_field
from pbrl.errors import DataError, PbrlError, UnknownIdError
from pbrl.prefs import (
    PreferenceData,
    dataset_fingerprint,
    dataset_mismatch,
    make_preference_data,
)
from pbrl.types import SegmentRef
from pbrl.utils import atomic_path

log = logging.getLogger(__name__)

FORMATS = ("pt", "uni-rlhf", "cpl", "imitation")
PT_SEGMENT_LENGTH = 100

# ---------------------------------------------------------------------------------------------
# restricted unpickling
# ---------------------------------------------------------------------------------------------
# numpy pickles arrays through these callables; the module path changed in numpy 2
# (numpy.core -> numpy._core), and old pickles (protocol 2) wrap bytes with _codecs.encode.
_PLAIN_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): _np_numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_numeric._frombuffer,
    ("_codecs", "encode"): codecs.encode,
}
# Protocols < 3 name these builtin constructors as globals instead of using opcodes.
for _mod in ("builtins", "__builtin__"):
    for _ctor in (set, frozenset, bytes, bytearray, complex):
        _PLAIN_GLOBALS[(_mod, _ctor.__name__)] = _ctor


class _Record:
    """An inert stand-in for a class named in a pickle: it only stores the pickled fields."""

    _pickle_as: tuple[str, str] = ("", "")

    def __init__(self, fields: dict[str, Any] | None = None) -> None:
        self.fields = dict(fields or {})

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            merged: dict[str, Any] = {}
            for part in state:
                if isinstance(part, dict):
                    merged.update(part)
            self.fields = merged
        elif isinstance(state, dict):
            self.fields = dict(state)
        else:
            self.fields = {"__state__": state}

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Pickles as the named class (see _ExportPickler): NEWOBJ + BUILD with the fields.
        return (copyreg.__newobj__, (type(self),), dict(self.fields))


class _ImitationPreferenceDataset(_Record):
    _pickle_as = ("imitation.algorithms.preference_comparisons", "PreferenceDataset")


class _ImitationTrajectoryWithRew(_Record):
    _pickle_as = ("imitation.data.types", "TrajectoryWithRew")


class _ImitationTrajectory(_Record):
    _pickle_as = ("imitation.data.types", "Trajectory")


IMITATION_CLASSES: dict[str, type[_Record]] = {
    ".".join(c._pickle_as): c
    for c in (_ImitationPreferenceDataset, _ImitationTrajectoryWithRew, _ImitationTrajectory)
}


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, fh: Any, where: str, records: dict[str, type[_Record]]) -> None:
        super().__init__(fh)
        self._where = where
        self._records = records

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[(module, name)]
        full = f"{module}.{name}"
        if full in self._records:
            return self._records[full]
        raise DataError(f"{self._where}: pickle refers to {full}, which is not plain data")

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._where}: pickle uses a persistent id, which is not plain data")


def safe_load_pickle(path: str | Path, *, records: dict[str, type[_Record]] | None = None) -> Any:
    """Unpickle ``path`` admitting only plain data.

    Lists, tuples, dicts, sets, ints, floats, str, bytes, bool, None, numpy arrays, dtypes and
    scalars pass. Any other global the pickle names raises :class:`DataError` naming the file
    and the global, before anything of it is called. ``records`` maps extra dotted class names
    onto :class:`_Record` stand-ins (used for imitation's dataset classes).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        return _PlainUnpickler(io.BytesIO(raw), str(path), records or {}).load()
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated/corrupt pickles raise many types
        raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e


class _ExportPickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pure-Python pickler that writes a :class:`_Record` class under its ``_pickle_as`` name.

    This writes files the original library loads with plain ``pickle.load`` without that
    library being importable here.
    """

    def save_global(self, obj: Any, name: str | None = None) -> None:
        target = getattr(obj, "_pickle_as", None) if isinstance(obj, type) else None
        if target and target[0]:
            self.save(target[0])
            self.save(target[1])
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _dump_pickle(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    _ExportPickler(buf, protocol=4).dump(obj)
    path.write_bytes(buf.getvalue())


# ---------------------------------------------------------------------------------------------
# small validators
# ---------------------------------------------------------------------------------------------
def _int_array(where: str, what: str, x: Any) -> np.ndarray:
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


def _labels_012(where: str, x: Any) -> np.ndarray:
    """0 / 1 / -1 labels (first / second / tie) -> prefer_b 0 / 1 / 0.5."""
    lab = _int_array(where, "labels", x)
    bad = ~np.isin(lab, (0, 1, -1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: label {int(lab[i])} at position {i} is outside this format's values "
            "0 (first preferred), 1 (second), -1 (tie)"
        )
    return np.where(lab == -1, 0.5, lab.astype(np.float64)).astype(np.float32)


def _same_lengths(where: str, **arrays: Any) -> int:
    lens = {k: len(v) for k, v in arrays.items()}
    if len(set(lens.values())) != 1:
        desc = ", ".join(f"{k} has {n}" for k, n in lens.items())
        raise DataError(f"{where}: arrays of different lengths ({desc})")
    return next(iter(lens.values()))


# ---------------------------------------------------------------------------------------------
# D4RL qlearning index space
# ---------------------------------------------------------------------------------------------
def qlearning_refs(
    ds: OfflineDataset, starts: np.ndarray, length: int, where: str = ""
) -> np.ndarray:
    """(M, 3) [episode, start, length] refs of segments given by D4RL qlearning start indices.

    A segment covers qlearning rows ``k .. k+L-1``; it must map to ``L`` consecutive raw rows
    of one episode. Raises :class:`DataError` for indices past the end of the qlearning rows
    and for segments that cross an episode end (including a skipped timeout row).
    """
    from pbrl.datasets.d4rl import qlearning_index_map, raw_row_to_episode

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
    from pbrl.datasets.d4rl import qlearning_index_map

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


def _index_import(
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


# ---------------------------------------------------------------------------------------------
# Preference Transformer
# ---------------------------------------------------------------------------------------------
_PT_RE = {
    "a": re.compile(r"^indices_num(\d+)$"),
    "b": re.compile(r"^indices_2_num(\d+)$"),
    "label": re.compile(r"^label_human$"),
}


def _expand(paths: Sequence[str | Path]) -> list[Path]:
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


def _pick(files: list[Path], patterns: dict[str, re.Pattern[str]], what: str) -> dict[str, Path]:
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


def import_pt(
    paths: Sequence[str | Path],
    *,
    dataset: OfflineDataset | None = None,
    dataset_id: str | None = None,
    segment_length: int | None = None,
    allow_mismatch: bool = False,
) -> PreferenceData:
    """Preference Transformer human labels (a task folder or its three files)."""
    files = _pick(_expand(paths), _PT_RE, "pt import")
    idx_a = _int_array(str(files["a"]), "indices", safe_load_pickle(files["a"]))
    idx_b = _int_array(str(files["b"]), "indices", safe_load_pickle(files["b"]))
    prefer_b = _labels_012(str(files["label"]), safe_load_pickle(files["label"]))
    where = str(files["label"].parent)
    n = _same_lengths(
        where,
        **{files["a"].name: idx_a, files["b"].name: idx_b, files["label"].name: prefer_b},
    )
    for key in ("a", "b"):
        declared = int(_PT_RE[key].match(files[key].name).group(1))  # type: ignore[union-attr]
        if declared != n:
            raise DataError(f"{files[key]}: the name says {declared} queries but it holds {n}")
    task = files["label"].parent.name
    meta = {
        "source": "preference-transformer",
        "source_path": where,
        "source_tag": task,
        "task": task,
    }
    return _index_import(
        "pt",
        where,
        idx_a,
        idx_b,
        prefer_b,
        int(segment_length or PT_SEGMENT_LENGTH),
        dataset,
        dataset_id or f"d4rl/{task}",
        meta,
        "human:preference-transformer",
        allow_mismatch,
    )


# ---------------------------------------------------------------------------------------------
# Uni-RLHF
# ---------------------------------------------------------------------------------------------
_UNI_TAG = re.compile(
    r"^domain_(?P<domain>.+?)_env_(?P<env>.+)_num_(?P<num>\d+)_len_(?P<len>\d+)_(?P<id>[^_]+)$"
)
_UNI_RE = {
    "a": re.compile(r"^indices_1_(.+)\.pkl$"),
    "b": re.compile(r"^indices_2_(.+)\.pkl$"),
    "label": re.compile(r"^human_label_(.+)\.pkl$"),
}


def import_uni_rlhf(
    paths: Sequence[str | Path],
    *,
    dataset: OfflineDataset | None = None,
    dataset_id: str | None = None,
    segment_length: int | None = None,
    allow_mismatch: bool = False,
) -> PreferenceData:
    """Uni-RLHF crowdsourced labels (a ``<env>_human_labels`` folder or its three files)."""
    files = _pick(_expand(paths), _UNI_RE, "uni-rlhf import")
    tags = {k: _UNI_RE[k].match(f.name).group(1) for k, f in files.items()}  # type: ignore[union-attr]
    if len(set(tags.values())) != 1:
        raise DataError(
            "uni-rlhf import: the three files belong to different label sets: "
            + ", ".join(str(f) for f in files.values())
        )
    tag = tags["label"]
    mt = _UNI_TAG.match(tag)
    if mt is None and segment_length is None:
        raise DataError(
            f"{files['label']}: cannot read the segment length from the name (expected "
            "'..._num_<N>_len_<L>_<id>.pkl'); pass the segment length"
        )
    idx_a = _int_array(str(files["a"]), "indices", safe_load_pickle(files["a"]))
    idx_b = _int_array(str(files["b"]), "indices", safe_load_pickle(files["b"]))
    prefer_b = _labels_012(str(files["label"]), safe_load_pickle(files["label"]))
    where = str(files["label"].parent)
    n = _same_lengths(
        where,
        **{files["a"].name: idx_a, files["b"].name: idx_b, files["label"].name: prefer_b},
    )
    meta: dict[str, Any] = {"source": "uni-rlhf", "source_path": where, "source_tag": tag}
    env = None
    if mt is not None:
        env = mt.group("env")
        meta.update(domain=mt.group("domain"), env=env, label_set=mt.group("id"))
        if int(mt.group("num")) != n:
            raise DataError(
                f"{files['label']}: the name says {mt.group('num')} queries but it holds {n}"
            )
    length = int(segment_length or (mt.group("len") if mt else 0))
    return _index_import(
        "uni-rlhf",
        where,
        idx_a,
        idx_b,
        prefer_b,
        length,
        dataset,
        dataset_id or (f"d4rl/{env}" if env else files["label"].parent.name),
        meta,
        "human:uni-rlhf",
        allow_mismatch,
    )


# ---------------------------------------------------------------------------------------------
# segment-carrying formats: inline dataset
# ---------------------------------------------------------------------------------------------
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


def _segment_refs(lengths: np.ndarray, episodes: np.ndarray) -> np.ndarray:
    return np.stack([episodes, np.zeros_like(episodes), lengths[episodes]], axis=1)


# ---------------------------------------------------------------------------------------------
# CPL
# ---------------------------------------------------------------------------------------------
def _npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError as e:
        raise DataError(f"{path}: no such file") from e
    except Exception as e:  # noqa: BLE001 - bad zips, object arrays, truncation
        raise DataError(f"{path}: not a readable .npz without pickled objects ({e})") from e


def import_cpl(
    paths: Sequence[str | Path],
    *,
    dataset_id: str | None = None,
    score_key: str = "rl_sum",
    capacity: int | None = None,
) -> PreferenceData:
    """CPL segment file (``.npz``); pairs as CPL's ``comparison`` mode (docs/preferences.md)."""
    if len(paths) != 1:
        raise DataError(f"cpl import: expected one .npz file, got {len(paths)} paths")
    path = Path(paths[0])
    z = _npz(path)
    where = str(path)
    ds_id = dataset_id or f"cpl:{path.stem}"
    if "obs_1" in z:
        return _import_cpl_pairwise(path, z, ds_id)
    for key in ("obs", "action", "reward", score_key):
        if key not in z:
            raise DataError(f"{where}: missing field '{key}' (keys: {', '.join(sorted(z))})")
    # Shapes obs (N, S, D), action (N, S, A), reward (N, S), score (N,); finite real numbers.
    obs = check_field(z["obs"], "obs", where, ndim=3)
    act = check_field(z["action"], "action", where, ndim=3)
    rew = check_field(z["reward"], "reward", where, ndim=2)
    score = check_field(z[score_key], score_key, where, ndim=1)
    n = _same_lengths(where, obs=obs, action=act, reward=rew, **{score_key: score})
    if obs.shape[1] != act.shape[1] or obs.shape[1] != rew.shape[1]:
        raise DataError(f"{where}: obs, action and reward have different segment lengths")
    cap = int(capacity) if capacity is not None else n // 2
    if cap <= 0 or 2 * cap > n:
        raise DataError(f"{where}: capacity {cap} needs 2 x capacity <= {n} segments")
    s = obs.shape[1]
    # Per-step next observation: s_{t+1} inside the segment; the state after the last step is
    # not stored, so the last step repeats its own observation (meta records this).
    next_obs = [np.concatenate([o[1:], o[-1:]]) for o in obs]
    done = z.get("done")
    discount = z.get("discount")
    if done is not None:
        done = check_field(done, "done", where, flag=True)
    if discount is not None:
        discount = check_field(discount, "discount", where)
    term = np.zeros(n, dtype=bool)
    if done is not None and discount is not None and done.shape == (n,) and discount.shape == (n,):
        term = done.astype(bool) & (discount == 0)
    inline = segments_dataset(
        ds_id, list(obs), next_obs, list(act), list(rew), list(term), where=where
    )
    i = np.arange(cap)
    s1, s2 = score[i].astype(np.float64), score[i + cap].astype(np.float64)
    prefer_b = np.where(s2 > s1, 1.0, np.where(s2 == s1, 0.5, 0.0)).astype(np.float32)
    meta = {
        "source": "cpl",
        "format": "cpl",
        "source_path": where,
        "score_key": score_key,
        "capacity": cap,
        "pairing": "comparison: segment i vs segment i + capacity",
        "segment_length": s,
        "next_obs_last_step": "repeated (not stored by CPL)",
    }
    return make_preference_data(
        ds_id,
        _segment_refs(inline.lengths, i),
        _segment_refs(inline.lengths, i + cap),
        prefer_b,
        None,
        labeler=f"script:cpl({score_key})",
        meta=meta,
        query_ids=[f"cpl:{path.stem}:{k}" for k in range(cap)],
        when=0.0,
        inline=inline,
    )


def _import_cpl_pairwise(path: Path, z: dict[str, np.ndarray], ds_id: str) -> PreferenceData:
    where = str(path)
    keys = ("obs_1", "obs_2", "action_1", "action_2", "reward_1", "reward_2", "label")
    for key in keys:
        if key not in z:
            raise DataError(f"{where}: missing field '{key}' (pairwise CPL layout)")
    for key, ndim in zip(keys, (3, 3, 3, 3, 2, 2, (1, 2)), strict=True):
        check_field(z[key], key, where, ndim=ndim)
    n = _same_lengths(where, **{k: z[k] for k in keys})
    label = z["label"].astype(np.float64).reshape(n, -1)[:, -1]
    if not np.all(np.isfinite(label)) or (label < 0).any() or (label > 1).any():
        raise DataError(f"{where}: field 'label' must be P(second preferred) in [0, 1]")
    obs = list(z["obs_1"]) + list(z["obs_2"])
    inline = segments_dataset(
        ds_id,
        obs,
        [np.concatenate([o[1:], o[-1:]]) for o in obs],
        list(z["action_1"]) + list(z["action_2"]),
        list(z["reward_1"]) + list(z["reward_2"]),
        [False] * (2 * n),
        where=where,
    )
    i = np.arange(n)
    meta = {"source": "cpl", "format": "cpl", "source_path": where, "layout": "pairwise"}
    return make_preference_data(
        ds_id,
        _segment_refs(inline.lengths, i),
        _segment_refs(inline.lengths, i + n),
        label.astype(np.float32),
        None,
        labeler="script:cpl(label)",
        meta=meta,
        query_ids=[f"cpl:{path.stem}:{k}" for k in range(n)],
        when=0.0,
        inline=inline,
    )


# ---------------------------------------------------------------------------------------------
# imitation
# ---------------------------------------------------------------------------------------------
def _fields(where: str, obj: Any, what: str) -> dict[str, Any]:
    if isinstance(obj, _Record):
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
    n = _same_lengths(where, fragments1=f1, fragments2=f2, preferences=p_first)
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
        _segment_refs(inline.lengths, i),
        _segment_refs(inline.lengths, i + n),
        (1.0 - p_first).astype(np.float32),
        None,
        labeler="import:imitation",
        meta=meta,
        query_ids=[f"imitation:{path.stem}:{k}" for k in range(n)],
        when=0.0,
        inline=inline,
    )


# ---------------------------------------------------------------------------------------------
# dispatch
# ---------------------------------------------------------------------------------------------
def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UnknownIdError(f"unknown label format '{fmt}' (known: {', '.join(FORMATS)})")
    return fmt


def check_import_options(
    fmt: str,
    *,
    dataset_given: bool = False,
    segment_length: int | None = None,
    capacity: int | None = None,
    score_key: str = "rl_sum",
) -> None:
    """The options of an import, before any file is read (PbrlError naming the option)."""
    _check_format(fmt)
    if segment_length is not None and segment_length <= 0:
        raise PbrlError(f"--segment-length must be positive, got {segment_length}")
    if segment_length is not None and fmt in ("cpl", "imitation"):
        raise PbrlError(f"--segment-length: {fmt} files carry their own segments; drop it")
    if capacity is not None and capacity <= 0:
        raise PbrlError(f"--capacity must be positive, got {capacity}")
    if capacity is not None and fmt != "cpl":
        raise PbrlError(f"--capacity applies to cpl imports only, not {fmt}")
    if not score_key.strip():
        raise PbrlError("--score-key must name a field of the cpl file")
    if dataset_given and fmt in ("cpl", "imitation"):
        raise PbrlError(
            f"--dataset: {fmt} files carry their own segments and use no dataset; drop --dataset"
        )


def import_labels(
    fmt: str,
    paths: Sequence[str | Path],
    *,
    dataset: OfflineDataset | None = None,
    dataset_id: str | None = None,
    segment_length: int | None = None,
    score_key: str = "rl_sum",
    capacity: int | None = None,
    allow_mismatch: bool = False,
) -> PreferenceData:
    """Import published labels of format ``fmt`` from ``paths`` (files or one folder).

    ``dataset`` resolves pt/uni-rlhf indices to episodes (else the result is unresolved);
    the label set's dataset (from its file names, or ``dataset_id``) must be that dataset
    unless ``allow_mismatch``. cpl/imitation carry their own segments: ``dataset`` is refused.
    """
    check_import_options(
        fmt,
        dataset_given=dataset is not None,
        segment_length=segment_length,
        capacity=capacity,
        score_key=score_key,
    )
    if not paths:
        raise DataError(f"{fmt} import: no paths given")
    if fmt == "pt":
        return import_pt(
            paths,
            dataset=dataset,
            dataset_id=dataset_id,
            segment_length=segment_length,
            allow_mismatch=allow_mismatch,
        )
    if fmt == "uni-rlhf":
        return import_uni_rlhf(
            paths,
            dataset=dataset,
            dataset_id=dataset_id,
            segment_length=segment_length,
            allow_mismatch=allow_mismatch,
        )
    if fmt == "cpl":
        return import_cpl(paths, dataset_id=dataset_id, score_key=score_key, capacity=capacity)
    return import_imitation(paths, dataset_id=dataset_id)


def _hard_labels(data: PreferenceData, fmt: str) -> tuple[PreferenceData, np.ndarray]:
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


def _uniform_length(data: PreferenceData, fmt: str) -> int:
    lens = np.unique(data.segment_lengths)
    if lens.size != 1:
        raise DataError(
            f"{fmt} export: segments have lengths {lens.tolist()}; this format needs one length"
        )
    return int(lens[0])


def _starts_for_export(
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


def check_export_output(fmt: str, out: str | Path, what: str = "--output") -> Path:
    """Before any work: a known format, and an output that can be written.

    pt and uni-rlhf write a new folder (it must not exist yet); cpl and imitation one file.
    The parent folder must exist and be writable (:func:`pbrl.utils.check_output_file`).
    """
    from pbrl.utils import check_output_file

    _check_format(fmt)
    out = Path(out)
    if fmt in ("pt", "uni-rlhf") and (out.exists() or out.is_symlink()):
        raise PbrlError(f"{what} {out}: already exists; {fmt} export writes a new folder")
    return check_output_file(out, what)


def export_labels(
    data: PreferenceData,
    fmt: str,
    out: str | Path,
    *,
    dataset: OfflineDataset | None = None,
) -> list[Path]:
    """Write ``data`` in format ``fmt`` at ``out`` (a folder for pt/uni-rlhf, a file otherwise).

    Atomic: nothing is left at ``out`` on error. Returns the written file paths.
    """
    out = check_export_output(fmt, out, "export")
    if fmt == "imitation":
        ans, labels = data.answered(), None
        if ans.num_queries == 0:
            raise DataError("imitation export: no answered queries to write")
        if ans.num_queries < data.num_queries:
            log.warning(
                "imitation export: %d skipped queries are not written (the format has no skip)",
                data.num_queries - ans.num_queries,
            )
    else:
        ans, labels = _hard_labels(data, fmt)
    if fmt in ("pt", "uni-rlhf"):
        length = _uniform_length(ans, fmt)
        ka, kb = _starts_for_export(ans, dataset, fmt)
        m = ans.num_queries
        with atomic_path(out, is_dir=True) as tmp:
            if fmt == "pt":
                if length != PT_SEGMENT_LENGTH:
                    log.warning("pt export: segment length %d (PT's default is 100)", length)
                names = [f"indices_num{m}", f"indices_2_num{m}", "label_human"]
                _dump_pickle(ka.astype(np.int32), tmp / names[0])
                _dump_pickle(kb.astype(np.int32), tmp / names[1])
                _dump_pickle([int(v) for v in labels], tmp / names[2])  # type: ignore[union-attr]
            else:
                domain = str(ans.meta.get("domain", "mujoco"))
                env = str(ans.meta.get("env") or ans.dataset_id.split("/")[-1])
                uid = str(ans.meta.get("label_set") or _digest(ans))
                tag = f"domain_{domain}_env_{env}_num_{m}_len_{length}_{uid}"
                names = [f"indices_1_{tag}.pkl", f"indices_2_{tag}.pkl", f"human_label_{tag}.pkl"]
                _dump_pickle(ka.astype(np.int64), tmp / names[0])
                _dump_pickle(kb.astype(np.int64), tmp / names[1])
                _dump_pickle(np.asarray(labels, dtype=np.int64), tmp / names[2])
        return [out / n for n in names]
    ds = dataset if dataset is not None else ans.inline
    if ds is None:
        raise PbrlError(f"{fmt} export: pass the dataset (--dataset): {fmt} files hold the steps")
    if ds.rewards is None:
        raise DataError(f"{fmt} export: dataset {ds.id} has no rewards; {fmt} files store them")
    rows_a, mask_a = ds.segment_index(ans.refs_a, "segment a of")
    rows_b, mask_b = ds.segment_index(ans.refs_b, "segment b of")
    if fmt == "cpl":
        _uniform_length(ans, fmt)
        rows = np.concatenate([rows_a, rows_b])
        last = rows[:, -1]
        done = ds.terminals[last].astype(bool)
        # Scores chosen so that CPL's rule 1[s2 > s1] + 0.5 * 1[s2 == s1] gives back prefer_b.
        score = np.concatenate([np.zeros(ans.num_queries), ans.prefer_b - 0.5]).astype(np.float32)
        arrays = {
            "obs": ds.observations[rows].astype(np.float32),
            "action": ds.actions[rows].astype(np.float32),
            "reward": ds.rewards[rows].astype(np.float32),
            "done": done,
            "discount": (~done).astype(np.float32),
            "rl_sum": score,
        }
        with atomic_path(out) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        return [out]
    frags = []
    for rows, mask in ((rows_a, mask_a), (rows_b, mask_b)):
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
        _dump_pickle(obj, tmp)
    return [out]


def _digest(data: PreferenceData) -> str:
    h = hashlib.sha1()
    for arr in (data.refs_a, data.refs_b, data.prefer_b):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:32]


__all__ = [
    "FORMATS",
    "export_labels",
    "import_cpl",
    "import_imitation",
    "import_labels",
    "import_pt",
    "import_uni_rlhf",
    "qlearning_refs",
    "qlearning_starts",
    "resolve_qlearning_refs",
    "safe_load_pickle",
    "segments_dataset",
]
