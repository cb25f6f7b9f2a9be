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
import re
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.datasets.base import EpisodeData, OfflineDataset, check_field
from pbrl.errors import DataError, PbrlError, UnknownIdError
from pbrl.utils import check_output_dir

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


# One part of a dataset id: no leading '.', so neither '.', '..' nor hidden folders.
_ID_PART_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_ID_VERSION_RE = re.compile(r"-v\d+$")


def check_dataset_id(dataset_id: str) -> str:
    """A Minari dataset id, checked before it becomes a path in the store; returns it.

    Minari's grammar: ``[<namespace>/...]<name>-v<N>``, parts of letters, digits, ``_``,
    ``-`` and ``.``, none starting with ``.``. So ``..``, absolute paths, ``~``, empty parts
    and backslashes are refused: an id never leads out of the store. The one check every
    id -> store path goes through (loading, info, writing, recording a diagnosis).
    """
    s = str(dataset_id)
    parts = s.split("/")
    bad = next((p for p in parts if not _ID_PART_RE.match(p)), None)
    if bad is not None or not _ID_VERSION_RE.search(parts[-1]):
        if s.startswith(("/", "~", "./", "../")) or "\\" in s:
            why = "a path, not an id"
        elif bad == "":
            why = "it has an empty part"
        elif bad is not None:
            why = f"part {bad!r} is not allowed"
        else:
            why = "it does not end in a version (-v<N>)"
        raise UnknownIdError(
            f"dataset id {s!r}: {why} (ids look like '<namespace>/<name>-v<N>': letters, "
            "digits, '_', '-', '.', no part starting with '.'; give a folder as a path "
            "starting with './' or '/')"
        )
    return s


def check_new_dataset(dataset_id: str, overwrite: bool) -> Path:
    """Before generating: the id is valid, the dataset does not exist (unless ``overwrite``)
    and the store can be written. Returns the dataset's final folder.

    Generators call this before any episode is generated; the writer calls it again.
    """

    check_dataset_id(dataset_id)
    root = minari_root()
    final = root / dataset_id
    if (final.exists() or final.is_symlink()) and not overwrite:
        raise DataError(
            f"dataset '{dataset_id}' already exists at {final} (use --overwrite to replace it)"
        )
    check_output_dir(root, what="Minari store (MINARI_DATASETS_PATH)")
    return final


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


def validate_episodes(dataset_id: str, episodes: Sequence[EpisodeData]) -> None:
    """Check every episode's shapes, dtypes and values (the loader's rules, base.check_field);
    DataError naming the episode and field."""
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
        actions = check_field(ep.actions, "actions", where, ndim=2)
        t = actions.shape[0]
        if t == 0:
            raise DataError(f"{where}: field 'actions' has no rows (an episode needs a step)")
        obs = check_field(ep.observations, "observations", where, rows=t + 1)
        check_field(ep.rewards, "rewards", where, rows=t, ndim=1)
        check_field(ep.terminations, "terminations", where, flag=True, rows=t, ndim=1)
        check_field(ep.truncations, "truncations", where, flag=True, rows=t, ndim=1)
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
                flag = name == "successes"
                check_field(value, name, where, flag=flag, rows=t + 1, ndim=1 if flag else 2)
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

    check_dataset_id(dataset_id)
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
    final = check_new_dataset(dataset_id, overwrite)

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
        try:
            root.mkdir(parents=True, exist_ok=True)
            _remove_stale_temps(root)
            tmp_root = Path(tempfile.mkdtemp(prefix=".pbrl-tmp-", dir=root))
        except OSError as e:
            raise PbrlError(
                f"Minari store (MINARI_DATASETS_PATH) {root}: cannot write ({e.strerror or e})"
            ) from None
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
    log.debug("wrote %s (%d episodes) to %s", dataset_id, len(episodes), final)
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
    """Move a finished dataset from the temporary root into the real store.

    Namespace folders and Minari's namespace marker files that did not exist are created
    (each marker written to a temporary name and renamed, so it is never half-written) and
    removed again if the final rename fails: a failed install leaves the store as it was.
    """
    from minari.namespace import NAMESPACE_METADATA_FILENAME

    final = root / dataset_id
    created: list[Path] = []
    try:
        parts = Path(dataset_id).parts[:-1]
        for k in range(1, len(parts) + 1):
            folder = root.joinpath(*parts[:k])
            if not folder.exists():
                folder.mkdir()
                created.append(folder)
            # Minari marks every namespace level with a metadata file; copy the missing ones.
            src = tmp_root.joinpath(*parts[:k], NAMESPACE_METADATA_FILENAME)
            dst = folder / NAMESPACE_METADATA_FILENAME
            if src.exists() and not dst.exists():
                tmp = folder / f".{NAMESPACE_METADATA_FILENAME}.{os.getpid()}.tmp"
                shutil.copyfile(src, tmp)
                os.replace(tmp, dst)
                created.append(dst)
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
    except BaseException:
        for p in reversed(created):
            with contextlib.suppress(OSError):
                p.unlink() if p.is_file() else p.rmdir()
        raise


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


