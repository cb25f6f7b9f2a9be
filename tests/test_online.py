"""The online track (agents/pebble.py on stable-baselines3's SAC): its pure pieces, the query
budget, relabelling, the unsupervised phase, the selectors, the runner's online entries, and
(slow) that PEBBLE with the oracle teacher learns where random labels do not."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from test_learnability import POINT_TASK, register_point_task

import pbrl.agents.pebble as pebble
from pbrl.errors import PbrlError
from pbrl.learn.api import AgentSpec, FitContext, make_config
from pbrl.run.report import read_runs, report
from pbrl.run.runner import check_suite, plan, run_job
from pbrl.run.suite import load_suite
from pbrl.run.train import TrainSpec, train_agent
from pbrl.teachers import make_teacher


@pytest.fixture(autouse=True)
def _point_task():
    register_point_task()


class RecordingTeacher:
    """The oracle, recording when it was asked (the env step) and how many pairs."""

    def __init__(self, clock) -> None:
        self.inner = make_teacher("oracle")
        self.name = "recording"
        self.clock = clock
        self.calls: list[tuple[int, int]] = []

    def prepare(self, ds, segment_length):
        self.inner = self.inner.prepare(ds, segment_length)
        return self

    def label(self, pairs, rng):
        self.calls.append((self.clock(), len(pairs.rewards_a)))
        return self.inner.label(pairs, rng)

    def spec(self) -> str:
        return "recording"


def _agent(**overrides):
    cfg = make_config(pebble, None, {**pebble.TEST_OVERRIDES, **overrides})
    one = np.ones(2, np.float32)
    return pebble.Agent(cfg, AgentSpec(2, 2, -one, one, "cpu", task_id=POINT_TASK))


def _ctx(steps: int, teacher, budget: int, selector: str = "uniform", segment: int = 8):
    gen = torch.Generator()
    gen.manual_seed(0)
    return FitContext(
        dataset=None,
        prefs=None,
        steps=steps,
        seed=0,
        device="cpu",
        rng=np.random.default_rng(0),
        generator=gen,
        log_interval=20,
        task_id=POINT_TASK,
        teacher=teacher,
        budget=budget,
        segment=segment,
        selector=selector,
    )


def _fit(agent, ctx) -> list[dict]:
    return list(agent.fit(ctx))


# ---- pure pieces -------------------------------------------------------------------------------
def test_knn_distance_is_the_kth_other_neighbour():
    pool = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    # from 0: others at 1, 3, 6, 10 -> k=1: 1, k=2: 3; from 6: others at 3 (3), 10 (4), 1 (5)
    d1 = pebble.knn_distance(pool[[0, 3]], pool, k=1)
    d2 = pebble.knn_distance(pool[[0, 3]], pool, k=2, chunk=2)
    assert d1.tolist() == [1.0, 3.0] and d2.tolist() == [3.0, 4.0]
    with pytest.raises(PbrlError, match="at least 6"):
        pebble.knn_distance(pool[:1], pool, k=5)


def test_running_std_matches_the_pooled_variance():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, n) for n in (5, 40, 1, 17)]
    rs = pebble.RunningStd()
    for b in batches:
        rs.update(b)
    allx = np.concatenate(batches)
    # the prior (variance 1, weight 1e-4) is negligible; batch variances are Bessel-corrected,
    # so the pooled value is close to, not equal to, the population variance
    assert rs.mean == pytest.approx(allx.mean(), rel=1e-4)
    assert rs.std == pytest.approx(allx.std(), rel=0.05)


def test_temporal_crop_keeps_windows_of_the_drawn_lengths():
    gen = torch.Generator()
    gen.manual_seed(1)
    rows, masks = pebble.temporal_crop(torch.ones(3, 20), 4, (5, 8), gen)
    assert rows.tolist() == [0, 1, 2] * 4 and masks.shape == (2, 12, 20)
    kept = masks.sum(-1)
    assert torch.equal(kept[0], kept[1])  # one length per copy, for both segments
    assert ((kept >= 12) & (kept <= 15)).all()
    for m in masks.reshape(-1, 20):  # one contiguous window
        idx = torch.nonzero(m).flatten()
        assert idx[-1] - idx[0] + 1 == len(idx)
    with pytest.raises(PbrlError, match="does not fit"):
        pebble.temporal_crop(torch.ones(3, 6), 2, (5, 8), gen)


def test_simsiam_loss_is_minus_the_cosine_and_stops_the_target_gradient():
    pred = torch.tensor([[1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    target = torch.tensor([[0.0, 2.0], [2.0, 2.0]], requires_grad=True)
    loss = pebble.simsiam_loss(pred, target)
    assert float(loss.detach()) == pytest.approx(-(0.0 + 1.0) / 2)
    loss.backward()
    assert target.grad is None and pred.grad is not None


def test_surf_pseudo_labels_keep_only_confident_pairs():
    sa = torch.tensor([0.0, 0.0, 3.0, 1.0])
    sb = torch.tensor([4.0, 0.1, 0.0, 1.0])
    label, keep = pebble.surf_pseudo_labels(sa, sb, 0.95)
    # sigmoid(4) = 0.982 (b, kept); sigmoid(0.1) = 0.525 (b, dropped); sigmoid(-3) = 0.047
    # (a, kept: 0.953); an exact tie goes to a and is dropped
    assert label.tolist() == [1.0, 1.0, 0.0, 0.0] and keep.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_pearson():
    assert pebble.pearson(np.arange(5), 2 * np.arange(5) + 1) == pytest.approx(1.0)
    assert math.isnan(pebble.pearson(np.ones(4), np.arange(4)))


# ---- the loop ----------------------------------------------------------------------------------
def test_budget_is_never_exceeded_and_the_last_session_shrinks():
    agent = _agent(queries=4)
    teacher = RecordingTeacher(lambda: int(agent.model.num_timesteps))
    rows = _fit(agent, _ctx(400, teacher, budget=10))
    asked = [n for _, n in teacher.calls]
    assert asked == [4, 4, 2] and agent.queries_used == 10
    assert max(r["queries"] for r in rows) == 10
    # sessions every session_every (40) steps from the first one at seed + unsup (40)
    assert [t for t, _ in teacher.calls] == [40, 80, 120]


def test_pretraining_asks_no_teacher_and_uses_the_intrinsic_reward(monkeypatch):
    agent = _agent(seed_steps=30, unsup_steps=50, session_every=1000)
    teacher = RecordingTeacher(lambda: int(agent.model.num_timesteps))
    modes: list[tuple[int, int]] = []
    real = pebble.knn_distance

    def spy(obs, pool, k, chunk=4096):
        modes.append((int(agent.model.num_timesteps), k))
        return real(obs, pool, k, chunk)

    monkeypatch.setattr(pebble, "knn_distance", spy)
    _fit(agent, _ctx(120, teacher, budget=4))
    assert teacher.calls and teacher.calls[0][0] == 80  # the first question at seed + unsup
    steps = [t for t, _ in modes]
    # SB3 trains after each env step past learning_starts: intrinsic rewards during (30, 80]
    assert steps and min(steps) > 30 and max(steps) <= 80 and {k for _, k in modes} == {5}


def test_relabel_changes_every_stored_reward_and_only_the_rewards():
    agent = _agent()
    teacher = RecordingTeacher(lambda: 0)
    _fit(agent, _ctx(100, teacher, budget=8))
    buf = agent.buffer
    n = buf.pos
    before = {
        k: np.array(getattr(buf, k)[:n], copy=True)
        for k in ("observations", "next_observations", "actions", "dones", "timeouts")
    }
    true_before = buf.true_rewards[:n].copy()
    old = buf.rewards[:n, 0].copy()
    buf.relabel(lambda o, a: o[:, 0] + 10.0 * a[:, 1] + 100.0, chunk=7)
    new = buf.rewards[:n, 0]
    expect = buf.observations[:n, 0, 0] + 10.0 * buf.actions[:n, 0, 1] + 100.0
    np.testing.assert_allclose(new, expect, rtol=1e-6)
    assert np.all(new != old)
    assert np.all(buf.rewards[n:] == 0)  # rows past pos untouched
    for k, v in before.items():
        np.testing.assert_array_equal(getattr(buf, k)[:n], v, err_msg=k)
    np.testing.assert_array_equal(buf.true_rewards[:n], true_before)


def test_session_relabels_with_the_reward_model_and_logs_its_measures():
    agent = _agent()
    rows = _fit(agent, _ctx(120, make_teacher("oracle"), budget=8))
    buf = agent.buffer
    n = buf.pos
    learned = agent.reward(buf.observations[:n, 0], buf.actions[:n, 0])
    # after the last session the buffer holds the model's reward (the transitions added since
    # were written with it at collection time)
    np.testing.assert_allclose(buf.rewards[:n, 0], learned, rtol=1e-5, atol=1e-6)
    last = rows[-1]
    for key in ("reward_corr", "reward_acc", "reward_acc_heldout", "train_return", "queries"):
        assert key in last and math.isfinite(last[key]), key


class LaterTeacher:
    """A teacher who answers later (the protocol of pbrl.learn.api.QueryQueue): the sign of
    each posted pair's true-return difference, readable only ``delay`` reads after it was
    posted. Records every post (env step, pairs, unanswered before it) and the episodes."""

    needs_state = False

    def __init__(self, clock, delay: int) -> None:
        self.clock, self.delay = clock, delay
        self.labels: dict[int, float] = {}
        self.reads: dict[int, int] = {}
        self.posts: list[tuple[int, int, int]] = []
        self.episodes: list[list] = []

    def start(self) -> None:
        self.started = True

    def unanswered(self) -> int:
        return sum(1 for i in self.labels if self.reads[i] < self.delay)

    def post(self, episodes, refs_a, refs_b):
        self.posts.append((self.clock(), len(refs_a), self.unanswered()))
        self.episodes.append(episodes)
        ids = []
        for a, b in zip(refs_a.tolist(), refs_b.tolist(), strict=True):
            ra = float(episodes[a[0]].rewards[a[1] : a[1] + a[2]].sum())
            rb = float(episodes[b[0]].rewards[b[1] : b[1] + b[2]].sum())
            qid = len(self.labels) + 100
            self.labels[qid] = 0.5 if ra == rb else float(rb > ra)
            self.reads[qid] = 0
            ids.append(qid)
        return ids

    def answers(self, ids):
        out = {}
        for i in ids:
            self.reads[i] += 1
            if self.reads[i] >= self.delay:
                out[i] = self.labels[i]
        return out

    def spec(self) -> str:
        return "later"


def test_a_teacher_who_answers_later_never_blocks_and_caps_what_is_unanswered():
    agent = _agent(queries=4, max_unanswered=4)
    queue = LaterTeacher(lambda: int(agent.model.num_timesteps), delay=2)
    ctx = dataclasses.replace(_ctx(400, None, budget=12), queue=queue)
    rows = _fit(agent, ctx)
    assert queue.started and rows[-1]["step"] == 400  # it kept acting while it waited
    # 4 pairs at the first session (step 40); the next session reads them once (not yet
    # answered): the cap of 4 unanswered holds further posts; at the one after they are in
    assert [(t, n) for t, n, _ in queue.posts] == [(40, 4), (120, 4), (200, 4)]
    assert all(waiting + n <= 4 for _, n, waiting in queue.posts)
    assert agent.queries_used == 12 and not agent.pending  # all answered by the end
    assert agent.labels.size == 12 and agent.reward_trainings == 3
    # every posted pair indexes the episodes posted with it
    for episodes in queue.episodes:
        assert episodes and all(len(e.rewards) == len(e.observations) - 1 for e in episodes)
    last = rows[-1]
    assert last["queries"] == 12 and last["queries_unanswered"] == 0
    assert math.isfinite(last["reward_corr"]) and math.isfinite(last["reward_acc_heldout"])
    # the labels the model trained on are the teacher's, in the order they arrived
    assert sorted(agent.labels.prefer_b.tolist()) == sorted(queue.labels.values())


def test_a_teacher_who_answers_later_gets_rendered_states(tmp_path):
    """A queue that renders (needs_state) gets episodes with T + 1 physics states aligned
    with the observations: Hopper's observation is qpos[1:] and qvel clipped to 10."""
    one = np.ones(3, np.float32)
    cfg = make_config(pebble, None, {**pebble.TEST_OVERRIDES, "queries": 2})
    agent = pebble.Agent(cfg, AgentSpec(11, 3, -one, one, "cpu", task_id="mujoco/hopper"))
    queue = LaterTeacher(lambda: int(agent.model.num_timesteps), delay=1)
    queue.needs_state = True
    ctx = dataclasses.replace(_ctx(120, None, budget=2, segment=4), task_id="mujoco/hopper")
    _fit(agent, dataclasses.replace(ctx, queue=queue))
    episodes = queue.episodes[0]
    assert episodes
    for e in episodes:
        t1 = len(e.observations)
        assert e.qpos.shape == (t1, 6) and e.qvel.shape == (t1, 6)
        expect = np.concatenate([e.qpos[:, 1:], np.clip(e.qvel, -10, 10)], axis=1)
        np.testing.assert_allclose(e.observations, expect, rtol=1e-5, atol=1e-5)


