"""The labeling UI's HTTP API through FastAPI's TestClient on SQLite: the compare flow, undo,
the queue's annotators-per-query rule, ranking by binary insertion, security (tokens, other
projects, malformed bodies, second answers, video paths) and the export that pbrl reads.

The videos here come from a stand-in renderer (coloured frames, encoded to real MP4 by the
same encoder); rendering real MuJoCo frames is covered by tests/test_ui_browser.py's slow test
and by the README flow. ``ui_world`` is shared with the browser and PostgreSQL tests.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from pbrl.datasets.base import EpisodeData, OfflineDataset  # noqa: E402
from pbrl.datasets.minari_io import write_minari_dataset  # noqa: E402
from pbrl.datasets.registry import load_dataset  # noqa: E402
from pbrl.errors import PbrlError  # noqa: E402
from pbrl.prefs import load_preferences, save_preferences  # noqa: E402
from pbrl.prefs.io import check_prefs_dataset  # noqa: E402
from pbrl.ui.db import (  # noqa: E402
    Answer,
    Assignment,
    Project,
    Query,
    SegmentRow,
    Token,
    UndoneAnswer,
    open_db,
)
from pbrl.ui.service import (  # noqa: E402
    CHOICES,
    ProjectOptions,
    UiError,
    add_token,
    answer_prefer_b,
    authenticate,
    create_project,
    export_preferences,
    insertion_replay,
    post_queries,
    project_status,
    query_answers,
    revoke_token,
    shown_swapped,
    submit_answer,
)
from pbrl.ui.video import render_pending, video_path  # noqa: E402
from pbrl.ui.web import create_app  # noqa: E402

DATASET = "test/uitiny-v0"


def fake_renderer(
    ds: OfflineDataset, episode: int, start: int, length: int, width: int, height: int
) -> np.ndarray:
    """Coloured frames with a bar that moves, so a playing video visibly changes."""
    frames = np.zeros((length, height, width, 3), dtype=np.uint8)
    frames[...] = np.array([(37 * episode) % 256, (11 * start) % 256, 160], dtype=np.uint8)
    for t in range(length):
        x = int((t / max(length - 1, 1)) * (width - 8))
        frames[t, :, x : x + 8] = 255
    return frames


def write_tiny_dataset(
    episodes: int = 6, steps: int = 40, seed: int = 0, dataset_id: str = DATASET
) -> OfflineDataset:
    """A small dataset with qpos/qvel and known rewards in the Minari store (no task)."""
    rng = np.random.default_rng(seed)
    eps = []
    for e in range(episodes):
        obs = rng.normal(size=(steps + 1, 3)).astype(np.float32)
        obs[:, 0] = e / episodes + 0.05 * obs[:, 0]  # the state shows how good the episode is
        eps.append(
            EpisodeData(
                observations=obs,
                actions=rng.uniform(-1, 1, size=(steps, 2)).astype(np.float32),
                # episode e earns about e per step: later episodes are better
                rewards=(e + 0.01 * rng.normal(size=steps)).astype(np.float32),
                terminations=np.zeros(steps, bool),
                truncations=np.r_[np.zeros(steps - 1, bool), True],
                qpos=rng.normal(size=(steps + 1, 2)),
                qvel=rng.normal(size=(steps + 1, 2)),
                info={"seed": e},
            )
        )
    write_minari_dataset(
        dataset_id, eps, env_id=None, ref_min_score=0.0, ref_max_score=1.0, card={}, overwrite=True
    )
    return load_dataset(dataset_id)


@dataclass
class UiWorld:
    sessions: object
    cache: Path
    ds: OfflineDataset
    client: TestClient
    url: str

    def create(self, name: str = "p", **kw: object) -> None:
        opts = ProjectOptions(
            name=name, **{"queries": 6, "segment": 8, "width": 32, "height": 32, **kw}
        )  # type: ignore[arg-type]
        create_project(self.sessions, self.ds, opts, dataset_arg=DATASET)
        render_pending(self.sessions, self.cache, renderer=fake_renderer)

    def token(self, project: str, name: str, owner: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {add_token(self.sessions, project, name, owner=owner)}"}

    def count(self, model: type) -> int:
        with self.sessions() as s:  # type: ignore[operator]
            return int(s.scalar(select(func.count()).select_from(model)))


def make_world(tmp_path: Path, url: str | None = None) -> UiWorld:
    ds = write_tiny_dataset()
    url = url or f"sqlite:///{tmp_path / 'ui.db'}"
    _, sessions = open_db(url)
    cache = tmp_path / "videos"
    return UiWorld(sessions, cache, ds, TestClient(create_app(sessions, cache)), url)


@pytest.fixture()
def ui_world(tmp_path, minari_home) -> UiWorld:
    return make_world(tmp_path)


# ---- schema --------------------------------------------------------------------------------
def test_sqlite_database_is_migrated_and_in_wal_mode(ui_world):
    with ui_world.sessions() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
    # opening again is a no-op migration
    open_db(ui_world.url)


def upgrade_from_0002(url: str, ds: OfflineDataset) -> None:
    """A database made by revision 0002 with a project, a token, a shown pair and an answer,
    then opened by today's code: migrated to head, every row kept, shown a-left, the answered
    pair closed at its answer's time and the open one still open."""
    from alembic import command
    from alembic.config import Config

    from pbrl.ui.db import MIGRATIONS, make_engine

    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO projects (id, name, dataset, dataset_id, fingerprint, mode, "
                "selector, segment, n_queries, per_query, n_gold, seed, fps, width, height, "
                "instruction, created) VALUES (1, 'old', 'd', 'd', 'f', 'compare', 'uniform', "
                "8, 1, 1, 0, 0, 25, 32, 32, '', 0)"
            )
        )
        c.execute(
            text(
                "INSERT INTO tokens (id, project_id, name, token_hash, owner, created) "
                "VALUES (1, 1, 'ann', 'h', false, 0)"
            )
        )
        c.execute(
            text(
                "INSERT INTO segments (id, project_id, episode, start, length, video, priority) "
                "VALUES (1, 1, 0, 0, 8, 'ready', 0), (2, 1, 1, 0, 8, 'ready', 0)"
            )
        )
        c.execute(
            text(
                "INSERT INTO queries (id, project_id, seg_a, seg_b, gold, origin, shown, "
                "created) VALUES (1, 1, 1, 2, false, 'initial', 1, 0), "
                "(2, 1, 2, 1, false, 'initial', 1, 0)"
            )
        )
        c.execute(
            text(
                "INSERT INTO assignments (project_id, query_id, annotator_id, shown_at) "
                "VALUES (1, 1, 1, 5), (1, 2, 1, 6)"
            )
        )
        c.execute(
            text(
                "INSERT INTO answers (project_id, query_id, annotator_id, prefer_b, skipped, "
                "shown_at, answered_at, latency_s) VALUES (1, 1, 1, 0.0, false, 5, 7, 2)"
            )
        )
    engine.dispose()
    _, sessions = open_db(url)
    with sessions() as s:
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
        ans = s.scalars(select(Answer)).one()
        assert (ans.prefer_b, ans.swapped, ans.latency_s) == (0.0, False, 2.0)
        shown = s.scalars(select(Assignment).order_by(Assignment.query_id)).all()
        assert [g.swapped for g in shown] == [False, False]
        assert [g.answered_at for g in shown] == [7.0, None]
        assert s.scalars(select(Token)).one().revoked_at is None
        assert s.scalar(select(func.count()).select_from(UndoneAnswer)) == 0


