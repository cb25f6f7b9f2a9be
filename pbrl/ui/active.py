"""Active queries: a project whose selector needs a reward model (``disagreement``,
``entropy``, ``kcenter_disagreement``, ``kcenter_entropy``) grows its queue in rounds.

The first round is drawn uniformly at project creation (no model yet). When the queue runs
low (fewer than half a round of pairs nobody has been shown) and a round's worth of new
answers has arrived, :func:`active_pass` (run by the render worker's process, never by the web
server) trains a Bradley-Terry reward ensemble on the answers so far (one label per query:
the majority of its annotators) and asks the same :func:`pbrl.prefs.select.select_queries`
the offline budget experiments use for the next round's pairs, which go in the queue with
origin ``active``. A training loop uses the same queue through
:func:`pbrl.ui.service.post_queries` and :func:`pbrl.ui.service.query_answers`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from pbrl.datasets.base import OfflineDataset
from pbrl.learn.kit import bt_pair_losses, segment_sum, shuffled_epoch
from pbrl.learn.nn import EnsembleMLP
from pbrl.prefs.select import ENSEMBLE_SELECTORS, select_queries
from pbrl.ui.crowd import PREFER_B, category, majority
from pbrl.ui.db import Answer, Project, Query, SegmentRow
from pbrl.ui.service import add_queries, project_dataset

log = logging.getLogger(__name__)


class RewardEnsemble:
    """``members`` MLP rewards r_k(s, a), trained with the Bradley-Terry loss on segment sums.

    Satisfies :class:`pbrl.prefs.select.RewardEnsemble` (``predict_segments``).
    """

    def __init__(
        self, obs_dim: int, act_dim: int, *, members: int = 3, hidden: int = 64, seed: int = 0
    ) -> None:
        import torch

        self.generator = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng():
            torch.manual_seed(int(seed))
            self.net = EnsembleMLP(members, obs_dim + act_dim, 1, (hidden, hidden), "leaky_relu")
        self.members = members

    def _scores(self, obs: Any, act: Any, per_member: bool) -> Any:
        import torch

        x = torch.cat([obs, act], -1)
        return self.net(x, shared=not per_member).squeeze(-1).sum(-1)

    def fit(
        self,
        ds: OfflineDataset,
        refs_a: np.ndarray,
        refs_b: np.ndarray,
        prefer_b: np.ndarray,
        *,
        epochs: int = 50,
        batch: int = 64,
        lr: float = 3e-4,
    ) -> float:
        """Train on the pairs; returns the last epoch's mean loss (summed over members)."""
        import torch

        def gather(refs: np.ndarray) -> tuple[Any, Any]:
            rows, _ = ds.segment_index(refs)
            return (
                torch.as_tensor(ds.observations[rows], dtype=torch.float32),
                torch.as_tensor(ds.actions[rows], dtype=torch.float32),
            )

        oa, aa = gather(refs_a)
        ob, ab = gather(refs_b)
        y = torch.as_tensor(prefer_b, dtype=torch.float32)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        last = float("nan")
        for _ in range(epochs):
            losses = []
            for idx in shuffled_epoch(len(y), batch, self.generator, "cpu", members=self.members):
                sa = self._scores(oa[idx], aa[idx], True)
                sb = self._scores(ob[idx], ab[idx], True)
                loss = bt_pair_losses(sa, sb, y[idx]).mean(-1).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            last = float(np.mean(losses))
        return last

    def predict_segments(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """(M, N) predicted returns of N segments (obs (N, L, D), act (N, L, A))."""
        import torch

        with torch.no_grad():
            o = torch.as_tensor(np.asarray(obs, np.float32))
            a = torch.as_tensor(np.asarray(act, np.float32))
            mask = torch.ones(o.shape[:2])
            r = self.net(torch.cat([o, a], -1), shared=True).squeeze(-1)
            return segment_sum(r, mask).numpy()


def _labels(s: Any, project: Project) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One label per answered shared query (the majority of its annotators)."""
    rows = s.execute(
        select(Query.id, Answer.annotator_id, Answer.prefer_b, Query.seg_a, Query.seg_b)
        .join(Answer, Answer.query_id == Query.id)
        .where(Query.project_id == project.id, Query.annotator_id.is_(None), ~Answer.skipped)
    ).all()
    segs = {
        r.id: (r.episode, r.start, r.length)
        for r in s.scalars(select(SegmentRow).where(SegmentRow.project_id == project.id))
    }
    votes: dict[int, dict[str, int]] = {}
    pairs: dict[int, tuple[int, int]] = {}
    for qid, who, pb, sa, sb in rows:
        votes.setdefault(qid, {})[str(who)] = category(pb)
        pairs[qid] = (sa, sb)
    ids = sorted(votes)
    ra = np.array([segs[pairs[q][0]] for q in ids], dtype=np.int64).reshape(-1, 3)
    rb = np.array([segs[pairs[q][1]] for q in ids], dtype=np.int64).reshape(-1, 3)
    y = np.array([PREFER_B[majority(votes[q])] for q in ids], dtype=np.float32)  # type: ignore[index]
    return ra, rb, y


def round_due(sessions: sessionmaker, project: Project) -> bool:
    """The queue of ``project`` is low and a round's worth of answers arrived since the last."""
    if project.mode != "compare" or project.selector not in ENSEMBLE_SELECTORS:
        return False
    with sessions() as s:
        unseen = s.scalar(
            select(func.count())
            .select_from(Query)
            .where(Query.project_id == project.id, Query.shown == 0, ~Query.gold)
        )
        last = s.scalar(
            select(func.max(Query.created)).where(
                Query.project_id == project.id, Query.origin.in_(("initial", "active"))
            )
        )
        fresh = s.scalar(
            select(func.count())
            .select_from(Answer)
            .where(Answer.project_id == project.id, Answer.answered_at > (last or 0.0))
        )
    return int(unseen or 0) < max(1, project.n_queries // 2) and int(fresh or 0) >= min(
        project.n_queries, 10
    )


def active_round(sessions: sessionmaker, project: Project, *, epochs: int = 50) -> list[int]:
    """Train the ensemble on the answers so far and queue the next round; the new query ids."""
    ds = project_dataset(project)
    with sessions() as s:
        ra, rb, y = _labels(s, project)
        n_round = s.scalar(
            select(func.count(func.distinct(Query.created))).where(
                Query.project_id == project.id, Query.origin.in_(("initial", "active"))
            )
        )
    seed = int(project.seed) * 1000 + int(n_round or 0)
    ens = RewardEnsemble(ds.obs_dim, ds.act_dim, seed=seed)
    if len(y):
        ens.fit(ds, ra, rb, y, epochs=epochs)
    rng = np.random.default_rng(seed)
    na, nb = select_queries(
        ds,
        project.n_queries,
        project.segment,
        rng,
        selector=project.selector,
        ensemble=ens,
        labelled=(ra, rb),
    )
    with sessions() as s, s.begin():
        ids = add_queries(s, project.id, na, nb, "active", time.time())
    log.info(
        "project %s: active round of %d queries (%s)", project.name, len(ids), project.selector
    )
    return ids


def active_pass(sessions: sessionmaker) -> int:
    """One look at every active project; runs the rounds that are due. New queries queued."""
    with sessions() as s:
        projects = list(s.scalars(select(Project).where(Project.selector.in_(ENSEMBLE_SELECTORS))))
    n = 0
    for p in projects:
        if round_due(sessions, p):
            n += len(active_round(sessions, p))
    return n
