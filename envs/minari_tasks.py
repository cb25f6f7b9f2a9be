"""Tasks behind Minari datasets: ``minari/<gymnasium env id>``.

Minari's ``D4RL/...`` namespace (AntMaze, Adroit pen/door/hammer/relocate, Kitchen,
PointMaze) runs on gymnasium-robotics envs. :data:`KNOWN_MINARI_DATASETS` lists the
well-known ids with their env ids, families and horizons, so ``pbrl tasks list --domain
minari`` shows them without a download; those tasks are registered at import.

:func:`task_for_minari_dataset` resolves any dataset to its task through the env spec in its
metadata (``metadata["env_spec"]``, a JSON ``EnvSpec``; ``eval_env_spec`` or the static
table as fallbacks):

- ``Hopper-v5``, ``HalfCheetah-v5``, ``Walker2d-v5``, ``Ant-v5`` -> ``mujoco/<name>``;
  ``pbrl/MetaWorld-v3`` -> ``metaworld/<env_name>``; ``pbrl/DMC-v0`` and shimmy's
  ``dm_control/<d>-<t>-v0`` -> ``dmc/<d>-<t>``.
- anything else -> ``minari/<env id>``, registered the first time a dataset resolves to it.

Normalizer of the returned spec: the dataset's own ``ref_min_score``/``ref_max_score``,
``100 * (R - min) / (max - min)``, for ``minari/*`` tasks and for Minari's own
``mujoco/<env>/<kind>-v0`` datasets (regenerated on the v5 envs, with their own references).
pbrl-generated datasets (``pbrl/...``), MetaWorld (success rate) and DMC (return / 10) keep
their task's normalizer. A ``minari/*`` task without dataset references falls back to D4RL's
constants for its family.

The gymnasium-robotics envs are not a dependency of pbrl: ``make`` and ``render`` of such a
task raise a :class:`~pbrl.errors.PbrlError` that says to ``pip install gymnasium-robotics``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from pbrl.envs.base import (
    FrameRenderer,
    TaskSpec,
    check_returns,
    check_states,
    get_task,
    register,
    registered_task,
)
from pbrl.envs.mujoco import D4RL_ADROIT, D4RL_LOCOMOTION, D4RL_REF_SCORES
from pbrl.errors import DataError, PbrlError

# Python module of an env's entry point -> the pip name that provides it.
PIP_NAMES: dict[str, str] = {"gymnasium_robotics": "gymnasium-robotics"}


@dataclass(frozen=True)
class MinariEnvInfo:
    """What the static table knows about one Minari dataset's env."""

    gym_id: str  # gymnasium id of the env the dataset was collected on
    family: str  # D4RL family (key of D4RL_REF_SCORES) or "pointmaze"
    horizon: int  # max_episode_steps of the gymnasium-robotics registration
    module: str = "gymnasium_robotics"  # the package that registers ``gym_id``


def _table() -> dict[str, MinariEnvInfo]:
    t: dict[str, MinariEnvInfo] = {}
    antmaze = {
        "umaze": ("AntMaze_UMaze-v4", 700),
        "umaze-diverse": ("AntMaze_UMaze-v4", 700),
        "medium-play": ("AntMaze_Medium-v4", 1000),
        "medium-diverse": ("AntMaze_Medium_Diverse_GR-v4", 1000),
        "large-play": ("AntMaze_Large-v4", 1000),
        "large-diverse": ("AntMaze_Large_Diverse_GR-v4", 1000),
    }
    for name, (gid, h) in antmaze.items():
        t[f"D4RL/antmaze/{name}-v1"] = MinariEnvInfo(gid, "antmaze", h)
    adroit = {"pen": 100, "door": 200, "hammer": 200, "relocate": 200}
    for fam, h in adroit.items():
        for kind in ("human", "cloned", "expert"):
            t[f"D4RL/{fam}/{kind}-v2"] = MinariEnvInfo(f"AdroitHand{fam.title()}-v1", fam, h)
    for kind in ("complete", "partial", "mixed"):
        t[f"D4RL/kitchen/{kind}-v2"] = MinariEnvInfo("FrankaKitchen-v1", "kitchen", 280)
    pointmaze = {"open": 300, "umaze": 300, "medium": 600, "large": 800}
    for maze, h in pointmaze.items():
        base = "UMaze" if maze == "umaze" else maze.title()
        t[f"D4RL/pointmaze/{maze}-v2"] = MinariEnvInfo(f"PointMaze_{base}-v3", "pointmaze", h)
        t[f"D4RL/pointmaze/{maze}-dense-v2"] = MinariEnvInfo(
            f"PointMaze_{base}Dense-v3", "pointmaze", h
        )
    return t