def test_sessions_after_the_first_use_the_runs_selector(monkeypatch):
    seen: list[tuple[str, bool]] = []
    real = pebble.select_queries

    def spy(view, n, length, rng, *, selector, ensemble, pool_factor):
        seen.append((selector, ensemble is not None))
        if ensemble is not None:
            ret = ensemble.predict_segments(view.observations[None, :3], view.actions[None, :3])
            assert ret.shape == (agent.cfg.ensemble, 1)
        return real(
            view, n, length, rng, selector=selector, ensemble=ensemble, pool_factor=pool_factor
        )

    monkeypatch.setattr(pebble, "select_queries", spy)
    agent = _agent()
    _fit(agent, _ctx(160, make_teacher("oracle"), budget=12, selector="disagreement"))
    assert seen == [("uniform", False), ("disagreement", True), ("disagreement", True)]


def test_qpa_draws_from_recent_episodes_and_replays_them(monkeypatch):
    agent = _agent(**{**pebble.PRESETS["qpa"], "aug_ratio": 3, "crop_min": 1, "crop_max": 3})
    views: list[int] = []
    real = pebble.select_queries

    def spy(view, *a, **kw):
        views.append(view.num_episodes)
        return real(view, *a, **kw)

    monkeypatch.setattr(pebble, "select_queries", spy)
    _fit(agent, _ctx(400, make_teacher("oracle"), budget=12))
    assert views and max(views) <= 10  # QPA's 10 most recent episodes
    assert agent.buffer.recent_steps == 10 * 40  # 10 episodes x the task's horizon
    assert agent.buffer.recent_ratio == 0.0  # plain replay once the budget is spent


