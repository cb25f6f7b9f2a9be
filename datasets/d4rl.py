"""Original D4RL HDF5 files, read with h5py (the ``d4rl`` package does not install beside
today's gymnasium/mujoco).

File layout (D4RL MuJoCo v2): ``observations (N, obs)``, ``actions (N, act)``,
``rewards (N,)``, ``terminals (N,)``, ``timeouts (N,)``, ``infos/qpos (N, nq)``,
``infos/qvel (N, nv)``, optionally ``next_observations (N, obs)`` and ``infos/goal``
(antmaze). Rows are consecutive steps; an episode ends at a row whose ``terminals`` or
``timeouts`` flag is set, and the rows after the last flag form a final partial episode,
which is kept. Raw row ``i`` of the file is row ``i`` of the loaded OfflineDataset.

Published human labels (Preference Transformer, Uni-RLHF) index the output of D4RL's
``qlearning_dataset``; :func:`qlearning_index_map` gives the map from those indices to raw
rows and :func:`raw_row_to_episode` turns a raw row into (episode, offset).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.datasets.base import OfflineDataset, check_field
from pbrl.envs.mujoco import D4RL_REF_SCORES
from pbrl.errors import DataError, PbrlError, UnknownIdError

log = logging.getLogger(__name__)

D4RL_ENVS = ("hopper", "halfcheetah", "walker2d", "ant")
D4RL_KINDS = ("random", "medium", "medium-replay", "medium-expert", "expert")
#: D4RL's own host for the MuJoCo v2 files (d4rl/infos.py, DATASET_URLS).
D4RL_BASE_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2"
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")
_NAME_RE = re.compile(r"^(?P<env>[a-z0-9]+)-(?P<kind>[a-z-]+)-v(?P<version>\d+)$")


def d4rl_url(name: str) -> str:
    """D4RL's download URL for a MuJoCo v2 dataset, e.g. ``hopper-medium-replay-v2``.

    D4RL names the files ``<env>_<kind with underscores>-v2.hdf5``
    (``hopper_medium_replay-v2.hdf5``).
    """
    env, kind = _split_name(name)
    return f"{D4RL_BASE_URL}/{env}_{kind.replace('-', '_')}-v2.hdf5"


#: name -> URL for every MuJoCo v2 dataset D4RL hosts (4 envs x 5 kinds).
D4RL_URLS: dict[str, str] = {
    f"{env}-{kind}-v2": f"{D4RL_BASE_URL}/{env}_{kind.replace('-', '_')}-v2.hdf5"
    for env in D4RL_ENVS
    for kind in D4RL_KINDS
}


def _split_name(name: str) -> tuple[str, str]:
    bare = name.removeprefix("d4rl/")
    if bare not in D4RL_URLS:
        raise UnknownIdError(
            f"unknown D4RL dataset 'd4rl/{bare}' (known: d4rl/<env>-<kind>-v2 with env in "
            f"{', '.join(D4RL_ENVS)} and kind in {', '.join(D4RL_KINDS)})"
        )
    m = _NAME_RE.match(bare)
    assert m is not None  # every D4RL_URLS key matches
    return m["env"], m["kind"]


def d4rl_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where D4RL keeps its files: ``cache_dir``, else ``$D4RL_DATASET_DIR``, else ``~/.d4rl/datasets``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("D4RL_DATASET_DIR", "~/.d4rl/datasets")).expanduser()


def d4rl_local_path(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cached file for ``name`` (D4RL's own file name: the URL's last part)."""
    return d4rl_cache_dir(cache_dir) / d4rl_url(name).rsplit("/", 1)[1]


def d4rl_task_id(name: str) -> str:
    """``d4rl/hopper-medium-replay-v2`` -> ``mujoco/hopper``."""
    return f"mujoco/{_split_name(name)[0]}"


def d4rl_ref_scores(env: str) -> tuple[float, float]:
    """D4RL's (random, expert) reference returns for a locomotion env (``hopper``, ...)."""

    scores = D4RL_REF_SCORES[env]
    if isinstance(scores, dict):
        return float(scores["min"]), float(scores["max"])
    lo, hi = scores
    return float(lo), float(hi)


def name_from_filename(path: str | os.PathLike[str]) -> str:
    """``hopper_medium_replay-v2.hdf5`` -> ``hopper-medium-replay-v2`` (D4RL's file naming)."""
    return Path(path).name.removesuffix(".hdf5").removesuffix(".h5").replace("_", "-")


