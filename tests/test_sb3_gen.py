"""SAC dataset generator (datasets/sb3_gen.py) on tiny budgets.

One tiny SAC run (Hopper, 32x32 networks, 50-step episodes, 400 steps) is trained once per
module and shared; every dataset kind is built from it.
"""

from __future__ import annotations

import json
from dataclasses import replace

import minari
import numpy as np
import pytest

from pbrl.datasets import sb3_gen as g
from pbrl.datasets.minari_io import load_minari
from pbrl.errors import DataError, PbrlError, UnknownIdError

TASK = "mujoco/hopper"
TINY = g.SacConfig(net_arch=(32, 32), batch_size=32, horizon=50)
STEPS = 400


def _options(root, **kw) -> g.GenerateOptions:
    base = g.GenerateOptions(
        steps=STEPS,
        episodes=4,
        config=TINY,
        eval_every=100,
        eval_episodes=2,
        ref_episodes=3,
        root=str(root),
        device="cpu",
    )
    return replace(base, **kw)


@pytest.fixture(scope="module")
def sac_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("sac")
    g.SacRun(TASK, 0, TINY, root=root, device="cpu").train(STEPS, eval_every=100, eval_episodes=2)
    return root


# ---- pure parts ------------------------------------------------------------------------------
def _rec(step: int, ret: float) -> g.EvalRecord:
    return g.EvalRecord(step=step, mean_return=ret, std_return=0.0, returns=(ret,), ent_coef=0.1)


def test_select_checkpoints_expert_best_medium_third():
    evals = [
        _rec(100, 50.0),
        _rec(200, 310.0),
        _rec(300, 600.0),
        _rec(400, 900.0),
        _rec(500, 700.0),
    ]
    expert, medium = g.select_checkpoints(evals)
    assert expert.step == 400  # best return
    assert medium.step == 200  # |310 - 300| is the smallest distance to 900 / 3
    # Medium never comes after the expert, even when a later checkpoint is closer.
    evals = [_rec(100, 0.0), _rec(200, 900.0), _rec(300, 300.0)]
    expert, medium = g.select_checkpoints(evals)
    assert (expert.step, medium.step) == (200, 100)
    with pytest.raises(PbrlError, match="no evaluated checkpoint"):
        g.select_checkpoints([])


def test_episode_seeds_are_stable_and_distinct():
    assert g.episode_seed(0, 10, 3) == g.episode_seed(0, 10, 3)
    seeds = {
        g.episode_seed(s, stream, i) for s in (0, 1) for stream in (0, 1, 10) for i in range(5)
    }
    assert len(seeds) == 30


def test_run_episodes_do_not_depend_on_batching():
    low, high = np.full(3, -1.0), np.full(3, 1.0)
    policy = g._RandomSampler(low, high)
    outs = []
    for n_envs in (1, 3):
        with g.env_pool(lambda: g.make_env(TASK, seed=0, horizon=30), n_envs) as envs:
            eps, rets = g.run_episodes(envs, policy, lambda i: 1000 + i, n_episodes=5)
        outs.append((eps, rets))
    (a, ra), (b, rb) = outs
    np.testing.assert_array_equal(ra, rb)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.qpos, y.qpos)
        assert x.observations.shape[0] == x.length + 1 == x.qvel.shape[0]
        assert x.info["seed"] == y.info["seed"]
    # A step target keeps the shortest prefix of episodes (in index order) reaching it.
    with g.env_pool(lambda: g.make_env(TASK, seed=0, horizon=30), 4) as envs:
        eps, _ = g.run_episodes(envs, policy, lambda i: 1000 + i, target_steps=40)
    lengths = [e.length for e in eps]
    assert sum(lengths) >= 40 and sum(lengths[:-1]) < 40
    assert [e.info["episode_index"] for e in eps] == list(range(len(eps)))


# ---- the SAC run -------------------------------------------------------------------------------
def test_run_records_checkpoints_and_training_episodes(sac_root):
    run = g.SacRun(TASK, 0, TINY, root=sac_root, device="cpu")
    assert run.path.name.startswith("seed0-")  # a non-default config gets its own folder
    assert run.latest_step() == STEPS
    assert [e.step for e in run.evals()] == [100, 200, 300, 400]
    for e in run.evals():
        assert run.snapshot_path(e.step).is_file() and np.isfinite(e.mean_return)
    eps = run.training_episodes(STEPS)
    assert eps and all(e.info["source"] == "sac-train" for e in eps)
    assert all(e.info["end_step"] <= STEPS for e in eps)
    assert all(e.qpos.shape == (e.length + 1, 6) for e in eps)
    # Episodes are contiguous in step counts: each starts where the previous one ended.
    for prev, nxt in zip(eps, eps[1:], strict=False):
        assert nxt.info["start_step"] == prev.info["end_step"]
    record = json.loads((run.path / "run.json").read_text())
    assert record["seed"] == 0 and record["invocations"][0]["requested_steps"] == STEPS
    # A run already at its budget is not touched.
    assert [e.step for e in run.train(300, eval_every=100, eval_episodes=2)] == [100, 200, 300]
    assert len(json.loads((run.path / "run.json").read_text())["invocations"]) == 1