def test_rune_adds_the_decayed_ensemble_std_to_sampled_rewards():
    agent = _agent(rune_beta=0.5, rune_decay=0.01)
    _fit(agent, _ctx(120, make_teacher("oracle"), budget=8))
    buf = agent.buffer
    n = buf.pos
    std = agent.reward_std(buf.observations[:n, 0], buf.actions[:n, 0])
    np.testing.assert_allclose(buf.bonus[:n], std, rtol=1e-5, atol=1e-6)
    assert std.max() > 0  # a 3-member ensemble disagrees somewhere
    state = buf.rng.bit_generator.state
    batch = buf.sample(32)
    buf.rng.bit_generator.state = state
    inds = buf.rng.integers(0, n, 32)
    expect = buf.rewards[inds, 0] + 0.5 * 0.99**n * buf.bonus[inds]
    np.testing.assert_allclose(batch.rewards.numpy().ravel(), expect, rtol=1e-5, atol=1e-7)
    # without the bonus, the batch is the stored reward
    buf.bonus_init = 0.0
    buf.rng.bit_generator.state = state
    np.testing.assert_allclose(
        buf.sample(32).rewards.numpy().ravel(), buf.rewards[inds, 0], rtol=1e-6
    )


def test_surf_labels_the_central_window_and_keeps_unlabelled_pairs(monkeypatch):
    agent = _agent(surf_unlabeled=3, surf_window=2, surf_crop=2)
    lengths: list[int] = []
    real = pebble.SegmentPairs.from_dataset

    def spy(ds, refs_a, refs_b, **kw):
        lengths.append(int(refs_a[0, 2]))
        return real(ds, refs_a, refs_b, **kw)

    monkeypatch.setattr(pebble.SegmentPairs, "from_dataset", spy)
    rows = _fit(agent, _ctx(120, make_teacher("oracle"), budget=8, segment=8))
    assert lengths and set(lengths) == {8}  # the teacher sees the segment itself
    assert agent.labels.obs_a.shape[1] == 8 + 2 * 2  # stored with 2 steps on each side
    assert agent.unlabeled.size == 3 * 8  # 3 x the queries, over the two sessions
    last = rows[-1]
    assert 0.0 <= last["surf_pseudo_frac"] <= 1.0 and math.isfinite(last["surf_loss_u"])


