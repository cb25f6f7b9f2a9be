"""MuJoCo locomotion tasks (Gymnasium ``*-v5``) and D4RL's normalized score.

Tasks: ``mujoco/hopper``, ``mujoco/halfcheetah``, ``mujoco/walker2d``, ``mujoco/ant``,
1000-step episodes. The score is D4RL's ``100 * (R - min) / (max - min)`` with D4RL's own
constants (``D4RL_REF_SCORES``, which also holds the AntMaze, Adroit and Kitchen families
used by :mod:`pbrl.envs.minari_tasks`).

Frames are rendered from stored ``qpos``/``qvel`` through ``set_state`` and the model's
``track`` camera (``mode="trackcom"``: it follows the body's centre of mass at a fixed
offset, so a frame depends only on the state, never on when rendering started). Gymnasium's
own v5 default is a free camera whose look-at point is fixed, which loses a running agent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pbrl.envs.base import FrameRenderer, TaskSpec, check_returns, check_states, register
from pbrl.errors import UnknownIdError

# family -> (min, max) return, from D4RL's infos.py (REF_MIN_SCORE / REF_MAX_SCORE).
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
    "pen": (96.262799, 3076.8331017826877),
    "door": (-56.512833, 2880.5693087298737),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
    "kitchen": (0.0, 4.0),
}

# task name -> Gymnasium id
GYM_IDS: dict[str, str] = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
}

# The tasks CORL's and Preference Transformer's reward normalisations treat as locomotion
# (TaskSpec.family; ant is not among them).
D4RL_LOCOMOTION = ("hopper", "halfcheetah", "walker2d")
# D4RL families of the adroit hand tasks (TaskSpec.family "adroit").
D4RL_ADROIT = ("pen", "door", "hammer", "relocate")

HORIZON = 1000
DEFAULT_CAMERA = "track"
D4RL_KINDS = ("random", "medium", "medium-replay", "medium-expert", "expert")
MINARI_KINDS = ("simple", "medium", "expert")
GENERATED_KINDS = ("random", "medium", "medium-replay", "medium-expert", "expert")


def d4rl_normalized_score(family: str, returns: Any) -> Any:
    """D4RL's normalized score ``100 * (R - min) / (max - min)``, elementwise.

    ``returns`` is a scalar or an array of episode returns; the result has the same shape
    (a float for a scalar). ``family`` is a key of :data:`D4RL_REF_SCORES`.
    """
    if family not in D4RL_REF_SCORES:
        raise UnknownIdError(
            f"unknown D4RL family '{family}' (known: {', '.join(D4RL_REF_SCORES)})"
        )
    lo, hi = D4RL_REF_SCORES[family]
    r = np.asarray(returns, dtype=np.float64)
    out = 100.0 * (r - lo) / (hi - lo)
    return float(out) if out.ndim == 0 else out


def known_datasets(name: str) -> tuple[str, ...]:
    """D4RL v2 names, Minari's ``mujoco/`` ids and the generated ``pbrl/mujoco/`` ids."""
    return (
        tuple(f"d4rl/{name}-{k}-v2" for k in D4RL_KINDS)
        + tuple(f"mujoco/{name}/{k}-v0" for k in MINARI_KINDS)
        + tuple(f"pbrl/mujoco/{name}/{k}-v0" for k in GENERATED_KINDS)
    )


def make_mujoco_env(
    name: str,
    seed: int = 0,
    render_mode: str | None = None,
    width: int = 256,
    height: int = 256,
    camera_name: str | None = None,
    **kw: Any,
) -> Any:
    """``gym.make`` of the task's ``*-v5`` env, seeded (one ``reset(seed)``, action space)."""
    import gymnasium as gym

    if name not in GYM_IDS:
        raise UnknownIdError(f"unknown MuJoCo task '{name}' (known: {', '.join(GYM_IDS)})")
    if render_mode is not None:
        kw.update(width=width, height=height, camera_name=camera_name or DEFAULT_CAMERA)
    env = gym.make(GYM_IDS[name], render_mode=render_mode, **kw)
    # Seeds the env's RNG once; later reset() calls without a seed continue that stream.
    env.reset(seed=int(seed))
    env.action_space.seed(int(seed))
    return env


def render_states(
    name: str,
    qpos: Any,
    qvel: Any,
    episode_info: dict | None = None,
    width: int = 256,
    height: int = 256,
    camera: str | int | None = None,
) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 of stored states ``qpos (T, nq)``, ``qvel (T, nv)``."""
    import gymnasium as gym

    env = gym.make(GYM_IDS[name])
    try:
        u = env.unwrapped
        qpos, qvel = check_states(qpos, qvel, u.model.nq, u.model.nv, f"mujoco/{name}")
        frames = np.zeros((qpos.shape[0], height, width, 3), dtype=np.uint8)
        with FrameRenderer(u.model, width, height) as r:
            for t in range(qpos.shape[0]):
                u.set_state(qpos[t], qvel[t])
                frames[t] = r.render(u.data, DEFAULT_CAMERA if camera is None else camera)
        return frames
    finally:
        env.close()


def _register(name: str) -> None:
    def make(seed: int = 0, render_mode: str | None = None, **kw: Any) -> Any:
        return make_mujoco_env(name, seed=seed, render_mode=render_mode, **kw)

    def score(returns: Any, successes: Any = None) -> float:
        r = check_returns(returns, f"mujoco/{name}")
        return float(np.mean(d4rl_normalized_score(name, r)))

    def render(
        qpos: Any,
        qvel: Any,
        episode_info: dict | None = None,
        width: int = 256,
        height: int = 256,
        camera: str | int | None = None,
    ) -> np.ndarray:
        return render_states(name, qpos, qvel, episode_info, width, height, camera)

    lo, hi = D4RL_REF_SCORES[name]
    register(
        TaskSpec(
            id=f"mujoco/{name}",
            domain="mujoco",
            horizon=HORIZON,
            make=make,
            score=score,
            render=render,
            datasets=known_datasets(name),
            description=f"Gymnasium {GYM_IDS[name]} locomotion, {HORIZON}-step episodes.",
            family="locomotion" if name in D4RL_LOCOMOTION else "other",
            extra={
                "gym_id": GYM_IDS[name],
                "gym_kwargs": {},
                "normalizer": f"d4rl {name} ({lo:g}, {hi:g})",
                "d4rl_family": name,
                "camera": DEFAULT_CAMERA,
            },
        )
    )


for _name in GYM_IDS:
    _register(_name)