def test_a_0002_database_is_upgraded_in_place(tmp_path, minari_home):
    upgrade_from_0002(f"sqlite:///{tmp_path / 'old.db'}", write_tiny_dataset())


# ---- the compare flow ----------------------------------------------------------------------
def test_answer_undo_and_answer_again(ui_world):
    w = ui_world
    w.create(gold=1)
    alice = w.token("p", "alice")
    r = w.client.get("/api/projects/p/next", headers=alice).json()
    assert r["state"] == "ready" and r["upcoming"] is not None
    q1 = r["query"]["query_id"]
    # the same pair again until it is answered (a reload does not skip it)
    assert w.client.get("/api/projects/p/next", headers=alice).json()["query"]["query_id"] == q1
    r = w.client.post(
        "/api/projects/p/answers", headers=alice, json={"query_id": q1, "choice": "left"}
    )
    assert r.status_code == 200, r.text
    shown_q2 = r.json()["next"]["query"]
    q2 = shown_q2["query_id"]
    assert q2 != q1
    r = w.client.post(
        "/api/projects/p/answers", headers=alice, json={"query_id": q2, "choice": "equal"}
    )
    assert r.status_code == 200
    assert w.count(Answer) == 2
    # undo takes the last answer back (kept in undone_answers) and shows its pair again, with
    # each segment on the same side as before
    r = w.client.post("/api/projects/p/undo", headers=alice).json()
    assert r["undone"] == q2 and r["next"]["query"] == shown_q2
    assert w.count(Answer) == 1 and w.count(UndoneAnswer) == 1
    r = w.client.post(
        "/api/projects/p/answers", headers=alice, json={"query_id": q2, "choice": "right"}
    )
    assert r.status_code == 200
    with w.sessions() as s:
        rows = {a.query_id: a for a in s.scalars(select(Answer))}
        undone = s.scalars(select(UndoneAnswer)).one()
        sides = dict(s.execute(select(Assignment.query_id, Assignment.swapped)).all())
    # stored in the query's own a/b order, whichever side each segment was shown on
    assert rows[q1].prefer_b == answer_prefer_b("left", sides[q1])
    assert rows[q2].prefer_b == answer_prefer_b("right", sides[q2])
    assert rows[q1].swapped == sides[q1] and rows[q2].swapped == sides[q2]
    assert (undone.query_id, undone.prefer_b, undone.skipped) == (q2, 0.5, False)
    assert undone.undone_at >= undone.answered_at >= undone.shown_at
    assert all(a.latency_s >= 0 and a.answered_at >= a.shown_at for a in rows.values())
    # the export holds the current answers only
    data = export_preferences(w.sessions, "p", "none")
    assert sorted(f.prefer_b for f in data.feedback) == sorted(
        [rows[q1].prefer_b, rows[q2].prefer_b]
    )
    # everything answered: done
    for _ in range(10):
        nxt = w.client.get("/api/projects/p/next", headers=alice).json()
        if nxt["state"] == "done":
            break
        qid = nxt["query"]["query_id"]
        w.client.post(
            "/api/projects/p/answers", headers=alice, json={"query_id": qid, "choice": "skip"}
        )
    assert nxt["state"] == "done" and nxt["progress"]["answered"] == 6


