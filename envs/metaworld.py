"""MetaWorld v3: all 50 tasks of ``metaworld.ALL_V3_ENVIRONMENTS`` as ``metaworld/<name>``.

Facts this module relies on (ENVIRONMENT.md section 2, re-checked here, docs/tasks.md):

- Seed only at construction (``reset(seed=...)`` is ignored by MetaWorld).
- The declared observation space has zero goal bounds; the right one is
  ``sawyer_observation_space`` after ``set_task`` (which consumes no RNG).
- MetaWorld's own gymnasium ids have lambda entry points, which ``EnvSpec.to_json`` (and
  so Minari) cannot store. This module registers :data:`GYM_ENV_ID` with the *string*
  entry point ``pbrl.envs.metaworld:make_metaworld_env``; it calls
  ``metaworld.make_mt_envs`` (not ``gym.make``, whose wrappers would cache MetaWorld's
  spec) so a dataset's stored spec rebuilds the env anywhere pbrl is installed.
- Re-rendering a stored state in a fresh env needs the episode's task vector
  (``_last_rand_vec``, :func:`get_rand_vec`) besides qpos/qvel.
- All four ``corner*`` cameras render upside down (a 180 degree rotation, checked by eye):
  frames from them are rotated back.

Score: success rate in percent; an episode succeeds if ``info["success"]`` is true at ANY
step (MetaWorld's convention; success at the final step is much rarer).
"""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from pbrl.envs.base import FrameRenderer, TaskSpec, check_states, register
from pbrl.errors import DataError, PbrlError, UnknownIdError

GYM_ENV_ID = "pbrl/MetaWorld-v3"
HORIZON = 500
DEFAULT_CAMERA = "corner2"
# Cameras whose xyaxes/euler make image-up point down: rotate their frames by 180 degrees.
ROTATED_CAMERAS = frozenset({"corner", "corner2", "corner3", "corner4"})
GENERATED_KINDS = (
    "random",
    "medium",
    "medium-replay",
    "medium-expert",
    "expert",
    "noisy-expert",
    "rollouts",  # CPL's protocol: a SAC policy's noisy rollouts (docs/cpl-protocol.md)
)
# The key under which a dataset stores an episode's task vector (episode info / infos).
RAND_VEC_KEY = "rand_vec"


def _all_names() -> tuple[str, ...]:
    import metaworld

    return tuple(sorted(metaworld.ALL_V3_ENVIRONMENTS))


METAWORLD_TASKS: tuple[str, ...] = _all_names()


def gym_env_id() -> str:
    """The gymnasium id with a string entry point that datasets store as their env spec."""
    return GYM_ENV_ID


def _check_name(env_name: str) -> None:
    if env_name not in METAWORLD_TASKS:
        raise UnknownIdError(
            f"unknown MetaWorld task '{env_name}' (50 names such as "
            "'button-press-topdown-v3'; see `pbrl tasks list --domain metaworld`)"
        )


class _UprightRender(gym.Wrapper):
    """Rotates ``render()`` frames of an upside-down camera by 180 degrees."""

    def render(self) -> Any:
        frame = self.env.render()
        return None if frame is None else np.ascontiguousarray(frame[::-1, ::-1])


