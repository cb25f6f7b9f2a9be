"""One entry point for every dataset source: ids, paths, listing and verification.

Ids:

- ``d4rl/<env>-<kind>-v2``: an original D4RL MuJoCo file (cache ``~/.d4rl/datasets``);
  task ``mujoco/<env>``.
- ``pbrl/<domain>/<task>/<kind>-v0``: a dataset generated locally into the Minari store;
  task ``<domain>/<task>``.
- any other Minari id (``mujoco/hopper/medium-v0``, ``D4RL/pen/human-v2``, ...): the local
  Minari store; ``mujoco/<env>/...`` maps to task ``mujoco/<env>`` when that task exists,
  other ids resolve through :func:`pbrl.envs.minari_tasks.task_for_minari_dataset`.
- a path to an ``.hdf5``/``.h5`` file (D4RL layout) or to a Minari dataset folder.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.datasets.base import OfflineDataset
from pbrl.datasets.d4rl import (
    D4RL_URLS,
    d4rl_local_path,
    d4rl_ref_scores,
    d4rl_task_id,
    d4rl_url,
    episode_bounds,
    load_d4rl,
    load_d4rl_hdf5,
    name_from_filename,
)
from pbrl.datasets.minari_io import (
    CARD_KEY,
    RECOMMENDED_CARD_KEYS,
    check_dataset_id,
    check_hdf5_layout,
    load_minari,
    minari_data_path,
    minari_root,
    read_minari_metadata,
)
from pbrl.envs import get_task
from pbrl.errors import DataError, PbrlError, UnknownIdError

log = logging.getLogger(__name__)

_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_TASK_RE = re.compile(r"^[a-z0-9_]+/[A-Za-z0-9_.-]+$")
# task id -> (observation space, action space), or None when its env cannot be made here:
# each task's env is made at most once per process.
_SPACES_CACHE: dict[str, tuple[Any, Any] | None] = {}


def generated_dataset_id(task_id: str, kind: str) -> str:
    """``("metaworld/button-press-topdown-v3", "medium-replay")`` ->
    ``pbrl/metaworld/button-press-topdown-v3/medium-replay-v0``."""
    if not _TASK_RE.match(task_id):
        raise UnknownIdError(f"task id '{task_id}': expected '<domain>/<task>'")
    if not _KIND_RE.match(kind):
        raise UnknownIdError(f"--kind '{kind}': expected lowercase letters, digits and '-'")
    return f"pbrl/{task_id}/{kind}-v0"


# ---------------------------------------------------------------------------------------
# id -> task
# ---------------------------------------------------------------------------------------
def task_id_for_dataset(dataset_id: str, metadata: dict[str, Any] | None = None) -> str | None:
    """The task a dataset id belongs to, or None when it cannot be resolved."""

    if dataset_id.startswith("d4rl/"):
        bare = dataset_id.removeprefix("d4rl/")
        return d4rl_task_id(bare) if bare in D4RL_URLS else None
    parts = dataset_id.split("/")
    if parts[0] == "pbrl" and len(parts) >= 4:
        return f"{parts[1]}/{parts[2]}"
    if parts[0] == "mujoco" and len(parts) == 3:
        try:
            return get_task(f"mujoco/{parts[1]}").id
        except UnknownIdError:
            pass  # a Minari MuJoCo env the registry lacks (pusher, ...): try its env spec
    try:
        from pbrl.envs.minari_tasks import task_for_minari_dataset
    except ImportError:
        return None
    try:
        return task_for_minari_dataset(dataset_id, metadata or {}).id
    except PbrlError as e:
        log.warning("dataset '%s': no task resolved (%s)", dataset_id, e)
        return None


def _task_spaces(task_id: str) -> tuple[Any, Any] | None:
    """(observation_space, action_space) of a task's env, or None when it cannot be made here."""
    if task_id not in _SPACES_CACHE:
        import gymnasium as gym

        try:
            _SPACES_CACHE[task_id] = get_task(task_id).spaces()
        except (PbrlError, ImportError, gym.error.Error) as e:
            log.info("task '%s' cannot be made here (%s): spaces not checked", task_id, e)
            _SPACES_CACHE[task_id] = None
    return _SPACES_CACHE[task_id]