def data_folder(dataset_id_or_path: str | os.PathLike[str]) -> Path:
    """``data/`` of a dataset folder given as a path, else of a (checked) id in the store
    (which need not exist). Every id -> store path goes through here or
    :func:`check_new_dataset`."""
    data = minari_data_path(dataset_id_or_path)
    if data is not None:
        return data
    return minari_root() / check_dataset_id(str(dataset_id_or_path)) / "data"


def _check_metadata(meta: Any, path: Path) -> dict[str, Any]:
    """The fields of metadata.json pbrl reads: a JSON object, a valid id, numeric scores."""
    if not isinstance(meta, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    did = meta.get("dataset_id")
    if did is not None:
        if not isinstance(did, str):
            raise DataError(f"{path}: field 'dataset_id' must be a string, got {did!r}")
        try:
            check_dataset_id(did)
        except UnknownIdError as e:
            raise DataError(f"{path}: field 'dataset_id': {e}") from None
    for key in ("ref_min_score", "ref_max_score"):
        v = meta.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise DataError(f"{path}: field '{key}' must be a finite number, got {v!r}")
    n = meta.get("total_episodes")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise DataError(f"{path}: field 'total_episodes' must be a count, got {n!r}")
    return meta


def read_minari_metadata(dataset_id_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """metadata.json of a local Minari dataset (by id or folder), without reading episodes.

    UnknownIdError when there is none; DataError when it is not a JSON object, or its
    ``dataset_id``, reference scores or episode count are malformed, or (by id) when it
    names another id than the folder it is stored in.
    """
    data = data_folder(dataset_id_or_path)
    path = data / "metadata.json"
    if not path.is_file():
        raise UnknownIdError(
            f"no local Minari dataset '{dataset_id_or_path}' (looked in {data.parent}); "
            "see `pbrl datasets list`"
        )
    try:
        meta = _check_metadata(json.loads(path.read_text()), path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable metadata ({e})") from None
    stored = meta.get("dataset_id")
    if minari_data_path(dataset_id_or_path) is None and stored not in (
        None,
        str(dataset_id_or_path),
    ):
        raise DataError(
            f"{path}: names dataset '{stored}' but is stored as '{dataset_id_or_path}' (a "
            "copied or renamed folder: load it by path, or fix 'dataset_id')"
        )
    return meta


def _download(dataset_id: str) -> None:
    """Fetch ``dataset_id`` from Minari's remote into the store, atomically (temp root, rename)."""
    import minari

    root = minari_root()
    check_new_dataset(dataset_id, overwrite=False)
    root.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=".pbrl-dl-", dir=root))
    try:
        with _minari_root_set(tmp_root), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                minari.download_dataset(dataset_id)
            except Exception as e:  # network, remote and format errors alike: one line
                raise PbrlError(
                    f"cannot download Minari dataset '{dataset_id}' from Minari's remote: "
                    f"{type(e).__name__}: {e}"
                ) from None
        built = tmp_root / dataset_id
        if not (built / "data" / "metadata.json").is_file():
            raise DataError(f"Minari's remote sent no metadata.json for '{dataset_id}'")
        _install(tmp_root, built, root, dataset_id)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def _flatten_obs(obs: Any, space: Any) -> np.ndarray:
    """Observations of one episode as (T+1, dim), flattening Dict/Tuple spaces in space order."""
    import gymnasium as gym

    if isinstance(space, gym.spaces.Dict):
        return np.concatenate([_flatten_obs(obs[k], s) for k, s in space.spaces.items()], axis=1)
    if isinstance(space, gym.spaces.Tuple):
        return np.concatenate([_flatten_obs(obs[i], s) for i, s in enumerate(space.spaces)], axis=1)
    a = np.asarray(obs)
    return a.reshape(a.shape[0], -1)


def _column(value: Any, name: str, where: str, t: int, *, flag: bool = False) -> np.ndarray:
    """A per-step scalar field of T rows, stored as (T,) or (T, 1)."""
    a = check_field(value, name, where, flag=flag, rows=t, ndim=(1, 2))
    if a.ndim == 2 and a.shape[1] != 1:
        raise DataError(f"{where}: field '{name}' has shape {a.shape}, expected ({t},)")
    return a.reshape(t)


def _per_step(
    value: Any, t: int, name: str, where: str, *, shift: int, flag: bool
) -> np.ndarray | None:
    """T rows of a per-step info stored with T+1 (Minari convention) or T rows."""
    a = np.asarray(value)
    if a.ndim == 0:
        return None
    a = check_field(a, f"infos/{name}", where, flag=flag, ndim=(1,) if flag else (2,))
    if a.shape[0] == t + 1:
        return a[shift : shift + t]
    if a.shape[0] == t:
        return a
    raise DataError(f"{where}: field 'infos/{name}' has {a.shape[0]} rows, expected {t + 1} or {t}")


#: Fields every Minari episode group holds.
EPISODE_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations")


def check_hdf5_layout(file: Path, n_eps: int) -> None:
    """The HDF5 file opens, and holds ``n_eps`` episode groups with every field: else one
    DataError naming the file, the episode and the field (before Minari reads anything)."""
    import h5py

    try:
        f = h5py.File(file, "r")
    except (OSError, ValueError) as e:
        raise DataError(f"{file}: not a readable HDF5 file (truncated or corrupt: {e})") from None
    with f:
        for e in range(n_eps):
            try:
                g = f.get(f"episode_{e}")
                missing = [k for k in EPISODE_FIELDS if k not in g] if g is not None else []
            except (OSError, RuntimeError, ValueError, TypeError, KeyError) as err:
                raise DataError(f"{file}: episode {e} is unreadable ({err})") from None
            if not isinstance(g, h5py.Group):
                raise DataError(
                    f"{file}: episode {e} is missing (metadata.json says {n_eps} episodes)"
                )
            if missing:
                raise DataError(
                    f"{file}: episode {e}: missing field(s) {', '.join(repr(k) for k in missing)}"
                )


_MINARI_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, AssertionError)


