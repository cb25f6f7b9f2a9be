"""Minari-format storage: the atomic writer for generated datasets and the loader.

Layout written by :func:`write_minari_dataset` (plain Minari 0.5 HDF5 layout, so that
``minari.load_dataset(id)`` works unchanged)::

    $MINARI_DATASETS_PATH/<namespace...>/<name>-vN/data/metadata.json
                                                   /data/main_data.hdf5

- ``metadata.json`` holds Minari's own keys plus ``pbrl_card`` (the dataset card: a JSON
  object) and ``pbrl_format`` (an int, the version of this layout). ``ref_min_score`` and
  ``ref_max_score`` are always stored (Minari drops them silently when it has no env spec,
  so the writer sets them itself after creation).
- Each episode group ``episode_<i>`` carries the attribute ``pbrl_info``: the episode's
  metadata (``source``, ``seed``, ``rand_vec``, ...) as a JSON string, plus Minari's own
  ``seed`` attribute when the info has an integer seed.
- Per-step infos ``qpos``, ``qvel``, ``success`` have T+1 rows, like observations (row 0 is
  the reset state).

Writing is atomic: the dataset is created under a hidden temporary Minari root inside the
real one (Minari skips hidden folders) and renamed into place only when complete.

Loading (:func:`load_minari`) flattens episodes into an :class:`OfflineDataset`:
observations of step t are row t, next observations row t+1, qpos/qvel of step t row t
(the state the action was taken in), the success flag of step t row t+1 (the info the step
returned).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.datasets.base import EpisodeData, OfflineDataset
from pbrl.errors import DataError, UnknownIdError

log = logging.getLogger(__name__)

#: Version of the pbrl extensions to the Minari layout (``pbrl_format`` in metadata.json).
PBRL_FORMAT = 1
#: Episode attribute holding the per-episode metadata as a JSON string.
EPISODE_INFO_ATTR = "pbrl_info"
#: metadata.json key holding the dataset card.
CARD_KEY = "pbrl_card"
#: Card keys every generated dataset carries (the writer fills the last three); missing ones
#: are logged here and reported by ``pbrl datasets verify``. Policy quality, seeds and how the
#: reference scores were computed are free-form keys chosen by each generator (docs/datasets.md).
RECOMMENDED_CARD_KEYS = (
    "generator",
    "task_id",
    "package_versions",
    "ref_min_score",
    "ref_max_score",
)
#: Packages whose versions go into every card.
VERSIONED_PACKAGES = (
    "pbrl",
    "metaworld",
    "mujoco",
    "gymnasium",
    "minari",
    "numpy",
    "torch",
    "stable-baselines3",
    "dm-control",
    "shimmy",
    "h5py",
)

# Writing swaps MINARI_DATASETS_PATH for the duration of one create call.
_ROOT_LOCK = threading.Lock()


def minari_root() -> Path:
    """The local Minari store: ``$MINARI_DATASETS_PATH`` or Minari's default ``~/.minari/datasets``."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    if env:
        return Path(env)
    return Path.home() / ".minari" / "datasets"


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages a dataset's contents depend on (None if absent)."""
    out: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def _jsonable(obj: Any, where: str) -> Any:
    """Convert numpy values to plain JSON types; raise DataError on anything else odd."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), where)
    if isinstance(obj, np.generic):
        return _jsonable(obj.item(), where)
    if isinstance(obj, float) and not math.isfinite(obj):
        raise DataError(f"{where}: value {obj} is not finite")
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise DataError(f"{where}: value of type {type(obj).__name__} cannot be stored as JSON")


def _check_rows(arr: Any, rows: int, name: str, where: str, ndim: int | None = None) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 0 or a.shape[0] != rows:
        got = "a scalar" if a.ndim == 0 else f"{a.shape[0]} rows"
        raise DataError(f"{where}: field '{name}' has {got}, expected {rows}")
    if ndim is not None and a.ndim != ndim:
        raise DataError(f"{where}: field '{name}' has shape {a.shape}, expected {ndim} dimensions")
    if a.dtype.kind in "fc" and not np.all(np.isfinite(a)):
        bad = int(np.argwhere(~np.isfinite(a))[0][0])
        raise DataError(f"{where}: field '{name}' has a NaN or inf value (row {bad})")
    if a.dtype.kind not in "fcbiu":
        raise DataError(f"{where}: field '{name}' has non-numeric dtype {a.dtype}")
    return a


def validate_episodes(dataset_id: str, episodes: Sequence[EpisodeData]) -> None:
    """Check every episode's shapes and values; DataError naming the episode and field."""
    if len(episodes) == 0:
        raise DataError(f"dataset '{dataset_id}': no episodes to write")
    first = episodes[0]
    obs_shape = np.asarray(first.observations).shape[1:]
    act_shape = np.asarray(first.actions).shape[1:]
    optional = {name: getattr(first, name) is not None for name in ("qpos", "qvel", "successes")}
    for i, ep in enumerate(episodes):
        where = f"dataset '{dataset_id}', episode {i}"
        if not isinstance(ep, EpisodeData):
            raise DataError(f"{where}: expected EpisodeData, got {type(ep).__name__}")
        actions = np.asarray(ep.actions)
        if actions.ndim != 2 or actions.shape[0] == 0:
            raise DataError(
                f"{where}: field 'actions' has shape {actions.shape}, expected (T >= 1, act_dim)"
            )
        t = actions.shape[0]
        _check_rows(actions, t, "actions", where)
        obs = _check_rows(ep.observations, t + 1, "observations", where)
        _check_rows(ep.rewards, t, "rewards", where, ndim=1)
        _check_rows(ep.terminations, t, "terminations", where, ndim=1)
        _check_rows(ep.truncations, t, "truncations", where, ndim=1)
        if obs.shape[1:] != obs_shape:
            raise DataError(
                f"{where}: field 'observations' has per-step shape {obs.shape[1:]}, "
                f"episode 0 has {obs_shape}"
            )
        if actions.shape[1:] != act_shape:
            raise DataError(
                f"{where}: field 'actions' has per-step shape {actions.shape[1:]}, "
                f"episode 0 has {act_shape}"
            )
        for name, present in optional.items():
            value = getattr(ep, name)
            if (value is not None) != present:
                raise DataError(
                    f"{where}: field '{name}' is {'missing' if present else 'present'} "
                    f"but {'present' if present else 'missing'} in episode 0"
                )
            if value is not None:
                _check_rows(value, t + 1, name, where, ndim=1 if name == "successes" else 2)
        if not isinstance(ep.info, dict):
            raise DataError(f"{where}: field 'info' must be a dict, got {type(ep.info).__name__}")
        _jsonable(ep.info, f"{where}: info")