# ---------------------------------------------------------------------------------------
# index maps
# ---------------------------------------------------------------------------------------
def qlearning_index_map(
    terminals: np.ndarray, timeouts: np.ndarray, *, terminate_on_end: bool = False
) -> np.ndarray:
    """Map k -> raw row for the k-th transition of D4RL's ``qlearning_dataset``.

    D4RL (d4rl/__init__.py) walks rows ``i = 0 .. N-2`` (the last row never becomes a
    transition: it has no next row) and, with the default ``terminate_on_end=False``, skips
    every row whose ``timeouts`` flag is set. ``terminals`` do not affect the walk (a
    terminal row is kept, with done=True), so the argument is only checked for shape.
    """
    terminals = np.asarray(terminals).reshape(-1)
    timeouts = np.asarray(timeouts, dtype=bool).reshape(-1)
    if terminals.shape != timeouts.shape:
        raise DataError(
            f"qlearning_index_map: terminals has {terminals.shape[0]} rows, timeouts "
            f"{timeouts.shape[0]}"
        )
    n = timeouts.shape[0]
    if n < 2:
        return np.zeros(0, dtype=np.int64)
    if terminate_on_end:
        return np.arange(n - 1, dtype=np.int64)
    return np.flatnonzero(~timeouts[: n - 1]).astype(np.int64)


def raw_row_to_episode(dataset: OfflineDataset, row: int) -> tuple[int, int]:
    """(episode, offset within the episode) of a raw row of a loaded dataset."""
    row = int(row)
    if not 0 <= row < dataset.num_steps:
        raise DataError(
            f"{dataset.id}: row {row} out of range (dataset has {dataset.num_steps} rows)"
        )
    ep = int(np.searchsorted(dataset.starts, row, side="right") - 1)
    return ep, row - int(dataset.starts[ep])


