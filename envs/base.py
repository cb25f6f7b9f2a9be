"""Task specs and the task registry.

A task is an environment (``mujoco/hopper``, ``metaworld/button-press-topdown-v3``,
``dmc/walker-walk``). Each domain file in this package registers its tasks by calling
:func:`register` at import; :func:`get_task` and :func:`list_tasks` import the domain
files lazily so that ``import pbrl`` stays cheap.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pbrl.errors import DataError, PbrlError, UnknownIdError

# Headless rendering by default: mujoco and dm_control choose their GL backend when they are
# first imported, and every domain module imports them after this package.
os.environ.setdefault("MUJOCO_GL", "egl")

DOMAINS: dict[str, str] = {
    "mujoco": "pbrl.envs.mujoco",
    "metaworld": "pbrl.envs.metaworld",
    "dmc": "pbrl.envs.dmc",
    "minari": "pbrl.envs.minari_tasks",
}


@dataclass(frozen=True)
class TaskSpec:
    """Everything the benchmark needs to know about one task.

    - ``make(seed, render_mode=None, **kw)`` builds a seeded gymnasium env whose
      observations are flat float vectors (DMC's Dict is flattened).
    - ``score(returns, successes)`` turns per-episode returns (and success flags, where the
      domain has them) into the domain's normalized score (D4RL: 100 * (R - min) /
      (max - min); MetaWorld: success rate in percent; DMC: return / 10).
    - ``render(qpos, qvel, episode_info, width, height, camera)`` turns stored physics
      states (T, nq), (T, nv) into RGB frames (T, H, W, 3) uint8.

    The domain's facts that learners and teachers read live here too, set by the domain
    file that registers the task (docs/architecture.md):

    - ``reward_scale``: the multiplier learners apply to raw dataset rewards
      (docs/reward-scale.md; MetaWorld 0.1, everything else 1.0);
    - ``value_source``: where the regret teacher's ``value_source=auto`` takes the expert
      value function from (``sb3``: the SAC critic stored with the dataset; ``fitted``: a
      value function fitted to the dataset's expert episodes);
    - ``family``: the reward-normalisation family of the IQL core (``locomotion``,
      ``antmaze``, ``adroit`` or ``other``; :func:`pbrl.learn.iql.reward_normalize`);
    - the normaliser is ``score`` itself, described by ``extra["normalizer"]``.
    """

    id: str
    domain: str
    horizon: int
    make: Callable[..., Any]
    score: Callable[[np.ndarray, np.ndarray | None], float]
    render: Callable[..., np.ndarray] | None = None
    datasets: tuple[str, ...] = ()
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    reward_scale: float = 1.0
    value_source: str = "sb3"
    family: str = "other"

    def spaces(self) -> tuple[Any, Any]:
        """(observation_space, action_space), from a freshly made env."""
        env = self.make(seed=0)
        try:
            return env.observation_space, env.action_space
        finally:
            env.close()


_REGISTRY: dict[str, TaskSpec] = {}
_LOADED: set[str] = set()


def register(spec: TaskSpec) -> TaskSpec:
    _REGISTRY[spec.id] = spec
    return spec


def registered_task(task_id: str) -> TaskSpec | None:
    """The spec registered under ``task_id`` so far, or None (loads no domain module)."""
    return _REGISTRY.get(task_id)


def _load_domain(domain: str) -> None:
    if domain in _LOADED:
        return
    importlib.import_module(DOMAINS[domain])
    _LOADED.add(domain)


def list_tasks(domain: str | None = None) -> list[TaskSpec]:
    if domain is not None and domain not in DOMAINS:
        raise UnknownIdError(f"unknown domain '{domain}' (known: {', '.join(DOMAINS)})")
    for d in [domain] if domain else list(DOMAINS):
        _load_domain(d)
    return sorted(
        (t for t in _REGISTRY.values() if domain is None or t.domain == domain), key=lambda t: t.id
    )


def get_task(task_id: str) -> TaskSpec:
    domain = task_id.split("/", 1)[0]
    if domain in DOMAINS:
        _load_domain(domain)
    if task_id not in _REGISTRY:
        raise UnknownIdError(
            f"unknown task id '{task_id}' (see `pbrl tasks list`; ids look like "
            "'mujoco/hopper', 'metaworld/button-press-topdown-v3', 'dmc/walker-walk')"
        )
    return _REGISTRY[task_id]


def find_task(task_id: str | None) -> TaskSpec | None:
    """The spec of ``task_id`` (loading its domain), or None when the id names no task.

    For callers that read a task's facts with defaults when a dataset names no known task
    (a dataset without a task id, a test's toy task)."""
    if not task_id:
        return None
    try:
        return get_task(task_id)
    except UnknownIdError:
        return None


# ---- shared helpers for the domain modules --------------------------------------------------
def physics_state(env: Any) -> tuple[np.ndarray, np.ndarray]:
    """Copies of the current ``(qpos (nq,), qvel (nv,))`` of any task's env.

    One function for every domain: gymnasium MuJoCo envs and MetaWorld keep the state in
    ``env.unwrapped.data``; shimmy's DMC wrapper keeps the dm_control env in
    ``env.unwrapped._env`` whose ``physics.data`` holds it.
    """
    u = env.unwrapped
    inner = getattr(u, "_env", None)
    physics = getattr(inner, "physics", None)
    data = physics.data if physics is not None else getattr(u, "data", None)
    if data is None or not hasattr(data, "qpos"):
        raise PbrlError(f"{type(u).__name__}: no MuJoCo physics state (qpos/qvel) to read")
    return np.array(data.qpos, dtype=np.float64), np.array(data.qvel, dtype=np.float64)


def check_states(qpos: Any, qvel: Any, nq: int, nv: int, what: str) -> tuple[np.ndarray, ...]:
    """Validate stored states ``qpos (T, nq)`` and ``qvel (T, nv)`` for rendering."""
    qpos = np.asarray(qpos, dtype=np.float64)
    qvel = np.asarray(qvel, dtype=np.float64)
    if qpos.ndim != 2 or qpos.shape[1] != nq:
        raise DataError(f"{what}: qpos must have shape (T, {nq}), got {qpos.shape}")
    if qvel.ndim != 2 or qvel.shape[1] != nv:
        raise DataError(f"{what}: qvel must have shape (T, {nv}), got {qvel.shape}")
    if qpos.shape[0] != qvel.shape[0]:
        raise DataError(f"{what}: qpos has {qpos.shape[0]} rows but qvel has {qvel.shape[0]}")
    if not (np.isfinite(qpos).all() and np.isfinite(qvel).all()):
        raise DataError(f"{what}: qpos/qvel contain NaN or inf")
    return qpos, qvel


class FrameRenderer:
    """Offscreen RGB frames of a MuJoCo ``model``/``data`` pair from a named camera.

    Uses ``mujoco.Renderer``, which makes its GL context current on every render: gymnasium's
    own viewer does not, and silently returns black frames once another rendering env in
    the process has been closed (ENVIRONMENT.md section 4). ``camera`` is a camera name, a
    camera id, or -1 for MuJoCo's default free camera (placed from the model's extent only,
    so it does not depend on the state at the first render).
    """

    def __init__(self, model: Any, width: int = 256, height: int = 256) -> None:
        import mujoco

        if width < 1 or height < 1:
            raise PbrlError(f"render size must be positive, got {width}x{height}")
        # The offscreen buffer must hold the frame; growing it is safe before a context exists.
        model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), int(width))
        model.vis.global_.offheight = max(int(model.vis.global_.offheight), int(height))
        self._renderer = mujoco.Renderer(model, height=int(height), width=int(width))

    def render(self, data: Any, camera: str | int = -1, rotate180: bool = False) -> np.ndarray:
        """One frame ``(H, W, 3)`` uint8 of ``data``'s current (forwarded) state."""
        try:
            self._renderer.update_scene(data, camera=camera)
        except ValueError as e:
            raise PbrlError(f"camera {camera!r}: {e}") from None
        frame = self._renderer.render()
        if rotate180:
            frame = frame[::-1, ::-1]
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def close(self) -> None:
        self._renderer.close()

    def __enter__(self) -> FrameRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_returns(returns: Any, task_id: str) -> np.ndarray:
    """Per-episode returns as a finite 1-D float array with at least one entry."""
    r = np.asarray(returns, dtype=np.float64).reshape(-1)
    if r.size == 0:
        raise PbrlError(f"{task_id}: cannot score zero episodes")
    if not np.isfinite(r).all():
        raise PbrlError(f"{task_id}: episode returns contain NaN or inf")
    return r