def test_sac_reference_asks_nobody_and_stores_the_true_reward():
    agent = _agent(method="sac")
    assert not agent.asks_teacher
    _fit(agent, _ctx(60, None, budget=0))
    buf = agent.buffer
    np.testing.assert_array_equal(buf.rewards[: buf.pos, 0], buf.true_rewards[: buf.pos])
    assert agent.queries_used == 0


@pytest.mark.parametrize("model", ["mr", "regret", "hprior", "reed"])
def test_reward_models_serve_online(model, tmp_path):
    """``mr``, ``regret`` and ``hprior`` through their train_reward (hprior's world model
    through train_world_model); ``reed`` is a method with its own reward model."""
    extra = {"method": "reed"} if model == "reed" else {"reward_model": model}
    spec = TrainSpec(
        "pebble", "", None, 0, 120, "cpu", None, {**pebble.TEST_OVERRIDES, **extra},
        60, 1, 20, out=str(tmp_path / "run"), task=POINT_TASK, teacher="mistake",
        budget=8, segment=8, selector="entropy",
    )  # fmt: skip
    summary, agent = train_agent(spec)
    assert summary["queries_used"] == 8 and math.isfinite(summary["final_score"])
    if model == "reed":  # the consistency epoch ran before the reward updates
        assert math.isfinite(summary["last_metrics"]["sfc_loss"])
    if model == "hprior":  # its world model trained on the replay buffer before each session
        assert math.isfinite(summary["last_metrics"]["wm_loss"])
    fresh = _agent(**extra)
    fresh.load_state_dict(agent.state_dict())
    obs = np.random.default_rng(0).uniform(-1, 1, (5, 2)).astype(np.float32)
    np.testing.assert_allclose(fresh.act(obs), agent.act(obs), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fresh.reward(obs, obs), agent.reward(obs, obs), rtol=1e-5, atol=1e-6)


