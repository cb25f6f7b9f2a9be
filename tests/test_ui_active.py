"""Active queries (pbrl/ui/active.py): the reward ensemble learns from answers, and a
``disagreement`` project queues its next round from it once the queue runs low."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")

from sqlalchemy import select  # noqa: E402
from test_ui_api import UiWorld, answer_all, better, fake_renderer, make_world  # noqa: E402

from pbrl.datasets.base import sample_segments  # noqa: E402
from pbrl.ui.active import RewardEnsemble, active_pass, round_due  # noqa: E402
from pbrl.ui.db import Project, Query  # noqa: E402
from pbrl.ui.video import worker_pass  # noqa: E402


@pytest.fixture()
def world(tmp_path, minari_home) -> UiWorld:
    return make_world(tmp_path)


def test_reward_ensemble_learns_which_segment_is_better(world):
    ds = world.ds
    rng = np.random.default_rng(0)

    def pairs(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ra = sample_segments(ds, n, 8, rng)
        rb = sample_segments(ds, n, 8, rng)
        y = (rb[:, 0] > ra[:, 0]).astype(np.float32)
        y[rb[:, 0] == ra[:, 0]] = 0.5
        return ra, rb, y

    ens = RewardEnsemble(ds.obs_dim, ds.act_dim, seed=0)
    ra, rb, y = pairs(60)
    ens.fit(ds, ra, rb, y, epochs=60)
    ta, tb, ty = pairs(200)
    rows_a, _ = ds.segment_index(ta)
    rows_b, _ = ds.segment_index(tb)
    sa = ens.predict_segments(ds.observations[rows_a], ds.actions[rows_a])
    sb = ens.predict_segments(ds.observations[rows_b], ds.actions[rows_b])
    assert sa.shape == (3, 200)
    strict = ty != 0.5
    acc = ((sb.mean(0) > sa.mean(0)) == (ty > 0.5))[strict].mean()
    assert acc > 0.85, acc


def test_disagreement_project_queues_the_next_round(world):
    w = world
    w.create(queries=4, selector="disagreement")
    alice = w.token("p", "alice")
    with w.sessions() as s:
        project = s.scalar(select(Project))
    assert not round_due(w.sessions, project)  # a full queue, no answers yet
    assert answer_all(w, alice, "p", better) == 4
    assert round_due(w.sessions, project)
    assert active_pass(w.sessions) == 4
    assert not round_due(w.sessions, project)
    assert active_pass(w.sessions) == 0  # nothing due: nothing added
    with w.sessions() as s:
        origins = [q.origin for q in s.scalars(select(Query).order_by(Query.id))]
    assert origins == ["initial"] * 4 + ["active"] * 4
    # the worker's pass renders the new round's 8 videos; then it is idle
    assert worker_pass(w.sessions, w.cache, renderer=fake_renderer) == 8
    assert worker_pass(w.sessions, w.cache, renderer=fake_renderer) == 0
    assert answer_all(w, alice, "p", better) == 4
