"""Task registry: every domain makes, steps, renders headless and normalizes correctly."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec

from pbrl.envs import get_task, list_tasks
from pbrl.envs.base import FrameRenderer, physics_state
from pbrl.errors import DataError, PbrlError, UnknownIdError

SIZE = 64  # frames in tests: small, rendering is the slow part on llvmpipe

DMC_REQUIRED = (
    "walker-walk",
    "walker-run",
    "cheetah-run",
    "quadruped-walk",
    "hopper-hop",
    "finger-spin",
    "humanoid-walk",
)


def _rollout_states(env, steps: int, rng: np.random.Generator):
    """Random actions for ``steps`` steps; returns stacked qpos, qvel after each step."""
    qs, vs = [], []
    low, high = env.action_space.low, env.action_space.high
    for _ in range(steps):
        a = rng.uniform(low, high).astype(env.action_space.dtype)
        env.step(a)
        q, v = physics_state(env)
        qs.append(q)
        vs.append(v)
    return np.stack(qs), np.stack(vs)


# ---- registry -----------------------------------------------------------------------------
def test_registry_lists_every_domain():
    ids = {t.id for t in list_tasks()}
    assert {f"mujoco/{n}" for n in ("hopper", "halfcheetah", "walker2d", "ant")} <= ids
    assert len(list_tasks("metaworld")) == 50
    assert "metaworld/button-press-topdown-v3" in ids
    assert {f"dmc/{t}" for t in DMC_REQUIRED} <= ids
    assert {"minari/AntMaze_UMaze-v4", "minari/AdroitHandPen-v1", "minari/FrankaKitchen-v1"} <= ids
    from pbrl.envs.base import DOMAINS

    for t in list_tasks():
        if t.domain not in DOMAINS:
            continue  # tasks other tests register on the fly (e.g. test/point)
        assert t.horizon > 0 and t.id.startswith(t.domain + "/")
        assert "normalizer" in t.extra


def test_unknown_ids_are_named():
    with pytest.raises(UnknownIdError, match="mujoco/nope"):
        get_task("mujoco/nope")
    with pytest.raises(UnknownIdError, match="atari/pong"):
        get_task("atari/pong")
    with pytest.raises(UnknownIdError, match="'atari'"):
        list_tasks("atari")
    from pbrl.envs.metaworld import make_metaworld_env

    with pytest.raises(UnknownIdError, match="reach-v9"):
        make_metaworld_env("reach-v9")


# ---- normalizers --------------------------------------------------------------------------
def test_d4rl_constants_and_formula():
    from pbrl.envs.mujoco import D4RL_REF_SCORES, d4rl_normalized_score

    expected = {
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
    assert D4RL_REF_SCORES == expected
    assert d4rl_normalized_score("hopper", -20.272305) == pytest.approx(0.0)
    assert d4rl_normalized_score("hopper", 3234.3) == pytest.approx(100.0)
    # hand-worked: (1607.013848 + 20.272305) / 3254.572305 = 0.5
    assert d4rl_normalized_score("hopper", 1607.0138475) == pytest.approx(50.0)
    # walker2d: 100 * (460.696109 - 1.629008) / (4592.3 - 1.629008) = 100 * 459.067101 / 4590.670992
    assert d4rl_normalized_score("walker2d", 460.696109) == pytest.approx(10.0)
    out = d4rl_normalized_score("kitchen", np.array([0.0, 1.0, 4.0]))
    np.testing.assert_allclose(out, [0.0, 25.0, 100.0])
    with pytest.raises(UnknownIdError, match="maze2d"):
        d4rl_normalized_score("maze2d", 1.0)
    # the task's score is the mean of the episodes' normalized scores
    hopper = get_task("mujoco/hopper")
    assert hopper.score(np.array([-20.272305, 3234.3]), None) == pytest.approx(50.0)
    assert get_task("mujoco/ant").score(np.array([3879.7]), None) == pytest.approx(100.0)
    with pytest.raises(PbrlError, match="NaN"):
        hopper.score(np.array([np.nan]), None)
    with pytest.raises(PbrlError, match="zero episodes"):
        hopper.score(np.array([]), None)


def test_metaworld_and_dmc_scores():
    mw = get_task("metaworld/reach-v3")
    assert mw.score(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 0, 1, 1], bool)) == 75.0
    with pytest.raises(PbrlError, match="success"):
        mw.score(np.array([1.0]), None)
    dmc = get_task("dmc/walker-walk")
    assert dmc.score(np.array([1000.0, 500.0]), None) == pytest.approx(75.0)


# ---- MuJoCo -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["hopper", "halfcheetah", "walker2d", "ant"])
def test_mujoco_make_step_render(name):
    task = get_task(f"mujoco/{name}")
    env = task.make(seed=0)
    try:
        obs, _ = env.reset(seed=1)
        assert obs.ndim == 1 and np.issubdtype(obs.dtype, np.floating)
        assert env.spec.max_episode_steps == task.horizon == 1000
        qpos, qvel = _rollout_states(env, 5, np.random.default_rng(0))
    finally:
        env.close()
    assert f"d4rl/{name}-medium-replay-v2" in task.datasets
    assert f"mujoco/{name}/medium-v0" in task.datasets
    assert f"pbrl/mujoco/{name}/medium-v0" in task.datasets
    frames = task.render(qpos[-1:], qvel[-1:], {}, width=SIZE, height=SIZE)
    assert frames.shape == (1, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert frames.mean() > 0
    with pytest.raises(DataError, match="qpos"):
        task.render(qpos[:, :-1], qvel, {}, width=SIZE, height=SIZE)


def test_mujoco_seeded_make_is_deterministic():
    task = get_task("mujoco/hopper")
    a, b = task.make(seed=3), task.make(seed=3)
    np.testing.assert_array_equal(a.reset()[0], b.reset()[0])
    np.testing.assert_array_equal(a.action_space.sample(), b.action_space.sample())
    a.close()
    b.close()


def test_renderer_survives_another_renderer_closing():
    # gymnasium's own viewer goes black after another GL context is freed; ours must not.
    env = gym.make("Hopper-v5")
    env.reset(seed=0)
    u = env.unwrapped
    keep = FrameRenderer(u.model, SIZE, SIZE)
    first = keep.render(u.data, "track")
    other = FrameRenderer(u.model, SIZE, SIZE)
    other.render(u.data, "track")
    other.close()
    again = keep.render(u.data, "track")
    keep.close()
    env.close()
    assert first.mean() > 0
    np.testing.assert_array_equal(first, again)


# ---- MetaWorld ----------------------------------------------------------------------------
def test_metaworld_names():
    import metaworld
    from metaworld.policies import ENV_POLICY_MAP

    from pbrl.envs.metaworld import METAWORLD_TASKS

    assert len(METAWORLD_TASKS) == 50
    assert set(METAWORLD_TASKS) == set(metaworld.ALL_V3_ENVIRONMENTS) == set(ENV_POLICY_MAP)


@pytest.mark.slow
def test_metaworld_all_tasks_make_reset_step():
    from pbrl.envs.metaworld import METAWORLD_TASKS

    for name in METAWORLD_TASKS:
        env = get_task(f"metaworld/{name}").make(seed=0)
        obs, _ = env.reset()
        assert obs.shape == (39,), name
        assert env.observation_space.contains(obs), name
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs), name
        assert 0.0 <= float(reward) <= 10.0 and "success" in info, name
        env.close()


@pytest.mark.parametrize("name", ["button-press-topdown-v3", "pick-place-v3"])
def test_metaworld_rerender_in_fresh_env_is_pixel_identical(name):
    from pbrl.envs.metaworld import (
        RAND_VEC_KEY,
        expert_action,
        expert_policy,
        get_rand_vec,
        render_env,
    )

    task = get_task(f"metaworld/{name}")
    env = task.make(seed=5)
    obs, _ = env.reset()
    env.reset()  # a second reset: a different goal than the fresh render env's first one
    obs, _ = env.reset()
    rand_vec = get_rand_vec(env)
    policy = expert_policy(name)
    qs, vs, live = [], [], []
    renderer = FrameRenderer(env.unwrapped.model, SIZE, SIZE)
    for t in range(12):
        a = expert_action(policy, obs)
        assert a.dtype == np.float32 and np.abs(a).max() <= 1.0
        obs, *_ = env.step(a)
        q, v = physics_state(env)
        qs.append(q)
        vs.append(v)
        if t in (0, 11):
            live.append(render_env(env, SIZE, SIZE, renderer=renderer))
    renderer.close()
    env.close()
    frames = task.render(
        np.stack(qs), np.stack(vs), {RAND_VEC_KEY: rand_vec}, width=SIZE, height=SIZE
    )
    assert frames.shape == (12, SIZE, SIZE, 3)
    assert frames[0].mean() > 0 and frames[-1].mean() > 0
    np.testing.assert_array_equal(frames[0], live[0])
    np.testing.assert_array_equal(frames[-1], live[1])


def test_metaworld_render_needs_the_task_vector():
    task = get_task("metaworld/reach-v3")
    q, v = np.zeros((1, 9)), np.zeros((1, 9))
    with pytest.raises(DataError, match="rand_vec"):
        task.render(q, v, {}, width=SIZE, height=SIZE)
    with pytest.raises(DataError, match="rand_vec.*6 values"):
        task.render(q, v, {"rand_vec": np.zeros(2)}, width=SIZE, height=SIZE)


def test_metaworld_spec_serialises_and_rebuilds(minari_home):
    import minari
    from minari.data_collector import EpisodeBuffer

    task = get_task("metaworld/button-press-topdown-v3")
    env = task.make(seed=7, horizon=3)
    spec_json = env.spec.to_json()  # MetaWorld's own ids raise here (lambda entry point)
    spec = json.loads(spec_json)
    assert spec["entry_point"] == "pbrl.envs.metaworld:make_metaworld_env"
    assert spec["kwargs"]["env_name"] == "button-press-topdown-v3"
    obs, _ = env.reset()
    observations, actions, rewards = [obs], [], []
    for _ in range(3):
        a = np.zeros(4, np.float32)
        obs, r, term, trunc, _ = env.step(a)
        observations.append(obs)
        actions.append(a)
        rewards.append(r)
    assert trunc and not term  # horizon=3 truncates at exactly 3 steps
    buf = EpisodeBuffer(
        id=0,
        seed=7,
        observations=np.array(observations),
        actions=np.array(actions),
        rewards=rewards,
        terminations=[False] * 3,
        truncations=[False, False, True],
    )
    minari.create_dataset_from_buffers(
        "pbrl/test/mw-v0",
        [buf],
        env=env,
        ref_min_score=0.0,
        ref_max_score=10.0,
        algorithm_name="zero",
        author="pbrl",
        author_email="pbrl@example.org",
        code_permalink="https://example.org/pbrl",
        description="test",
    )
    env.close()
    ds = minari.load_dataset("pbrl/test/mw-v0")
    rebuilt = ds.recover_environment()
    obs, _ = rebuilt.reset()
    assert rebuilt.observation_space.contains(obs)
    rebuilt.close()
    from pbrl.envs.minari_tasks import task_for_minari_dataset

    resolved = task_for_minari_dataset(
        "pbrl/test/mw-v0", minari.list_local_datasets()["pbrl/test/mw-v0"]
    )
    assert resolved.id == "metaworld/button-press-topdown-v3"
    assert resolved.score(np.array([1.0, 2.0]), np.array([True, False])) == 50.0


def test_metaworld_horizon_beyond_500():
    task = get_task("metaworld/reach-v3")
    env = task.make(seed=0, horizon=502)
    env.reset()
    zero = np.zeros(4, np.float32)
    for _ in range(501):
        _, _, _, trunc, _ = env.step(zero)
        assert not trunc
    _, _, _, trunc, _ = env.step(zero)
    assert trunc
    env.close()


def test_metaworld_render_mode_frames_are_upright_corner2():
    from pbrl.envs.metaworld import make_metaworld_env, render_env

    env = make_metaworld_env("reach-v3", seed=0, render_mode="rgb_array", width=SIZE, height=SIZE)
    env.reset()
    frame = env.render()
    ours = render_env(env, SIZE, SIZE, camera="corner2")
    env.close()
    assert frame.shape == (SIZE, SIZE, 3) and frame.mean() > 0
    np.testing.assert_array_equal(frame, ours)


# ---- DMC ----------------------------------------------------------------------------------
def test_dmc_task_list_matches_the_suite():
    from dm_control import suite

    from pbrl.envs.dmc import DMC_TASKS

    assert set(suite.BENCHMARKING) <= set(DMC_TASKS) <= set(suite.ALL_TASKS)
    assert {tuple(t.split("-")) for t in DMC_REQUIRED} <= set(DMC_TASKS)


def test_dmc_all_tasks_make_and_step():
    from pbrl.envs.dmc import DMC_TASKS

    for domain, name in DMC_TASKS:
        task = get_task(f"dmc/{domain}-{name}")
        env = task.make(seed=0)
        obs, _ = env.reset(seed=0)
        assert obs.ndim == 1 and obs.shape == env.observation_space.shape, task.id
        assert env.unwrapped._env._step_limit == task.horizon == 1000, task.id
        obs, r, term, trunc, _ = env.step(env.action_space.sample())
        assert np.isfinite(obs).all() and 0.0 <= float(r) <= 1.0, task.id
        env.close()


@pytest.mark.parametrize("name", DMC_REQUIRED)
def test_dmc_render(name):
    task = get_task(f"dmc/{name}")
    env = task.make(seed=0)
    qpos, qvel = _rollout_states(env, 3, np.random.default_rng(1))
    env.close()
    frames = task.render(qpos[-1:], qvel[-1:], None, width=SIZE, height=SIZE)
    assert frames.shape == (1, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert frames.mean() > 0


def test_dmc_spec_serialises_and_seeds():
    task = get_task("dmc/walker-walk")
    env = task.make(seed=0)
    spec = EnvSpec.from_json(env.spec.to_json())  # shimmy's own ids have a partial entry point
    assert spec.entry_point == "pbrl.envs.dmc:make_dmc_env"
    a = gym.make(spec)
    np.testing.assert_array_equal(a.reset(seed=4)[0], env.reset(seed=4)[0])
    a.close()
    env.close()


# ---- Minari -------------------------------------------------------------------------------
def test_minari_static_tasks_need_gymnasium_robotics(monkeypatch):
    from pbrl.envs import minari_tasks

    task = get_task("minari/AntMaze_UMaze-v4")
    assert "D4RL/antmaze/umaze-v1" in task.datasets and task.horizon == 700
    real = minari_tasks.importlib.util.find_spec
    monkeypatch.setattr(
        minari_tasks.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gymnasium_robotics" else real(name, *a),
    )
    with pytest.raises(PbrlError, match="pip install gymnasium-robotics"):
        task.make(seed=0)
    with pytest.raises(PbrlError, match="pip install gymnasium-robotics"):
        get_task("minari/AdroitHandPen-v1").render(np.zeros((1, 30)), np.zeros((1, 30)), {})
    # without dataset ref scores, the family's D4RL constants
    assert get_task("minari/AdroitHandPen-v1").score(
        np.array([96.262799, 3076.8331017826877]), None
    ) == pytest.approx(50.0)
    with pytest.raises(PbrlError, match="task_for_minari_dataset"):
        get_task("minari/PointMaze_UMaze-v3").score(np.array([1.0]), None)


def _meta(env_id: str, lo=0.0, hi=200.0, **kwargs) -> dict:
    spec = EnvSpec(
        id=env_id, entry_point="gymnasium.envs.mujoco.hopper_v5:HopperEnv", kwargs=kwargs
    )
    return {"env_spec": spec.to_json(), "ref_min_score": lo, "ref_max_score": hi}


def test_task_for_minari_dataset_resolution():
    from pbrl.envs.minari_tasks import task_for_minari_dataset

    # Minari's regenerated MuJoCo datasets use their own reference scores
    t = task_for_minari_dataset("mujoco/hopper/medium-v0", _meta("Hopper-v5", -10.0, 90.0))
    assert t.id == "mujoco/hopper" and t.score(np.array([40.0]), None) == pytest.approx(50.0)
    # generated pbrl datasets keep D4RL's constants
    t = task_for_minari_dataset("pbrl/mujoco/hopper/medium-v0", _meta("Hopper-v5", -10.0, 90.0))
    assert t.score(np.array([3234.3]), None) == pytest.approx(100.0)
    # the registry's mujoco/hopper is unchanged
    assert get_task("mujoco/hopper").score(np.array([3234.3]), None) == pytest.approx(100.0)
    t = task_for_minari_dataset(
        "pbrl/dmc/walker-walk/medium-v0", _meta("pbrl/DMC-v0", domain="walker", task="walk")
    )
    assert t.id == "dmc/walker-walk" and t.score(np.array([500.0]), None) == 50.0
    # a static id without env spec resolves through the table, D4RL fallback normalizer
    t = task_for_minari_dataset("D4RL/kitchen/mixed-v2", {"ref_min_score": None})
    assert t.id == "minari/FrankaKitchen-v1" and t.horizon == 280
    assert t.score(np.array([2.0]), None) == pytest.approx(50.0)
    # the dataset's ref scores win over the family constants
    t = task_for_minari_dataset(
        "D4RL/kitchen/mixed-v2", {"ref_min_score": 0.0, "ref_max_score": 2.0}
    )
    assert t.score(np.array([2.0]), None) == pytest.approx(100.0)


def test_task_for_minari_dataset_bad_metadata():
    from pbrl.envs.minari_tasks import task_for_minari_dataset

    with pytest.raises(DataError, match="me/x-v0.*env_spec"):
        task_for_minari_dataset("me/x-v0", {})
    with pytest.raises(DataError, match="me/x-v0.*'env_spec'"):
        task_for_minari_dataset("me/x-v0", {"env_spec": "{not json"})
    with pytest.raises(DataError, match="ref_min_score"):
        task_for_minari_dataset("me/x-v0", _meta("Hopper-v5", 5.0, 1.0))
    with pytest.raises(DataError, match="ref_max_score"):
        task_for_minari_dataset("me/x-v0", _meta("Hopper-v5", 0.0, float("nan")))


def test_minari_dataset_of_another_env_registers_its_task(minari_home):
    import minari
    from minari.data_collector import EpisodeBuffer

    from pbrl.envs.minari_tasks import task_for_minari_dataset

    env = gym.make("InvertedPendulum-v5")
    obs, _ = env.reset(seed=0)
    obs_list, acts = [obs], []
    for _ in range(3):
        a = np.zeros(1, np.float32)
        obs, *_ = env.step(a)
        obs_list.append(obs)
        acts.append(a)
    buf = EpisodeBuffer(
        id=0,
        seed=0,
        observations=np.array(obs_list),
        actions=np.array(acts),
        rewards=[1.0] * 3,
        terminations=[False] * 3,
        truncations=[False, False, True],
    )
    minari.create_dataset_from_buffers(
        "pbrl/test/pendulum-v0",
        [buf],
        env="InvertedPendulum-v5",
        ref_min_score=0.0,
        ref_max_score=1000.0,
        algorithm_name="zero",
        author="pbrl",
        author_email="pbrl@example.org",
        code_permalink="https://example.org/pbrl",
        description="test",
    )
    q, v = physics_state(env)
    env.close()
    meta = minari.list_local_datasets()["pbrl/test/pendulum-v0"]
    task = task_for_minari_dataset("pbrl/test/pendulum-v0", meta)
    assert task.id == "minari/InvertedPendulum-v5" and task.horizon == 1000
    assert task.score(np.array([250.0]), None) == pytest.approx(25.0)
    assert "pbrl/test/pendulum-v0" in get_task("minari/InvertedPendulum-v5").datasets
    made = task.make(seed=0)
    assert made.reset(seed=0)[0].shape == (4,)
    made.close()
    frame = task.render(q[None], v[None], None, width=SIZE, height=SIZE)
    assert frame.shape == (1, SIZE, SIZE, 3) and frame.mean() > 0


# ---- CLI ----------------------------------------------------------------------------------
def _cli(argv):
    # CliRunner on the Typer app: `from pbrl.cli import main` was once shadowed by a pbrl.cli.main
    # submodule once that is imported, so the error path is checked in a subprocess below.
    from typer.testing import CliRunner

    from pbrl.cli.app import app

    result = CliRunner().invoke(app, argv, catch_exceptions=True)
    return result.exit_code, result.output, result.exception


def test_cli_tasks_list_and_info():
    code, out, _ = _cli(["tasks", "list", "--domain", "minari"])
    assert code == 0 and "minari/AntMaze_UMaze-v4" in out and "mujoco/hopper" not in out
    code, out, _ = _cli(["tasks", "list", "--domain", "dmc"])
    assert code == 0 and "dmc/walker-walk" in out and "return / 10" in out
    code, out, _ = _cli(["tasks", "info", "mujoco/hopper"])
    assert code == 0 and "d4rl/hopper-medium-replay-v2" in out and "Box(shape=(11,)" in out
    code, _, exc = _cli(["tasks", "list", "--domain", "atari"])
    assert isinstance(exc, UnknownIdError) and "atari" in str(exc)


def test_cli_unknown_task_exits_2_without_traceback():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "pbrl", "tasks", "info", "mujoco/nope"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "mujoco/nope" in proc.stderr and "Traceback" not in proc.stderr


def test_domain_facts_live_on_the_task_spec():
    """Reward scale, regret value source and normalisation family are read from TaskSpec
    (issue 18): the domain file sets them, nothing guesses them from the id string."""
    from pbrl.envs import find_task, get_task

    mw = get_task("metaworld/button-press-topdown-v3")
    assert (mw.reward_scale, mw.value_source, mw.family) == (0.1, "fitted", "other")
    hopper = get_task("mujoco/hopper")
    assert (hopper.reward_scale, hopper.value_source, hopper.family) == (1.0, "sb3", "locomotion")
    assert get_task("mujoco/ant").family == "other"
    assert get_task("dmc/walker-walk").reward_scale == 1.0
    assert get_task("minari/AntMaze_UMaze-v4").family == "antmaze"
    assert get_task("minari/AdroitHandPen-v1").family == "adroit"
    assert find_task("nosuch/task") is None and find_task(None) is None
