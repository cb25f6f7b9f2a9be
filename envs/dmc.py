"""DeepMind Control Suite tasks through shimmy, as ``dmc/<domain>-<task>``.

All 28 tasks of ``dm_control.suite.BENCHMARKING`` plus quadruped walk/run (B-Pref uses
quadruped-walk; it is not in BENCHMARKING) are registered (``dmc/walker-walk``,
``dmc/quadruped-walk``, ``dmc/ball_in_cup-catch``, ...). Each episode is 1000 steps (dm_control
ends it itself with ``truncated=True``); the score is ``mean return / 10`` (per-step reward is
in [0, 1], so returns are in [0, 1000]).

Observations: shimmy returns a ``Dict`` of float64 arrays; ``FlattenObservation`` turns it into
a float64 ``Box`` (``gymnasium.spaces.flatten`` over the Dict space's key order).

Shimmy registers ``dm_control/<domain>-<task>-v0`` with a ``functools.partial`` entry point,
which ``EnvSpec.to_json`` (and so Minari) cannot store, the same problem as MetaWorld's lambda.
This module registers :data:`GYM_ENV_ID` with the string entry point
``pbrl.envs.dmc:make_dmc_env`` (it builds shimmy's wrapper around ``suite.load`` directly).

Frames: the state is written into ``physics.data.qpos/qvel`` followed by
``physics.forward()``, rendered by dm_control from camera id 0 (walker/cheetah ``side``,
hopper/finger ``cam0``, humanoid ``back``, ...), except quadruped: its camera 0 (``global``)
shows the robot a few pixels tall, so it uses camera 2 (``y``, tracking, as DrQ does).
"""

from __future__ import annotations

import os

# dm_control picks its GL backend at import: a headless default must be set before it loads.
os.environ.setdefault("MUJOCO_GL", "egl")

from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from pbrl.envs.base import TaskSpec, check_returns, check_states, register  # noqa: E402
from pbrl.errors import PbrlError, UnknownIdError  # noqa: E402

GYM_ENV_ID = "pbrl/DMC-v0"
HORIZON = 1000
DEFAULT_CAMERA = 0
# domain -> camera id where camera 0 is unusable (checked by eye, docs/tasks.md).
CAMERA_OVERRIDES: dict[str, int] = {"quadruped": 2}
GENERATED_KINDS = ("random", "medium", "medium-replay", "medium-expert", "expert")

# (domain, task) pairs: dm_control.suite.BENCHMARKING plus quadruped walk/run, written out so
# listing tasks does not import dm_control. tests/test_envs.py checks them against the suite.
DMC_TASKS: tuple[tuple[str, str], ...] = (
    ("acrobot", "swingup"),
    ("acrobot", "swingup_sparse"),
    ("ball_in_cup", "catch"),
    ("cartpole", "balance"),
    ("cartpole", "balance_sparse"),
    ("cartpole", "swingup"),
    ("cartpole", "swingup_sparse"),
    ("cheetah", "run"),
    ("finger", "spin"),
    ("finger", "turn_easy"),
    ("finger", "turn_hard"),
    ("fish", "swim"),
    ("fish", "upright"),
    ("hopper", "hop"),
    ("hopper", "stand"),
    ("humanoid", "run"),
    ("humanoid", "stand"),
    ("humanoid", "walk"),
    ("manipulator", "bring_ball"),
    ("pendulum", "swingup"),
    ("quadruped", "run"),
    ("quadruped", "walk"),
    ("point_mass", "easy"),
    ("reacher", "easy"),
    ("reacher", "hard"),
    ("swimmer", "swimmer15"),
    ("swimmer", "swimmer6"),
    ("walker", "run"),
    ("walker", "stand"),
    ("walker", "walk"),
)


def gym_env_id() -> str:
    """The gymnasium id with a string entry point that datasets store as their env spec."""
    return GYM_ENV_ID


def default_camera(domain: str) -> int:
    """The camera id frames of ``domain`` are rendered from."""
    return CAMERA_OVERRIDES.get(domain, DEFAULT_CAMERA)


