"""Teachers: each knob against its definition (issue 3, item 6), regret on a small MDP,
composition, presets, and the human-fitted teacher."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pbrl.datasets.base import OfflineDataset
from pbrl.errors import DataError, PbrlError, UnknownIdError
from pbrl.prefs.select import sample_segments
from pbrl.teachers import (
    BPrefTeacher,
    FittedValueFunction,
    LiReTeacher,
    RegretTeacher,
    SegmentPairs,
    chunk_return,
    discount_weights,
    fit_teacher,
    fit_teacher_details,
    list_teachers,
    make_teacher,
    save_teacher,
)


def binom_ok(k: int, n: int, p: float, z: float = 4.5) -> bool:
    """k successes of n within z standard deviations of Binomial(n, p)."""
    sd = math.sqrt(n * p * (1 - p))
    return abs(k - n * p) <= z * sd + 1


def make_ds(
    n_eps: int = 20,
    ep_len: int = 100,
    obs_dim: int = 3,
    seed: int = 0,
    reward_scale: float = 1.0,
    lengths: list[int] | None = None,
    task_id: str | None = "toy/test",
    infos: tuple[dict, ...] = (),
) -> OfflineDataset:
    rng = np.random.default_rng(seed)
    lengths_arr = np.array(lengths if lengths is not None else [ep_len] * n_eps, dtype=np.int64)
    n = int(lengths_arr.sum())
    starts = np.concatenate([[0], np.cumsum(lengths_arr)[:-1]]).astype(np.int64)
    # per-episode quality offsets make MuJoCo-like spreads of segment returns
    offs = np.repeat(rng.normal(0, 1, len(lengths_arr)), lengths_arr)
    rewards = (reward_scale * (offs + rng.normal(0, 1, n))).astype(np.float32)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    nxt = np.roll(obs, -1, axis=0)
    term = np.zeros(n, bool)
    tout = np.zeros(n, bool)
    tout[starts + lengths_arr - 1] = True
    return OfflineDataset(
        id="toy/test-v0",
        task_id=task_id,
        observations=obs,
        actions=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        rewards=rewards,
        next_observations=nxt,
        terminals=term,
        timeouts=tout,
        starts=starts,
        lengths=lengths_arr,
        episode_info=infos,
    )


def pairs_from_returns(ret_a: np.ndarray, ret_b: np.ndarray, L: int = 5) -> SegmentPairs:
    """Pairs whose rewards are spread evenly so the undiscounted sums are ret_*."""
    ra = np.repeat(np.asarray(ret_a, float)[:, None] / L, L, axis=1)
    rb = np.repeat(np.asarray(ret_b, float)[:, None] / L, L, axis=1)
    return SegmentPairs(ra, rb)


def random_pairs(n: int, L: int = 20, scale: float = 1.0, seed: int = 0) -> SegmentPairs:
    rng = np.random.default_rng(seed)
    return SegmentPairs(rng.normal(0, scale, (n, L)), rng.normal(0, scale, (n, L)))


# ---------------------------------------------------------------------------------------------
# SegmentPairs
# ---------------------------------------------------------------------------------------------
def test_segment_pairs_from_dataset_pulls_the_right_rows():
    ds = make_ds(n_eps=3, ep_len=10)
    ra = np.array([[0, 2, 4], [2, 6, 4]])
    rb = np.array([[1, 0, 4], [1, 5, 4]])
    p = SegmentPairs.from_dataset(ds, ra, rb)
    assert p.size == 2 and p.length == 4
    np.testing.assert_array_equal(p.rewards_a[1], ds.rewards[26:30].astype(np.float64))
    np.testing.assert_array_equal(p.obs_b[0], ds.observations[10:14])
    np.testing.assert_array_equal(p.next_obs_last_a[0], ds.next_observations[5])
    assert p.rewards_a.dtype == np.float64 and p.terminal_a.shape == (2, 4)
    lean = SegmentPairs.from_dataset(ds, ra, rb, with_obs=False)
    assert lean.obs_a is None


@pytest.mark.parametrize(
    "ra, rb, msg",
    [
        ([[0, 8, 4]], [[1, 0, 4]], "crosses the end of episode 0"),
        ([[5, 0, 4]], [[1, 0, 4]], "episode 5 out of range"),
        ([[0, 0, 4]], [[1, 0, 3]], "lengths differ"),
        ([[0, 0, 4], [0, 1, 4]], [[1, 0, 4]], "refs_a has 2 segments"),
        ([[0, -1, 4]], [[1, 0, 4]], "crosses the end"),
        ([0, 0, 4], [[1, 0, 4]], "must be (B, 3)"),
    ],
)
def test_segment_pairs_bad_refs(ra, rb, msg):
    ds = make_ds(n_eps=3, ep_len=10)
    with pytest.raises(DataError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        SegmentPairs.from_dataset(ds, np.array(ra), np.array(rb))


def test_segment_pairs_need_rewards():
    ds = make_ds(n_eps=2, ep_len=10).without_rewards()
    with pytest.raises(DataError, match="rewards were stripped"):
        SegmentPairs.from_dataset(ds, np.array([[0, 0, 3]]), np.array([[1, 0, 3]]))


# ---------------------------------------------------------------------------------------------
# B-Pref knobs
# ---------------------------------------------------------------------------------------------
def test_oracle_is_argmax_and_exact_ties_go_to_a():
    p = pairs_from_returns(np.array([1.0, 3.0, 2.0]), np.array([2.0, 1.0, 2.0]))
    prefer, answered = make_teacher("oracle").label(p, np.random.default_rng(0))
    np.testing.assert_array_equal(prefer, [1.0, 0.0, 0.0])
    assert answered.all()


def test_beta_inf_equals_oracle_and_large_beta_converges():
    p = random_pairs(5000)
    oracle, _ = make_teacher("oracle").label(p, np.random.default_rng(0))
    inf_t, _ = BPrefTeacher(beta=math.inf).label(p, np.random.default_rng(1))
    np.testing.assert_array_equal(inf_t, oracle)
    big, _ = BPrefTeacher(beta=1e6).label(p, np.random.default_rng(2))
    gap = np.abs(p.rewards_b.sum(1) - p.rewards_a.sum(1))
    np.testing.assert_array_equal(big[gap > 1e-3], oracle[gap > 1e-3])


def test_beta_zero_is_a_coin_flip():
    n = 20000
    p = random_pairs(n, scale=100.0)
    prefer, _ = BPrefTeacher(beta=0.0).label(p, np.random.default_rng(0))
    assert binom_ok(int(prefer.sum()), n, 0.5)
    oracle, _ = make_teacher("oracle").label(p, np.random.default_rng(0))
    assert binom_ok(int((prefer != oracle).sum()), n, 0.5)


def test_finite_beta_follows_bradley_terry():
    n = 20000
    # every pair has R_b - R_a = 2: P[b] = sigmoid(0.5 * 2)
    p = pairs_from_returns(np.zeros(n), np.full(n, 2.0))
    prefer, _ = BPrefTeacher(beta=0.5).label(p, np.random.default_rng(0))
    assert binom_ok(int(prefer.sum()), n, 1 / (1 + math.exp(-1.0)))


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_mistake_flips_about_eps(eps):
    n = 20000
    p = random_pairs(n)
    oracle, _ = make_teacher("oracle").label(p, np.random.default_rng(0))
    noisy, _ = make_teacher("mistake", eps_mistake=eps).label(p, np.random.default_rng(1))
    assert binom_ok(int((noisy != oracle).sum()), n, eps)


def test_gamma_weights_last_step_one_first_gamma_pow():
    w = discount_weights(0.9, 10)
    assert w[-1] == 1.0 and w[0] == pytest.approx(0.9**9)
    # a: reward 1 at the first step; b: reward 0.5 at the last step
    L = 10
    ra = np.zeros((3, L))
    rb = np.zeros((3, L))
    ra[:, 0] = 1.0
    rb[0, -1] = 0.5  # myopic: 0.9^9 = 0.387 < 0.5 -> b; oracle: 1 > 0.5 -> a
    rb[1, -1] = 0.9**9 * 1.001  # just above a's discounted sum -> b
    rb[2, -1] = 0.9**9 * 0.999  # just below -> a
    p = SegmentPairs(ra, rb)
    myo, _ = make_teacher("myopic").label(p, np.random.default_rng(0))
    np.testing.assert_array_equal(myo, [1.0, 1.0, 0.0])
    orc, _ = make_teacher("oracle").label(p, np.random.default_rng(0))
    np.testing.assert_array_equal(orc, [0.0, 0.0, 0.0])


def test_skip_absolute_threshold():
    p = pairs_from_returns(np.array([0.5, 2.0, 1.0, -3.0]), np.array([0.9, 0.0, 1.0, 1.5]))
    t = BPrefTeacher(eps_skip=1.0, thresholds="absolute")
    prefer, answered = t.label(p, np.random.default_rng(0))
    # answered iff max(R_a, R_b) > 1 (strict, as B-Pref)
    np.testing.assert_array_equal(answered, [False, True, False, True])
    assert np.isnan(prefer[~answered]).all()
    np.testing.assert_array_equal(prefer[answered], [0.0, 1.0])


def test_equal_absolute_threshold_and_unirlhf_inclusive():
    p = pairs_from_returns(np.array([0.0, 0.0, 0.0, 0.0]), np.array([0.4, 0.5, 10.0, 10.5]))
    prefer, _ = BPrefTeacher(eps_equal=0.5, thresholds="absolute").label(
        p, np.random.default_rng(0)
    )
    np.testing.assert_array_equal(prefer, [0.5, 1.0, 1.0, 1.0])  # |dR| < 0.5 strictly
    uni, _ = make_teacher("unirlhf").label(p, np.random.default_rng(0))
    np.testing.assert_array_equal(uni, [0.5, 0.5, 0.5, 1.0])  # |dR| <= 10


def test_relative_thresholds_from_the_dataset_and_the_quirk():
    ds = make_ds(n_eps=4, ep_len=50, lengths=[50, 50, 100, 100])
    L = 10
    C = float(ds.episode_returns().mean()) * L / 75.0
    assert chunk_return(ds, L) == pytest.approx(C)
    t = make_teacher("skip+equal").prepare(ds, L)
    skip, equal = t.resolved_thresholds()
    assert skip == pytest.approx(0.1 * C) and equal == pytest.approx(0.1 * abs(C))
    q = make_teacher("skip+equal", bpref_eps_squared_quirk=True).prepare(ds, L)
    skip_q, equal_q = q.resolved_thresholds()
    assert skip_q == pytest.approx(0.01 * C) and equal_q == pytest.approx(0.01 * abs(C))
    # behaviour matches the resolved thresholds
    p = random_pairs(2000, L=L, scale=2.0)
    prefer, answered = t.label(p, np.random.default_rng(0))
    ret_a, ret_b = p.rewards_a.sum(1), p.rewards_b.sum(1)
    np.testing.assert_array_equal(answered, np.maximum(ret_a, ret_b) > skip)
    tie = answered & (np.abs(ret_a - ret_b) < equal)
    assert (prefer[tie] == 0.5).all() and (prefer[answered & ~tie] != 0.5).all()


def test_relative_and_std_knobs_need_prepare():
    p = random_pairs(10)
    with pytest.raises(PbrlError, match="prepare"):
        make_teacher("equal").label(p, np.random.default_rng(0))
    with pytest.raises(PbrlError, match="prepare"):
        make_teacher("stoc").label(p, np.random.default_rng(0))


def test_order_ties_overwrite_mistakes():
    n = 1000
    rng = np.random.default_rng(0)
    gaps = rng.uniform(-5, 5, n)
    p = pairs_from_returns(np.zeros(n), gaps)
    t = BPrefTeacher(eps_mistake=1.0, eps_equal=1.0, thresholds="absolute")
    prefer, _ = t.label(p, np.random.default_rng(1))
    tie = np.abs(gaps) < 1.0
    assert (prefer[tie] == 0.5).all()
    np.testing.assert_array_equal(prefer[~tie], (gaps[~tie] < 0).astype(float))  # all flipped


def test_stoc_is_stochastic_on_mujoco_scale_returns():
    ds = make_ds(n_eps=30, ep_len=200, reward_scale=5.0)  # per-step ~5: segment gaps ~ tens
    L = 50
    stoc = make_teacher("stoc").prepare(ds, L)
    assert stoc.score_scale is not None and stoc.score_scale > 10
    rng = np.random.default_rng(0)
    refs = sample_segments(ds, 8000, L, rng)
    p = SegmentPairs.from_dataset(ds, refs[:4000], refs[4000:], with_obs=False)
    oracle, _ = make_teacher("oracle").label(p, rng)
    s, _ = stoc.label(p, np.random.default_rng(1))
    disagree = float((s != oracle).mean())
    assert 0.05 < disagree < 0.3, disagree
    # B-Pref's raw beta = 1 on the same data is nearly deterministic: the reason for scaling
    raw, _ = make_teacher("stoc", beta=1.0, beta_units="raw").label(p, np.random.default_rng(1))
    assert float((raw != oracle).mean()) < disagree / 2


# ---------------------------------------------------------------------------------------------
# LiRE
# ---------------------------------------------------------------------------------------------
def test_lire_ties_within_half_segment_length():
    L = 4  # tie when |dR| <= 2
    p = pairs_from_returns(np.zeros(4), np.array([1.9, 2.0, 2.1, -3.0]), L=L)
    prefer, answered = make_teacher("lire").label(p, np.random.default_rng(0))
    np.testing.assert_array_equal(prefer, [0.5, 0.5, 1.0, 0.0])
    assert answered.all()


def test_lire_noise_flip_or_tie():
    n = 40000
    L = 4
    gaps = np.where(np.arange(n) % 2 == 0, 10.0, 0.0)  # even rows strict b, odd rows ties
    p = pairs_from_returns(np.zeros(n), gaps, L=L)
    prefer, _ = LiReTeacher(noise=0.2).label(p, np.random.default_rng(0))
    strict, tie = prefer[0::2], prefer[1::2]
    m = n // 2
    assert binom_ok(int((strict == 0.0).sum()), m, 0.1)  # flipped: noise / 2
    assert binom_ok(int((strict == 0.5).sum()), m, 0.1)  # became a tie: noise / 2
    assert binom_ok(int((tie != 0.5).sum()), m, 0.2)  # tie -> strict: noise
    assert binom_ok(int((tie == 1.0).sum()), m, 0.1)


# ---------------------------------------------------------------------------------------------
# Regret
# ---------------------------------------------------------------------------------------------
def chain_mdp(n: int = 6, gamma: float = 0.9, coin: float = 0.3):
    """Deterministic chain: actions left/right; entering or staying at the right end pays 1;
    moving left pays a distracting coin. Returns (step, V*)."""

    def step(s: int, a: int) -> tuple[int, float]:
        if a == 1:
            s2 = min(s + 1, n - 1)
            return s2, 1.0 if s2 == n - 1 else 0.0
        return max(s - 1, 0), coin

    v = np.zeros(n)
    for _ in range(2000):
        v = np.array(
            [max(r + gamma * v[s2] for s2, r in (step(s, 0), step(s, 1))) for s in range(n)]
        )
    return step, v


def test_regret_teacher_picks_regret_answer_where_partial_return_disagrees():
    n, gamma = 6, 0.9
    step, v = chain_mdp(n, gamma)
    # episode 0: from state 0, move right twice (optimal, no reward yet)
    # episode 1: from state 4, move left twice (suboptimal, collects coins)
    eye = np.eye(n, dtype=np.float32)
    obs, nxt, rew, acts = [], [], [], []
    for s0, a in ((0, 1), (4, 0)):
        s = s0
        for _ in range(2):
            s2, r = step(s, a)
            obs.append(eye[s])
            nxt.append(eye[s2])
            rew.append(r)
            acts.append([float(a)])
            s = s2
    ds = OfflineDataset(
        id="chain-v0",
        task_id="toy/chain",
        observations=np.array(obs),
        actions=np.array(acts, dtype=np.float32),
        rewards=np.array(rew, dtype=np.float32),
        next_observations=np.array(nxt),
        terminals=np.zeros(4, bool),
        timeouts=np.array([False, True, False, True]),
        starts=np.array([0, 2]),
        lengths=np.array([2, 2]),
    )

    def vstar(o: np.ndarray) -> np.ndarray:
        return v[np.argmax(o, axis=1)]

    ra, rb = np.array([[0, 0, 2]]), np.array([[1, 0, 2]])
    pairs = SegmentPairs.from_dataset(ds, ra, rb)
    oracle, _ = make_teacher("oracle").label(pairs, np.random.default_rng(0))
    assert oracle[0] == 1.0  # partial return prefers the coins (0.6 > 0)
    teacher = make_teacher("regret", value_fn=vstar, discount=gamma).prepare(ds, 2)
    prefer, answered = teacher.label(pairs, np.random.default_rng(0))
    assert prefer[0] == 0.0 and answered[0]  # regret prefers the optimal segment a
    # hand-worked scores: a is optimal (sum of advantages 0); b = 0.3 + 0.9*0.3 + 0.81 V(2) - V(4)
    s_a, s_b = teacher.scores(pairs)
    assert s_a[0] == pytest.approx(0.0, abs=1e-9)
    assert s_b[0] == pytest.approx(0.3 + 0.9 * 0.3 + 0.81 * v[2] - v[4])
    und = make_teacher("regret", value_fn=vstar, undiscounted=True)
    u_a, u_b = und.scores(pairs)
    assert u_b[0] == pytest.approx(0.6 + v[2] - v[4])
    # a terminal last step zeroes V(s_L)
    term = SegmentPairs(**{**pairs.__dict__, "terminal_a": np.array([[False, True]])})
    t_a, _ = teacher.scores(term)
    assert t_a[0] == pytest.approx(0.0 + 0.81 * 0.0 - v[0])


def test_regret_rounding_and_the_official_tie_rule():
    # value 0 everywhere, undiscounted: S = the sum of rewards
    ra = np.array([[1.004, 2.0], [1.0, 0.0], [2.5, 0.0]])
    rb = np.array([[3.001, 0.0], [1.006, 0.0], [1.25, 1.25]])
    zeros = np.zeros((3, 2, 1))
    pairs = SegmentPairs(ra, rb, zeros, zeros, None, None, np.zeros((3, 1)), np.zeros((3, 1)))

    def labels(**knobs):
        t = make_teacher("regret", value_fn=lambda o: np.zeros(len(o)), undiscounted=True, **knobs)
        prefer, answered = t.label(pairs, np.random.default_rng(0))
        assert answered.all()
        return prefer.tolist()

    # raw scores: 3.004 > 3.001, 1.0 < 1.006, 2.5 == 2.5 (an exact tie goes to a by default)
    assert labels() == [0.0, 1.0, 0.0]
    assert labels(ties="half") == [0.0, 1.0, 0.5]  # CPL's FeedbackBuffer rule: exact tie 0.5
    # rounded to 2 decimals: 3.00 == 3.00 (tie), 1.00 < 1.01, 2.50 == 2.50 (tie)
    assert labels(decimals=2, ties="half") == [0.5, 1.0, 0.5]
    assert labels(decimals=2) == [0.0, 1.0, 0.0]
    t = make_teacher("regret", value_fn=lambda o: np.zeros(len(o)), undiscounted=True, decimals=2)
    s_a, s_b = t.scores(pairs)
    assert s_a.tolist() == [3.0, 1.0, 2.5] and s_b.tolist() == [3.0, 1.01, 2.5]
    # the CPL-protocol preset: undiscounted rl_sum, exact ties 0.5, no rounding (CPL's labels
    # compare float32 scores as they are; OA's gridworld labels round to 2 decimals)
    # (its rl_sum window, the first L-1 rewards and V(s_{L-1}), is tested by hand in
    # tests/test_cpl_protocol_data.py; bootstrap=next keeps the whole window here)
    cpl = make_teacher("regret_cpl(bootstrap=next)", value_fn=lambda o: np.zeros(len(o)))
    assert cpl.undiscounted and cpl.ties == "half" and cpl.decimals is None
    assert cpl.label(pairs, np.random.default_rng(0))[0].tolist() == [0.0, 1.0, 0.5]
    assert make_teacher("regret_cpl").bootstrap == "last"
    assert make_teacher("regret_cpl(decimals=2)").decimals == 2
    with pytest.raises(PbrlError, match="ties must be first or half"):
        make_teacher("regret", ties="third")
    with pytest.raises(PbrlError, match="needs beta=inf"):
        make_teacher("regret_cpl", beta=5.0)
    with pytest.raises(PbrlError, match="decimals must be >= 0"):
        make_teacher("regret", decimals=-1)


def test_regret_noise_and_errors():
    step, v = chain_mdp()
    with pytest.raises(PbrlError, match="no value function"):
        RegretTeacher().label(random_pairs(2), np.random.default_rng(0))
    t = make_teacher("regret", value_fn=lambda o: np.zeros(len(o)), beta=0.0)
    n = 4000
    p = SegmentPairs(
        np.zeros((n, 3)),
        np.ones((n, 3)),
        obs_a=np.zeros((n, 3, 2)),
        obs_b=np.zeros((n, 3, 2)),
        next_obs_last_a=np.zeros((n, 2)),
        next_obs_last_b=np.zeros((n, 2)),
    )
    prefer, _ = t.label(p, np.random.default_rng(0))
    assert binom_ok(int(prefer.sum()), n, 0.5)
    with pytest.raises(PbrlError, match="does not apply to regret"):
        make_teacher("regret+skip")


def test_fitted_value_function_and_metaworld_auto_source():
    # obs = (x, t/T); x drifts up; reward = x: G_t is a smooth function of obs
    T, n_eps = 100, 12
    rng = np.random.default_rng(0)
    obs, rew = [], []
    for _ in range(n_eps):
        x = rng.uniform(0, 1) + 0.01 * np.arange(T)
        obs.append(np.stack([x, np.arange(T) / T], axis=1))
        rew.append(x)
    obs_a = np.concatenate(obs).astype(np.float32)
    infos = tuple({"source": "expert" if i % 2 == 0 else "random"} for i in range(n_eps))
    ds = make_ds(lengths=[T] * n_eps, task_id="metaworld/button-press-topdown-v3", infos=infos)
    ds = OfflineDataset(
        **{
            **ds.__dict__,
            "observations": obs_a,
            "next_observations": np.roll(obs_a, -1, axis=0),
            "rewards": np.concatenate(rew).astype(np.float32),
        }
    )
    vf = FittedValueFunction.fit(ds, 0.9)
    assert vf.r2 > 0.95
    t = make_teacher("regret").prepare(ds, 10)
    assert isinstance(t.value_fn, FittedValueFunction)
    refs = sample_segments(ds, 20, 10, np.random.default_rng(0))
    prefer, answered = t.label(SegmentPairs.from_dataset(ds, refs[:10], refs[10:]), rng)
    assert answered.all() and set(np.unique(prefer)) <= {0.0, 1.0}
    assert "value_source=fitted" in t.spec()
    again = make_teacher(t.spec()).prepare(ds, 10)
    pairs = SegmentPairs.from_dataset(ds, refs[:10], refs[10:])
    np.testing.assert_array_equal(
        again.label(pairs, np.random.default_rng(5))[0], t.label(pairs, np.random.default_rng(5))[0]
    )
    no_expert = OfflineDataset(**{**ds.__dict__, "episode_info": ()})
    with pytest.raises(DataError, match="source 'expert'"):
        make_teacher("regret").prepare(no_expert, 10)


# ---------------------------------------------------------------------------------------------
# Presets, composition, specs, saved presets
# ---------------------------------------------------------------------------------------------
def test_presets_and_reference_table():
    assert {
        "oracle",
        "stoc",
        "mistake",
        "skip",
        "equal",
        "myopic",
        "unirlhf",
        "lire",
        "regret",
    } <= set(list_teachers())
    assert make_teacher("mistake").eps_mistake == 0.1
    assert make_teacher("skip").eps_skip == 0.1
    assert make_teacher("equal").eps_equal == 0.1
    assert make_teacher("myopic").gamma == 0.9
    assert math.isinf(make_teacher("oracle").beta)


def test_composition_and_spec_round_trip():
    t = make_teacher("myopic+mistake")
    assert t.gamma == 0.9 and t.eps_mistake == 0.1 and t.name == "myopic+mistake"
    t2 = make_teacher("oracle", gamma=0.9, eps_mistake=0.1)
    assert (t2.gamma, t2.eps_mistake) == (0.9, 0.1)
    t3 = make_teacher("oracle(gamma=0.8,eps_mistake=0.2,thresholds=absolute)")
    assert (t3.gamma, t3.eps_mistake, t3.thresholds) == (0.8, 0.2, "absolute")
    r = make_teacher("regret+stoc")
    assert isinstance(r, RegretTeacher) and r.beta == 5.0 and r.beta_units == "std"
    for name in [*list_teachers(), "myopic+mistake", "mistake(eps_mistake=0.0)"]:
        t = make_teacher(name)
        assert make_teacher(t.spec()) == t, name
    assert make_teacher("mistake(eps_mistake=0.0)").eps_mistake == 0.0


@pytest.mark.parametrize(
    "name, err, msg",
    [
        ("nope", UnknownIdError, "presets: equal"),
        ("oracle+nope", UnknownIdError, "unknown teacher 'nope'"),
        ("lire+regret", PbrlError, "cannot combine"),
        ("oracle(bogus=1)", PbrlError, "knob 'bogus'"),
        ("oracle(gamma=abc)", PbrlError, "expected a number"),
        ("oracle(gamma=1.5)", PbrlError, "gamma must be in"),
        ("mistake(eps_mistake=2)", PbrlError, "eps_mistake must be in"),
        ("stoc(beta=-1)", PbrlError, "beta must be >= 0"),
    ],
)
def test_make_teacher_errors(name, err, msg):
    with pytest.raises(err, match=msg.replace("(", r"\(")):
        make_teacher(name)


def test_saved_preset_loads(tmp_path):
    t = BPrefTeacher(name="alice", beta=0.7, gamma=0.95, eps_mistake=0.05, thresholds="absolute")
    path = tmp_path / "alice.json"
    save_teacher(t, path, extra={"nll": 1.0})
    assert make_teacher(str(path)) == t
    inf_path = tmp_path / "o.json"
    save_teacher(make_teacher("oracle"), inf_path)
    assert math.isinf(make_teacher(str(inf_path)).beta)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "pbrl-teacher", "kind": "bpref", "knobs": {"zzz": 1}}))
    with pytest.raises(DataError, match="unknown knob 'zzz'"):
        make_teacher(str(bad))
    with pytest.raises(UnknownIdError, match="no such teacher preset"):
        make_teacher(str(tmp_path / "missing.json"))


# ---------------------------------------------------------------------------------------------
# Human-fitted teacher
# ---------------------------------------------------------------------------------------------
def test_fit_teacher_recovers_a_known_teacher():
    true = BPrefTeacher(
        name="sim", beta=0.5, gamma=0.9, eps_mistake=0.1, eps_equal=1.0, thresholds="absolute"
    )
    p = random_pairs(6000, L=20, scale=1.0, seed=3)
    prefer, _ = true.label(p, np.random.default_rng(4))
    recs = {"rewards_a": p.rewards_a, "rewards_b": p.rewards_b, "prefer_b": prefer}
    fit, info = fit_teacher_details(recs)
    assert fit.beta == pytest.approx(0.5, rel=0.3)
    assert fit.gamma == pytest.approx(0.9, abs=0.03)
    assert fit.eps_mistake == pytest.approx(0.1, abs=0.04)
    assert fit.eps_equal == pytest.approx(1.0, abs=0.15)
    assert fit.thresholds == "absolute" and info["ties"] == int((prefer == 0.5).sum())


def test_fit_teacher_deterministic_annotator_and_skips():
    true = BPrefTeacher(eps_skip=0.5, thresholds="absolute")
    p = random_pairs(3000, L=10, seed=5)
    prefer, answered = true.label(p, np.random.default_rng(0))
    recs = [
        {
            "rewards_a": p.rewards_a[i],
            "rewards_b": p.rewards_b[i],
            "prefer_b": None if not answered[i] else prefer[i],
        }
        for i in range(3000)
    ]
    fit = fit_teacher(recs)
    assert math.isinf(fit.beta)
    assert fit.eps_mistake < 0.01 and fit.gamma > 0.95
    assert fit.eps_skip == pytest.approx(0.5, abs=0.05)


def test_fit_teacher_bad_records():
    with pytest.raises(DataError, match="prefer_b must be in"):
        fit_teacher([{"rewards_a": [1.0], "rewards_b": [2.0], "prefer_b": 3}])
    with pytest.raises(DataError, match="record 0"):
        fit_teacher([{"rewards_a": [1.0]}])


def test_cli_list_and_fit(tmp_path):
    from typer.testing import CliRunner

    from pbrl.cli.app import app

    runner = CliRunner()
    res = runner.invoke(app, ["oracles", "list"])
    assert res.exit_code == 0 and "mistake" in res.output and "unirlhf" in res.output
    p = random_pairs(1500, L=10, seed=7)
    prefer, _ = make_teacher("mistake").label(p, np.random.default_rng(0))
    lines = [
        json.dumps(
            {
                "rewards_a": p.rewards_a[i].tolist(),
                "rewards_b": p.rewards_b[i].tolist(),
                "prefer_b": float(prefer[i]),
            }
        )
        for i in range(1500)
    ]
    src = tmp_path / "human.jsonl"
    src.write_text("\n".join(lines))
    out = tmp_path / "alice.json"
    res = runner.invoke(app, ["oracles", "fit", str(src), "-o", str(out)])
    assert res.exit_code == 0, res.output
    t = make_teacher(str(out))
    assert t.name == "alice" and t.eps_mistake == pytest.approx(0.1, abs=0.04)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    res = runner.invoke(app, ["oracles", "fit", str(bad), "-o", str(tmp_path / "x.json")])
    assert res.exit_code != 0 and not (tmp_path / "x.json").exists()


def test_regret_sb3_source_uses_the_critics_gamma(monkeypatch):
    import pbrl.datasets.critic as sb3_gen

    class Critic:
        gamma = 0.95

        def __call__(self, obs):
            return obs[:, 0].astype(np.float64)

    seen = []
    monkeypatch.setattr(
        sb3_gen, "load_expert_value_fn", lambda ds_id: seen.append(ds_id) or Critic()
    )
    ds = make_ds(n_eps=4, ep_len=30, task_id="mujoco/hopper")
    t = make_teacher("regret").prepare(ds, 5)
    assert seen == [ds.id] and t.discount == 0.95 and "discount=0.95" in t.spec()
    refs = sample_segments(ds, 2, 5, np.random.default_rng(0))
    pairs = SegmentPairs.from_dataset(ds, refs[:1], refs[1:])
    s_a, _ = t.scores(pairs)
    w = 0.95 ** np.arange(5)
    expect = pairs.rewards_a[0] @ w + 0.95**5 * pairs.next_obs_last_a[0, 0] - pairs.obs_a[0, 0, 0]
    assert s_a[0] == pytest.approx(expect, rel=1e-6)
