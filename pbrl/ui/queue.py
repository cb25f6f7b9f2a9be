"""People in the labeling UI as an online learner's teacher: the query queue a training
loop posts to and reads from (the :class:`pbrl.learn.api.QueryQueue` protocol).

Each post writes the episodes the pairs come from (with their physics states) as a Minari
dataset of their own (``pbrl/ui-online/<project>-<run tag>-p<k>-v0`` in the Minari root,
``$MINARI_DATASETS_PATH``) and queues the pairs in a compare project
whose segments point at that dataset (``segments.dataset``); the server's worker renders
them like any other segment, annotators answer them in the browser, and :meth:`answers`
reads what has arrived, one label per pair once the project's K annotators have answered
(the majority of their non-skip answers; ties 0.5; all skipped: skipped). The project is
created at the first post, empty, on that post's data (``pbrl ui token add`` then invites
people to it); an existing project must be of the run's task and a uniform compare project.
docs/online.md, "A human teacher".
"""

from __future__ import annotations

import secrets
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from pbrl.datasets.base import EpisodeData
from pbrl.datasets.minari_io import write_minari_dataset
from pbrl.datasets.registry import load_dataset
from pbrl.errors import PbrlError
from pbrl.ui.db import Project, open_db
from pbrl.ui.service import (
    ProjectOptions,
    check_name,
    create_project,
    post_queries,
    query_answers,
)

UI_TEACHER_PREFIX = "ui:"


def parse_ui_teacher(text: str | None) -> str | None:
    """The project name of a ``--teacher ui:PROJECT`` value; None for any other teacher."""
    if text is None or not text.startswith(UI_TEACHER_PREFIX):
        return None
    return check_name(text[len(UI_TEACHER_PREFIX) :], "--teacher ui:PROJECT")


class UiQueue:
    """Post pairs of an online run's episodes to a labeling project and read the answers."""

    needs_state = True

    def __init__(
        self,
        db_url: str,
        project: str,
        *,
        task_id: str,
        segment: int,
        annotators_per_query: int = 1,
        size: int = 256,
        fps: int = 25,
        home: Path | None = None,
    ) -> None:
        self.project = check_name(project, "--teacher ui:PROJECT")
        self.task_id = task_id
        self.segment = segment
        self.opts = {"per_query": annotators_per_query, "width": size, "height": size, "fps": fps}
        self.db_url, self.home = db_url, home
        self.sessions: Any = None
        self.run_tag = secrets.token_hex(4)  # two runs posting to one project never collide
        self.n_posts = 0

    def start(self) -> None:
        """Open the database (its folder ``home`` made if given) and check an existing
        project; the learner calls this once its own checks have passed, before it acts."""
        if self.sessions is not None:
            return
        if self.home is not None:
            self.home.mkdir(parents=True, exist_ok=True)
        _, self.sessions = open_db(self.db_url)
        with self.sessions() as s:
            p = s.scalar(select(Project).where(Project.name == self.project))
        if p is not None:
            self._check_project(p)

    def _check_project(self, p: Project) -> None:
        if p.mode != "compare" or p.selector not in ("uniform", "kcenter"):
            raise PbrlError(
                f"--teacher ui:{self.project}: the project exists and is a {p.mode} project "
                f"with selector {p.selector}; a training loop posts to a uniform compare project"
            )
        if p.task_id != self.task_id:
            raise PbrlError(
                f"--teacher ui:{self.project}: the project's task is {p.task_id!r}, the run's "
                f"{self.task_id!r}"
            )

    def spec(self) -> str:
        return f"human:ui({self.project})"

    def post(
        self, episodes: list[EpisodeData], refs_a: np.ndarray, refs_b: np.ndarray
    ) -> list[int]:
        """Write ``episodes`` as a dataset of their own and queue the pairs; their ids."""
        self.start()
        if not episodes or any(e.qpos is None or e.qvel is None for e in episodes):
            raise PbrlError(f"{self.spec()}: the episodes carry no physics state to render")
        self.n_posts += 1
        dataset_id = f"pbrl/ui-online/{self.project}-{self.run_tag}-p{self.n_posts}-v0"
        path = write_minari_dataset(
            dataset_id,
            episodes,
            env_id=None,
            ref_min_score=0.0,
            ref_max_score=1.0,
            card={"task_id": self.task_id, "source": f"online run, {self.spec()}"},
        )
        ds = load_dataset(str(path))
        with self.sessions() as s:
            p = s.scalar(select(Project).where(Project.name == self.project))
        if p is None:
            opts = ProjectOptions(name=self.project, queries=0, segment=self.segment, **self.opts)  # type: ignore[arg-type]
            create_project(self.sessions, ds, opts, dataset_arg=str(path))
        else:
            self._check_project(p)
        return post_queries(self.sessions, self.project, refs_a, refs_b, dataset=ds)

    def answers(self, ids: list[int]) -> dict[int, float | None]:
        """``{id: prefer_b}`` for the ids every one of the project's K annotators answered:
        the majority of their non-skip answers (a tie: 0.5), None when all skipped."""
        self.start()
        with self.sessions() as s:
            p = s.scalar(select(Project).where(Project.name == self.project))
        if p is None:
            return {}
        got = query_answers(self.sessions, self.project, list(ids))
        out: dict[int, float | None] = {}
        for qid, rows in got.items():
            if not rows or len(rows) < p.per_query:
                continue
            votes = Counter(pb for _, pb in rows if pb is not None)
            if not votes:
                out[qid] = None
                continue
            top = votes.most_common()
            out[qid] = 0.5 if len(top) > 1 and top[0][1] == top[1][1] else float(top[0][0])
        return out
