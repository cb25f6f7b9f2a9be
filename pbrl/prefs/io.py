"""Preference files on disk, and the tie between labels and the dataset they index.

A preference file (docs/preferences.md) is one ``.npz`` archive, loadable with
``numpy.load(path, allow_pickle=False)``: the arrays ``refs_a``, ``refs_b``, ``prefer_b``,
``skipped``, the UTF-8 bytes of a JSON ``meta`` object and of the Feedback JSONL text (one
record per line, same order as the arrays), plus, for imported files that carry their own
segments (CPL, imitation), the arrays of that *inline* dataset. Never pickle.

``meta["dataset_fingerprint"]`` (:func:`dataset_fingerprint`) records the content of the dataset
the refs index; :func:`check_prefs_dataset` refuses labels used against another dataset.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.datasets.base import OfflineDataset
from pbrl.errors import DataError, PbrlError
from pbrl.prefs.data import INLINE_ARRAYS, PreferenceData, validate_arrays
from pbrl.types import Feedback
from pbrl.utils import atomic_path, json_default

log = logging.getLogger(__name__)

FORMAT_NAME = "pbrl-preferences"
# 1: the first format. 2: ``meta["dataset_fingerprint"]`` records the content of the dataset
# the refs index (:func:`dataset_fingerprint`); version-1 files are read, with a warning that
# their dataset's content cannot be checked.
FORMAT_VERSION = 2
FINGERPRINT_PREFIX = "sha256:"
_FINGERPRINT_RE = re.compile(r"sha256:[0-9a-f]{64}")


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
        "meta_json": _text_bytes(json.dumps(meta, sort_keys=True, default=json_default)),
        "feedback_jsonl": _text_bytes(jsonl),
    }
    if data.inline is not None:
        ds = data.inline
        if ds.rewards is None:
            raise PbrlError("save_preferences: the inline dataset has no rewards to store")
        for name in INLINE_ARRAYS:
            arrays[f"inline_{name}"] = np.asarray(getattr(ds, name))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)


def _text_bytes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


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
    validate_arrays(
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
        missing = [n for n in INLINE_ARRAYS if f"inline_{n}" not in arrays]
        if missing:
            raise DataError(f"{path}: inline dataset is missing field(s) {', '.join(missing)}")
        inline = OfflineDataset(
            id=str(meta.get("inline_dataset_id", meta["dataset_id"])),
            task_id=meta.get("task_id"),
            **{n: arrays[f"inline_{n}"] for n in INLINE_ARRAYS},
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