def load_minari(
    dataset_id_or_path: str | os.PathLike[str], download: bool = False
) -> OfflineDataset:
    """Load a Minari dataset (local id, or a dataset folder) as a flat OfflineDataset.

    ``download=True`` fetches a missing id from Minari's remote (into a temporary root,
    then renamed into the store). ``task_id`` is taken from the card when it names one
    (``task_id``); :func:`pbrl.datasets.registry.load_dataset` fills it in for other ids.

    Refused with one DataError naming the file, episode and field, as the D4RL loader does
    (:func:`pbrl.datasets.base.check_field` is the one rule): an unreadable, truncated or
    corrupt HDF5 file, a missing episode or field, NaN/inf, a dtype other than floating
    point in observations, actions, rewards, qpos and qvel, flags other than 0/1, rows that
    do not add up, per-step sizes that differ between episodes or from the stored spaces,
    empty episodes, no episodes, and a folder in the store whose metadata names another id.
    """
    from minari.dataset.minari_dataset import MinariDataset

    data_path = minari_data_path(dataset_id_or_path)
    requested: str | None = None
    if data_path is None:
        requested = check_dataset_id(str(dataset_id_or_path))
        data_path = minari_root() / requested / "data"
        if not (data_path / "metadata.json").is_file():
            if not download:
                raise UnknownIdError(
                    f"no local Minari dataset '{requested}' in {minari_root()} "
                    "(fetch it with `pbrl datasets download ID` (download=True) from Minari's "
                    "remote, or generate it with `pbrl datasets build`)"
                )
            _download(requested)
    meta = read_minari_metadata(requested or data_path.parent)
    stored = meta.get("dataset_id")
    dataset_id = requested or (stored if isinstance(stored, str) else str(dataset_id_or_path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mds = MinariDataset(data_path)
    except (*_MINARI_ERRORS, AttributeError) as e:
        raise DataError(f"{data_path}: cannot open as a Minari dataset ({e})") from None

    n_eps = int(mds.total_episodes)
    file = data_path / "main_data.hdf5"
    if file.exists():
        check_hdf5_layout(file, n_eps)
    else:
        file = data_path
    if n_eps == 0:
        raise DataError(f"{file}: the dataset has no episodes")
    import gymnasium as gym

    space = mds.observation_space
    try:
        obs_dim = int(gym.spaces.flatdim(space))
    except (ValueError, TypeError, NotImplementedError):
        obs_dim = None
    act_shape = getattr(mds.action_space, "shape", None)
    indices = mds.episode_indices

    obs_l, nobs_l, act_l, rew_l, term_l, trunc_l = [], [], [], [], [], []
    qpos_l: list[np.ndarray] = []
    qvel_l: list[np.ndarray] = []
    succ_l: list[np.ndarray] = []
    infos: list[dict[str, Any]] = []
    lengths = np.zeros(n_eps, dtype=np.int64)
    has = {"qpos": True, "qvel": True, "success": True}
    episodes = iter(mds.storage.get_episodes(indices))
    ep_meta = iter(mds.storage.get_episode_metadata(indices))
    for e in range(n_eps):
        w = f"{file}: episode {e}"
        try:
            ep, md = next(episodes), next(ep_meta)
        except StopIteration:
            raise DataError(f"{w} is missing (metadata.json says {n_eps} episodes)") from None
        except _MINARI_ERRORS as err:
            raise DataError(f"{w} is unreadable ({type(err).__name__}: {err})") from None
        acts = check_field(ep["actions"], "actions", w)
        t = int(acts.shape[0])
        if t == 0:
            raise DataError(f"{w}: field 'actions' has no rows (an episode needs a step)")
        if act_shape is not None and tuple(acts.shape[1:]) != tuple(act_shape):
            raise DataError(
                f"{w}: field 'actions' has per-step shape {tuple(acts.shape[1:])} but "
                f"metadata.json's action_space has {tuple(act_shape)}"
            )
        acts = acts.reshape(t, -1)
        try:
            o = _flatten_obs(ep["observations"], space)
        except (ValueError, TypeError, KeyError, IndexError) as err:
            raise DataError(f"{w}: field 'observations' does not fit its space ({err})") from None
        o = check_field(o, "observations", w, rows=t + 1)
        if obs_dim is not None and o.shape[1] != obs_dim:
            raise DataError(
                f"{w}: field 'observations' has {o.shape[1]} values per step but "
                f"metadata.json's observation_space has {obs_dim}"
            )
        if e > 0 and (o.shape[1] != obs_l[0].shape[1] or acts.shape[1] != act_l[0].shape[1]):
            name, got, first = (
                ("observations", o.shape[1], obs_l[0].shape[1])
                if o.shape[1] != obs_l[0].shape[1]
                else ("actions", acts.shape[1], act_l[0].shape[1])
            )
            raise DataError(f"{w}: field '{name}' has {got} values per step, episode 0 has {first}")
        lengths[e] = t
        obs_l.append(o[:t])
        nobs_l.append(o[1:])
        act_l.append(acts)
        rew_l.append(_column(ep["rewards"], "rewards", w, t))
        term_l.append(_column(ep["terminations"], "terminations", w, t, flag=True))
        trunc_l.append(_column(ep["truncations"], "truncations", w, t, flag=True))
        ep_infos = ep.get("infos") or {}
        for key, store, shift in (("qpos", qpos_l, 0), ("qvel", qvel_l, 0), ("success", succ_l, 1)):
            v = ep_infos.get(key) if isinstance(ep_infos, dict) else None
            rows = (
                None
                if v is None or isinstance(v, dict)
                else _per_step(v, t, key, w, shift=shift, flag=key == "success")
            )
            if rows is None:
                has[key] = False
            else:
                if store and store[0].shape[1:] != rows.shape[1:]:
                    raise DataError(
                        f"{w}: field 'infos/{key}' has per-step shape {rows.shape[1:]}, "
                        f"episode 0 has {store[0].shape[1:]}"
                    )
                store.append(rows)
        info = _episode_info(md, w)
        if "success" not in info and isinstance(ep_infos, dict) and "success" in ep_infos:
            info["success"] = bool(np.any(np.asarray(ep_infos["success"])))
        infos.append(info)

    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
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
        path=str(data_path.parent),
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