KNOWN_MINARI_DATASETS: dict[str, MinariEnvInfo] = _table()

_MUJOCO_V5 = {
    "Hopper-v5": "hopper",
    "HalfCheetah-v5": "halfcheetah",
    "Walker2d-v5": "walker2d",
    "Ant-v5": "ant",
}


# ---- making and rendering envs that may live in an optional package --------------------
def _require(module: str, what: str) -> None:
    top = module.split(".", 1)[0]
    if importlib.util.find_spec(top) is None:
        pip = PIP_NAMES.get(top, top)
        raise PbrlError(
            f"{what} needs the Python package '{pip}', which is not installed: pip install {pip}"
        )


def _flatten_if_needed(env: Any) -> Any:
    import gymnasium as gym

    if isinstance(env.observation_space, gym.spaces.Box) and len(env.observation_space.shape) == 1:
        return env
    # Dict/tuple observations (mazes, kitchen): gymnasium.spaces.flatten over the env's space,
    # the same function a loader applies to the dataset's stored observation_space.
    return gym.wrappers.FlattenObservation(env)


def _make_env(
    target: Any, module: str, what: str, seed: int, render_mode: str | None, **kw: Any
) -> Any:
    """``gym.make(target)`` (an id or an EnvSpec), seeded, with flat observations."""
    import gymnasium as gym

    _require(module, what)
    gid = target if isinstance(target, str) else target.id
    if gid not in gym.registry:
        importlib.import_module(module.split(".", 1)[0])  # registers its envs on import
    try:
        env = gym.make(target, render_mode=render_mode, **kw)
    except gym.error.Error as e:
        raise PbrlError(f"{what}: cannot make env '{gid}': {e}") from None
    env = _flatten_if_needed(env)
    env.reset(seed=int(seed))
    env.action_space.seed(int(seed))
    return env


def _mujoco_parts(env: Any) -> tuple[Any, Any]:
    """(model, data) of a MuJoCo-based env, also when the robot is a nested env (mazes)."""
    u = env.unwrapped
    for obj in (u, *(getattr(u, a, None) for a in ("ant_env", "point_env", "robot_env"))):
        if obj is not None and hasattr(obj, "model") and hasattr(obj, "data"):
            return obj.model, obj.data
    raise PbrlError(f"{type(u).__name__}: not a MuJoCo env, cannot render stored states")


def _render_with(
    make: Any, what: str, qpos: Any, qvel: Any, width: int, height: int, camera: Any
) -> np.ndarray:
    import mujoco

    env = make(seed=0)
    try:
        model, data = _mujoco_parts(env)
        qpos, qvel = check_states(qpos, qvel, model.nq, model.nv, what)
        frames = np.zeros((qpos.shape[0], height, width, 3), dtype=np.uint8)
        with FrameRenderer(model, width, height) as r:
            for t in range(qpos.shape[0]):
                data.qpos[:] = qpos[t]
                data.qvel[:] = qvel[t]
                mujoco.mj_forward(model, data)
                frames[t] = r.render(data, -1 if camera is None else camera)
        return frames
    finally:
        env.close()


def _ref_score_fn(task_id: str, lo: float | None, hi: float | None, source: str) -> Any:
    def score(returns: Any, successes: Any = None) -> float:
        if lo is None or hi is None:
            raise PbrlError(
                f"{task_id}: no normalizer ({source}); score it through the TaskSpec that "
                "pbrl.envs.minari_tasks.task_for_minari_dataset returns for its dataset"
            )
        r = check_returns(returns, task_id)
        return float(np.mean(100.0 * (r - lo) / (hi - lo)))

    return score