def check_task_match(ds: OfflineDataset) -> None:
    """DataError when the dataset's observation or action size differs from its task's.

    Checked where the task is known and its env can be made here (made once per task and
    process); learners and evaluation size their networks from these two numbers, so a
    mismatch would otherwise surface as a crash in training or evaluation.
    """
    if ds.task_id is None:
        return
    import gymnasium as gym

    spaces = _task_spaces(ds.task_id)
    if spaces is None:
        return
    where = f"dataset '{ds.id}'" + (f" ({ds.path})" if ds.path and ds.path != ds.id else "")
    for name, got, space in (
        ("observations", ds.obs_dim, spaces[0]),
        ("actions", ds.act_dim, spaces[1]),
    ):
        expected = int(gym.spaces.flatdim(space))
        if expected != got:
            raise DataError(
                f"{where}: field '{name}' has {got} dimensions per step but task "
                f"'{ds.task_id}' has {expected}"
            )


# ---------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------
def _looks_like_path(s: str) -> bool:
    return s.startswith(("/", "./", "../", "~")) or s.endswith((".hdf5", ".h5"))


def load_dataset(
    id_or_path: str | os.PathLike[str], *, download: bool = False, check_task: bool = True
) -> OfflineDataset:
    """Load any dataset by id or path (see the module docstring) with its ``task_id`` set.

    Ids that are not paths go through :func:`pbrl.datasets.minari_io.check_dataset_id`
    (``..`` and other escapes from the store are refused). With ``check_task`` the
    observation and action sizes are checked against the task's env
    (:func:`check_task_match`) when that env can be made here.
    """

    s = str(id_or_path)
    p = Path(s).expanduser()
    metadata: dict[str, Any] | None = None
    if p.is_file():
        if p.suffix not in (".hdf5", ".h5"):
            raise DataError(f"{p}: not a dataset (expected a D4RL .hdf5 file or a Minari folder)")
        ds = load_d4rl_hdf5(p)
    elif minari_data_path(p) is not None:
        metadata = read_minari_metadata(p)
        ds = load_minari(p)
    elif _looks_like_path(s) or p.is_dir():
        raise DataError(
            f"{p}: no such dataset file or Minari dataset folder (a Minari folder holds "
            "data/metadata.json)"
        )
    elif s.startswith("d4rl/"):
        ds = load_d4rl(s, download=download)
    else:
        ds = load_minari(check_dataset_id(s), download=download)
        metadata = read_minari_metadata(s)

    task_id = ds.task_id
    if task_id is None:
        task_id = task_id_for_dataset(ds.id, metadata)
        ds = dataclasses.replace(ds, task_id=task_id)
    if check_task:
        check_task_match(ds)
    return ds


