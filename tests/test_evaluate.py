"""Evaluation of several agents at once (the seeds of a stacked run) and its env pool."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from test_learnability import POINT_TASK, register_point_task

from pbrl.envs import TaskSpec, register
from pbrl.envs.pool import EnvPool
from pbrl.errors import PbrlError
from pbrl.run.evaluate import evaluate, evaluate_many


class Linear:
    """A deterministic policy a = tanh(W obs + b) that records its batch sizes."""

    def __init__(self, seed: int, obs_dim: int = 2, act_dim: int = 2) -> None:
        rng = np.random.default_rng(seed)
        self.w = rng.normal(size=(obs_dim, act_dim)).astype(np.float32)
        self.b = rng.normal(size=act_dim).astype(np.float32)
        self.batches: list[int] = []

    def act(self, obs: np.ndarray) -> np.ndarray:
        self.batches.append(len(obs))
        return np.tanh(obs @ self.w + self.b)


class WithHistory(Linear):
    """A history-conditioned policy (OPPO's protocol): ``begin_episodes`` and ``env_ids``."""

    def begin_episodes(self, n: int) -> None:
        self.steps = np.zeros(n)

    def act(self, obs: np.ndarray, env_ids: list[int] | None = None) -> np.ndarray:
        assert env_ids is not None and len(env_ids) == len(obs)
        self.steps[env_ids] += 1
        return super().act(obs) * (1.0 / self.steps[env_ids])[:, None]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", [Linear, WithHistory])
def test_evaluate_many_equals_each_agent_alone(workers, kind):
    register_point_task()
    seeds = [3, 11, 5]
    alone = [evaluate(kind(s), POINT_TASK, episodes=5, seed=s, parallel=2) for s in seeds]
    agents = [kind(s) for s in seeds]
    with EnvPool(workers) as pool:
        together = evaluate_many(agents, POINT_TASK, 5, seeds, parallel=2, pool=pool)
        again = evaluate_many([kind(s) for s in seeds], POINT_TASK, 5, seeds, parallel=2, pool=pool)
    assert together == alone and again == alone  # the same floats, not close ones
    assert len({tuple(r["returns"]) for r in alone}) == 3  # the seeds differ
    for a in agents:  # each agent acts on its own wave's batch: waves of 2, 2 and 1 episodes
        assert a.batches == [2] * 40 + [2] * 40 + [1] * 40


class _EndsEarly(gym.Env):
    """Terminates after ``1 + seed % 4`` steps; reports success at its second step."""

    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def __init__(self, seed: int) -> None:
        self.length = 1 + seed % 4

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        if float(action[0]) > 0.5:
            raise RuntimeError("the action was too large")
        return (
            np.full(1, self.t, np.float32),
            1.0,
            self.t >= self.length,
            False,
            {"success": self.t == 2},
        )


def _register_ends_early() -> None:
    register(
        TaskSpec(
            id="test/ends-early",
            domain="test",
            horizon=10,
            make=lambda seed=0, **kw: _EndsEarly(seed),
            score=lambda returns, successes: 100.0 * float(np.mean(successes)),
        )
    )


class Const:
    def __init__(self, value: float) -> None:
        self.value = value

    def act(self, obs):
        return np.full((len(obs), 1), self.value, np.float32)


@pytest.mark.parametrize("workers", [0, 3])
def test_episodes_of_different_lengths_and_success(workers):
    _register_ends_early()
    with EnvPool(workers) as pool:
        res = evaluate_many([Const(0.0), Const(0.1)], "test/ends-early", 4, [0, 1], pool=pool)
    # seed s, episode i: env seed s + 10_000 + i, length 1 + (that seed) % 4
    assert res[0]["lengths"] == [1, 2, 3, 4] and res[1]["lengths"] == [2, 3, 4, 1]
    assert res[0]["returns"] == [1.0, 2.0, 3.0, 4.0]
    assert res[0]["successes"] == [False, True, True, True] and res[0]["score"] == 75.0
    assert res[1]["success_rate"] == 0.75


@pytest.mark.parametrize("workers", [0, 2])
def test_an_env_error_is_raised_and_the_pool_stays_usable(workers):
    _register_ends_early()
    with EnvPool(workers) as pool:
        with pytest.raises((PbrlError, RuntimeError), match="the action was too large"):
            evaluate_many([Const(0.0), Const(0.9)], "test/ends-early", 2, [0, 1], pool=pool)
        ok = evaluate_many([Const(0.0)], "test/ends-early", 2, [0], pool=pool)
    assert ok[0]["lengths"] == [1, 2]


def test_pool_rejects_a_bad_worker_count():
    for bad in (-1, 1.5, True):
        with pytest.raises(PbrlError, match="--eval-workers"):
            EnvPool(bad)  # type: ignore[arg-type]


def test_metaworld_in_workers_equals_in_process():
    pytest.importorskip("metaworld")
    from pbrl.envs import get_task

    task_id = "metaworld/reach-v3"
    get_task(task_id)
    agents = [Linear(s, obs_dim=39, act_dim=4) for s in (0, 1)]
    alone = [evaluate(a, task_id, episodes=2, seed=s, horizon=30) for s, a in enumerate(agents)]
    with EnvPool(2) as pool:
        together = evaluate_many(
            [Linear(s, obs_dim=39, act_dim=4) for s in (0, 1)], task_id, 2, [0, 1], 30, pool=pool
        )
    assert together == alone


def test_default_eval_workers(monkeypatch):
    from pbrl.run import runner

    assert runner.default_eval_workers("cpu", 1, cpus=16) == 0  # runs take a CPU's cores
    monkeypatch.setattr(runner, "resolve_device", lambda d: "cuda:0")  # as on a GPU machine
    assert runner.default_eval_workers("cuda", 2, cpus=16) == 7  # 8 cores per run, one its own
    assert runner.default_eval_workers("cuda", 1, cpus=2) == 0  # one spare core: none
