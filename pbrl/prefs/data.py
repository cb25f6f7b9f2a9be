"""Preference datasets: labelled segment pairs stored by reference into an offline dataset.

A :class:`PreferenceData` holds ``M`` queries. Each query compares segment ``a`` with segment
``b``; both are stored *by reference* (``[episode, start, length]`` rows of ``refs_a`` and
``refs_b``) into the dataset named by ``dataset_id``, never as copies of the steps. The answer
is ``prefer_b`` in [0, 1] (1.0: the second segment ``b`` is preferred, 0.5: a tie) or a skip
(``skipped`` True, ``prefer_b`` NaN). One :class:`~pbrl.types.Feedback` record per query keeps
who answered, when and how fast.

On disk (docs/preferences.md) a preference file is one ``.npz`` archive, loadable with
``numpy.load(path, allow_pickle=False)``: the arrays ``refs_a``, ``refs_b``, ``prefer_b``,
``skipped``, the UTF-8 bytes of a JSON ``meta`` object and of the Feedback JSONL text (one
record per line, same order as the arrays), plus, for imported files that carry their own
segments (CPL, imitation), the arrays of that *inline* dataset. Never pickle.

Two special cases:

- *unresolved* data (``meta["unresolved"]``): imported human labels whose published indices
  point into D4RL's ``qlearning_dataset`` rows of a dataset that is not at hand. Their refs are
  ``[-1, k, L]`` with ``k`` the published index; :func:`pbrl.importers.resolve_qlearning_refs`
  maps them onto a loaded dataset.
- *inline* data: the importer built an :class:`~pbrl.datasets.base.OfflineDataset` from the
  segments in the imported file (each segment one episode); it travels in ``inline`` and in the
  file, and :meth:`PreferenceData.to_batch` uses it when no dataset is passed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.datasets.base import OfflineDataset
from pbrl.errors import DataError, PbrlError
from pbrl.types import Feedback, PreferenceBatch, SegmentRef
from pbrl.utils import atomic_path

log = logging.getLogger(__name__)

FORMAT_NAME = "pbrl-preferences"
# 1: the first format. 2: ``meta["dataset_fingerprint"]`` records the content of the dataset
# the refs index (:func:`dataset_fingerprint`); version-1 files are read, with a warning that
# their dataset's content cannot be checked.
FORMAT_VERSION = 2
FINGERPRINT_PREFIX = "sha256:"
_FINGERPRINT_RE = re.compile(r"sha256:[0-9a-f]{64}")
# Labelling gathers both segments of every query at once: cap queries x segment x 2 steps.
MAX_LABEL_STEPS = 50_000_000

# Keys of the inline dataset inside a preference file.
_INLINE_ARRAYS = (
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
        _validate_arrays(str(where), self.refs_a, self.refs_b, self.prefer_b, self.skipped)
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
        from pbrl.datasets.registry import load_dataset

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
                "pbrl.importers.resolve_qlearning_refs) before training"
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


def _validate_arrays(where: str, refs_a: Any, refs_b: Any, prefer_b: Any, skipped: Any) -> None:
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


# ---- the tie between labels and data -------------------------------------------------------
# Fields of an OfflineDataset that a preference file's refs index, with the dtype each is
# hashed as (so that the same content read by different loaders gives the same fingerprint).
_FINGERPRINT_FIELDS: tuple[tuple[str, str], ...] = (
    ("observations", "<f4"),
    ("actions", "<f4"),
    ("rewards", "<f4"),
    ("next_observations", "<f4"),
    ("terminals", "|b1"),
    ("timeouts", "|b1"),
    ("lengths", "<i8"),
)


def dataset_fingerprint(ds: OfflineDataset) -> str:
    """``sha256:<hex>`` over the content a preference file's refs index into.

    Covers observations, actions, rewards, next observations, terminal and timeout flags and
    episode lengths (so episode boundaries), each with its shape, as float32 / bool / int64.
    Not the id, path, card or per-episode info: a rebuilt dataset with the same steps keeps
    its fingerprint, one whose steps differ anywhere does not. About 0.1 s per million rows.
    """
    h = hashlib.sha256(b"pbrl-dataset-fingerprint-v1\x00")
    for name, dtype in _FINGERPRINT_FIELDS:
        arr = getattr(ds, name)
        if arr is None:
            h.update(f"{name}:none\x00".encode())
            continue
        a = np.ascontiguousarray(arr, dtype=np.dtype(dtype))
        h.update(f"{name}:{dtype}:{list(a.shape)}\x00".encode())
        h.update(memoryview(a).cast("B"))
    return FINGERPRINT_PREFIX + h.hexdigest()


def check_prefs_dataset(
    data: PreferenceData,
    ds: OfflineDataset,
    *,
    where: str,
    allow_mismatch: bool = False,
) -> list[str]:
    """Refuse to use ``data`` (read from ``where``) against a dataset it was not made on.

    Compares the dataset id, the task (when both record one) and the content fingerprint
    (:func:`dataset_fingerprint`, recorded in ``meta["dataset_fingerprint"]`` by ``pbrl
    label`` and by imports resolved against a dataset). A mismatch is a :class:`DataError`
    naming ``where``; with ``allow_mismatch`` it is a warning instead. Files that record no
    fingerprint (format version 1, or labels built in memory without one) are accepted with a
    warning that the content cannot be checked. Unresolved data (published indices, no
    dataset yet) and data read against its own inline segments need no check.

    Returns the warning lines (each also logged at WARNING level).
    """
    warnings: list[str] = []
    if not data.resolved or (data.inline is not None and ds is data.inline):
        return warnings
    problems: list[str] = []
    if data.dataset_id and ds.id and ds.id != data.dataset_id:
        problems.append(f"labels refer to dataset '{data.dataset_id}', not '{ds.id}'")
    task = data.meta.get("task_id")
    if not problems and task and ds.task_id and task != ds.task_id:
        problems.append(f"labels were made on task '{task}', the dataset is of '{ds.task_id}'")
    recorded = data.meta.get("dataset_fingerprint")
    if not problems:
        if recorded is None:
            version = data.meta.get("format_version", FORMAT_VERSION)
            why = (
                f"was written before dataset fingerprints (format version {version})"
                if isinstance(version, int) and version < 2
                else "records no dataset fingerprint"
            )
            warnings.append(
                f"warning: {where}: {why}; the content of dataset '{ds.id}' cannot be checked"
            )
        elif ds.rewards is None:
            warnings.append(
                f"warning: {where}: dataset '{ds.id}' was passed without rewards; its content "
                "cannot be checked against the recorded fingerprint"
            )
        elif dataset_fingerprint(ds) != recorded:
            problems.append(
                f"dataset '{ds.id}' has changed since these labels were made (content "
                "fingerprint differs: rebuilt or edited)"
            )
    if problems:
        warnings.extend(dataset_mismatch(problems[0], where=where, allow_mismatch=allow_mismatch))
    else:
        for w in warnings:
            log.warning("%s", w)
    # Whatever was allowed, every segment must lie inside one episode of ``ds``.
    for name in ("refs_a", "refs_b"):
        ds.segment_index(getattr(data, name), f"field '{name}' (dataset '{ds.id}')", where=where)
    return warnings


def dataset_mismatch(problem: str, *, where: str, allow_mismatch: bool) -> list[str]:
    """A mismatch between labels and data: DataError, or (``allow_mismatch``) a warning.

    The one wording for every command: the error names ``where`` and the override flag.
    """
    flag = "--allow-dataset-mismatch"
    if not allow_mismatch:
        raise DataError(f"{where}: {problem}; pass {flag} to use them anyway")
    w = f"warning: {where}: {problem}; used anyway ({flag})"
    log.warning("%s", w)
    return [w]


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
    _validate_arrays(where, refs_a, refs_b, prefer_b, skipped)
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


# ---- files -----------------------------------------------------------------------------------
def save_preferences(data: PreferenceData, path: str | Path) -> None:
    """Write ``data`` to ``path`` (one ``.npz``; see the module docstring). Atomic."""
    meta = {k: v for k, v in data.meta.items() if k != "path"}
    meta.update(
        format=FORMAT_NAME,
        format_version=FORMAT_VERSION,
        dataset_id=data.dataset_id,
        inline=data.inline is not None,
    )
    if data.inline is not None:
        meta["inline_dataset_id"] = data.inline.id
    jsonl = "".join(json.dumps(f.to_dict(), sort_keys=True) + "\n" for f in data.feedback)
    arrays: dict[str, np.ndarray] = {
        "refs_a": np.asarray(data.refs_a, dtype=np.int64),
        "refs_b": np.asarray(data.refs_b, dtype=np.int64),
        "prefer_b": np.asarray(data.prefer_b, dtype=np.float32),
        "skipped": np.asarray(data.skipped, dtype=bool),
        "meta_json": _text_bytes(json.dumps(meta, sort_keys=True, default=_json_default)),
        "feedback_jsonl": _text_bytes(jsonl),
    }
    if data.inline is not None:
        ds = data.inline
        if ds.rewards is None:
            raise PbrlError("save_preferences: the inline dataset has no rewards to store")
        for name in _INLINE_ARRAYS:
            arrays[f"inline_{name}"] = np.asarray(getattr(ds, name))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def _text_bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_preferences(path: str | Path) -> PreferenceData:
    """Read and validate a preference file; :class:`DataError` naming the file and field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such preference file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    if not raw:
        raise DataError(f"{path}: empty file, not a preference file (.npz)")
    if not raw.startswith(b"PK"):
        raise DataError(f"{path}: not a preference file (.npz is a zip archive; this is not)")
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 - any parse failure is a malformed file
        raise DataError(f"{path}: not a readable preference file (.npz): {e}") from e
    required = ("refs_a", "refs_b", "prefer_b", "skipped", "meta_json", "feedback_jsonl")
    for key in required:
        if key not in arrays:
            raise DataError(f"{path}: missing field '{key}' (not a pbrl preference file?)")
    try:
        meta = json.loads(arrays["meta_json"].tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: field 'meta_json' is not valid JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise DataError(f"{path}: field 'meta_json' does not describe a {FORMAT_NAME} file")
    _check_meta(str(path), meta)
    where = str(path)
    _validate_arrays(
        where, arrays["refs_a"], arrays["refs_b"], arrays["prefer_b"], arrays["skipped"]
    )
    feedback = _parse_feedback(where, arrays["feedback_jsonl"])
    m = arrays["prefer_b"].shape[0]
    if len(feedback) != m:
        raise DataError(
            f"{path}: field 'feedback_jsonl' has {len(feedback)} records but there are {m} queries"
        )
    for i, f in enumerate(feedback):
        if f.skipped != bool(arrays["skipped"][i]):
            raise DataError(
                f"{path}: field 'feedback_jsonl': record {i} ({f.query_id}) disagrees with "
                "'skipped'"
            )
        for side, ref, row in (("a", f.a, arrays["refs_a"][i]), ("b", f.b, arrays["refs_b"][i])):
            if (ref.episode, ref.start, ref.length) != tuple(int(v) for v in row):
                raise DataError(
                    f"{path}: field 'feedback_jsonl': record {i} ({f.query_id}) segment {side} "
                    f"disagrees with 'refs_{side}' row {i}"
                )
    unresolved = bool(meta.get("unresolved", False))
    for name in ("refs_a", "refs_b"):
        refs = arrays[name]
        bad_ep = refs[:, 0] != -1 if unresolved else refs[:, 0] < 0
        bad = bad_ep | (refs[:, 1] < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path}: field '{name}' row {i} is {refs[i].tolist()}: episode and start "
                + ("must be -1 and >= 0 (unresolved)" if unresolved else "must be >= 0")
            )
    inline = None
    if meta.get("inline"):
        missing = [n for n in _INLINE_ARRAYS if f"inline_{n}" not in arrays]
        if missing:
            raise DataError(f"{path}: inline dataset is missing field(s) {', '.join(missing)}")
        inline = OfflineDataset(
            id=str(meta.get("inline_dataset_id", meta["dataset_id"])),
            task_id=meta.get("task_id"),
            **{n: arrays[f"inline_{n}"] for n in _INLINE_ARRAYS},
            path=str(path),
        )
        # The refs must stay inside the inline dataset.
        inline.segment_index(arrays["refs_a"], "segment a of")
        inline.segment_index(arrays["refs_b"], "segment b of")
    meta["path"] = str(path)
    return PreferenceData(
        dataset_id=str(meta.get("dataset_id", "")),
        refs_a=arrays["refs_a"].astype(np.int64),
        refs_b=arrays["refs_b"].astype(np.int64),
        prefer_b=arrays["prefer_b"].astype(np.float32),
        skipped=arrays["skipped"],
        feedback=tuple(feedback),
        meta=meta,
        inline=inline,
    )


