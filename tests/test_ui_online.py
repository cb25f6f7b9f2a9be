"""People in the labeling UI as an online learner's teacher (pbrl/ui/queue.py): an online
PEBBLE run on MuJoCo Hopper posts its pairs to a UI project, the pairs render from the
run's own episodes, an annotator answers them through the queue, and the run trains on
the answers."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")

from sqlalchemy import func, select  # noqa: E402
from test_ui_api import fake_renderer  # noqa: E402

from pbrl.datasets.registry import load_dataset  # noqa: E402
from pbrl.errors import PbrlError  # noqa: E402
from pbrl.run.train import TrainSpec, train_agent  # noqa: E402
from pbrl.ui.db import Answer, Project, Query, SegmentRow  # noqa: E402
from pbrl.ui.queue import UiQueue, parse_ui_teacher  # noqa: E402
from pbrl.ui.service import (  # noqa: E402
    ProjectOptions,
    add_token,
    answer_and_next,
    authenticate,
    create_project,
    next_query,
)
from pbrl.ui.video import render_pending  # noqa: E402

TASK = "mujoco/hopper"


class AnsweringQueue(UiQueue):
    """The UI queue with an annotator who, before each read, renders what is pending and
    answers every pair shown to them ("left"), through the same service calls as the
    browser's requests."""

    def __init__(self, *args, cache, **kw) -> None:
        super().__init__(*args, **kw)
        self.cache = cache
        self.secret: str | None = None
        self.answered = 0

    def answers(self, ids):
        render_pending(self.sessions, self.cache, renderer=fake_renderer)
        if self.secret is None:
            self.secret = add_token(self.sessions, self.project, "ann")
        who = authenticate(self.sessions, self.secret, self.project)
        r = next_query(self.sessions, who)
        while r["state"] == "ready":
            r = answer_and_next(self.sessions, who, r["query"]["query_id"], "left")
            self.answered += 1
        return super().answers(ids)


def test_an_online_run_posts_to_the_ui_and_trains_on_the_answers(tmp_path, minari_home):
    url = f"sqlite:///{tmp_path / 'ui.db'}"
    queue = AnsweringQueue(url, "live", task_id=TASK, segment=4, cache=tmp_path / "videos")
    spec = TrainSpec(
        agent="pebble",
        dataset=None,
        prefs=None,
        task=TASK,
        budget=4,
        segment=4,
        steps=200,
        seed=0,
        eval_every=200,
        eval_episodes=1,
        log_interval=20,
        out=str(tmp_path / "run"),
        overrides={"seed_steps": 20, "unsup_steps": 20, "session_every": 40, "queries": 2,
                   "sac_hidden": (16, 16), "sac_batch": 16, "reward_hidden": (16, 16),
                   "reward_batch": 8, "reward_epochs": 2, "reset_update": 2},
    )  # fmt: skip
    summary, agent = train_agent(spec, queue=queue)
    assert summary["queries_used"] == 4 and agent.queries_used == 4
    assert queue.answered == 4 and agent.labels.size == 4 and not agent.pending
    with queue.sessions() as s:
        p = s.scalar(select(Project).where(Project.name == "live"))
        assert p.task_id == TASK and p.mode == "compare"
        assert s.scalar(select(func.count()).select_from(Answer)) == 4
        assert {q.origin for q in s.scalars(select(Query))} == {"posted"}
        segs = s.scalars(select(SegmentRow)).all()
    assert len(segs) == 8 and all(g.video == "ready" for g in segs)
    # each post's episodes are a dataset of their own, of the task, with physics states
    for path in {g.dataset for g in segs}:
        ds = load_dataset(path)
        assert ds.task_id == TASK and ds.qpos is not None and ds.qpos.shape[1] == 6
    # what the agent trained on is what the annotator pressed, mapped back to a/b
    with queue.sessions() as s:
        stored = sorted(a.prefer_b for a in s.scalars(select(Answer)))
    assert sorted(agent.labels.prefer_b.tolist()) == stored
    import json

    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["teacher"] == "human:ui(live)"


def test_the_ui_teacher_checks_its_project(tmp_path, minari_home):
    assert parse_ui_teacher("oracle") is None and parse_ui_teacher("ui:live") == "live"
    with pytest.raises(PbrlError, match="--teacher ui:PROJECT"):
        parse_ui_teacher("ui:../x")
    from test_ui_api import write_tiny_dataset

    url = f"sqlite:///{tmp_path / 'ui.db'}"
    ds = write_tiny_dataset()
    q = UiQueue(url, "p", task_id=TASK, segment=4, home=tmp_path / "home")
    assert not (tmp_path / "home").exists()  # nothing opened before the run's checks pass
    q.start()  # no project yet: it is made at the first post
    opts = ProjectOptions(name="r", queries=4, segment=4, mode="rank")
    create_project(q.sessions, ds, opts, dataset_arg=ds.id)
    with pytest.raises(PbrlError, match="rank project"):
        UiQueue(url, "r", task_id=TASK, segment=4).start()
    create_project(
        q.sessions, ds, ProjectOptions(name="c", queries=1, segment=4), dataset_arg=ds.id
    )
    with pytest.raises(PbrlError, match="task"):
        UiQueue(url, "c", task_id=TASK, segment=4).start()  # the tiny dataset has no task
