"""Uni-RLHF crowdsourced labels (``uni-rlhf``): reader and writer.

``indices_1_<tag>.pkl``, ``indices_2_<tag>.pkl`` and ``human_label_<tag>.pkl`` with
``<tag> = domain_<d>_env_<e>_num_<N>_len_<L>_<id>``; the same D4RL ``qlearning_dataset`` index
space (:mod:`pbrl.prefs.formats.qlearning`) and 0/1/-1 values as ``pt``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    files = pick_files(expand_paths(paths), _UNI_RE, "uni-rlhf import")
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
    idx_a = int_array(str(files["a"]), "indices", safe_load_pickle(files["a"]))
    idx_b = int_array(str(files["b"]), "indices", safe_load_pickle(files["b"]))
    prefer_b = labels_012(str(files["label"]), safe_load_pickle(files["label"]))
    where = str(files["label"].parent)
    n = same_lengths(
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
    return index_import(
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


def export_uni_rlhf(
    data: PreferenceData, out: Path, *, dataset: OfflineDataset | None = None
) -> list[Path]:
    """Write the answered hard labels as a new Uni-RLHF label folder ``out`` (atomic)."""
    ans, labels = hard_labels(data, "uni-rlhf")
    length = uniform_length(ans, "uni-rlhf")
    ka, kb = export_starts(ans, dataset, "uni-rlhf")
    m = ans.num_queries
    domain = str(ans.meta.get("domain", "mujoco"))
    env = str(ans.meta.get("env") or ans.dataset_id.split("/")[-1])
    uid = str(ans.meta.get("label_set") or _digest(ans))
    tag = f"domain_{domain}_env_{env}_num_{m}_len_{length}_{uid}"
    names = [f"indices_1_{tag}.pkl", f"indices_2_{tag}.pkl", f"human_label_{tag}.pkl"]
    with atomic_path(out, is_dir=True) as tmp:
        dump_pickle(ka.astype(np.int64), tmp / names[0])
        dump_pickle(kb.astype(np.int64), tmp / names[1])
        dump_pickle(np.asarray(labels, dtype=np.int64), tmp / names[2])
    return [out / n for n in names]


def _digest(data: PreferenceData) -> str:
    h = hashlib.sha1()
    for arr in (data.refs_a, data.refs_b, data.prefer_b):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:32]