def test_annotators_per_query_and_gold_for_everyone(ui_world):
    w = ui_world
    w.create(queries=4, per_query=1, gold=1)
    heads = [w.token("p", n) for n in ("a", "b")]
    with w.sessions() as s:
        gold = s.scalar(select(Query.id).where(Query.gold))
    seen = []
    for h in heads:
        mine = []
        while (r := w.client.get("/api/projects/p/next", headers=h).json())["state"] == "ready":
            qid = r["query"]["query_id"]
            mine.append(qid)
            w.client.post(
                "/api/projects/p/answers", headers=h, json={"query_id": qid, "choice": "left"}
            )
        seen.append(set(mine))
    # one annotator per ordinary query, the gold query to both
    assert seen[0] & seen[1] == {gold}
    assert len(seen[0] | seen[1]) == 4


def test_videos_are_h264_mp4_and_served_only_from_the_cache(ui_world):
    w = ui_world
    w.create()
    w.create("other")
    alice = w.token("p", "alice")
    with w.sessions() as s:
        mine = s.scalar(select(SegmentRow).where(SegmentRow.project_id == 1))
        theirs = s.scalar(select(SegmentRow).where(SegmentRow.project_id == 2))
    path = video_path(w.cache, 1, mine.id)
    assert path.read_bytes()[4:8] == b"ftyp"
    import imageio_ffmpeg

    meta = imageio_ffmpeg.read_frames(str(path))
    info = next(meta)
    meta.close()
    assert info["codec"].startswith("h264") and info["size"] == (32, 32)
    r = w.client.get(f"/api/projects/p/videos/{mine.id}.mp4", headers=alice)
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert r.content == path.read_bytes()
    token = alice["Authorization"].split()[1]
    assert w.client.get(f"/api/projects/p/videos/{mine.id}.mp4?token={token}").status_code == 200
    # another project's segment, and paths that try to leave the cache
    assert w.client.get(f"/api/projects/p/videos/{theirs.id}.mp4", headers=alice).status_code == 404
    for bad in ("..%2F..%2Fui.db", "..%2Fp1%2Fs1", "%2Fetc%2Fpasswd", "1%00", "-1", "1e3"):
        r = w.client.get(f"/api/projects/p/videos/{bad}.mp4", headers=alice)
        assert r.status_code in (404, 422), (bad, r.status_code)
    r = w.client.get("/api/projects/p/videos/../../ui.db", headers=alice)
    assert r.status_code == 404


