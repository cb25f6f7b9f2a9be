"""Segment sampling (the boundary rule) and query selectors (issue 3, item 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pbrl.datasets.base import OfflineDataset
from pbrl.errors import DataError, PbrlError
from pbrl.prefs.select import (
    RewardEnsemble,
    disagreement_scores,
    entropy_scores,
    kcenter_greedy,
    sample_segments,
    select_queries,
)


def make_ds(lengths: list[int], obs_dim: int = 2, seed: int = 0) -> OfflineDataset:
    rng = np.random.default_rng(seed)
    lengths_arr = np.array(lengths, dtype=np.int64)
    n = int(lengths_arr.sum())
    starts = np.concatenate([[0], np.cumsum(lengths_arr)[:-1]]).astype(np.int64)
    ep_of_row = np.repeat(np.arange(len(lengths)), lengths_arr)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    obs[:, 0] = ep_of_row  # feature 0 names the episode (tests read it back)
    tout = np.zeros(n, bool)
    tout[starts + lengths_arr - 1] = True
    return OfflineDataset(
        id="toy/q-v0",
        task_id="toy/q",
        observations=obs,
        actions=rng.uniform(-1, 1, (n, 1)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=np.roll(obs, -1, axis=0),
        terminals=np.zeros(n, bool),
        timeouts=tout,
        starts=starts,
        lengths=lengths_arr,
    )


def test_segments_stay_inside_episodes_and_skip_short_ones():
    ds = make_ds([5, 30, 12, 3, 50])
    L = 10
    refs = sample_segments(ds, 20000, L, np.random.default_rng(0))
    assert refs.shape == (20000, 3) and refs.dtype == np.int64
    assert (refs[:, 2] == L).all() and (refs[:, 1] >= 0).all()
    assert (refs[:, 1] + L <= ds.lengths[refs[:, 0]]).all()
    assert not np.isin(refs[:, 0], [0, 3]).any()  # shorter than L: never used
    # every window equally likely: episode counts proportional to their windows (21, 3, 41)
    counts = np.bincount(refs[:, 0], minlength=5)[[1, 2, 4]]
    expected = np.array([21, 3, 41]) / 65 * 20000
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
    # both extreme starts occur (the last window start = length - L is allowed)
    ep2 = refs[refs[:, 0] == 2, 1]
    assert set(np.unique(ep2)) == {0, 1, 2}


def test_segment_sampling_is_reproducible_and_respects_episode_subset():
    ds = make_ds([40, 40, 40])
    a = sample_segments(ds, 100, 8, np.random.default_rng(1))
    b = sample_segments(ds, 100, 8, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    sub = sample_segments(ds, 200, 8, np.random.default_rng(2), episodes=np.array([2]))
    assert (sub[:, 0] == 2).all()


def test_no_episode_long_enough_is_a_data_error():
    ds = make_ds([5, 6])
    with pytest.raises(DataError, match="no episode has at least 10 steps"):
        sample_segments(ds, 4, 10, np.random.default_rng(0))
    with pytest.raises(DataError, match="out of range"):
        sample_segments(ds, 4, 2, np.random.default_rng(0), episodes=np.array([7]))


def test_score_functions_on_hand_worked_values():
    probs = np.array([[0.5, 0.9, 0.2], [0.5, 0.1, 0.2]])
    np.testing.assert_allclose(disagreement_scores(probs), [0.0, 0.4, 0.0])
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    np.testing.assert_allclose(entropy_scores(probs), [math.log(2), h(0.9), h(0.2)])


class MarkerEnsemble:
    """Members agree on sum(obs[..., 1]) except on 'controversial' episodes (marker >= 4),
    where member k adds w_k * L."""

    def __init__(self, weights=(-3.0, 0.0, 3.0), controversial: float = 4.0):
        self.w = np.array(weights)
        self.c = controversial

    def predict_segments(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        base = obs[..., 1].sum(axis=1)
        contro = (obs[..., 0] >= self.c).sum(axis=1)
        return base[None, :] + self.w[:, None] * contro[None, :]


def test_disagreement_selector_prefers_controversial_pairs():
    ds = make_ds([40] * 8)
    ens = MarkerEnsemble()
    assert isinstance(ens, RewardEnsemble)
    ra, rb = select_queries(
        ds, 20, 10, np.random.default_rng(0), selector="disagreement", ensemble=ens
    )
    assert ra.shape == (20, 3)
    assert ((ra[:, 0] >= 4) | (rb[:, 0] >= 4)).all()
    # the uniform selector would not do this
    ua, ub = select_queries(ds, 200, 10, np.random.default_rng(0))
    assert not ((ua[:, 0] >= 4) | (ub[:, 0] >= 4)).all()


def test_entropy_selector_prefers_near_ties():
    ds = make_ds([40] * 8)

    class Same:
        def predict_segments(self, obs, act):
            r = 3.0 * obs[..., 0].sum(axis=1)  # return grows with the episode marker
            return np.stack([r, r])

    ra, rb = select_queries(
        ds, 20, 10, np.random.default_rng(0), selector="entropy", ensemble=Same()
    )
    assert (ra[:, 0] == rb[:, 0]).all()  # same-episode pairs are the only near-ties


def test_kcenter_greedy_covers_clusters():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    pts = np.concatenate([c + rng.normal(0, 0.1, (50, 2)) for c in centers])
    idx = kcenter_greedy(pts, 4, rng)
    assert sorted(set((idx // 50).tolist())) == [0, 1, 2, 3]
    # with a labelled point near cluster 0, the first pick is the farthest cluster (10, 10)
    idx2 = kcenter_greedy(pts, 1, rng, centers=np.array([[0.0, 0.0]]))
    assert idx2[0] // 50 == 3


def test_kcenter_selector_spreads_over_episodes():
    ds = make_ds([30] * 10, obs_dim=2)
    ra, rb = select_queries(ds, 10, 5, np.random.default_rng(0), selector="kcenter")
    assert ra.shape == (10, 3) and (ra[:, 1] + 5 <= 30).all()
    ua, ub = select_queries(ds, 10, 5, np.random.default_rng(0))
    spread = lambda a, b: len(set(zip(a[:, 0], b[:, 0], strict=True)))  # noqa: E731
    assert spread(ra, rb) >= spread(ua, ub) - 1
    ka, kb = select_queries(
        ds,
        5,
        5,
        np.random.default_rng(1),
        selector="kcenter_disagreement",
        ensemble=MarkerEnsemble(controversial=5.0),
        labelled=(ra, rb),
    )
    assert ((ka[:, 0] >= 5) | (kb[:, 0] >= 5)).all()


def test_selector_errors():
    ds = make_ds([30] * 3)
    with pytest.raises(PbrlError, match="needs|ranks candidates with a reward-model ensemble"):
        select_queries(ds, 5, 5, np.random.default_rng(0), selector="disagreement")
    with pytest.raises(PbrlError, match="unknown query selector 'best'"):
        select_queries(ds, 5, 5, np.random.default_rng(0), selector="best")

    class Bad:
        def predict_segments(self, obs, act):
            return np.zeros(3)

    with pytest.raises(PbrlError, match="returned shape"):
        select_queries(ds, 5, 5, np.random.default_rng(0), selector="entropy", ensemble=Bad())