def _check_meta(where: str, meta: dict[str, Any]) -> None:
    """The typed fields of ``meta_json``: DataError naming the field."""
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DataError(
            f"{where}: field 'format_version' must be a whole number from 1 to "
            f"{FORMAT_VERSION}, got {version!r}"
        )
    if version > FORMAT_VERSION:
        raise DataError(
            f"{where}: field 'format_version' is {version}, newer than this pbrl understands "
            f"({FORMAT_VERSION}); upgrade pbrl"
        )
    if not isinstance(meta.get("dataset_id", ""), str):
        raise DataError(f"{where}: field 'dataset_id' must be a string, got {meta['dataset_id']!r}")
    for key in ("task_id", "inline_dataset_id", "dataset_path"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise DataError(f"{where}: field '{key}' must be a string, got {meta[key]!r}")
    fp = meta.get("dataset_fingerprint")
    if fp is not None and not (isinstance(fp, str) and _FINGERPRINT_RE.fullmatch(fp)):
        raise DataError(
            f"{where}: field 'dataset_fingerprint' must be 'sha256:' and 64 hex digits, got {fp!r}"
        )
    for key in ("unresolved", "inline"):
        if key in meta and not isinstance(meta[key], bool):
            raise DataError(f"{where}: field '{key}' must be true or false, got {meta[key]!r}")


def _parse_feedback(where: str, blob: np.ndarray) -> list[Feedback]:
    try:
        text = blob.tobytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: field 'feedback_jsonl' is not UTF-8 text") from e
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(Feedback.from_dict(json.loads(line)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(f"{where}: field 'feedback_jsonl' line {n}: bad record ({e})") from e
    return out


# ---- labelling -------------------------------------------------------------------------------
def check_label_options(n_queries: int, segment: int, seed: int) -> None:
    """``--queries``, ``--segment`` and ``--seed`` of a labelling, before anything is loaded."""
    from pbrl.utils import check_seed

    for flag, value in (("--queries", n_queries), ("--segment", segment)):
        if not _whole(value) or value <= 0:
            raise PbrlError(f"{flag} must be a positive whole number, got {value!r}")
    if 2 * n_queries * segment > MAX_LABEL_STEPS:
        raise PbrlError(
            f"--queries {n_queries} x --segment {segment}: {2 * n_queries * segment:,} segment "
            f"steps to label at once, more than pbrl allows ({MAX_LABEL_STEPS:,}); ask fewer "
            "queries"
        )
    check_seed(int(seed) if _whole(seed) else seed)


def _whole(x: Any) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def label_dataset(
    ds: OfflineDataset,
    teacher: Any,
    n_queries: int,
    segment: int,
    seed: int,
    *,
    selector: str = "uniform",
    ensemble: Any = None,
) -> PreferenceData:
    """Select ``n_queries`` segment pairs of length ``segment`` and label them with ``teacher``.

    ``teacher`` is a preset name / composition string / preset file (see
    :func:`pbrl.teachers.make_teacher`) or an Oracle. One ``numpy`` Generator seeded with
    ``seed`` drives selection then labelling, so the same call gives the same labels.
    """
    from pbrl.prefs.select import select_queries
    from pbrl.teachers import SegmentPairs, make_teacher

    check_label_options(n_queries, segment, seed)
    if ds.rewards is None:
        raise DataError(f"{ds.path or ds.id}: a synthetic teacher needs the dataset's rewards")
    oracle = make_teacher(teacher) if isinstance(teacher, str) else teacher
    oracle = oracle.prepare(ds, segment)
    rng = np.random.default_rng(seed)
    refs_a, refs_b = select_queries(
        ds, n_queries, segment, rng, selector=selector, ensemble=ensemble
    )
    pairs = SegmentPairs.from_dataset(ds, refs_a, refs_b)
    prefer_b, answered = oracle.label(pairs, rng)
    # Query ids from their own stream: reproducible, and independent of the labels' draws.
    id_rng = np.random.default_rng([int(seed), 0x1D])
    ids = [uuid.UUID(bytes=id_rng.bytes(16), version=4).hex for _ in range(len(prefer_b))]
    spec = oracle.spec()
    meta = {
        "source": "pbrl-label",
        "teacher": spec,
        "teacher_name": teacher if isinstance(teacher, str) else getattr(oracle, "name", spec),
        "selector": selector,
        "seed": int(seed),
        "segment_length": int(segment),
        "n_queries": int(n_queries),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "task_id": ds.task_id,
        "dataset_path": ds.path,
        "dataset_fingerprint": dataset_fingerprint(ds),
    }
    return make_preference_data(
        ds.id,
        refs_a,
        refs_b,
        np.asarray(prefer_b, dtype=np.float32),
        ~np.asarray(answered, dtype=bool),
        labeler=f"teacher:{spec}",
        meta=meta,
        query_ids=ids,
    )


# ---- statistics ------------------------------------------------------------------------------
def preference_stats(data: PreferenceData, ds: OfflineDataset | None = None) -> dict[str, Any]:
    """Label balance, tie and skip fractions, and agreement with the ``oracle`` teacher.

    - ``balance``: mean ``prefer_b`` over answered queries (0.5 is balanced);
      ``frac_b`` / ``frac_a``: answered queries strictly preferring b / a.
    - ``tie_fraction``: answered queries with ``prefer_b == 0.5``; ``skip_fraction``: of all.
    - ``oracle_agreement``: over answered queries where neither the label nor the oracle is a
      tie (and both segments have the same length), the fraction on the oracle's side. Needs
      ``ds`` with rewards (or inline data); None otherwise, with the reason in
      ``oracle_agreement_note``.
    """
    m = data.num_queries
    ans = ~data.skipped
    pb = data.prefer_b[ans].astype(np.float64)
    n_ans = int(ans.sum())
    lengths = data.segment_lengths
    out: dict[str, Any] = {
        "dataset_id": data.dataset_id,
        "queries": m,
        "answered": n_ans,
        "skipped": int(m - n_ans),
        "skip_fraction": float((m - n_ans) / m) if m else math.nan,
        "tie_fraction": float(np.mean(pb == 0.5)) if n_ans else math.nan,
        "balance": float(pb.mean()) if n_ans else math.nan,
        "frac_b": float(np.mean(pb > 0.5)) if n_ans else math.nan,
        "frac_a": float(np.mean(pb < 0.5)) if n_ans else math.nan,
        "soft_fraction": float(np.mean((pb > 0) & (pb < 1) & (pb != 0.5))) if n_ans else math.nan,
        "segment_lengths": sorted({int(x) for x in np.unique(lengths)}) if m else [],
        "labelers": dict(Counter(f.labeler for f in data.feedback)),
        "resolved": data.resolved,
        "oracle_agreement": None,
        "oracle_agreement_n": 0,
        "oracle_agreement_note": "",
    }
    for key in ("teacher", "selector", "seed", "source", "format"):
        if key in data.meta:
            out[f"meta_{key}"] = data.meta[key]
    ds = ds if ds is not None else data.inline
    if not data.resolved:
        out["oracle_agreement_note"] = "unresolved D4RL indices (import with --dataset)"
    elif ds is None or ds.rewards is None:
        out["oracle_agreement_note"] = "dataset with rewards not available"
    else:
        agree, n = _oracle_agreement(data, ds)
        out["oracle_agreement"] = agree
        out["oracle_agreement_n"] = n
        if n == 0:
            out["oracle_agreement_note"] = "no strict pairs to compare"
    return out


def _oracle_agreement(data: PreferenceData, ds: OfflineDataset) -> tuple[float | None, int]:
    from pbrl.teachers import SegmentPairs, make_teacher

    ans = data.answered()
    pb = ans.prefer_b
    same = ans.refs_a[:, 2] == ans.refs_b[:, 2]
    hits = 0
    total = 0
    for length in np.unique(ans.refs_a[same, 2]):
        sel = np.flatnonzero(same & (ans.refs_a[:, 2] == length))
        oracle = make_teacher("oracle").prepare(ds, int(length))
        pairs = SegmentPairs.from_dataset(ds, ans.refs_a[sel], ans.refs_b[sel])
        # The oracle is deterministic; the generator is only there to satisfy the protocol.
        opb, oans = oracle.label(pairs, np.random.default_rng(0))
        opb = np.asarray(opb, dtype=np.float64)
        strict = np.asarray(oans, bool) & (opb != 0.5) & (pb[sel] != 0.5)
        hits += int(np.sum((pb[sel][strict] > 0.5) == (opb[strict] > 0.5)))
        total += int(strict.sum())
    return (hits / total if total else None), total
