"""Learnability on a CPU-cheap task, plus the small task and dataset builders other tests reuse.

The task ``test/point`` is a 2-D point that moves by 0.1 * action inside [-1, 1]^2; the
reward is the negative distance to a fixed goal. Its dataset mixes goal-seeking, drifting
and random behaviour, so behaviour cloning of the whole dataset (what zero-reward IQL
reduces to) is clearly worse than following the reward. Reuse these builders by import
(``from test_learnability import point_dataset, point_prefs``); don't copy them.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from pbrl.datasets.base import OfflineDataset
from pbrl.envs.base import TaskSpec, get_task, register

POINT_TASK = "test/point"
POINT_GOAL = np.array([0.6, 0.6], dtype=np.float32)
POINT_HORIZON = 40


class PointEnv(gym.Env):
    """x' = clip(x + 0.1 a, -1, 1); r = -||x' - goal||; truncated after the horizon."""

    metadata = {"render_modes": []}

    def __init__(self, horizon: int = POINT_HORIZON) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.horizon = horizon
        self._x = np.zeros(2, np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._x = self.np_random.uniform(-1.0, 1.0, 2).astype(np.float32)
        self._t = 0
        return self._x.copy(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        self._x = np.clip(self._x + 0.1 * a, -1.0, 1.0).astype(np.float32)
        self._t += 1
        r = -float(np.linalg.norm(self._x - POINT_GOAL))
        return self._x.copy(), r, False, self._t >= self.horizon, {}


def _make_point(seed: int = 0, render_mode: str | None = None, **kw) -> PointEnv:
    env = PointEnv()
    env.reset(seed=seed)
    return env


def register_point_task() -> TaskSpec:
    """Register ``test/point`` (idempotent); the score is the mean episode return."""
    return register(
        TaskSpec(
            id=POINT_TASK,
            domain="test",
            horizon=POINT_HORIZON,
            make=_make_point,
            score=lambda returns, successes: float(np.mean(returns)),
            description="2-D point reaching a fixed goal (tests only)",
        )
    )


def point_dataset(
    episodes: int = 60, horizon: int = POINT_HORIZON, seed: int = 0, ds_id: str = "test/point-mix"
) -> OfflineDataset:
    """Episodes of a behaviour mixture: 25% goal-seeking (noise 0.3), 40% drifting, 35% random."""
    register_point_task()
    rng = np.random.default_rng(seed)
    obs, act, rew, nxt, info = [], [], [], [], []
    for e in range(episodes):
        kind = rng.choice(["good", "drift", "random"], p=[0.25, 0.40, 0.35])
        x = rng.uniform(-1.0, 1.0, 2).astype(np.float32)
        drift = rng.uniform(-1.0, 1.0, 2)
        for _ in range(horizon):
            if kind == "good":
                d = POINT_GOAL - x
                a = d / (np.linalg.norm(d) + 1e-6) + 0.3 * rng.standard_normal(2)
            elif kind == "drift":
                a = drift + 0.2 * rng.standard_normal(2)
            else:
                a = rng.uniform(-1.0, 1.0, 2)
            a = np.clip(a, -1.0, 1.0).astype(np.float32)
            x2 = np.clip(x + 0.1 * a, -1.0, 1.0).astype(np.float32)
            obs.append(x)
            act.append(a)
            nxt.append(x2)
            rew.append(-float(np.linalg.norm(x2 - POINT_GOAL)))
            x = x2
        info.append({"source": str(kind), "seed": int(seed * 100_000 + e)})
    n = episodes * horizon
    timeouts = np.zeros(n, bool)
    timeouts[horizon - 1 :: horizon] = True
    return OfflineDataset(
        id=ds_id,
        task_id=POINT_TASK,
        observations=np.asarray(obs, np.float32),
        actions=np.asarray(act, np.float32),
        rewards=np.asarray(rew, np.float32),
        next_observations=np.asarray(nxt, np.float32),
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
        starts=np.arange(episodes, dtype=np.int64) * horizon,
        lengths=np.full(episodes, horizon, dtype=np.int64),
        episode_info=tuple(info),
    )


def point_prefs(ds: OfflineDataset, n_queries: int, segment: int, seed: int = 0):
    """``n_queries`` uniform pairs labelled by the ``oracle`` teacher (argmax of return)."""
    from pbrl.prefs import label_dataset

    return label_dataset(ds, "oracle", n_queries, segment, seed)


def test_point_task_registered_and_runs() -> None:
    register_point_task()
    env = get_task(POINT_TASK).make(seed=3)
    obs, _ = env.reset(seed=3)
    obs2, r, term, trunc, _ = env.step(np.ones(2, np.float32))
    assert obs2.shape == (2,) and r <= 0 and not term and not trunc
    ds = point_dataset(episodes=4, horizon=10)
    assert ds.num_steps == 40 and ds.num_episodes == 4
    np.testing.assert_allclose(ds.observations[1:10], ds.next_observations[0:9])


# ---- learnability (slow) ---------------------------------------------------------------------

H = (64, 64)


@pytest.fixture(scope="module")
def learn_data():
    ds = point_dataset(episodes=60, seed=0)
    prefs = point_prefs(ds, n_queries=400, segment=20, seed=0)
    train_prefs, held_out = prefs.split(0.75, np.random.default_rng(0))
    return ds, train_prefs, held_out


def _run(agent: str, overrides: dict, steps: int, ds, prefs, seed: int = 0):
    from pbrl.run.train import TrainSpec, train_agent

    spec = TrainSpec(
        agent=agent,
        dataset=ds.id,
        prefs=None,
        seed=seed,
        steps=steps,
        device="cpu",
        overrides=overrides,
        eval_every=steps,
        eval_episodes=20,
        log_interval=steps,
    )
    return train_agent(spec, dataset=ds, prefs=prefs)


def held_out_accuracy(agent, ds, prefs) -> float:
    """Fraction of non-tie held-out pairs whose summed learned reward picks the preferred one."""
    b = prefs.answered()
    right = []
    for f in b.feedback:
        if f.prefer_b == 0.5:
            continue
        ra, rb = ds.segment_rows(f.a), ds.segment_rows(f.b)
        sa = agent.reward(ds.observations[ra], ds.actions[ra]).sum()
        sb = agent.reward(ds.observations[rb], ds.actions[rb]).sum()
        right.append((sb > sa) == (f.prefer_b > 0.5))
    return float(np.mean(right))


@pytest.mark.slow
def test_mr_reward_reaches_85_percent_held_out(learn_data):
    ds, train_prefs, held_out = learn_data
    ov = {"hidden": H, "reward_hidden": H, "reward_epochs": 100, "max_reward_fraction": 0.9}
    _, agent = _run("mr", ov, 400, ds, train_prefs)
    acc = held_out_accuracy(agent, ds, held_out)
    assert acc > 0.85, f"MR held-out preference accuracy {acc:.3f}"


@pytest.mark.slow
def test_cpl_and_ipl_beat_the_zero_reward_control(learn_data):
    """Zero-reward IQL is BC of the whole mixture; learning from preferences must do better.

    IPL runs with beta = 10: its chi^2 term keeps implied rewards (and so advantages) small
    on this task's scale, and at the default beta = 3 the AWR weights stay close to 1.
    CPL runs at lr 1e-3: at 1e-4 its 1,500 steps are too few to move the policy.
    """
    ds, train_prefs, _ = learn_data
    control, _ = _run("iql", {"hidden": H, "reward": "zero"}, 1000, ds, None)
    truth, _ = _run("iql", {"hidden": H, "reward": "true"}, 1000, ds, None)
    cpl, _ = _run("cpl", {"hidden": H, "batch_size": 32, "lr": 1e-3}, 1500, ds, train_prefs)
    ipl, _ = _run("ipl", {"hidden": H, "batch_size": 16, "beta": 10.0}, 1500, ds, train_prefs)
    c = control["final_score"]
    assert truth["final_score"] > c + 5, (truth["final_score"], c)
    assert cpl["final_score"] > c + 5, (cpl["final_score"], c)
    assert ipl["final_score"] > c + 5, (ipl["final_score"], c)