# ---------------------------------------------------------------------------------------
# listing and info
# ---------------------------------------------------------------------------------------
def _d4rl_counts(path: Path) -> tuple[int | None, int | None]:
    """(episodes, steps) of a D4RL file from its flag arrays only; (None, None) if unreadable."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            term = np.asarray(f["terminals"][()], bool).reshape(-1)
            tout = np.asarray(f["timeouts"][()], bool).reshape(-1)
    except (OSError, KeyError, ValueError, TypeError):
        return None, None
    if term.shape != tout.shape:
        return None, None
    starts, _ = episode_bounds(term, tout)
    return int(starts.size), int(term.size)


def list_datasets() -> list[dict[str, Any]]:
    """Every known dataset: all D4RL names (local or not), the local Minari store, generated ones.

    Rows: ``id``, ``source`` (``d4rl`` | ``minari`` | ``generated``), ``local``,
    ``episodes``, ``steps`` (None when not local), ``path``.
    """
    import minari

    rows: list[dict[str, Any]] = []
    for name in D4RL_URLS:
        path = d4rl_local_path(name)
        local = path.is_file()
        eps, steps = _d4rl_counts(path) if local else (None, None)
        rows.append(
            {
                "id": f"d4rl/{name}",
                "source": "d4rl",
                "local": local,
                "episodes": eps,
                "steps": steps,
                "path": str(path),
            }
        )

    local_minari: dict[str, Any] = {}
    if minari_root().is_dir():  # no store yet (or an unusable path): nothing local to list
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Minari warns about every misconfigured folder
            local_minari = minari.list_local_datasets()
    for dataset_id, meta in sorted(local_minari.items()):
        rows.append(
            {
                "id": dataset_id,
                "source": "generated" if dataset_id.startswith("pbrl/") else "minari",
                "local": True,
                "episodes": meta.get("total_episodes"),
                "steps": meta.get("total_steps"),
                "path": str(minari_root() / dataset_id),
            }
        )
    return rows


def dataset_info(id_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Metadata and card of a dataset without loading its steps."""
    import h5py

    s = str(id_or_path)
    p = Path(s).expanduser()
    if s.startswith("d4rl/") or p.is_file():
        if p.is_file():
            name, path = name_from_filename(p), p
        else:
            name = s.removeprefix("d4rl/")
            if name not in D4RL_URLS:
                d4rl_url(name)  # raises UnknownIdError naming the known ones
            path = d4rl_local_path(name)
        info: dict[str, Any] = {"id": f"d4rl/{name}", "source": "d4rl", "path": str(path)}
        if name in D4RL_URLS:
            env = name.split("-", 1)[0]
            lo, hi = d4rl_ref_scores(env)
            info.update(
                task_id=f"mujoco/{env}", url=D4RL_URLS[name], ref_min_score=lo, ref_max_score=hi
            )
        info["local"] = path.is_file()
        if path.is_file():
            try:
                with h5py.File(path, "r") as f:
                    fields: dict[str, Any] = {}
                    f.visititems(
                        lambda k, v: (
                            fields.__setitem__(k, list(v.shape))
                            if isinstance(v, h5py.Dataset)
                            else None
                        )
                    )
            except OSError as e:
                raise DataError(f"{path}: not a readable HDF5 file ({e})") from None
            info["fields"] = fields
            info["episodes"], info["steps"] = _d4rl_counts(path)
        return info

    if minari_data_path(p) is None and _looks_like_path(s):
        raise DataError(f"{p}: no such dataset file or Minari dataset folder")
    meta = read_minari_metadata(s)
    dataset_id = str(meta.get("dataset_id", s))
    folder = data.parent if (data := minari_data_path(p)) else minari_root() / s
    h5 = folder / "data" / "main_data.hdf5"
    if h5.is_file():
        # Cheap: opens the file and checks every episode's fields exist, reads no steps.
        check_hdf5_layout(h5, int(meta.get("total_episodes") or 0))
    elif meta.get("data_format", "hdf5") == "hdf5":
        raise DataError(f"{h5}: missing (metadata.json says the data is in HDF5)")
    card = meta.get(CARD_KEY) if isinstance(meta.get(CARD_KEY), dict) else {}
    shown = {
        k: v
        for k, v in meta.items()
        if k not in (CARD_KEY, "observation_space", "action_space", "env_spec", "eval_env_spec")
    }
    task = card.get("task_id") if isinstance(card.get("task_id"), str) else None
    return {
        "id": dataset_id,
        "source": "generated" if dataset_id.startswith("pbrl/") else "minari",
        "path": str(folder),
        "task_id": task or task_id_for_dataset(dataset_id, meta),
        "metadata": shown,
        "card": card,
    }


# ---------------------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------------------
def _stats(x: np.ndarray) -> dict[str, float]:
    return {"min": float(np.min(x)), "mean": float(np.mean(x)), "max": float(np.max(x))}