def test_resume_after_interrupted_run(tmp_path, monkeypatch):
    run = g.SacRun(TASK, 1, TINY, root=tmp_path, device="cpu")
    real = g.physics_state
    calls = {"n": 0}

    def dying_physics_state(env):
        calls["n"] += 1
        if calls["n"] > 130:  # after the step-100 checkpoint, before step 150
            raise KeyboardInterrupt
        return real(env)

    monkeypatch.setattr(g, "physics_state", dying_physics_state)
    with pytest.raises(KeyboardInterrupt):
        run.train(200, eval_every=50, eval_episodes=1)
    monkeypatch.setattr(g, "physics_state", real)
    assert run.latest_step() == 100
    before = [e.to_json() for e in run.evals()]
    assert [e["step"] for e in before] == [50, 100]

    run.train(200, eval_every=50, eval_episodes=1)
    record = json.loads((run.path / "run.json").read_text())
    assert record["invocations"][-1]["resumed_from_step"] == 100
    assert [e.to_json() for e in run.evals()][:2] == before  # history kept, not retrained
    assert [e.step for e in run.evals()] == [50, 100, 150, 200]
    ckpts = sorted(p.name for p in run.path.glob("ckpt_*"))
    assert ckpts == ["ckpt_000000200"]
    with np.load(run.path / "ckpt_000000200" / "buffer.npz") as z:
        assert z["rewards"].shape[0] == 200  # the replay buffer survived the resume
    eps = run.training_episodes(200)
    ends = [e.info["end_step"] for e in eps]
    assert ends == sorted(ends) and ends[-1] <= 200
    assert len({e.info["episode_index"] for e in eps}) == len(eps)
    # The episode in progress at the checkpoint ends (truncated) where the run was cut.
    cut = [e for e in eps if e.info.get("cut_by_resume")]
    assert all(e.truncations[-1] and e.info["end_step"] == 100 for e in cut)

    # Growing the budget continues the same run, with the warm-up of its first invocation.
    run.train(250, eval_every=50, eval_episodes=1)
    assert [e.step for e in run.evals()] == [50, 100, 150, 200, 250]
    record = json.loads((run.path / "run.json").read_text())
    assert record["learning_starts"] == 20
    assert record["invocations"][-1]["resumed_from_step"] == 200


def test_concurrent_training_is_refused(tmp_path):
    run = g.SacRun(TASK, 2, TINY, root=tmp_path, device="cpu")
    with run._lock(), pytest.raises(PbrlError, match="another process"):
        run.train(100, eval_every=50, eval_episodes=1)


# ---- datasets ----------------------------------------------------------------------------------
def test_every_kind_builds_and_loads(sac_root, minari_home):
    card_refs = set()
    for kind in g.KINDS:
        opts = _options(sac_root, episodes=None if kind == "medium-replay" else 4)
        dataset_id = g.build(TASK, kind, options=opts)
        assert dataset_id == f"pbrl/mujoco/hopper/{kind}-v0"
        d = minari.load_dataset(dataset_id)
        assert d.total_episodes > 0
        ep = d[0]
        assert ep.infos["qpos"].shape == (len(ep.actions) + 1, 6)
        assert ep.infos["qvel"].shape == (len(ep.actions) + 1, 6)
        assert (minari_home / dataset_id / g.CRITIC_FILE).is_file()

        ds = load_minari(dataset_id)
        card = ds.card
        assert card["kind"] == kind and card["task_id"] == TASK
        assert (
            card["reference"]["random"]["mean_return"] < card["reference"]["expert"]["mean_return"]
        )
        assert ds.ref_min_score == card["reference"]["ref_min_score"]
        card_refs.add((ds.ref_min_score, ds.ref_max_score))
        sources = [info["source"] for info in ds.episode_info]
        assert all(isinstance(info["seed"], int) for info in ds.episode_info)
        expected = {
            "random": {"random"},
            "medium": {"medium"},
            "expert": {"expert"},
            "medium-expert": {"medium", "expert"},
            "medium-replay": {"sac-train"},
        }[kind]
        assert set(sources) == expected
        if kind == "medium-expert":
            assert sources.count("medium") == sources.count("expert") == 2
        if kind == "medium-replay":
            medium_step = card["policy_quality"]["medium"]["step"]
            assert all(info["end_step"] <= medium_step for info in ds.episode_info)
        else:
            assert ds.num_episodes == 4
    assert len(card_refs) == 1  # every kind shares the run's reference scores