@contextlib.contextmanager
def _minari_root_set(root: Path) -> Iterator[None]:
    """Point Minari at ``root`` for the duration of the block (Minari reads the env var per call)."""
    with _ROOT_LOCK:
        old = os.environ.get("MINARI_DATASETS_PATH")
        os.environ["MINARI_DATASETS_PATH"] = str(root)
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = old


def _spaces(
    dataset_id: str,
    episodes: Sequence[EpisodeData],
    env: Any,
    observation_space: Any,
    action_space: Any,
) -> tuple[Any, Any]:
    """Spaces to store: the env's when they match the data, else flat Boxes of the data's shape."""
    import gymnasium as gym

    obs0 = np.asarray(episodes[0].observations)
    act0 = np.asarray(episodes[0].actions)
    if observation_space is None:
        space = env.observation_space if env is not None else None
        if space is not None and not isinstance(space, gym.spaces.Box):
            # DMC's Dict space: generators store the flattened vector.
            space = gym.spaces.flatten_space(space)
        if space is None or tuple(space.shape) != obs0.shape[1:]:
            if space is not None:
                raise DataError(
                    f"dataset '{dataset_id}': observations have per-step shape {obs0.shape[1:]} but env "
                    f"'{env.spec.id if env.spec else env}' has observation shape {space.shape}"
                )
            space = gym.spaces.Box(-np.inf, np.inf, shape=obs0.shape[1:], dtype=obs0.dtype)
        observation_space = space
    if action_space is None:
        space = env.action_space if env is not None else None
        if space is not None and tuple(space.shape) != act0.shape[1:]:
            raise DataError(
                f"dataset '{dataset_id}': actions have per-step shape {act0.shape[1:]} but the env's action shape is "
                f"{space.shape}"
            )
        if space is None:
            space = gym.spaces.Box(-np.inf, np.inf, shape=act0.shape[1:], dtype=np.float32)
        action_space = space
    return observation_space, action_space


