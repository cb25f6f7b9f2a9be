"""CPL segment files (``cpl``): reader and writer.

CPL's MetaWorld ``.npz`` of stacked segments ``obs (N, S, D)``, ``action``, ``reward`` and
per-segment scores (``rl_sum`` by default). Pairs are CPL's ``comparison`` mode: segment ``i``
against segment ``i + capacity`` (capacity ``N // 2`` by default); the label is
1[score_2 > score_1] + 0.5 * 1[score_2 == score_1]. CPL's older pairwise layout (``obs_1``,
``obs_2``, ``action_1``, ``action_2``, ``reward_1``, ``reward_2``, ``label`` with label =
P(second)) is read too. The segments travel as an *inline* dataset (one episode per segment).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pbrl.datasets.base import OfflineDataset, check_field
from pbrl.errors import DataError
from pbrl.prefs.data import PreferenceData, make_preference_data
from pbrl.prefs.formats.common import (
    export_steps,
    hard_labels,
    same_lengths,
    segment_refs,
    segments_dataset,
    uniform_length,
)
from pbrl.utils import atomic_path


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
    n = same_lengths(where, obs=obs, action=act, reward=rew, **{score_key: score})
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
        segment_refs(inline.lengths, i),
        segment_refs(inline.lengths, i + cap),
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
    n = same_lengths(where, **{k: z[k] for k in keys})
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
        segment_refs(inline.lengths, i),
        segment_refs(inline.lengths, i + n),
        label.astype(np.float32),
        None,
        labeler="script:cpl(label)",
        meta=meta,
        query_ids=[f"cpl:{path.stem}:{k}" for k in range(n)],
        when=0.0,
        inline=inline,
    )


def export_cpl(
    data: PreferenceData, out: Path, *, dataset: OfflineDataset | None = None
) -> list[Path]:
    """Write the answered hard labels as one CPL ``.npz`` at ``out`` (atomic): segments a
    first, then segments b, scored so that CPL's comparison rule gives back each label."""
    ans, _ = hard_labels(data, "cpl")
    ds, (rows_a, _), (rows_b, _) = export_steps(ans, dataset, "cpl")
    uniform_length(ans, "cpl")
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