def make_dmc_env(
    domain: str,
    task: str,
    render_mode: str | None = None,
    width: int = 256,
    height: int = 256,
    camera_id: int | None = None,
) -> gym.Env:
    """Shimmy's wrapper of ``dm_control.suite.load(domain, task)`` with flat observations.

    Seed it with ``reset(seed=s)`` (shimmy reseeds the dm_control task's RNG there).
    """
    if (domain, task) not in DMC_TASKS:
        raise UnknownIdError(
            f"unknown DMC task '{domain}-{task}' (see `pbrl tasks list --domain dmc`)"
        )
    from dm_control import suite
    from shimmy.dm_control_compatibility import DmControlCompatibilityV0

    if camera_id is None:
        camera_id = default_camera(domain)
    render_kwargs = {"width": int(width), "height": int(height), "camera_id": int(camera_id)}
    env = DmControlCompatibilityV0(
        suite.load(domain_name=domain, task_name=task),
        render_mode=render_mode,
        render_kwargs=render_kwargs,
    )
    return gym.wrappers.FlattenObservation(env)


gym.register(GYM_ENV_ID, entry_point="pbrl.envs.dmc:make_dmc_env")


def _physics(env: Any) -> Any:
    inner = getattr(env.unwrapped, "_env", None)
    physics = getattr(inner, "physics", None)
    if physics is None:
        raise PbrlError(f"{type(env.unwrapped).__name__} is not a shimmy dm_control env")
    return physics


def render_states(
    domain: str,
    task: str,
    qpos: Any,
    qvel: Any,
    episode_info: dict | None = None,
    width: int = 256,
    height: int = 256,
    camera: str | int | None = None,
) -> np.ndarray:
    """Frames ``(T, H, W, 3)`` uint8 of stored states ``qpos (T, nq)``, ``qvel (T, nv)``."""
    env = make_dmc_env(domain, task)
    try:
        env.reset(seed=0)
        physics = _physics(env)
        what = f"dmc/{domain}-{task}"
        qpos, qvel = check_states(qpos, qvel, physics.model.nq, physics.model.nv, what)
        camera = default_camera(domain) if camera is None else camera
        if isinstance(camera, str):
            cam_id = physics.model.name2id(camera, "camera")
            if cam_id < 0:
                raise PbrlError(f"{what}: no camera named '{camera}'")
            camera = cam_id
        # dm_control sizes its offscreen buffer from the model when it first renders.
        vis = physics.model.vis.global_
        vis.offwidth = max(int(vis.offwidth), int(width))
        vis.offheight = max(int(vis.offheight), int(height))
        frames = np.zeros((qpos.shape[0], height, width, 3), dtype=np.uint8)
        for t in range(qpos.shape[0]):
            physics.data.qpos[:] = qpos[t]
            physics.data.qvel[:] = qvel[t]
            physics.forward()
            frames[t] = physics.render(height=height, width=width, camera_id=int(camera))
        return frames
    finally:
        env.close()


def _register(domain: str, task: str) -> None:
    task_id = f"dmc/{domain}-{task}"

    def make(seed: int = 0, render_mode: str | None = None, **kw: Any) -> gym.Env:
        env = gym.make(GYM_ENV_ID, domain=domain, task=task, render_mode=render_mode, **kw)
        # Seeds the task RNG once; later reset() calls without a seed continue that stream.
        env.reset(seed=int(seed))
        env.action_space.seed(int(seed))
        return env

    def score(returns: Any, successes: Any = None) -> float:
        return float(np.mean(check_returns(returns, task_id)) / 10.0)

    def render(
        qpos: Any,
        qvel: Any,
        episode_info: dict | None = None,
        width: int = 256,
        height: int = 256,
        camera: str | int | None = None,
    ) -> np.ndarray:
        return render_states(domain, task, qpos, qvel, episode_info, width, height, camera)

    register(
        TaskSpec(
            id=task_id,
            domain="dmc",
            horizon=HORIZON,
            make=make,
            score=score,
            render=render,
            datasets=tuple(f"pbrl/dmc/{domain}-{task}/{k}-v0" for k in GENERATED_KINDS),
            description=f"DeepMind Control {domain}-{task} (shimmy), {HORIZON}-step episodes.",
            extra={
                "gym_id": GYM_ENV_ID,
                "gym_kwargs": {"domain": domain, "task": task},
                "shimmy_id": f"dm_control/{domain}-{task}-v0",
                "normalizer": "return / 10",
                "camera": default_camera(domain),
            },
        )
    )


for _domain, _task in DMC_TASKS:
    _register(_domain, _task)