def _buffers(episodes: Sequence[EpisodeData]) -> list[Any]:
    from minari.data_collector import EpisodeBuffer

    bufs = []
    for i, ep in enumerate(episodes):
        infos: dict[str, np.ndarray] = {}
        if ep.qpos is not None:
            infos["qpos"] = np.asarray(ep.qpos)
        if ep.qvel is not None:
            infos["qvel"] = np.asarray(ep.qvel)
        if ep.successes is not None:
            infos["success"] = np.asarray(ep.successes, dtype=bool)
        seed = ep.info.get("seed") if isinstance(ep.info, dict) else None
        bufs.append(
            EpisodeBuffer(
                id=i,
                seed=int(seed) if isinstance(seed, int | np.integer) else None,
                observations=np.asarray(ep.observations),
                actions=np.asarray(ep.actions),
                rewards=np.asarray(ep.rewards),
                terminations=np.asarray(ep.terminations, dtype=bool),
                truncations=np.asarray(ep.truncations, dtype=bool),
                infos=infos or None,
            )
        )
    return bufs


def write_minari_dataset(
    dataset_id: str,
    episodes: Sequence[EpisodeData],
    *,
    env_id: str | None,
    env_kwargs: dict | None = None,
    ref_min_score: float,
    ref_max_score: float,
    card: dict,
    description: str = "",
    algorithm_name: str = "pbrl",
    overwrite: bool = False,
    observation_space: Any = None,
    action_space: Any = None,
    extra_files: Mapping[str, str | os.PathLike[str]] | None = None,
) -> Path:
    """Write ``episodes`` as the Minari dataset ``dataset_id``; return its folder.

    ``env_id`` (with ``env_kwargs``) is the gymnasium id the data was collected on; it must
    be registered (MetaWorld: the string-entry-point id from :mod:`pbrl.envs.metaworld`) and
    its spec is stored so ``recover_environment()`` works. With ``env_id=None`` the spaces
    are ``observation_space``/``action_space`` or unbounded Boxes of the data's shape.
    The card is stored under ``pbrl_card`` in metadata.json, completed with the package
    versions, the reference scores, the dataset id and the creation time.
    ``extra_files`` maps file names to existing files copied into the dataset folder (beside
    ``data/``, e.g. ``expert_critic.pt``) before the folder is renamed into place.

    Atomic: nothing appears at the final path unless the whole dataset was written.
    Raises DataError on invalid episodes (naming episode and field) or when the dataset
    exists and ``overwrite`` is False.
    """
    import gymnasium as gym
    import minari
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except ValueError as e:
        raise DataError(f"dataset id '{dataset_id}': {e}") from None
    for name, v in (("ref_min_score", ref_min_score), ("ref_max_score", ref_max_score)):
        if v is None or not math.isfinite(float(v)):
            raise DataError(f"dataset '{dataset_id}': {name} must be a finite number, got {v!r}")
    if not float(ref_min_score) < float(ref_max_score):
        raise DataError(
            f"dataset '{dataset_id}': ref_min_score ({ref_min_score}) must be below "
            f"ref_max_score ({ref_max_score})"
        )
    if not isinstance(card, dict):
        raise DataError(f"dataset '{dataset_id}': card must be a dict")
    validate_episodes(dataset_id, episodes)

    root = minari_root()
    final = root / dataset_id
    if final.exists() and not overwrite:
        raise DataError(
            f"dataset '{dataset_id}' already exists at {final} (use --overwrite to replace it)"
        )

    full_card = dict(card)
    full_card.setdefault("generator", algorithm_name)
    full_card.setdefault("package_versions", package_versions())
    full_card["dataset_id"] = dataset_id
    full_card["ref_min_score"] = float(ref_min_score)
    full_card["ref_max_score"] = float(ref_max_score)
    full_card.setdefault("created_utc", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    full_card = _jsonable(full_card, f"dataset '{dataset_id}': card")
    missing = [k for k in RECOMMENDED_CARD_KEYS if k not in full_card]
    if missing:
        log.warning("dataset '%s': card lacks %s", dataset_id, ", ".join(missing))
    infos_json = [
        json.dumps(_jsonable(ep.info, f"episode {i}: info"), sort_keys=True)
        for i, ep in enumerate(episodes)
    ]

    env = None
    if env_id is not None:
        try:
            env = gym.make(env_id, **(env_kwargs or {}))
        except gym.error.Error as e:
            raise DataError(f"dataset '{dataset_id}': cannot make env '{env_id}': {e}") from None
    try:
        obs_space, act_space = _spaces(dataset_id, episodes, env, observation_space, action_space)
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(root)
        tmp_root = Path(tempfile.mkdtemp(prefix=".pbrl-tmp-", dir=root))
        try:
            with _minari_root_set(tmp_root), warnings.catch_warnings():
                # Minari warns about every unset optional field (author, permalink, ...).
                warnings.simplefilter("ignore")
                ds = minari.create_dataset_from_buffers(
                    dataset_id,
                    _buffers(episodes),
                    env=env,
                    algorithm_name=algorithm_name,
                    author="pbrl",
                    description=description or f"pbrl dataset {dataset_id}",
                    observation_space=obs_space,
                    action_space=act_space,
                    requirements=[f"{k}=={v}" for k, v in package_versions().items() if v],
                )
                storage = ds.storage
                storage.update_episode_metadata(
                    [{EPISODE_INFO_ATTR: s} for s in infos_json], range(len(episodes))
                )
                storage.update_metadata(
                    {
                        "ref_min_score": float(ref_min_score),
                        "ref_max_score": float(ref_max_score),
                        CARD_KEY: full_card,
                        "pbrl_format": PBRL_FORMAT,
                    }
                )
            built = tmp_root / dataset_id
            for fname, src in (extra_files or {}).items():
                if Path(fname).name != fname or fname == "data":
                    raise DataError(f"dataset '{dataset_id}': bad extra file name '{fname}'")
                if not Path(src).is_file():
                    raise DataError(f"dataset '{dataset_id}': extra file {src} does not exist")
                shutil.copyfile(src, built / fname)
            if ds.total_episodes != len(episodes):
                raise DataError(
                    f"dataset '{dataset_id}': wrote {ds.total_episodes} episodes, "
                    f"expected {len(episodes)}"
                )
            _install(tmp_root, built, root, dataset_id)
        finally:
            shutil.rmtree(tmp_root, ignore_errors=True)
    finally:
        if env is not None:
            env.close()
    log.info("wrote %s (%d episodes) to %s", dataset_id, len(episodes), final)
    return final


def _remove_stale_temps(root: Path, max_age_s: float = 24 * 3600) -> None:
    """Delete temporary roots a killed writer left behind (hidden, so harmless, but large)."""
    now = time.time()
    for d in root.glob(".pbrl-*"):
        try:
            if d.is_dir() and now - d.stat().st_mtime > max_age_s:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue


def _install(tmp_root: Path, built: Path, root: Path, dataset_id: str) -> None:
    """Move a finished dataset from the temporary root into the real store."""
    from minari.namespace import NAMESPACE_METADATA_FILENAME

    final = root / dataset_id
    final.parent.mkdir(parents=True, exist_ok=True)
    # Minari marks every namespace level with a metadata file; copy the missing ones.
    parts = Path(dataset_id).parts[:-1]
    for k in range(1, len(parts) + 1):
        src = tmp_root.joinpath(*parts[:k], NAMESPACE_METADATA_FILENAME)
        dst = root.joinpath(*parts[:k], NAMESPACE_METADATA_FILENAME)
        if src.exists() and not dst.exists():
            shutil.copyfile(src, dst)
    if final.exists():
        trash = Path(tempfile.mkdtemp(prefix=".pbrl-old-", dir=root))
        os.replace(final, trash / "old")
        try:
            os.replace(built, final)
        except BaseException:
            os.replace(trash / "old", final)
            raise
        finally:
            shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(built, final)


# ---------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------
def minari_data_path(dataset_id_or_path: str | os.PathLike[str]) -> Path | None:
    """The ``data/`` folder if the argument is a path to a Minari dataset folder, else None."""
    p = Path(dataset_id_or_path).expanduser()
    if (p / "data" / "metadata.json").is_file():
        return p / "data"
    if (p / "metadata.json").is_file() and p.name == "data":
        return p
    return None


def read_minari_metadata(dataset_id_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """metadata.json of a local Minari dataset (by id or folder), without reading episodes."""
    data = minari_data_path(dataset_id_or_path)
    if data is None:
        data = minari_root() / str(dataset_id_or_path) / "data"
    path = data / "metadata.json"
    if not path.is_file():
        raise UnknownIdError(
            f"no local Minari dataset '{dataset_id_or_path}' (looked in {data.parent}); "
            "see `pbrl datasets list`"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable metadata ({e})") from None


def _flatten_obs(obs: Any, space: Any) -> np.ndarray:
    """Observations of one episode as (T+1, dim), flattening Dict/Tuple spaces in space order."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        return np.concatenate([_flatten_obs(obs[k], s) for k, s in space.spaces.items()], axis=1)
    if isinstance(space, gym.spaces.Tuple):
        return np.concatenate([_flatten_obs(obs[i], s) for i, s in enumerate(space.spaces)], axis=1)
    a = np.asarray(obs)
    return a.reshape(a.shape[0], -1)


def _per_step(value: Any, t: int, name: str, where: str, *, shift: int) -> np.ndarray | None:
    """T rows of a per-step info stored with T+1 (Minari convention) or T rows."""
    a = np.asarray(value)
    if a.ndim == 0:
        return None
    if a.shape[0] == t + 1:
        return a[shift : shift + t]
    if a.shape[0] == t:
        return a
    raise DataError(f"{where}: info '{name}' has {a.shape[0]} rows, expected {t + 1} or {t}")


def load_minari(
    dataset_id_or_path: str | os.PathLike[str], download: bool = False
) -> OfflineDataset:
    """Load a Minari dataset (local id, or a dataset folder) as a flat OfflineDataset.

    ``download=True`` fetches a missing id from Minari's remote through Minari's own
    download path. ``task_id`` is taken from the card when it names one (``task_id``);
    :func:`pbrl.datasets.registry.load_dataset` fills it in for other ids.
    """
    import minari
    from minari.dataset.minari_dataset import MinariDataset

    data_path = minari_data_path(dataset_id_or_path)
    where = str(dataset_id_or_path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if data_path is not None:
                mds = MinariDataset(data_path)
            else:
                mds = minari.load_dataset(str(dataset_id_or_path), download=download)
    except FileNotFoundError:
        raise UnknownIdError(
            f"no local Minari dataset '{dataset_id_or_path}' in {minari_root()} "
            "(fetch it with `pbrl datasets download ID` (download=True) from Minari's remote, "
            "or generate it with `pbrl datasets build`)"
        ) from None
    except (ValueError, KeyError, OSError) as e:
        raise DataError(f"Minari dataset '{where}': cannot open ({e})") from None

    meta = mds.storage.metadata
    dataset_id = str(meta.get("dataset_id", where))
    space = mds.observation_space
    n_eps = int(mds.total_episodes)
    indices = mds.episode_indices
    try:
        eps = list(mds.storage.get_episodes(indices))
        ep_meta = list(mds.storage.get_episode_metadata(indices))
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"Minari dataset '{dataset_id}': unreadable episode data ({e})") from None

    obs_l, nobs_l, act_l, rew_l, term_l, trunc_l = [], [], [], [], [], []
    qpos_l: list[np.ndarray] = []
    qvel_l: list[np.ndarray] = []
    succ_l: list[np.ndarray] = []
    infos: list[dict[str, Any]] = []
    lengths = np.zeros(n_eps, dtype=np.int64)
    has = {"qpos": True, "qvel": True, "success": True}
    for e, (ep, md) in enumerate(zip(eps, ep_meta, strict=True)):
        w = f"Minari dataset '{dataset_id}', episode {e}"
        acts = np.asarray(ep["actions"])
        t = int(acts.shape[0])
        o = _flatten_obs(ep["observations"], space)
        if o.shape[0] != t + 1:
            raise DataError(f"{w}: field 'observations' has {o.shape[0]} rows, expected {t + 1}")
        lengths[e] = t
        obs_l.append(o[:t])
        nobs_l.append(o[1:])
        act_l.append(acts.reshape(t, -1))
        rew_l.append(np.asarray(ep["rewards"]).reshape(t))
        term_l.append(np.asarray(ep["terminations"], dtype=bool).reshape(t))
        trunc_l.append(np.asarray(ep["truncations"], dtype=bool).reshape(t))
        ep_infos = ep.get("infos") or {}
        for key, store, shift in (("qpos", qpos_l, 0), ("qvel", qvel_l, 0), ("success", succ_l, 1)):
            v = ep_infos.get(key) if isinstance(ep_infos, dict) else None
            rows = (
                None if v is None or isinstance(v, dict) else _per_step(v, t, key, w, shift=shift)
            )
            if rows is None:
                has[key] = False
            else:
                store.append(rows)
        info = _episode_info(md, w)
        if "success" not in info and isinstance(ep_infos, dict) and "success" in ep_infos:
            info["success"] = bool(np.any(np.asarray(ep_infos["success"])))
        infos.append(info)

    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if n_eps else lengths
    card = meta.get(CARD_KEY)
    if not isinstance(card, dict):
        card = {
            "source": "minari",
            "generator": meta.get("algorithm_name"),
            "description": meta.get("description"),
        }

    def cat(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(parts).astype(dtype, copy=False)

    ref_min = meta.get("ref_min_score")
    ref_max = meta.get("ref_max_score")
    return OfflineDataset(
        id=dataset_id,
        task_id=card.get("task_id") if isinstance(card.get("task_id"), str) else None,
        observations=cat(obs_l, np.float32),
        actions=cat(act_l, np.float32),
        rewards=cat(rew_l, np.float32),
        next_observations=cat(nobs_l, np.float32),
        terminals=cat(term_l, bool),
        timeouts=cat(trunc_l, bool),
        starts=starts,
        lengths=lengths,
        qpos=np.concatenate(qpos_l) if has["qpos"] and qpos_l else None,
        qvel=np.concatenate(qvel_l) if has["qvel"] and qvel_l else None,
        successes=cat(succ_l, bool) if has["success"] and succ_l else None,
        episode_info=tuple(infos),
        ref_min_score=None if ref_min is None else float(ref_min),
        ref_max_score=None if ref_max is None else float(ref_max),
        card=card,
        path=str(mds.storage.data_path.parent),
    )


def _episode_info(attrs: dict[str, Any], where: str) -> dict[str, Any]:
    """Per-episode metadata: pbrl's JSON attribute, else Minari's seed/options attributes."""
    raw = attrs.get(EPISODE_INFO_ATTR)
    if raw is not None:
        if isinstance(raw, bytes):
            raw = raw.decode()
        try:
            info = json.loads(raw)
        except (TypeError, json.JSONDecodeError) as e:
            raise DataError(f"{where}: attribute '{EPISODE_INFO_ATTR}' is not JSON ({e})") from None
        if not isinstance(info, dict):
            raise DataError(f"{where}: attribute '{EPISODE_INFO_ATTR}' is not a JSON object")
        return info
    info: dict[str, Any] = {"source": "minari"}
    if attrs.get("seed") is not None:
        info["seed"] = int(attrs["seed"])
    if isinstance(attrs.get("options"), dict):
        info["options"] = _jsonable(attrs["options"], where)
    return info