def test_config_errors_name_the_field():
    with pytest.raises(PbrlError, match="SURF trains B-Pref's ensemble"):
        _agent(surf_unlabeled=2, reward_model="regret")
    with pytest.raises(PbrlError, match="set aug_ratio 0"):
        _agent(surf_unlabeled=2, aug_ratio=3)
    with pytest.raises(PbrlError, match="method 'reed' trains its own"):
        _agent(method="reed", reward_model="regret")
    with pytest.raises(PbrlError, match="--agent.her_ratio"):
        _agent(her_ratio=1.5)
    with pytest.raises(PbrlError, match="--agent.queries"):
        _agent(queries=0)
    agent = _agent(crop_max=9, aug_ratio=2)
    with pytest.raises(PbrlError, match="crop_max 9"):
        _fit(agent, _ctx(400, make_teacher("oracle"), budget=8, segment=8))
    assert agent.model is None  # refused before anything was built


# ---- the runner --------------------------------------------------------------------------------
SUITE = f"""
name = "online-test"
seeds = [0]
steps = 120
eval_every = 60
eval_episodes = 1
segment = 8
budgets = [8, 12]
teachers = ["oracle"]
selector = "disagreement"
[[datasets]]
task = "{POINT_TASK}"
kind = "online"
[[agents]]
name = "pebble"
overrides = {{ sac_hidden = "16,16", sac_batch = 16, reward_hidden = "16,16", reward_batch = 8, reward_epochs = 2, seed_steps = 20, unsup_steps = 20, session_every = 40, queries = 4, reset_update = 2 }}
[[agents]]
name = "pebble"
label = "sac-true"
preset = "sac"
overrides = {{ sac_hidden = "16,16", sac_batch = 16, seed_steps = 20 }}
"""


