"""CPL's MetaWorld protocol data (datasets/metaworld_gen.py ``rollouts``, the SAC run behind it).

Tiny budgets: a 32x32 SAC on button-press-v3 with 20-step episodes. The slow tests train it
(one of them kills a training process with SIGKILL and resumes it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from pbrl.datasets import metaworld_gen as g
from pbrl.datasets import sb3_gen
from pbrl.datasets.critic import CRITIC_FILE, load_expert_value_fn
from pbrl.datasets.minari_io import load_minari
from pbrl.errors import PbrlError
from pbrl.teachers import make_teacher
from pbrl.teachers.pairs import SegmentPairs
from pbrl.teachers.regret import resolve_value_source

TASK = "metaworld/button-press-v3"
TINY = replace(
    g.cpl_sac_config(20), net_arch=(32, 32), batch_size=32, learning_starts=40, buffer_size=2000
)


def _rec(step: int, success: float, ret: float = 0.0, n: int = 4) -> sb3_gen.EvalRecord:
    k = round(success * n / 100)
    return sb3_gen.EvalRecord(
        step=step,
        mean_return=ret,
        std_return=0.0,
        returns=(ret,) * n,
        ent_coef=0.1,
        successes=tuple([True] * k + [False] * (n - k)),
    )


# ---- configuration and records ---------------------------------------------------------------
def test_cpl_sac_config_is_cpls_and_old_run_names_are_kept():
    cfg = g.cpl_sac_config()
    assert cfg.net_arch == (256, 256, 256) and cfg.batch_size == 512
    assert cfg.learning_starts == 25_000 and cfg.horizon == 250
    assert cfg.reward_scale == 0.1 and cfg.ent_coef_init == 0.1
    assert cfg.target_update_interval == 2 and cfg.tau == 0.005
    ident = cfg.identity()
    assert ident["reward_scale"] == 0.1 and ident["target_update_interval"] == 2
    # Fields added later are left out at their defaults: a MuJoCo run keeps its directory.
    assert set(sb3_gen.SacConfig().identity()) == {
        "net_arch",
        "learning_rate",
        "batch_size",
        "buffer_size",
        "gamma",
        "tau",
        "horizon",
    }


def test_eval_record_round_trips_success():
    rec = _rec(100, 50.0, ret=3.0)
    assert rec.success_rate == 50.0
    d = rec.to_json()
    assert d["success_rate"] == 50.0 and d["successes"] == [True, True, False, False]
    assert sb3_gen.EvalRecord.from_json(d) == rec
    old = sb3_gen.EvalRecord(step=1, mean_return=1.0, std_return=0.0, returns=(1.0,), ent_coef=1)
    assert "successes" not in old.to_json() and old.success_rate is None
    assert sb3_gen.EvalRecord.from_json(old.to_json()) == old


def test_run_directory_names_the_seeded_goal_env(tmp_path):
    run = g.sac_run(TASK, root=tmp_path, config=TINY)
    assert run.path.parent == tmp_path / TASK
    assert run.path.name.startswith(f"seed0-{g.SAC_ENV_LABEL}-")
    with pytest.raises(PbrlError, match="together"):
        sb3_gen.SacRun(TASK, 0, TINY, root=tmp_path, env_label="x")
    with pytest.raises(PbrlError, match="MetaWorld datasets"):
        sb3_gen.SacRun(TASK, 0, TINY, root=tmp_path)  # the task's own env is not SAC's


# ---- checkpoint choice -------------------------------------------------------------------------
def test_checkpoint_closest_to_half_the_best_success():
    evals = [_rec(10, 0), _rec(20, 25), _rec(30, 50), _rec(40, 100), _rec(50, 50)]
    chosen, best, reason = g.choose_rollout_checkpoint(evals)
    # Best: 100% at step 40; target 50%; candidates up to step 40: step 30 hits it exactly
    # (step 50 has 50% too, but comes after the best).
    assert best.step == 40 and chosen.step == 30
    assert "50%" in reason and "100%" in reason
    # Ties in distance go to the earlier checkpoint: target 37.5% -> 25% (step 20) and 50%
    # (step 30) are both 12.5 away.
    evals = [_rec(10, 0, n=8), _rec(20, 25, n=8), _rec(30, 50, n=8), _rec(40, 75, n=8)]
    chosen, best, _ = g.choose_rollout_checkpoint(evals)
    assert best.step == 40 and chosen.step == 20
    # A checkpoint that never succeeds is not chosen: with the best at 30% the target is 15%,
    # as far from 0% (steps 10, 20) as from 30% (step 30), and the young run's best is taken.
    evals = [_rec(10, 0, n=10), _rec(20, 0, n=10), _rec(30, 30, n=10)]
    chosen, best, reason = g.choose_rollout_checkpoint(evals)
    assert chosen.step == best.step == 30 and "trained 30 steps" in reason


def test_checkpoint_by_hand_and_refusals():
    evals = [_rec(10, 0, ret=1.0), _rec(20, 0, ret=2.0)]
    with pytest.raises(PbrlError, match="no SAC checkpoint succeeds"):
        g.choose_rollout_checkpoint(evals)
    chosen, _, reason = g.choose_rollout_checkpoint(evals, step=10)
    assert chosen.step == 10 and "by hand" in reason
    with pytest.raises(PbrlError, match="--checkpoint 15: no evaluated checkpoint"):
        g.choose_rollout_checkpoint(evals, step=15)
    with pytest.raises(PbrlError, match="no evaluated checkpoint yet"):
        g.choose_rollout_checkpoint([])


# ---- the env and one rollout -------------------------------------------------------------------
def test_seeded_goal_env_goal_is_a_function_of_the_seed():
    env = g.seeded_goal_env("button-press-v3", 5)
    try:
        o1, i1 = env.reset(seed=7)
        o2, i2 = env.reset(seed=8)
        o3, i3 = env.reset(seed=7)
        assert np.array_equal(o1, o3) and np.array_equal(i1["rand_vec"], i3["rand_vec"])
        assert not np.array_equal(i1["rand_vec"], i2["rand_vec"])
        space = env.u._random_reset_space
        assert np.all(i2["rand_vec"] >= space.low) and np.all(i2["rand_vec"] <= space.high)
        ends = [env.step(np.zeros(4))[3] for _ in range(5)]
        assert ends == [False, False, False, False, True]
    finally:
        env.close()


def test_rollout_actions_are_mean_plus_clipped_noise():
    env = g.seeded_goal_env("button-press-v3", 6)
    mean = np.array([0.9, -0.2, 0.0, 0.5])
    try:
        ep = g.rollout_episode(env, lambda obs: mean, 123, 0.3, {"source": "t"})
        again = g.rollout_episode(env, lambda obs: mean, 123, 0.3, {"source": "t"})
    finally:
        env.close()
    rng = np.random.default_rng(123)
    want = np.stack([np.clip(mean + 0.3 * rng.standard_normal(4), -1, 1) for _ in range(6)])
    np.testing.assert_allclose(ep.actions, want.astype(np.float32))
    assert ep.actions.max() <= 1.0 and ep.actions.min() >= -1.0
    assert ep.observations.shape == (7, 39) and ep.qpos.shape[0] == 7
    assert ep.successes.shape == (7,) and ep.truncations.tolist() == [False] * 5 + [True]
    assert len(ep.info["rand_vec"]) == 3 and ep.info["seed"] == 123
    np.testing.assert_array_equal(ep.observations, again.observations)


def test_rollout_seeds_are_stable_and_distinct():
    a = g.rollout_seeds(0, 50)
    assert a == g.rollout_seeds(0, 50) and len(set(a)) == 50
    assert a[:10] == g.rollout_seeds(0, 10) and a != g.rollout_seeds(1, 50)


def test_rollouts_kind_is_registered():
    assert "rollouts" in g.KINDS and "rollouts" not in g.MIXTURES
    with pytest.raises(PbrlError, match="scripted"):
        g.build(TASK, "medium", steps=10)


# ---- labels: CPL's rl_sum ---------------------------------------------------------------------
class _FirstCoordinate:
    """V(s) = s[0], in the units of reward x 0.1 (as CPL's SAC critic)."""

    reward_scale = 0.1
    gamma = 0.99

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(obs, dtype=np.float64)[:, 0]


def _pairs(r_b_last: float, v_b_last_state: float) -> SegmentPairs:
    obs_a = np.array([[[1.0], [2.0], [3.0], [5.0]]])
    obs_b = np.array([[[0.0], [0.0], [0.0], [v_b_last_state]]])
    return SegmentPairs(
        rewards_a=np.array([[10.0, 20.0, 30.0, 40.0]]),
        rewards_b=np.array([[0.0, 0.0, 0.0, r_b_last]]),
        obs_a=obs_a,
        obs_b=obs_b,
        next_obs_last_a=np.array([[9.0]]),
        next_obs_last_b=np.array([[0.0]]),
    )


def test_rl_sum_by_hand():
    cpl = make_teacher("regret_cpl", value_fn=_FirstCoordinate())
    assert cpl.bootstrap == "last" and cpl.undiscounted and cpl.ties == "half"
    # rl_sum(a) = 0.1 (10 + 20 + 30) + V(s_3) - V(s_0) = 6 + 5 - 1 = 10 (r_3 = 40 left out);
    # rl_sum(b) = 0.1 (0 + 0 + 0) + 4 - 0 = 4.
    s_a, s_b = cpl.scores(_pairs(200.0, 4.0))
    np.testing.assert_allclose([s_a[0], s_b[0]], [10.0, 4.0])
    prefer_b, answered = cpl.label(_pairs(200.0, 4.0), np.random.default_rng(0))
    assert prefer_b.tolist() == [0.0] and answered.tolist() == [True]
    # The full window with the state after the segment disagrees here:
    # a: 0.1 * 100 + 9 - 1 = 18; b: 0.1 * 200 + 0 - 0 = 20.
    full = make_teacher("regret_cpl(bootstrap=next)", value_fn=_FirstCoordinate())
    s_a, s_b = full.scores(_pairs(200.0, 4.0))
    np.testing.assert_allclose([s_a[0], s_b[0]], [18.0, 20.0])
    # An exact tie of rl_sum is labelled 0.5: b = 0 + 10 - 0 = 10 = a.
    prefer_b, _ = cpl.label(_pairs(123.0, 10.0), np.random.default_rng(0))
    assert prefer_b.tolist() == [0.5]
    with pytest.raises(PbrlError, match="bootstrap must be next or last"):
        make_teacher("regret_cpl(bootstrap=first)")


# ---- training, resume, build (slow) ------------------------------------------------------------
_TRAIN = """
import sys
from dataclasses import replace
from pbrl.datasets import metaworld_gen as g
cfg = replace(g.cpl_sac_config(20), net_arch=(32, 32), batch_size=32, learning_starts=40,
              buffer_size=2000)
g.train_sac("metaworld/button-press-v3", int(sys.argv[2]), root=sys.argv[1], eval_every=50,
            eval_episodes=2, config=cfg)
"""


@pytest.mark.slow
def test_sigkill_then_restart_continues_from_the_last_checkpoint(tmp_path):
    run = g.sac_run(TASK, root=tmp_path, config=TINY)
    proc = subprocess.Popen([sys.executable, "-c", _TRAIN, str(tmp_path), "100000"])
    try:
        deadline = time.monotonic() + 600
        while run.latest_step() < 100:
            assert proc.poll() is None, "the training process ended early"
            assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
            time.sleep(0.5)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = run.latest_step()
    before = [e.to_json() for e in run.evals()]
    assert killed_at >= 100 and [e["step"] for e in before] == list(range(50, killed_at + 1, 50))

    subprocess.run([sys.executable, "-c", _TRAIN, str(tmp_path), str(killed_at + 100)], check=True)
    record = json.loads((run.path / "run.json").read_text())
    assert record["invocations"][-1]["resumed_from_step"] == killed_at
    assert record["learning_starts"] == 40
    evals = run.evals()
    assert [e.to_json() for e in evals][: len(before)] == before  # not retrained
    assert [e.step for e in evals] == list(range(50, killed_at + 101, 50))
    assert all(e.successes is not None and len(e.successes) == 2 for e in evals)
    ckpts = sorted(p.name for p in run.path.glob("ckpt_*"))
    assert ckpts == [f"ckpt_{killed_at + 100:09d}"]


@pytest.mark.slow
def test_sac_learns_from_the_scaled_reward_with_cpls_temperature(tmp_path):
    run = g.train_sac(TASK, 60, root=tmp_path, eval_every=60, eval_episodes=1, config=TINY)
    # 20 updates after 40 random steps from an initial temperature of 0.1 (SB3's is 1.0)
    (rec,) = run.evals()
    assert 0.05 < rec.ent_coef < 0.2
    # The replay buffer holds reward x 0.1; the logged episodes keep the env's reward.
    with np.load(run.path / f"ckpt_{60:09d}" / "buffer.npz") as z:
        buffered = z["rewards"].reshape(-1)
    logged = np.concatenate([e.rewards for e in run.training_episodes(60)])
    assert logged.shape == (60,) and buffered.shape == (60,)
    np.testing.assert_allclose(buffered, 0.1 * logged, rtol=1e-5)
    assert np.all(logged > 0)


@pytest.mark.slow
def test_build_rollouts_writes_dataset_and_critic(tmp_path, minari_home):
    # 60-step episodes: long enough for the scripted expert's reference return to beat random.
    cfg = replace(TINY, horizon=60)
    g.train_sac(TASK, 100, root=tmp_path, eval_every=50, eval_episodes=2, config=cfg)
    dataset_id = g.build_rollouts(TASK, episodes=3, root=tmp_path, config=cfg, checkpoint=100)
    assert dataset_id == "pbrl/metaworld/button-press-v3/rollouts-v0"
    ds = load_minari(dataset_id)
    assert ds.lengths.tolist() == [60, 60, 60]
    assert ds.observations.shape[1] == 39 and ds.qpos is not None and ds.successes is not None
    assert (minari_home / dataset_id / CRITIC_FILE).is_file()
    infos = ds.episode_info
    assert all(i["source"] == "sac-rollout" and i["checkpoint_step"] == 100 for i in infos)
    assert all(len(i["rand_vec"]) == 3 for i in infos)
    vf = load_expert_value_fn(dataset_id, n_actions=8)
    assert vf.reward_scale == 0.1 and vf.step == 100
    v = vf(ds.observations[:5])
    assert v.shape == (5,) and np.all(np.isfinite(v))
    assert resolve_value_source(ds, "auto") == "sb3"  # the critic beside the data, not fitted
    card = ds.card
    assert card["kind"] == "rollouts" and card["episodes"] == 3 and card["horizon"] == 60
    assert card["policy"]["checkpoint"]["step"] == 100 and card["critic"]["reward_scale"] == 0.1
    with pytest.raises(PbrlError, match="already exists|exists"):
        g.build_rollouts(TASK, episodes=3, root=tmp_path, config=cfg, checkpoint=100)
