"""Preference Transformer human labels (``pt``): reader and writer.

``human_label/<task>/`` holds ``indices_num<N>`` and ``indices_2_num<N>`` (pickled int arrays of
segment starts in D4RL ``qlearning_dataset`` rows, :mod:`pbrl.prefs.formats.qlearning`) and
``label_human`` (pickled list of ints: 0 first preferred, 1 second, -1 tie). Length 100.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pbrl.datasets.base import OfflineDataset
from pbrl.errors import DataError
from pbrl.prefs.data import PreferenceData
from pbrl.prefs.formats.common import (
    expand_paths,
    hard_labels,
    int_array,
    labels_012,
    pick_files,
    same_lengths,
    uniform_length,
)
from pbrl.prefs.formats.qlearning import export_starts, index_import
from pbrl.prefs.formats.unpickle import dump_pickle, safe_load_pickle
from pbrl.utils import atomic_path

log = logging.getLogger(__name__)

PT_SEGMENT_LENGTH = 100

_PT_RE = {
    "a": re.compile(r"^indices_num(\d+)$"),
    "b": re.compile(r"^indices_2_num(\d+)$"),
    "label": re.compile(r"^label_human$"),
}


def import_pt(
    paths: Sequence[str | Path],
    *,
    dataset: OfflineDataset | None = None,
    dataset_id: str | None = None,
    segment_length: int | None = None,
    allow_mismatch: bool = False,
) -> PreferenceData:
    """Preference Transformer human labels (a task folder or its three files)."""
    files = pick_files(expand_paths(paths), _PT_RE, "pt import")
    idx_a = int_array(str(files["a"]), "indices", safe_load_pickle(files["a"]))
    idx_b = int_array(str(files["b"]), "indices", safe_load_pickle(files["b"]))
    prefer_b = labels_012(str(files["label"]), safe_load_pickle(files["label"]))
    where = str(files["label"].parent)
    n = same_lengths(
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
    return index_import(
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


def export_pt(
    data: PreferenceData, out: Path, *, dataset: OfflineDataset | None = None
) -> list[Path]:
    """Write the answered hard labels as a new PT task folder ``out`` (atomic)."""
    ans, labels = hard_labels(data, "pt")
    length = uniform_length(ans, "pt")
    ka, kb = export_starts(ans, dataset, "pt")
    m = ans.num_queries
    names = [f"indices_num{m}", f"indices_2_num{m}", "label_human"]
    with atomic_path(out, is_dir=True) as tmp:
        if length != PT_SEGMENT_LENGTH:
            log.warning("pt export: segment length %d (PT's default is 100)", length)
        dump_pickle(ka.astype(np.int32), tmp / names[0])
        dump_pickle(kb.astype(np.int32), tmp / names[1])
        dump_pickle([int(v) for v in labels], tmp / names[2])
    return [out / n for n in names]