def norm_family(d4rl_family: str, gym_id: str) -> str:
    """TaskSpec.family of a Minari task: from its D4RL family when the static table knows
    it, else read from the gymnasium id (``AntMaze_*``, ``AdroitHand*``)."""
    if d4rl_family == "antmaze" or (not d4rl_family and "antmaze" in gym_id.lower()):
        return "antmaze"
    if d4rl_family in D4RL_ADROIT or (not d4rl_family and "adroit" in gym_id.lower()):
        return "adroit"
    if d4rl_family in D4RL_LOCOMOTION:
        return "locomotion"
    return "other"


def _family_refs(family: str) -> tuple[float | None, float | None]:
    return D4RL_REF_SCORES.get(family, (None, None))


def _minari_spec(
    gym_id: str,
    *,
    target: Any,
    module: str,
    horizon: int,
    datasets: tuple[str, ...],
    lo: float | None,
    hi: float | None,
    normalizer: str,
    extra: dict[str, Any],
    description: str,
    family: str = "",
) -> TaskSpec:
    task_id = f"minari/{gym_id}"

    def make(seed: int = 0, render_mode: str | None = None, **kw: Any) -> Any:
        return _make_env(target, module, task_id, seed, render_mode, **kw)

    def render(
        qpos: Any,
        qvel: Any,
        episode_info: dict | None = None,
        width: int = 256,
        height: int = 256,
        camera: str | int | None = None,
    ) -> np.ndarray:
        return _render_with(make, task_id, qpos, qvel, width, height, camera)

    return TaskSpec(
        id=task_id,
        domain="minari",
        horizon=int(horizon),
        make=make,
        score=_ref_score_fn(task_id, lo, hi, normalizer),
        render=render,
        datasets=datasets,
        description=description,
        extra={"gym_id": gym_id, "normalizer": normalizer, "camera": "free (-1)", **extra},
        family=norm_family(family, gym_id),
    )


def _register_static() -> None:
    by_env: dict[str, list[str]] = {}
    for ds, info in KNOWN_MINARI_DATASETS.items():
        by_env.setdefault(info.gym_id, []).append(ds)
    for gym_id, ids in by_env.items():
        info = KNOWN_MINARI_DATASETS[ids[0]]
        lo, hi = _family_refs(info.family)
        normalizer = (
            f"dataset ref scores; fallback d4rl {info.family} ({lo:g}, {hi:g})"
            if lo is not None
            else "dataset ref scores"
        )
        register(
            _minari_spec(
                gym_id,
                target=gym_id,
                module=info.module,
                horizon=info.horizon,
                datasets=tuple(ids),
                lo=lo,
                hi=hi,
                normalizer=normalizer,
                extra={"d4rl_family": info.family, "requires": PIP_NAMES[info.module]},
                description=f"{gym_id} ({info.family}, gymnasium-robotics), Minari D4RL datasets.",
                family=info.family,
            )
        )


_register_static()


# ---- resolving a dataset to its task -----------------------------------------------------
def _parse_spec(dataset_id: str, metadata: dict) -> Any:
    from gymnasium.envs.registration import EnvSpec

    for key in ("env_spec", "eval_env_spec"):
        raw = metadata.get(key)
        if raw in (None, "", "null"):
            continue
        try:
            return EnvSpec.from_json(raw if isinstance(raw, str) else json.dumps(raw))
        except Exception as e:  # gymnasium raises ValueError/KeyError/TypeError here
            raise DataError(
                f"dataset '{dataset_id}': metadata field '{key}' is not a valid "
                f"gymnasium EnvSpec JSON ({type(e).__name__}: {e})"
            ) from None
    return None


def _finite_or_none(dataset_id: str, metadata: dict, key: str) -> float | None:
    v = metadata.get(key)
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise DataError(
            f"dataset '{dataset_id}': metadata field '{key}' is not a number: {v!r}"
        ) from None
    if not np.isfinite(f):
        raise DataError(f"dataset '{dataset_id}': metadata field '{key}' is {v!r}")
    return f


def project_task_id(gym_id: str, kwargs: dict[str, Any]) -> str | None:
    """The mujoco/metaworld/dmc task an env id (plus its kwargs) belongs to, or None."""
    if gym_id in _MUJOCO_V5:
        return f"mujoco/{_MUJOCO_V5[gym_id]}"
    if gym_id == "pbrl/MetaWorld-v3" and "env_name" in kwargs:
        return f"metaworld/{kwargs['env_name']}"
    if gym_id == "pbrl/DMC-v0" and "domain" in kwargs and "task" in kwargs:
        return f"dmc/{kwargs['domain']}-{kwargs['task']}"
    if gym_id.startswith("dm_control/") and gym_id.endswith("-v0"):
        return "dmc/" + gym_id[len("dm_control/") : -len("-v0")]
    return None