def make_metaworld_env(
    env_name: str,
    seed: int = 0,
    horizon: int = HORIZON,
    render_mode: str | None = None,
    camera_name: str | None = None,
    width: int = 256,
    height: int = 256,
) -> gym.Env:
    """A seeded single-task MetaWorld env with a correct observation space.

    ``horizon`` sets both the TimeLimit and MetaWorld's own ``max_path_length`` (whose
    check raises on the step after it), so episodes truncate at exactly ``horizon`` steps.
    With ``render_mode="rgb_array"`` the camera is ``camera_name`` (default
    :data:`DEFAULT_CAMERA`); frames of the ``corner*`` cameras come back upright.
    """
    import metaworld

    _check_name(env_name)
    if seed is None:
        raise PbrlError("MetaWorld seed must be an int: seed=None draws from global numpy")
    horizon = int(horizon)
    if horizon < 1:
        raise PbrlError(f"horizon must be >= 1, got {horizon}")
    render_kw: dict[str, Any] = {}
    if render_mode is not None:
        camera_name = camera_name or DEFAULT_CAMERA
        render_kw = dict(
            render_mode=render_mode, camera_name=camera_name, width=width, height=height
        )
    env = metaworld.make_mt_envs(env_name, seed=int(seed), max_episode_steps=horizon, **render_kw)
    u = env.unwrapped
    u.max_path_length = horizon
    # set_task consumes no RNG, so the reset sequence stays identical to plain MT1.
    u.set_task(env.get_wrapper_attr("tasks")[0])
    space = u.sawyer_observation_space
    u.observation_space = space
    env.observation_space = space
    if render_mode is not None and camera_name in ROTATED_CAMERAS:
        env = _UprightRender(env)
    return env


gym.register(GYM_ENV_ID, entry_point="pbrl.envs.metaworld:make_metaworld_env")


def make_task_env(
    env_name: str,
    seed: int = 0,
    render_mode: str | None = None,
    horizon: int = HORIZON,
    **kw: Any,
) -> gym.Env:
    """``gym.make`` of :data:`GYM_ENV_ID`, so that ``env.spec`` serialises for Minari."""
    return gym.make(
        GYM_ENV_ID,
        env_name=env_name,
        seed=int(seed),
        horizon=int(horizon),
        render_mode=render_mode,
        **kw,
    )


def expert_policy(env_name: str) -> Any:
    """MetaWorld's scripted expert for ``env_name`` (``.get_action(obs) -> action``)."""
    from metaworld.policies import ENV_POLICY_MAP

    _check_name(env_name)
    return ENV_POLICY_MAP[env_name]()


def expert_action(policy: Any, obs: Any) -> np.ndarray:
    """The expert's action clipped to [-1, 1] as float32.

    Clipping is exact: the env clips xyz and MuJoCo clamps the gripper, so stored clipped
    actions replay bit-identically (ENVIRONMENT.md section 2).
    """
    with warnings.catch_warnings():
        # metaworld.policies.policy.move warns "Constant(s) may be too high" on most steps.
        warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
        a = policy.get_action(np.asarray(obs, dtype=np.float64))
    return np.clip(np.asarray(a, dtype=np.float64), -1.0, 1.0).astype(np.float32)


def get_rand_vec(env: Any) -> np.ndarray:
    """The current episode's task vector (length 3 or 6); store it once per episode."""
    rv = getattr(env.unwrapped, "_last_rand_vec", None)
    if rv is None:
        raise PbrlError("MetaWorld env has no task vector yet: call reset() first")
    return np.array(rv, dtype=np.float64)


def render_env(
    env: Any,
    width: int = 256,
    height: int = 256,
    camera: str | int | None = None,
    renderer: FrameRenderer | None = None,
) -> np.ndarray:
    """One upright frame ``(H, W, 3)`` uint8 of a live env's current state."""
    u = env.unwrapped
    camera = DEFAULT_CAMERA if camera is None else camera
    own = renderer is None
    r = FrameRenderer(u.model, width, height) if own else renderer
    try:
        return r.render(u.data, camera, rotate180=camera in ROTATED_CAMERAS)
    finally:
        if own:
            r.close()