def test_same_seed_gives_identical_random_dataset(sac_root, tmp_path, monkeypatch):
    arrays = []
    for home in ("a", "b"):
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / home))
        dataset_id = g.build(TASK, "random", options=_options(sac_root))
        arrays.append(load_minari(dataset_id))
    a, b = arrays
    for field in ("observations", "actions", "rewards", "qpos", "qvel", "terminals"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.episode_info == b.episode_info
    # Another seed: other episode seeds, other actions (random rollouts need no training).
    other = g._rollouts(
        g.SacRun(TASK, 1, TINY, root=tmp_path, device="cpu"), "random", None, 4, None
    )
    assert [e.info["seed"] for e in other] != [info["seed"] for info in a.episode_info]
    assert not np.array_equal(other[0].actions, a.actions[: other[0].length])


def test_expert_critic_loads_and_gives_finite_values(sac_root, minari_home):
    dataset_id = g.build(TASK, "expert", options=_options(sac_root))
    ds = load_minari(dataset_id)
    vf = g.load_expert_value_fn(dataset_id, n_actions=16, seed=3)
    obs, act = ds.observations[:20], ds.actions[:20]
    v = vf(obs)
    q = vf.q(obs, act)
    assert v.shape == q.shape == (20,)
    assert np.isfinite(v).all() and np.isfinite(q).all()
    assert vf.gamma == pytest.approx(0.99) and vf.n_actions == 16
    # The same seed gives the same sampled actions, hence the same V.
    np.testing.assert_allclose(g.load_expert_value_fn(dataset_id, n_actions=16, seed=3)(obs), v)
    import torch

    payload = torch.load(minari_home / dataset_id / g.CRITIC_FILE, weights_only=True)
    assert payload["format"] == g.CRITIC_FORMAT and payload["step"] == ds.card["critic"]["step"]
    with pytest.raises(DataError, match="expects"):
        vf(obs[:, :3])
    with pytest.raises(DataError, match="already exists"):
        g.build(TASK, "expert", options=_options(sac_root))
    with pytest.raises(DataError, match="no expert critic"):
        g.load_expert_value_fn(str(minari_home / "nowhere"))


def test_value_is_mean_of_q_over_policy_actions(sac_root, minari_home):
    import torch

    dataset_id = g.build(TASK, "medium", options=_options(sac_root))
    vf = g.load_expert_value_fn(dataset_id, n_actions=8, seed=0)
    obs = load_minari(dataset_id).observations[:5]
    # Reproduce V by hand: the same generator draws, squashed, Q averaged over draws.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        o = torch.as_tensor(obs, dtype=torch.float32)
        mean, log_std, _ = vf.actor.get_action_dist_params(o)
        noise = torch.randn((8, *mean.shape), generator=gen)
        acts = np.tanh((mean[None] + log_std.exp()[None] * noise).numpy())
    expected = np.mean([vf.q(obs, acts[k]) for k in range(8)], axis=0)
    np.testing.assert_allclose(vf(obs), expected, rtol=1e-5, atol=1e-5)


def test_bad_requests(sac_root, minari_home):
    with pytest.raises(UnknownIdError, match="kind"):
        g.generate(TASK, "mediocre", options=_options(sac_root))
    with pytest.raises(PbrlError, match="medium-replay"):
        g.generate(TASK, "medium-replay", options=_options(sac_root, episodes=3))
    with pytest.raises(PbrlError, match="mujoco/\\* and dmc/\\*"):
        g.generate("metaworld/button-press-topdown-v3", "expert", options=_options(sac_root))
    with pytest.raises(UnknownIdError):
        g.generate("mujoco/nope", "expert", options=_options(sac_root))
    with pytest.raises(PbrlError, match="steps"):
        g.SacRun(TASK, 0, TINY, root=sac_root, device="cpu").train(0)
    assert not any(minari_home.iterdir())


def test_dmc_task_records_physics_state(tmp_path):
    cfg = replace(TINY, horizon=20)
    run = g.SacRun("dmc/walker-walk", 0, cfg, root=tmp_path, device="cpu")
    run.train(60, eval_every=30, eval_episodes=1)
    eps = run.training_episodes(60)
    assert len(eps) == 3 and all(e.length == 20 for e in eps)
    nq = eps[0].qpos.shape[1]
    assert nq == 9 and eps[0].qvel.shape == (21, 9)
    assert all(e.truncations[-1] and not e.terminations.any() for e in eps)


def test_torch_threads_is_restored():
    import torch

    before = torch.get_num_threads()
    with g.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with g.torch_threads(None):
        assert torch.get_num_threads() == before
    with pytest.raises(PbrlError, match="threads"), g.torch_threads(0):
        pass