def verify(id_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a dataset and return a summary; DataError listing every problem found.

    Loading already refuses what no command may run on (the loaders' one rule,
    :func:`pbrl.datasets.base.check_field`: unreadable files, missing fields, NaN/inf,
    wrong dtypes and shapes). Then: episode lengths in ``1..horizon``, reference scores
    present with ``min < max``, the observation and action sizes against the task. Softer findings (actions outside the task's
    action space, a missing card key, an episode end without a flag) go to ``warnings``.
    """

    ds = load_dataset(id_or_path, check_task=False)
    problems: list[str] = []
    warn: list[str] = []
    if ds.num_episodes == 0:
        problems.append("no episodes")

    task = None
    if ds.task_id is not None:
        try:
            task = get_task(ds.task_id)
        except UnknownIdError as e:
            problems.append(str(e))
    horizon = ds.card.get("horizon") if isinstance(ds.card.get("horizon"), int) else None
    if horizon is None and task is not None:
        horizon = task.horizon
    if ds.num_episodes:
        if int(ds.lengths.min()) <= 0:
            problems.append(f"episode {int(np.argmin(ds.lengths))} is empty")
        if horizon is not None and int(ds.lengths.max()) > horizon:
            e = int(np.argmax(ds.lengths))
            problems.append(
                f"episode {e} has {int(ds.lengths[e])} steps, more than the horizon {horizon}"
            )
        ends = ds.starts + ds.lengths - 1
        unflagged = np.flatnonzero(~(ds.terminals[ends] | ds.timeouts[ends]))
        unflagged = unflagged[unflagged != ds.num_episodes - 1]
        if unflagged.size:
            warn.append(f"{unflagged.size} episode(s) end without a termination/truncation flag")

    lo, hi = ds.ref_min_score, ds.ref_max_score
    if lo is None or hi is None:
        problems.append("reference scores (ref_min_score/ref_max_score) are missing")
    elif not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        problems.append(f"reference scores must satisfy min < max, got min={lo} max={hi}")

    if task is not None:
        try:
            check_task_match(ds)
        except DataError as e:
            problems.append(str(e).split(": ", 1)[1])
        spaces = _task_spaces(task.id)
        act_space = None if spaces is None else spaces[1]
        low, high = getattr(act_space, "low", None), getattr(act_space, "high", None)
        if low is not None and high is not None and low.shape == ds.actions.shape[1:]:
            outside = np.any((ds.actions < low - 1e-6) | (ds.actions > high + 1e-6), axis=1)
            if outside.any():
                warn.append(f"{int(outside.sum())} step(s) have actions outside the action space")
    if ds.id.startswith("pbrl/"):
        missing = [k for k in RECOMMENDED_CARD_KEYS if k not in ds.card]
        if missing:
            warn.append(f"card lacks {', '.join(missing)}")

    where = ds.path or ds.id
    if problems:
        raise DataError(f"{where}: verify failed: " + "; ".join(problems))

    summary: dict[str, Any] = {
        "id": ds.id,
        "task_id": ds.task_id,
        "path": ds.path,
        "episodes": ds.num_episodes,
        "steps": ds.num_steps,
        "obs_dim": ds.obs_dim,
        "act_dim": ds.act_dim,
        "episode_length": _stats(ds.lengths),
        "terminals": int(ds.terminals.sum()),
        "timeouts": int(ds.timeouts.sum()),
        "has_qpos_qvel": ds.qpos is not None and ds.qvel is not None,
        "ref_min_score": lo,
        "ref_max_score": hi,
        "warnings": warn,
    }
    if ds.rewards is not None and ds.num_episodes:
        returns = ds.episode_returns()
        summary["return"] = _stats(returns)
        assert lo is not None and hi is not None
        summary["normalized_return"] = _stats(100.0 * (returns - lo) / (hi - lo))
    if ds.successes is not None and ds.num_episodes:
        per_ep = np.logical_or.reduceat(ds.successes, ds.starts)
        summary["success_rate"] = float(per_ep.mean())
    return summary