# ---- security ------------------------------------------------------------------------------
def test_tokens_projects_and_owner_actions(ui_world):
    w = ui_world
    w.create()
    w.create("other")
    alice = w.token("p", "alice")
    boss = w.token("p", "boss", owner=True)
    eve = w.token("other", "eve")
    assert w.client.get("/api/projects/p/next").status_code == 401
    assert (
        w.client.get("/api/projects/p/next", headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    assert (
        w.client.get("/api/projects/p/next", headers={"Authorization": "Basic x"}).status_code
        == 401
    )
    assert w.client.get("/api/projects/p/next", headers=eve).status_code == 403
    assert w.client.get("/api/projects/nope/next", headers=alice).status_code == 403
    for path in ("/status", "/export"):
        assert w.client.get(f"/api/projects/p{path}", headers=alice).status_code == 403
        assert w.client.get(f"/api/projects/p{path}", headers=boss).status_code == 200
    assert w.client.get("/api/projects/other/status", headers=boss).status_code == 403
    assert w.count(Assignment) == 0  # nothing was served by the refused calls


def test_bad_answers_are_refused_and_write_nothing(ui_world):
    w = ui_world
    w.create()
    w.create("other")
    alice = w.token("p", "alice")
    eve = w.token("other", "eve")
    q = w.client.get("/api/projects/p/next", headers=alice).json()["query"]["query_id"]
    foreign = w.client.get("/api/projects/other/next", headers=eve).json()["query"]["query_id"]
    with w.sessions() as s:
        unseen = s.scalar(
            select(Query.id).where(Query.project_id == 1, Query.id != q).order_by(Query.id.desc())
        )
    url = "/api/projects/p/answers"
    cases = [
        ({"query_id": foreign, "choice": "left"}, 404),
        ({"query_id": 99999, "choice": "left"}, 404),
        ({"query_id": unseen, "choice": "left"}, 409),
        ({"query_id": q, "choice": "up"}, 422),
        ({"query_id": str(q), "choice": "left"}, 422),
        ({"query_id": q}, 422),
        ({"query_id": q, "choice": "left", "extra": 1}, 422),
        ({"query_id": -1, "choice": "left"}, 422),
        ([q, "left"], 422),
    ]
    for body, code in cases:
        r = w.client.post(url, headers=alice, json=body)
        assert r.status_code == code, (body, r.status_code, r.text)
        assert r.json()["detail"]
    r = w.client.post(
        url,
        headers=alice,
        content=b"{not json",
    )
    assert r.status_code == 422
    assert w.count(Answer) == 0
    assert (
        w.client.post(url, headers=alice, json={"query_id": q, "choice": "left"}).status_code == 200
    )
    # a second answer to the same query: 409, the first one kept, idempotent on repeats
    for _ in range(2):
        r = w.client.post(url, headers=alice, json={"query_id": q, "choice": "right"})
        assert r.status_code == 409 and "already" in r.json()["detail"]
    with w.sessions() as s:
        assert [(a.prefer_b, a.swapped) for a in s.scalars(select(Answer))] in (
            [(0.0, False)],
            [(1.0, True)],
        )


# ---- export --------------------------------------------------------------------------------
def answer_all(w: UiWorld, head: dict[str, str], project: str, pick) -> int:
    n = 0
    while (r := w.client.get(f"/api/projects/{project}/next", headers=head).json())[
        "state"
    ] == "ready":
        q = r["query"]
        choice = pick(q)
        res = w.client.post(
            f"/api/projects/{project}/answers",
            headers=head,
            json={"query_id": q["query_id"], "choice": choice},
        )
        assert res.status_code == 200, res.text
        n += 1
    return n


def better(q: dict) -> str:
    """The rational answer on the tiny dataset: later episodes earn more per step."""
    a, b = q["left"]["episode"], q["right"]["episode"]
    return "equal" if a == b else ("right" if b > a else "left")


def test_export_keeps_every_annotator_and_aggregates(ui_world, tmp_path):
    w = ui_world
    w.create(queries=5, per_query=3, gold=2)
    heads = {n: w.token("p", n) for n in ("ann", "bob", "cat")}
    answer_all(w, heads["ann"], "p", better)
    answer_all(w, heads["bob"], "p", better)
    flip = {"left": "right", "right": "left", "equal": "equal"}
    answer_all(w, heads["cat"], "p", lambda q: flip[better(q)])
    data = export_preferences(w.sessions, "p", "none")
    assert data.num_queries == 15
    assert sorted({f.labeler for f in data.feedback}) == ["human:ann", "human:bob", "human:cat"]
    assert all(f.latency_s is not None and f.latency_s >= 0 for f in data.feedback)
    path = tmp_path / "out.npz"
    save_preferences(data, path)
    back = load_preferences(path)
    check_prefs_dataset(back, w.ds, where=str(path))
    assert len(back.meta["gold_queries"]) == 2
    # the file is what learners read
    batch = back.to_batch(w.ds)
    assert batch.size == back.num_answered
    # aggregation: the two rational annotators outvote the contrarian one
    for how in ("majority", "reliability"):
        agg = export_preferences(w.sessions, "p", how)
        assert agg.num_queries == 5
        truth = np.array(
            [
                {"left": 0.0, "right": 1.0, "equal": 0.5}[
                    better({"left": {"episode": f.a.episode}, "right": {"episode": f.b.episode}})
                ]
                for f in agg.feedback
            ]
        )
        np.testing.assert_allclose(agg.prefer_b, truth, atol=0.05)
    bob = export_preferences(w.sessions, "p", "none", annotator="bob")
    assert bob.num_queries == 5 and {f.labeler for f in bob.feedback} == {"human:bob"}
    with pytest.raises(UiError, match="no annotator 'zed'"):
        export_preferences(w.sessions, "p", "none", annotator="zed")
    st = w.client.get("/api/projects/p/status", headers=w.token("p", "own", owner=True)).json()
    assert st["annotators"]["ann"]["gold_accuracy"] == 1.0
    assert (
        st["annotators"]["cat"]["gold_accuracy"] in (0.0, None)
        or st["annotators"]["cat"]["gold_accuracy"] < 1
    )
    assert st["agreement"]["pairs"] == 15


def test_training_loop_posts_queries_and_reads_answers(ui_world):
    w = ui_world
    w.create(queries=1)
    alice = w.token("p", "alice")
    ids = post_queries(
        w.sessions, "p", np.array([[0, 0, 8], [1, 0, 8]]), np.array([[2, 0, 8], [3, 0, 8]])
    )
    render_pending(w.sessions, w.cache, renderer=fake_renderer)
    answer_all(w, alice, "p", better)
    got = query_answers(w.sessions, "p", ids)
    assert got == {ids[0]: [("alice", 1.0)], ids[1]: [("alice", 1.0)]}
    with pytest.raises(Exception, match="refs_a"):
        post_queries(w.sessions, "p", np.array([[0, 35, 8]]), np.array([[1, 0, 8]]))
    boss = w.token("p", "boss", owner=True)
    r = w.client.post(
        "/api/projects/p/queries", headers=boss, json={"refs_a": [[0, 0, 8]], "refs_b": [[1, 1, 8]]}
    )
    assert r.status_code == 200 and len(r.json()["query_ids"]) == 1
    r = w.client.post(
        "/api/projects/p/queries",
        headers=alice,
        json={"refs_a": [[0, 0, 8]], "refs_b": [[1, 1, 8]]},
    )
    assert r.status_code == 403


# ---- ranking -------------------------------------------------------------------------------
def test_insertion_replay_sorts_with_about_log2_comparisons():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 16, 33):
        value = rng.permutation(n)
        order = list(range(n))
        steps: list = []
        while True:
            groups, nxt, used = insertion_replay(order, steps)
            assert used == len(steps)
            if nxt is None:
                break
            new, pivot = nxt
            steps.append((new, pivot, 1.0 if value[pivot] > value[new] else 0.0))
        assert [g[0] for g in groups] == list(np.argsort(value))
        assert len(steps) <= sum(int(np.ceil(np.log2(k + 1))) for k in range(1, n))
    # ties join the pivot's group; a skip drops the segment
    groups, nxt, _ = insertion_replay([7, 8, 9], [(8, 7, 0.5), (9, 7, None)])
    assert groups == [[7, 8]] and nxt is None
    with pytest.raises(ValueError):
        insertion_replay([1, 2], [(2, 3, 1.0)])


def test_rank_mode_places_four_segments_and_exports_derived_pairs(ui_world):
    w = ui_world
    w.create("r", queries=4, mode="rank")
    alice = w.token("r", "alice")
    n = answer_all(w, alice, "r", better)
    assert 3 <= n <= 5
    done = w.client.get("/api/projects/r/next", headers=alice).json()
    assert done["state"] == "done"
    data = export_preferences(w.sessions, "r", "none")
    ranking = data.meta["rankings"]["alice"]
    flat = [seg for group in ranking for seg in group]
    assert len(flat) == 4
    episodes = [seg[0] for seg in flat]
    assert episodes == sorted(episodes)
    assert data.num_queries == 6 and all(data.meta["derived"])
    assert data.meta["comparisons"] == n
    # undo reopens the last comparison
    r = w.client.post("/api/projects/r/undo", headers=alice).json()
    assert r["next"]["state"] == "ready"


def test_rank_mode_with_hidden_gold_pairs(ui_world):
    """--gold in rank mode: G oracle-labelled pairs of their own, spread over the ranking's
    comparisons and shown to every annotator like compare pairs; they never enter a ranking,
    give each annotator's gold accuracy, and are exported as asked beside the derived pairs."""
    w = ui_world
    w.create("r", queries=6, mode="rank", gold=2)
    heads = {n: w.token("r", n) for n in ("alice", "bob")}
    with w.sessions() as s:
        gold = {q.id: q for q in s.scalars(select(Query).where(Query.gold))}
        gold_segs = {sid for q in gold.values() for sid in (q.seg_a, q.seg_b)}
    assert len(gold) == 2
    seen: dict[str, list[int]] = defaultdict(list)
    position: dict[str, list[int]] = defaultdict(list)
    flip = {"left": "right", "right": "left", "equal": "equal"}

    def wrong(q: dict) -> str:
        return flip[better(q)]

    for name, head in heads.items():
        pick = better if name == "alice" else wrong
        n = 0
        while (r := w.client.get("/api/projects/r/next", headers=head).json())["state"] == "ready":
            q = r["query"]
            if q["query_id"] in gold:
                seen[name].append(q["query_id"])
                position[name].append(n)
                assert not {q["left"]["id"], q["right"]["id"]} - gold_segs
            else:  # a rank comparison never shows a gold pair's segment
                assert not {q["left"]["id"], q["right"]["id"]} & gold_segs
            res = w.client.post(
                "/api/projects/r/answers",
                headers=head,
                json={"query_id": q["query_id"], "choice": pick(q)},
            )
            assert res.status_code == 200, res.text
            n += 1
        assert sorted(seen[name]) == sorted(gold)  # every gold pair, once each
        assert r["progress"]["placed"] == r["progress"]["total"] == 6
        # spread over the ranking, not all at its start
        assert position[name][0] > 0
    st = project_status(w.sessions, "r")
    assert st["annotators"]["alice"]["gold"] == 2
    assert st["annotators"]["alice"]["gold_accuracy"] == 1.0
    assert st["annotators"]["bob"]["gold_accuracy"] == 0.0
    data = export_preferences(w.sessions, "r", "none")
    asked = [f for f, d in zip(data.feedback, data.meta["derived"], strict=True) if not d]
    assert len(asked) == 4 and {f.query_id for f in asked} == set(data.meta["gold_queries"])
    assert data.num_queries == 4 + 2 * 15  # two rankings of 6: 15 implied pairs each
    for name in heads:
        assert len([seg for g in data.meta["rankings"][name] for seg in g]) == 6
    # one person's export: their ranking and their gold answers only
    alone = export_preferences(w.sessions, "r", "none", annotator="bob")
    assert set(alone.meta["rankings"]) == {"bob"} and alone.num_queries == 2 + 15
    # undo of a gold answer shows the same gold pair again, on the same sides
    assert position["bob"][-1] == n - 1  # bob's last answer was a gold pair's
    last = w.client.post("/api/projects/r/undo", headers=heads["bob"]).json()
    assert last["undone"] == seen["bob"][-1]
    assert last["next"]["query"]["query_id"] == seen["bob"][-1]


def test_owner_creates_a_project_and_invites_from_the_web(ui_world, monkeypatch):
    import pbrl.ui.web as web

    w = ui_world
    w.create()
    boss = w.token("p", "boss", owner=True)
    alice = w.token("p", "alice")
    # the tiny dataset names no task, so nothing could render it: accept it for this test
    monkeypatch.setattr(web, "check_renderable", lambda ds: None)
    body = {"dataset": DATASET, "name": "web", "queries": 3, "segment": 8, "size": 32}
    assert w.client.post("/api/projects", json=body).status_code == 401
    assert w.client.post("/api/projects", headers=alice, json=body).status_code == 403
    for bad in ({"queries": 0}, {"segment": 999}, {"selector": "best"}, {"name": "../x"}, {"x": 1}):
        r = w.client.post("/api/projects", headers=boss, json={**body, **bad})
        assert r.status_code == 422, (bad, r.text)
    r = w.client.post("/api/projects", headers=boss, json=body)
    assert r.status_code == 200, r.text
    owner = {"Authorization": f"Bearer {r.json()['owner_token']}"}
    assert w.client.post("/api/projects", headers=boss, json=body).status_code == 422  # exists
    st = w.client.get("/api/projects/web/status", headers=owner).json()
    assert st["queries"] == 3 and st["annotators"]["boss"]["owner"]
    r = w.client.post("/api/projects/web/tokens", headers=owner, json={"name": "zoe"})
    assert r.status_code == 200
    zoe = {"Authorization": f"Bearer {r.json()['token']}"}
    assert w.client.get("/api/projects/web/me", headers=zoe).json()["name"] == "zoe"
    assert (
        w.client.post("/api/projects/web/tokens", headers=owner, json={"name": "zoe"}).status_code
        == 409
    )
    assert (
        w.client.post("/api/projects/web/tokens", headers=zoe, json={"name": "x"}).status_code
        == 403
    )
    assert (
        w.client.post("/api/projects/web/tokens", headers=owner, json={"name": "a b"}).status_code
        == 422
    )


def test_one_annotators_export_fits_a_simulated_teacher(ui_world, tmp_path):
    from pbrl.cli import main

    w = ui_world
    w.create(queries=20)
    alice = w.token("p", "alice")
    assert answer_all(w, alice, "p", better) == 20
    data = export_preferences(w.sessions, "p", "none", annotator="alice")
    path = tmp_path / "alice.npz"
    save_preferences(data, path)
    out = tmp_path / "alice-teacher.json"
    code = 0
    try:
        main(["oracles", "fit", str(path), "-o", str(out)])
    except SystemExit as e:
        code = int(e.code or 0)
    assert code == 0 and out.is_file()


def test_without_the_ui_extra_every_command_says_so(monkeypatch, capsys):
    import sys

    from pbrl.cli import main

    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed
    for argv in (["status", "x"], ["token", "add", "p", "a"], ["serve"], ["project", "list"]):
        with pytest.raises(SystemExit) as e:
            main(["ui", *argv])
        assert e.value.code == 2
        assert "needs the 'ui' extra" in capsys.readouterr().err


@pytest.mark.parametrize("task_id", ["mujoco/hopper", "dmc/walker-walk"])
def test_mujoco_and_dmc_segments_render_from_stored_state(task_id, tmp_path):
    """The renderer the worker uses, on the physics state of a few real steps, then the MP4
    encoder (MetaWorld's segments are rendered in tests/test_ui_cli.py)."""
    import imageio_ffmpeg

    from pbrl.envs.base import get_task, physics_state
    from pbrl.ui.video import encode_mp4, task_renderer

    env = get_task(task_id).make(seed=0)
    env.reset(seed=0)
    qpos, qvel, obs, act = [], [], [], []
    for _ in range(6):
        q, v = physics_state(env)
        qpos.append(q)
        qvel.append(v)
        a = env.action_space.sample()
        o, *_ = env.step(a)
        obs.append(o)
        act.append(a)
    env.close()
    n = len(obs)
    ds = OfflineDataset(
        id="test/render-v0",
        task_id=task_id,
        observations=np.asarray(obs, np.float32),
        actions=np.asarray(act, np.float32),
        rewards=np.zeros(n, np.float32),
        next_observations=np.asarray(obs, np.float32),
        terminals=np.zeros(n, bool),
        timeouts=np.zeros(n, bool),
        starts=np.array([0]),
        lengths=np.array([n]),
        qpos=np.asarray(qpos),
        qvel=np.asarray(qvel),
    )
    frames = task_renderer(ds, 0, 1, 4, 48, 48)
    assert frames.shape == (4, 48, 48, 3) and frames.dtype == np.uint8 and frames.std() > 0
    path = tmp_path / "s.mp4"
    encode_mp4(frames, path, 10)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    assert meta["size"] == (48, 48) and sum(1 for _ in reader) == 4


# ---- left/right randomisation --------------------------------------------------------------
def test_answer_prefer_b_maps_the_side_pressed_back_to_a_and_b():
    assert [answer_prefer_b(c, False) for c in CHOICES] == [0.0, 1.0, 0.5, None]
    assert [answer_prefer_b(c, True) for c in CHOICES] == [1.0, 0.0, 0.5, None]


def test_sides_are_random_per_query_and_annotator_and_answers_map_back(ui_world):
    w = ui_world
    w.create(queries=40, per_query=2)
    heads = {n: w.token("p", n) for n in ("ann", "bob")}
    shown: dict[tuple[str, int], dict] = {}
    for name, h in heads.items():  # a lazy annotator: always "left"

        def left(q: dict, name: str = name) -> str:
            shown[(name, q["query_id"])] = q
            return "left"

        assert answer_all(w, h, "p", left) == 40
    with w.sessions() as s:
        rows = s.execute(
            select(Answer, Query, Token.name)
            .join(Query, Query.id == Answer.query_id)
            .join(Token, Token.id == Answer.annotator_id)
        ).all()
        seed = s.scalar(select(Project.seed))
    assert len(rows) == 80
    for ans, q, name in rows:
        page = shown[(name, q.id)]
        # what was on the left is what the answer prefers, in the query's a/b order
        left_is_b = page["left"]["id"] == q.seg_b
        assert page["right"]["id"] == (q.seg_a if left_is_b else q.seg_b)
        assert ans.swapped == left_is_b == shown_swapped(seed, q.id, ans.annotator_id)
        assert ans.prefer_b == (1.0 if left_is_b else 0.0)
    # always "left" comes out as a about half the time and b the other half (80 fair coins
    # drawn from seed 0: a fixed draw, inside 4 standard deviations of 40)
    n_b = sum(ans.prefer_b == 1.0 for ans, _, _ in rows)
    assert 20 <= n_b <= 60, n_b
    # the side is drawn per (query, annotator): the two annotators differ on some queries
    by_q: dict[int, set[bool]] = defaultdict(set)
    for ans, q, _ in rows:
        by_q[q.id].add(ans.swapped)
    assert any(len(v) == 2 for v in by_q.values())
    # the export is in the query's a/b order: a known swapped answer prefers b
    ans, q, name = next(r for r in rows if r[0].swapped)
    data = export_preferences(w.sessions, "p", "none", annotator=name)
    f = next(f for f in data.feedback if f.query_id == f"p/{q.id}")
    with w.sessions() as s:
        seg_a, seg_b = s.get(SegmentRow, q.seg_a), s.get(SegmentRow, q.seg_b)
    assert (f.a.episode, f.a.start) == (seg_a.episode, seg_a.start)
    assert (f.b.episode, f.b.start) == (seg_b.episode, seg_b.start)
    assert f.prefer_b == 1.0


def test_upcoming_pair_is_shown_on_the_sides_it_announced(ui_world):
    w = ui_world
    w.create(queries=6)
    alice = w.token("p", "alice")
    r = w.client.get("/api/projects/p/next", headers=alice).json()
    for _ in range(4):
        up = r["upcoming"]
        res = w.client.post(
            "/api/projects/p/answers",
            headers=alice,
            json={"query_id": r["query"]["query_id"], "choice": "right"},
        ).json()
        r = res["next"]
        assert r["query"] == up


# ---- token revocation ----------------------------------------------------------------------
def test_revoked_tokens_get_401_and_their_answers_stay(ui_world):
    w = ui_world
    w.create(queries=4, per_query=2)
    own = w.token("p", "own", owner=True)
    heads = {n: w.token("p", n) for n in ("ann", "bob")}
    for h in heads.values():
        r = w.client.get("/api/projects/p/next", headers=h).json()
        res = w.client.post(
            "/api/projects/p/answers",
            headers=h,
            json={"query_id": r["query"]["query_id"], "choice": "left"},
        )
        assert res.status_code == 200
    # through the server: refused at once, although the token was verified a moment ago
    assert w.client.delete("/api/projects/p/tokens/ann", headers=heads["bob"]).status_code == 403
    assert w.client.delete("/api/projects/p/tokens/zed", headers=own).status_code == 404
    assert w.client.delete("/api/projects/p/tokens/ann", headers=own).status_code == 200
    assert w.client.delete("/api/projects/p/tokens/ann", headers=own).status_code == 409
    for path in ("next", "me"):
        r = w.client.get(f"/api/projects/p/{path}", headers=heads["ann"])
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
    r = w.client.post("/api/projects/p/undo", headers=heads["ann"])
    assert r.status_code == 401
    # from another process (the CLI): seen once the server's short cache expires
    assert w.client.get("/api/projects/p/next", headers=heads["bob"]).status_code == 200
    revoke_token(w.sessions, "p", "bob")
    w.client.app.state.auth_ttl_s = 0.0  # as if AUTH_TTL_S had passed
    w.client.app.state.auth_cache.clear()
    assert w.client.get("/api/projects/p/next", headers=heads["bob"]).status_code == 401
    with pytest.raises(UiError, match="revoked"):
        authenticate(w.sessions, heads["bob"]["Authorization"].split()[1], "p")
    # their answers stay, in the export and on the dashboard
    data = export_preferences(w.sessions, "p", "none")
    assert sorted(f.labeler for f in data.feedback) == ["human:ann", "human:bob"]
    st = w.client.get("/api/projects/p/status", headers=own).json()
    assert st["annotators"]["ann"]["revoked"] and st["annotators"]["ann"]["answers"] == 1
    assert not st["annotators"]["own"]["revoked"]
    with pytest.raises(UiError) as e:
        revoke_token(w.sessions, "p", "nobody")
    assert e.value.status == 404


# ---- abandoned pairs -----------------------------------------------------------------------
def test_pairs_left_unanswered_go_back_to_the_queue(ui_world, monkeypatch):
    import pbrl.ui.service as service

    monkeypatch.setattr(service, "RELEASE_EVERY_S", 0.0)
    w = ui_world
    w.create(queries=1, per_query=1)
    ann, bob = w.token("p", "ann"), w.token("p", "bob")
    nxt, post = "/api/projects/p/next", "/api/projects/p/answers"

    def backdate(seconds: float) -> None:
        with w.sessions() as s, s.begin():
            s.execute(text("UPDATE assignments SET shown_at = shown_at - :d"), {"d": seconds})

    def release(cutoff: float) -> int:
        with w.sessions() as s, s.begin():
            return service.release_abandoned(s.connection(), 1, cutoff)

    q = w.client.get(nxt, headers=ann).json()["query"]["query_id"]
    assert w.client.get(nxt, headers=bob).json()["state"] == "done"  # the one slot is ann's
    assert release(time.time() - 60) == 0  # shown a moment ago: kept
    # half an hour later (the app's default, web.RELEASE_AFTER_S) the slot goes back
    backdate(1801)
    r = w.client.get(nxt, headers=bob).json()
    assert r["state"] == "ready" and r["query"]["query_id"] == q
    with w.sessions() as s:
        assert s.get(Query, q).shown == 1
        holders = select(Token.name).join(Assignment, Assignment.annotator_id == Token.id)
        assert s.scalars(holders).all() == ["bob"]
    # ann answering the released pair: 409, nothing written, the page moves on
    r = w.client.post(post, headers=ann, json={"query_id": q, "choice": "left"})
    assert r.status_code == 409 and "released" in r.json()["detail"]
    assert w.count(Answer) == 0
    assert w.client.get(nxt, headers=ann).json()["state"] == "done"
    assert (
        w.client.post(post, headers=bob, json={"query_id": q, "choice": "left"}).status_code == 200
    )
    # answered pairs and gold pairs are never released
    backdate(3600)
    assert release(time.time()) == 0
    w.create("g", queries=1, gold=1)
    assert w.client.get("/api/projects/g/next", headers=w.token("g", "gil")).json()["query"]
    backdate(3600)
    with w.sessions() as s, s.begin():
        assert service.release_abandoned(s.connection(), 2, time.time()) == 0
    # revoking a token gives that person's unanswered pairs back at once
    w.create("r", queries=1, per_query=1)
    rex, rui = w.token("r", "rex"), w.token("r", "rui")
    q = w.client.get("/api/projects/r/next", headers=rex).json()["query"]["query_id"]
    assert w.client.get("/api/projects/r/next", headers=rui).json()["state"] == "done"
    revoke_token(w.sessions, "r", "rex")
    assert w.client.get("/api/projects/r/next", headers=rui).json()["query"]["query_id"] == q


def _hold_commit(engine: object, thread_name: str) -> tuple[object, object, object]:
    """Make the transaction of the thread called ``thread_name`` stop just before its COMMIT:
    returns (reached, go, hook): ``reached`` is set when it stops, ``go`` lets it commit."""
    import threading

    from sqlalchemy import event

    reached, go = threading.Event(), threading.Event()

    def hook(_conn: object) -> None:
        if threading.current_thread().name == thread_name:
            reached.set()
            go.wait(20)

    event.listen(engine, "commit", hook)
    return reached, go, hook


@pytest.mark.parametrize("first", ["answer", "release"])
def test_an_answer_and_a_release_of_the_same_pair_never_both_land(ui_world, first):
    """An answer and a release of the same abandoned pair at the same moment: whichever
    transaction comes first wins and the other sees it. The answer first: the release waits
    for its lock, then leaves the answered pair alone. The release first: the answer is
    refused (409) and nothing is written. Either way the query never gets more answers than
    annotators asked for (on PostgreSQL, before migration 0004, both landed)."""
    import threading

    from sqlalchemy import event

    import pbrl.ui.service as service

    w = ui_world
    w.create(queries=1, per_query=1)
    ann = w.token("p", "ann")
    who = authenticate(w.sessions, ann["Authorization"].split()[1], "p")
    q = w.client.get("/api/projects/p/next", headers=ann).json()["query"]["query_id"]
    engine = w.sessions.kw["bind"]  # type: ignore[attr-defined]
    reached, go, hook = _hold_commit(engine, first)
    out: dict[str, object] = {}

    def answer() -> None:
        try:
            submit_answer(w.sessions, who, q, "left")
            out["answer"] = 200
        except UiError as e:
            out["answer"] = e.status

    def release() -> None:
        with engine.begin() as conn:  # type: ignore[attr-defined]
            out["release"] = service.release_abandoned(conn, 1, time.time() + 60)

    jobs = {"answer": answer, "release": release}
    second = "release" if first == "answer" else "answer"
    try:
        a = threading.Thread(target=jobs[first], name=first)
        a.start()
        assert reached.wait(20)  # the first one has written and is about to commit
        b = threading.Thread(target=jobs[second], name=second)
        b.start()
        b.join(0.5)  # the second one runs into the first one's lock meanwhile
        go.set()
        a.join(20)
        b.join(20)
    finally:
        go.set()
        event.remove(engine, "commit", hook)
    with w.sessions() as s:
        n_answers = s.scalar(select(func.count()).select_from(Answer))
        shown = s.get(Query, q).shown
        holders = s.scalar(select(func.count()).select_from(Assignment))
    if first == "answer":
        assert out == {"answer": 200, "release": 0}
        assert (n_answers, shown, holders) == (1, 1, 1)
    else:
        assert out == {"release": 1, "answer": 409}
        assert (n_answers, shown, holders) == (0, 0, 0)


def test_a_loop_posts_pairs_of_its_own_data_to_an_empty_project(ui_world):
    """--queries 0 makes an empty compare project; a training loop posts pairs of its own
    dataset (stored where load_dataset finds it), whose segments render from that dataset,
    are answered and read back by the loop; export refuses a project of several datasets."""
    w = ui_world
    w.create(queries=0)
    own = write_tiny_dataset(episodes=4, steps=20, seed=3, dataset_id="pbrl/test/loop-v0")
    ids = post_queries(
        w.sessions, "p", np.array([[0, 0, 8], [2, 5, 8]]), np.array([[1, 0, 8], [3, 5, 8]]),
        dataset=own,
    )  # fmt: skip
    with w.sessions() as s:
        segs = s.scalars(select(SegmentRow).order_by(SegmentRow.id)).all()
        assert [g.dataset for g in segs] == [own.path or own.id] * 4
    seen: list[tuple[str, int]] = []

    def renderer(ds, episode, start, length, width, height):
        seen.append((ds.id, episode))
        return fake_renderer(ds, episode, start, length, width, height)

    render_pending(w.sessions, w.cache, renderer=renderer)
    assert {d for d, _ in seen} == {"pbrl/test/loop-v0"}
    alice = w.token("p", "alice")
    assert answer_all(w, alice, "p", better) == 2
    assert query_answers(w.sessions, "p", ids) == {
        ids[0]: [("alice", 1.0)],
        ids[1]: [("alice", 1.0)],
    }
    with pytest.raises(PbrlError, match="training loop"):
        export_preferences(w.sessions, "p", "none")
    # refs outside that dataset, a dataset without physics state or of another task: 422
    with pytest.raises(UiError, match="refs_a") as e:
        post_queries(w.sessions, "p", np.array([[0, 15, 8]]), np.array([[1, 0, 8]]), dataset=own)
    assert e.value.status == 422
    bare = dataclasses.replace(own, qpos=None, qvel=None)
    with pytest.raises(UiError, match="physics state"):
        post_queries(w.sessions, "p", np.array([[0, 0, 8]]), np.array([[1, 0, 8]]), dataset=bare)
    other = dataclasses.replace(own, task_id="mujoco/hopper")
    with pytest.raises(UiError, match="task"):
        post_queries(w.sessions, "p", np.array([[0, 0, 8]]), np.array([[1, 0, 8]]), dataset=other)
    with w.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Query)) == 2  # nothing more written