def render_states(
    env_name: str,
    qpos: Any,
    qvel: Any,
    episode_info: dict,
    width: int = 256,
    height: int = 256,
    camera: str | int | None = None,
) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` of stored states, in a fresh env.

    ``episode_info[RAND_VEC_KEY]`` must hold the episode's task vector: the goal site and
    fixed objects are placed from it at reset, so qpos/qvel alone do not fix the scene.
    Recipe (pixel-identical to the live frame): set ``_last_rand_vec``, freeze it,
    ``reset()`` the unwrapped env, then ``set_state(qpos, qvel)`` per frame.
    """
    what = f"metaworld/{env_name}"
    if not episode_info or episode_info.get(RAND_VEC_KEY) is None:
        raise DataError(
            f"{what}: episode_info lacks '{RAND_VEC_KEY}' (the episode's task vector, "
            "pbrl.envs.metaworld.get_rand_vec(env) after reset); MetaWorld frames cannot "
            "be re-rendered from qpos/qvel alone"
        )
    rv = np.asarray(episode_info[RAND_VEC_KEY], dtype=np.float64).reshape(-1)
    env = make_metaworld_env(env_name, seed=0)
    try:
        u = env.unwrapped
        expected = u._random_reset_space.low.size
        if rv.size != expected:
            raise DataError(f"{what}: '{RAND_VEC_KEY}' must have {expected} values, got {rv.size}")
        qpos, qvel = check_states(qpos, qvel, u.model.nq, u.model.nv, what)
        u._last_rand_vec = rv
        u._freeze_rand_vec = True
        u.reset()
        camera = DEFAULT_CAMERA if camera is None else camera
        frames = np.zeros((qpos.shape[0], height, width, 3), dtype=np.uint8)
        with FrameRenderer(u.model, width, height) as r:
            for t in range(qpos.shape[0]):
                u.set_state(qpos[t], qvel[t])
                frames[t] = r.render(u.data, camera, rotate180=camera in ROTATED_CAMERAS)
        return frames
    finally:
        env.close()


def success_rate(successes: Any, task_id: str = "metaworld") -> float:
    """Percent of episodes with success at any step (``successes``: (E,) bool)."""
    if successes is None:
        raise PbrlError(f"{task_id}: the score is a success rate; pass per-episode successes")
    s = np.asarray(successes).reshape(-1)
    if s.size == 0:
        raise PbrlError(f"{task_id}: cannot score zero episodes")
    return float(100.0 * np.mean(s.astype(bool)))


def _register(env_name: str) -> None:
    task_id = f"metaworld/{env_name}"

    def make(
        seed: int = 0, render_mode: str | None = None, horizon: int = HORIZON, **kw: Any
    ) -> gym.Env:
        return make_task_env(env_name, seed=seed, render_mode=render_mode, horizon=horizon, **kw)

    def score(returns: Any, successes: Any = None) -> float:
        return success_rate(successes, task_id)

    def render(
        qpos: Any,
        qvel: Any,
        episode_info: dict,
        width: int = 256,
        height: int = 256,
        camera: str | int | None = None,
    ) -> np.ndarray:
        return render_states(env_name, qpos, qvel, episode_info, width, height, camera)

    register(
        TaskSpec(
            id=task_id,
            domain="metaworld",
            horizon=HORIZON,
            make=make,
            score=score,
            render=render,
            datasets=tuple(f"pbrl/metaworld/{env_name}/{k}-v0" for k in GENERATED_KINDS),
            description=(
                f"MetaWorld v3 {env_name} (MT1, goal observable, 39-dim obs), "
                f"{HORIZON}-step episodes by default (make(..., horizon=N))."
            ),
            extra={
                "gym_id": GYM_ENV_ID,
                "gym_kwargs": {"env_name": env_name},
                "normalizer": "success rate % (any step)",
                "camera": DEFAULT_CAMERA,
                "rand_vec_key": RAND_VEC_KEY,
            },
            # Up to 10 reward per step (returns in the thousands) saturates IQL's
            # exp(beta * A) weights; CPL divides MetaWorld rewards by 10 for the same reason.
            reward_scale=0.1,
            # The MetaWorld generator stores no SAC critic: the regret teacher fits V.
            value_source="fitted",
        )
    )


for _name in METAWORLD_TASKS:
    _register(_name)
