"""Labelling a dataset with a synthetic teacher, and the statistics of a preference set."""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from typing import Any

import numpy as np

from pbrl.datasets.base import OfflineDataset
from pbrl.errors import DataError, PbrlError
from pbrl.prefs.data import PreferenceData, make_preference_data
from pbrl.prefs.io import dataset_fingerprint
from pbrl.prefs.select import select_queries
from pbrl.teachers import SegmentPairs, make_teacher
from pbrl.utils import check_seed

# Labelling gathers both segments of every query at once: cap queries x segment x 2 steps.
MAX_LABEL_STEPS = 50_000_000


# ---- labelling -------------------------------------------------------------------------------
def check_label_options(n_queries: int, segment: int, seed: int) -> None:
    """``--queries``, ``--segment`` and ``--seed`` of a labelling, before anything is loaded."""
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