def test_runner_plans_and_trains_online_entries(tmp_path):
    path = tmp_path / "online.toml"
    path.write_text(SUITE)
    suite = load_suite(str(path))
    jobs = plan(suite)
    assert check_suite(suite, jobs) == []  # nothing to build
    by_label: dict[str, list] = {}
    for j in jobs:
        by_label.setdefault(j.label, []).append(j)
    # two budgets for pebble; one SAC run serves both rows (it asks nobody)
    assert sorted(j.budget for j in by_label["pebble"]) == [8, 12]
    assert [j.budget for j in by_label["sac-true"]] == [None]
    assert all(j.online and j.task == POINT_TASK and j.prefs_key() is None for j in jobs)
    job = next(j for j in jobs if j.budget == 8)
    summary = run_job(job, tmp_path / "out", "cpu")
    assert summary["queries_used"] == 8 and summary["task"] == POINT_TASK
    assert (tmp_path / "out" / job.run_id / "job.json").exists()
    run_job(by_label["sac-true"][0], tmp_path / "out", "cpu")

    # the report: one table for the budget run, SAC as a reference row, the queries figure
    text = report(tmp_path / "out", plots=True)
    assert "queries=8" in text and "sac-true" in text and "pebble" in text
    plots = tmp_path / "out" / "plots"
    assert (plots / "online_score_vs_queries.png").stat().st_size > 0
    runs = read_runs(tmp_path / "out")
    pb = next(r for r in runs if r.label == "pebble")
    assert pb.online and pb.queries_at(120) == 8 and pb.queries_at(0) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_online_agent_trains_on_cuda(tmp_path):
    """SB3's SAC, the reward model and the buffer's batches on the GPU; the checkpoint loads on
    a CPU agent that acts the same (run ``pytest -k cuda`` where there is a GPU)."""
    spec = TrainSpec(
        "pebble", "", None, 0, 120, "cuda", None, dict(pebble.TEST_OVERRIDES),
        60, 1, 20, out=str(tmp_path / "run"), task=POINT_TASK, teacher="oracle",
        budget=8, segment=8, selector="disagreement",
    )  # fmt: skip
    summary, agent = train_agent(spec)
    assert summary["queries_used"] == 8 and summary["device"].startswith("cuda")
    assert all(p.device.type == "cuda" for p in agent.model.policy.parameters())
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    cpu = _agent()
    cpu.load_state_dict(ckpt["agent"])
    obs = np.random.default_rng(0).uniform(-1, 1, (5, 2)).astype(np.float32)
    np.testing.assert_allclose(cpu.act(obs), agent.act(obs), rtol=1e-4, atol=1e-4)


# ---- learnability ------------------------------------------------------------------------------
LEARN = {
    "sac_hidden": (64, 64),
    "sac_batch": 64,
    "reward_hidden": (32, 32),
    "reward_batch": 32,
    "reward_epochs": 20,
    "seed_steps": 200,
    "unsup_steps": 300,
    "session_every": 400,
    "queries": 20,
    "reset_update": 50,
    "sac_lr": 1e-3,
}


@pytest.mark.slow
def test_pebble_with_the_oracle_beats_random_labels():
    """On the point task (reward -||x - goal||), 3,000 env steps and 100 queries: PEBBLE with
    the oracle reaches the goal region; the same agent on coin-flip labels does not."""

    def run(teacher: str, seed: int) -> float:
        spec = TrainSpec(
            "pebble", "", None, seed, 3000, "cpu", None, dict(LEARN), 3000, 10, 500,
            task=POINT_TASK, teacher=teacher, budget=100, segment=10, selector="uniform",
        )  # fmt: skip
        summary, _ = train_agent(spec)
        return float(summary["final_return"])

    oracle = [run("oracle", s) for s in (0, 1)]
    rand = [run("random", s) for s in (0, 1)]
    assert min(oracle) > max(rand) + 5.0, (oracle, rand)


def test_learn_settings_are_valid_config():
    cfg = make_config(pebble, None, dict(LEARN))
    assert dataclasses.asdict(cfg)["queries"] == 20


def test_the_state_wrapper_reports_metaworld_states_and_task_vector():
    """The wrapper a rendering teacher's run acts through: each step's info carries the
    physics state before and after the step and the episode's task vector (MetaWorld
    renders from it)."""
    from pbrl.envs import get_task
    from pbrl.envs.base import physics_state
    from pbrl.envs.metaworld import get_rand_vec

    task = "metaworld/button-press-v3"
    env = pebble.physics_state_wrapper()(get_task(task).make(seed=0), task)
    env.reset(seed=0)
    before = physics_state(env)
    _, _, _, _, info = env.step(env.action_space.sample())
    qpos, qvel, next_qpos, next_qvel = info["pbrl_state"]
    np.testing.assert_array_equal(qpos, before[0])
    np.testing.assert_array_equal(qvel, before[1])
    after = physics_state(env)
    np.testing.assert_array_equal(next_qpos, after[0])
    np.testing.assert_array_equal(next_qvel, after[1])
    assert not np.array_equal(qpos, next_qpos)
    key = get_task(task).extra["rand_vec_key"]
    assert info["pbrl_episode"][key] == [float(x) for x in get_rand_vec(env)]