def episode_bounds(terminals: np.ndarray, timeouts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, lengths): episodes end at rows with either flag; a trailing partial one is kept."""
    n = int(terminals.shape[0])
    ends = np.flatnonzero(np.asarray(terminals, bool) | np.asarray(timeouts, bool)) + 1
    if ends.size == 0 or ends[-1] != n:
        ends = np.append(ends, n)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    return starts.astype(np.int64), (ends - starts).astype(np.int64)


# ---------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------
def _read(f: Any, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(f[key][()])
    except (OSError, RuntimeError, ValueError, TypeError) as e:
        raise DataError(
            f"{path}: field '{key}' is unreadable (truncated or corrupt file: {e})"
        ) from None


def load_d4rl_hdf5(path: str | os.PathLike[str], name: str | None = None) -> OfflineDataset:
    """Load a D4RL-layout HDF5 file as an OfflineDataset with id ``d4rl/<name>``.

    ``name`` defaults to the file name in D4RL's naming (``hopper_medium_replay-v2.hdf5`` ->
    ``hopper-medium-replay-v2``). Reference scores are D4RL's constants when the name is
    one of D4RL's MuJoCo datasets. DataError (naming the file and field) on a missing,
    truncated or corrupt file, missing keys, mismatched lengths, NaN/inf, or a dtype
    :func:`pbrl.datasets.base.check_field` refuses (the Minari loader's rule too).
    """
    import h5py

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    name = name or name_from_filename(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable HDF5 file (truncated or corrupt: {e})") from None
    with f:
        missing = [k for k in REQUIRED_KEYS if k not in f]
        if missing:
            raise DataError(f"{path}: missing field(s) {', '.join(repr(k) for k in missing)}")
        data = {k: _read(f, k, path) for k in REQUIRED_KEYS}
        for k in ("next_observations", "infos/qpos", "infos/qvel", "infos/goal"):
            if k in f:
                data[k] = _read(f, k, path)

    n = data["observations"].shape[0] if data["observations"].ndim else 0
    for k in ("rewards", "terminals", "timeouts"):
        if data[k].ndim == 2 and data[k].shape[1] == 1:  # D4RL squeezes (N, 1) columns
            data[k] = data[k][:, 0]
    # The one rule of every loader (base.check_field): floating-point, finite values;
    # flags 0/1; one row per step.
    for k, a in data.items():
        data[k] = check_field(a, k, str(path), flag=k in ("terminals", "timeouts"), rows=n)
    if n == 0:
        raise DataError(f"{path}: field 'observations' is empty")
    for k in ("observations", "actions"):
        if data[k].ndim != 2:
            raise DataError(f"{path}: field '{k}' has shape {data[k].shape}, expected (N, dim)")
    for k in ("rewards", "terminals", "timeouts"):
        if data[k].ndim != 1:
            raise DataError(f"{path}: field '{k}' has shape {data[k].shape}, expected (N,)")

    obs = data["observations"].astype(np.float32, copy=False)
    terminals = data["terminals"].astype(bool)
    timeouts = data["timeouts"].astype(bool)
    starts, lengths = episode_bounds(terminals, timeouts)
    if "next_observations" in data:
        next_obs = data["next_observations"].astype(np.float32, copy=False)
        if next_obs.shape != obs.shape:
            raise DataError(
                f"{path}: field 'next_observations' has shape {next_obs.shape}, "
                f"'observations' {obs.shape}"
            )
    else:
        # Shift within each episode; an episode's last row has no successor in the file, so
        # it repeats its own observation (masked for terminals; flagged for timeouts).
        next_obs = np.empty_like(obs)
        next_obs[:-1] = obs[1:]
        last = starts + lengths - 1
        next_obs[last] = obs[last]

    bare = name.removeprefix("d4rl/")
    ref_min = ref_max = None
    task_id = None
    if bare in D4RL_URLS:
        env = _split_name(bare)[0]
        task_id = f"mujoco/{env}"
        ref_min, ref_max = d4rl_ref_scores(env)
    infos: list[dict[str, Any]] = [{"source": "d4rl"} for _ in range(len(starts))]
    if "infos/goal" in data:
        goal = data["infos/goal"]
        for e, s in enumerate(starts):
            infos[e]["goal"] = np.asarray(goal[s]).tolist()
    return OfflineDataset(
        id=f"d4rl/{bare}",
        task_id=task_id,
        observations=obs,
        actions=data["actions"].astype(np.float32, copy=False),
        rewards=data["rewards"].astype(np.float32, copy=False),
        next_observations=next_obs,
        terminals=terminals,
        timeouts=timeouts,
        starts=starts,
        lengths=lengths,
        qpos=data.get("infos/qpos"),
        qvel=data.get("infos/qvel"),
        episode_info=tuple(infos),
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        card={
            "generator": "d4rl",
            "source": "d4rl",
            "file": str(path),
            "url": D4RL_URLS.get(bare),
            "ref_score_method": "D4RL constants (d4rl/infos.py REF_MIN_SCORE/REF_MAX_SCORE)",
        },
        path=str(path),
    )


def download_d4rl(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Download a D4RL file into the cache (temp file, checked, then renamed); return its path."""
    import h5py

    url = d4rl_url(name)
    dest = d4rl_local_path(name, cache_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    log.info("downloading %s to %s", url, dest)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    while chunk := resp.read(1 << 20):
                        out.write(chunk)
            except (urllib.error.URLError, OSError, TimeoutError) as e:
                raise PbrlError(
                    f"cannot download D4RL dataset '{name}' from {url}: {e} (place the file at "
                    f"{dest} by hand to use it offline)"
                ) from None
        try:
            with h5py.File(tmp, "r") as f:
                missing = [k for k in REQUIRED_KEYS if k not in f]
        except OSError as e:
            raise DataError(f"{url}: the downloaded file is not valid HDF5 ({e})") from None
        if missing:
            raise DataError(f"{url}: the downloaded file lacks field(s) {', '.join(missing)}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def load_d4rl(
    name: str, cache_dir: str | os.PathLike[str] | None = None, download: bool = False
) -> OfflineDataset:
    """Load D4RL's ``name`` (``hopper-medium-replay-v2`` or ``d4rl/hopper-medium-replay-v2``)
    from the cache, downloading it first when ``download`` is set and it is missing."""
    bare = name.removeprefix("d4rl/")
    _split_name(bare)  # UnknownIdError for names D4RL does not host
    path = d4rl_local_path(bare, cache_dir)
    if not path.is_file():
        if not download:
            raise UnknownIdError(
                f"D4RL dataset 'd4rl/{bare}' is not in the cache ({path}); fetch it with "
                f"`pbrl datasets download d4rl/{bare}` (download=True) from {d4rl_url(bare)}"
            )
        download_d4rl(bare, cache_dir)
    return load_d4rl_hdf5(path, bare)