def task_for_minari_dataset(dataset_id: str, metadata: dict) -> TaskSpec:
    """The task of a Minari dataset, normalized as the module docstring says.

    ``metadata`` is the dataset's metadata dict (``minari.list_local_datasets()[id]`` or
    ``dataset.storage.metadata``). Raises DataError when the env cannot be determined.
    """
    spec = _parse_spec(dataset_id, metadata)
    static = KNOWN_MINARI_DATASETS.get(dataset_id)
    if spec is None and static is None:
        raise DataError(
            f"dataset '{dataset_id}': metadata has no env_spec (nor eval_env_spec) and the id "
            "is not a known Minari dataset, so its task cannot be resolved"
        )
    gym_id = spec.id if spec is not None else static.gym_id
    kwargs = dict(spec.kwargs) if spec is not None else {}
    lo = _finite_or_none(dataset_id, metadata, "ref_min_score")
    hi = _finite_or_none(dataset_id, metadata, "ref_max_score")
    if lo is not None and hi is not None and not lo < hi:
        raise DataError(
            f"dataset '{dataset_id}': ref_min_score ({lo}) must be below ref_max_score ({hi})"
        )
    has_refs = lo is not None and hi is not None

    tid = project_task_id(gym_id, kwargs)
    if tid is not None:
        base = get_task(tid)  # UnknownIdError names the id when e.g. a DMC task is unknown
        datasets = base.datasets if dataset_id in base.datasets else (*base.datasets, dataset_id)
        extra = {**base.extra, "dataset_id": dataset_id}
        if base.domain == "mujoco" and has_refs and not dataset_id.startswith("pbrl/"):
            extra.update(normalizer=f"dataset ref scores ({lo:g}, {hi:g})")
            extra.update(ref_min_score=lo, ref_max_score=hi)
            return dataclasses.replace(
                base,
                score=_ref_score_fn(tid, lo, hi, "dataset ref scores"),
                datasets=datasets,
                extra=extra,
            )
        return dataclasses.replace(base, datasets=datasets, extra=extra)

    task_id = f"minari/{gym_id}"
    entry = spec.entry_point if spec is not None else None
    module = entry.split(":", 1)[0] if isinstance(entry, str) else static.module
    family = static.family if static is not None else ""
    if has_refs:
        normalizer = f"dataset ref scores ({lo:g}, {hi:g})"
    else:
        lo, hi = _family_refs(family)
        normalizer = (
            f"d4rl {family} ({lo:g}, {hi:g}) (dataset has no ref scores)"
            if lo is not None
            else "none (dataset has no ref scores)"
        )
    if spec is not None and spec.max_episode_steps:
        horizon, horizon_source = int(spec.max_episode_steps), "env spec"
    elif static is not None:
        horizon, horizon_source = static.horizon, "static table"
    else:
        horizon, horizon_source = 1000, "default (env spec has no max_episode_steps)"
    existing = registered_task(task_id)
    datasets = existing.datasets if existing is not None else ()
    if dataset_id not in datasets:
        datasets = (*datasets, dataset_id)
    resolved = _minari_spec(
        gym_id,
        target=spec if spec is not None else gym_id,
        module=module,
        horizon=horizon,
        datasets=datasets,
        lo=lo,
        hi=hi,
        normalizer=normalizer,
        extra={
            "d4rl_family": family or None,
            "dataset_id": dataset_id,
            "ref_min_score": lo,
            "ref_max_score": hi,
            "horizon_source": horizon_source,
            "requires": PIP_NAMES.get(module.split(".", 1)[0], module.split(".", 1)[0]),
        },
        description=f"{gym_id}, resolved from Minari dataset {dataset_id}.",
        family=family,
    )
    if existing is None:
        register(resolved)
    else:
        # Keep the registered task's own normalizer; only record the new dataset.
        register(dataclasses.replace(existing, datasets=datasets))
    return resolved
