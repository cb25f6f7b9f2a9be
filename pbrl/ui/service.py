"""What the labeling UI does, independent of HTTP: projects, tokens, the query queue, answers,
undo, ranking by binary insertion, status and export. The web app (:mod:`pbrl.ui.web`) and
the CLI (``pbrl ui ...``) both call these functions with a SQLAlchemy session factory.

Errors a person can cause are :class:`UiError` with an HTTP status (404 unknown, 403 not
yours, 409 conflict such as a second answer) and a one-line message; the web app returns them
as JSON, the CLI prints them as ``error: ...``. Nothing is written when one is raised.

The queue: a project's ``queries`` rows, served in id order to annotators who have not seen
them, until each has ``per_query`` assignments (gold queries go to everyone). A training loop
posts its own pairs to the same table (:func:`post_queries`) and reads their answers
(:func:`query_answers`); nothing in it waits on the web server.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pbrl.datasets.base import OfflineDataset
from pbrl.datasets.registry import load_dataset
from pbrl.envs.base import find_task
from pbrl.errors import DataError, PbrlError
from pbrl.prefs.data import PreferenceData
from pbrl.prefs.io import dataset_fingerprint
from pbrl.prefs.select import SELECTORS, check_selector, select_queries
from pbrl.teachers import make_teacher
from pbrl.teachers.pairs import SegmentPairs
from pbrl.types import Feedback, SegmentRef
from pbrl.ui.crowd import (
    PREFER_B,
    category,
    dawid_skene,
    fleiss_kappa,
    krippendorff_alpha,
    majority,
    pairwise_agreement,
    reliability,
    soft_prefer_b,
)
from pbrl.ui.db import Answer, Assignment, Project, Query, SegmentRow, Token, UndoneAnswer
from pbrl.utils import check_seed

MODES = ("compare", "rank")
AGGREGATES = ("none", "majority", "reliability")
# answer -> prefer_b (None: skipped); the left video is segment a, the right one segment b
CHOICES: dict[str, float | None] = {"left": 0.0, "right": 1.0, "equal": 0.5, "skip": None}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# Candidates looked at per request when the first ones' videos are still rendering.
_CANDIDATES = 4
# Rounds of candidates tried before answering 'rendering' when concurrent requests fill them.
_CLAIM_ROUNDS = 20
MAX_SIDE = 1024


class UiError(PbrlError):
    """A request the UI refuses: ``status`` is the HTTP status, the message one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise PbrlError(
            f"{what}: {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a "
            "letter or digit"
        )
    return name


@dataclass(frozen=True)
class ProjectOptions:
    """Everything ``pbrl ui project create`` takes besides the dataset."""

    name: str
    queries: int
    segment: int
    mode: str = "compare"
    selector: str = "uniform"
    per_query: int = 1
    gold: int = 0
    seed: int = 0
    fps: int = 25
    width: int = 256
    height: int = 256
    instruction: str = ""

    def check(self) -> None:
        """Every option, before any data is loaded; PbrlError naming the option."""
        check_name(self.name, "project name")
        if self.mode not in MODES:
            raise PbrlError(f"--mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if self.selector not in SELECTORS:
            raise PbrlError(f"--selector: {self.selector!r} is not one of {', '.join(SELECTORS)}")
        for flag, v, lo in (
            # 0: an empty compare project that a training loop posts its queries to
            ("--queries", self.queries, 2 if self.mode == "rank" else 0),
            ("--segment", self.segment, 1),
            ("--annotators-per-query", self.per_query, 1),
            ("--fps", self.fps, 1),
            ("--width", self.width, 16),
            ("--height", self.height, 16),
        ):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise PbrlError(f"{flag}: must be a whole number >= {lo}, got {v!r}")
        if self.width > MAX_SIDE or self.height > MAX_SIDE:
            raise PbrlError(f"--width/--height: at most {MAX_SIDE} pixels")
        if isinstance(self.gold, bool) or not isinstance(self.gold, int) or self.gold < 0:
            raise PbrlError(f"--gold: must be a whole number >= 0, got {self.gold!r}")
        if self.gold > self.queries:
            raise PbrlError(f"--gold: {self.gold} gold queries exceed --queries {self.queries}")
        if self.mode == "rank" and self.selector != "uniform":
            # LiRE ranks uniformly drawn segments; selectors choose pairs, not list entries
            raise PbrlError("--mode rank: takes only --selector uniform")
        check_seed(self.seed)


# ---- datasets ------------------------------------------------------------------------------
_DATASETS: dict[tuple[str, str], OfflineDataset] = {}


def project_dataset(project: Project) -> OfflineDataset:
    """The project's dataset, loaded once per process and checked against its fingerprint."""
    key = (project.dataset_path or project.dataset, project.fingerprint)
    ds = _DATASETS.get(key)
    if ds is None:
        ds = load_dataset(project.dataset_path or project.dataset)
        if dataset_fingerprint(ds) != project.fingerprint:
            raise DataError(
                f"{project.dataset_path or project.dataset}: dataset has changed since project "
                f"'{project.name}' was created (content fingerprint differs)"
            )
        _DATASETS[key] = ds
    return ds


def segment_dataset(project: Project, seg: SegmentRow) -> OfflineDataset:
    """The dataset ``seg``'s (episode, start) refer to: the project's, or the one a training
    loop posted it from (``segments.dataset``), loaded once per process."""
    if seg.dataset is None:
        return project_dataset(project)
    key = (seg.dataset, "")
    ds = _DATASETS.get(key)
    if ds is None:
        ds = load_dataset(seg.dataset)
        _DATASETS[key] = ds
    return ds


def check_renderable(ds: OfflineDataset) -> None:
    """The dataset stores physics state, and its task can render it."""
    if ds.qpos is None or ds.qvel is None:
        raise DataError(
            f"{ds.path or ds.id}: stores no physics state (qpos/qvel); the UI renders videos "
            "from it (D4RL files need infos/qpos and infos/qvel)"
        )
    task = find_task(ds.task_id)
    if task is None or task.render is None:
        raise DataError(f"{ds.path or ds.id}: task {ds.task_id!r} has no renderer")


def check_project_dataset(ds: OfflineDataset, opts: ProjectOptions) -> None:
    """What ``opts`` asks of ``ds``, before a database is touched: long enough episodes,
    rewards for gold queries."""
    longest = int(ds.lengths.max()) if ds.num_episodes else 0
    if longest < opts.segment:
        raise DataError(
            f"{ds.path or ds.id}: --segment {opts.segment} is longer than every episode "
            f"(longest: {longest} steps)"
        )
    if opts.gold and ds.rewards is None:
        raise DataError(f"{ds.path or ds.id}: --gold needs the dataset's rewards (the oracle)")


# ---- projects and tokens -------------------------------------------------------------------
def create_project(
    sessions: sessionmaker,
    ds: OfflineDataset,
    opts: ProjectOptions,
    *,
    dataset_arg: str,
) -> Project:
    """A new project on ``ds``: its segments and its first queries (gold ones labelled by the
    ``oracle`` teacher), in one transaction."""
    opts.check()
    check_project_dataset(ds, opts)
    if opts.selector not in ("uniform", "kcenter"):
        # The first round has no reward model yet: it is drawn uniformly; later rounds use
        # the ensemble (docs/ui.md, active queries).
        check_selector(opts.selector, has_ensemble=True)
    rng = np.random.default_rng(opts.seed)
    now = time.time()
    with sessions() as s, s.begin():
        if s.scalar(select(Project.id).where(Project.name == opts.name)) is not None:
            raise PbrlError(f"project name: a project named '{opts.name}' exists already")
        first = opts.selector if opts.selector in ("uniform", "kcenter") else "uniform"
        text = opts.instruction or default_instruction(ds, opts.mode)
        p = Project(
            name=opts.name,
            dataset=dataset_arg,
            dataset_id=ds.id,
            dataset_path=ds.path,
            task_id=ds.task_id,
            fingerprint=dataset_fingerprint(ds),
            mode=opts.mode,
            selector=opts.selector,
            segment=opts.segment,
            n_queries=opts.queries,
            per_query=opts.per_query,
            n_gold=opts.gold,
            seed=opts.seed,
            fps=opts.fps,
            width=opts.width,
            height=opts.height,
            instruction=text,
            created=now,
        )
        s.add(p)
        s.flush()
        if opts.mode == "rank":
            refs = select_queries(ds, (opts.queries + 1) // 2, opts.segment, rng)
            both = np.concatenate(refs)[: opts.queries]
            for e, st, ln in both.tolist():
                s.add(SegmentRow(project_id=p.id, episode=e, start=st, length=ln))
            if opts.gold:  # pairs of their own, never entries of anyone's ranking
                ra, rb = select_queries(ds, opts.gold, opts.segment, rng)
                gold = np.ones(opts.gold, dtype=bool)
                pb = gold_labels(ds, ra, rb, rng)
                add_queries(s, p.id, ra, rb, "initial", now, gold=gold, gold_prefer_b=pb)
        elif opts.queries:
            ra, rb = select_queries(ds, opts.queries, opts.segment, rng, selector=first)
            gold = np.zeros(opts.queries, dtype=bool)
            gold[rng.choice(opts.queries, size=opts.gold, replace=False)] = True
            gold_pb = gold_labels(ds, ra[gold], rb[gold], rng)
            add_queries(s, p.id, ra, rb, "initial", now, gold=gold, gold_prefer_b=gold_pb)
    return p


def default_instruction(ds: OfflineDataset, mode: str) -> str:
    task = ds.task_id or ds.id
    goal = task.split("/")[-1].rsplit("-v", 1)[0].replace("-", " ")
    if mode == "rank":
        return (
            f"Task: {goal}. Is the NEW clip (left) better or worse at the task than the right one?"
        )
    return f"Task: {goal}. Which clip makes more progress on the task?"


def gold_labels(
    ds: OfflineDataset, refs_a: np.ndarray, refs_b: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The ``oracle`` teacher's prefer_b for each pair (ties 0.5)."""
    if refs_a.shape[0] == 0:
        return np.zeros(0)
    teacher = make_teacher("oracle").prepare(ds, int(refs_a[0, 2]))
    pb, _ = teacher.label(SegmentPairs.from_dataset(ds, refs_a, refs_b, with_obs=False), rng)
    return np.asarray(pb, dtype=np.float64)


def add_queries(
    s: Session,
    project_id: int,
    refs_a: np.ndarray,
    refs_b: np.ndarray,
    origin: str,
    now: float,
    *,
    gold: np.ndarray | None = None,
    gold_prefer_b: np.ndarray | None = None,
    dataset: str | None = None,
) -> list[int]:
    ids = []
    gi = 0
    for i, (a, b) in enumerate(zip(refs_a.tolist(), refs_b.tolist(), strict=True)):
        sa = SegmentRow(
            project_id=project_id, episode=a[0], start=a[1], length=a[2], dataset=dataset
        )
        sb = SegmentRow(
            project_id=project_id, episode=b[0], start=b[1], length=b[2], dataset=dataset
        )
        s.add_all([sa, sb])
        s.flush()
        is_gold = bool(gold[i]) if gold is not None else False
        q = Query(
            project_id=project_id,
            seg_a=sa.id,
            seg_b=sb.id,
            gold=is_gold,
            gold_prefer_b=float(gold_prefer_b[gi]) if is_gold else None,  # type: ignore[index]
            origin=origin,
            created=now,
        )
        gi += int(is_gold)
        s.add(q)
        s.flush()
        ids.append(q.id)
    return ids


def get_project(s: Session, name: str) -> Project:
    p = s.scalar(select(Project).where(Project.name == name))
    if p is None:
        raise UiError(404, f"no project named '{name}'")
    return p


def add_token(sessions: sessionmaker, project: str, name: str, *, owner: bool = False) -> str:
    """A new secret token for ``name`` on ``project``; only its hash is stored."""
    check_name(name, "annotator name")
    secret = secrets.token_urlsafe(24)
    with sessions() as s, s.begin():
        p = get_project(s, project)
        if s.scalar(select(Token.id).where(Token.project_id == p.id, Token.name == name)):
            raise UiError(409, f"project '{project}' has a token for '{name}' already")
        s.add(
            Token(
                project_id=p.id,
                name=name,
                token_hash=hash_token(secret),
                owner=owner,
                created=time.time(),
            )
        )
    return secret


def revoke_token(sessions: sessionmaker, project: str, name: str) -> None:
    """Revoke ``name``'s token on ``project``: it opens nothing afterwards (401); the answers
    it gave stay, and count, in status and export. 404 unknown name, 409 revoked already."""
    with sessions() as s, s.begin():
        p = get_project(s, project)
        tok = s.scalar(select(Token).where(Token.project_id == p.id, Token.name == name))
        if tok is None:
            raise UiError(404, f"project '{project}' has no token for '{name}'")
        if tok.revoked_at is not None:
            raise UiError(409, f"the token of '{name}' on project '{project}' is revoked already")
        tok.revoked_at = time.time()
        # the pairs they were shown and had not answered go back to the queue now
        release_abandoned(s.connection(), p.id, np.inf, tok.id)


@dataclass(frozen=True)
class Annotator:
    id: int
    name: str
    project_id: int
    project: str
    owner: bool


def authenticate(sessions: sessionmaker, token: str | None, project: str | None) -> Annotator:
    """The annotator holding ``token`` on ``project``; 401 unknown token, 403 other project.

    ``project=None``: any project (the caller then checks what the token may do).
    """
    if not token:
        raise UiError(401, "missing token (Authorization: Bearer <token> or ?token=)")
    with _engine(sessions).connect() as conn:  # on most requests: plain SQL (see _PAIR)
        row = conn.execute(_SQL_TOKEN, {"h": hash_token(token)}).first()
    if row is None:
        raise UiError(401, "unknown token")
    tid, name, pid, pname, owner, revoked_at = row
    if revoked_at is not None:
        raise UiError(401, "this token was revoked")
    if project is not None and pname != project:
        raise UiError(403, f"this token is not invited to project '{project}'")
    return Annotator(int(tid), name, int(pid), pname, bool(owner))


_SQL_TOKEN = text(
    "SELECT t.id, t.name, t.project_id, p.name, t.owner, t.revoked_at FROM tokens t "
    "JOIN projects p ON p.id = t.project_id WHERE t.token_hash = :h"
)
_SQL_SEGMENT = text("SELECT project_id, video FROM segments WHERE id = :s")


def segment_state(sessions: sessionmaker, segment_id: int) -> tuple[int, str] | None:
    """``(project id, video state)`` of a segment, or None."""
    with _engine(sessions).connect() as conn:
        row = conn.execute(_SQL_SEGMENT, {"s": segment_id}).first()
    return None if row is None else (int(row[0]), str(row[1]))


# ---- serving queries -----------------------------------------------------------------------
def shown_swapped(seed: int, query_id: int, annotator_id: int) -> bool:
    """Whether ``annotator_id`` sees query ``query_id``'s segment b on the left: a fair coin
    from a generator seeded by (project seed, query, annotator), so the side is random across
    queries and annotators, and the same on every reload."""
    return bool(np.random.default_rng([seed, query_id, annotator_id]).integers(2))


def answer_prefer_b(choice: str, swapped: bool) -> float | None:
    """The answer to a pair shown ``swapped`` (b on the left) in the query's own a/b order."""
    pb = CHOICES[choice]
    return 1.0 - pb if (swapped and pb is not None) else pb


def _segment_json(seg: SegmentRow) -> dict[str, Any]:
    return {"id": seg.id, "episode": seg.episode, "start": seg.start, "length": seg.length}


def _hurry(*segments: SegmentRow) -> None:
    """Ask the render worker for these videos next (the caller's transaction writes it)."""
    for seg in segments:
        if seg.video == "pending":
            seg.priority = max(seg.priority, 10)


def _progress(s: Session, who: Annotator, project: Project) -> dict[str, Any]:
    """The rank page's progress (compare pairs: :func:`_pair_progress`)."""
    total = len(_rank_order(s, project))
    n, first, last = s.execute(
        select(
            func.count(Answer.id), func.min(Answer.shown_at), func.max(Answer.answered_at)
        ).where(Answer.project_id == project.id, Answer.annotator_id == who.id)
    ).one()
    out = _rate(int(n), first, last, int(total or 0))
    out["placed"] = sum(len(g) for g in _rank_replay(s, who, project)[0])
    return out


def _rate(n: int, first: float | None, last: float | None, total: int) -> dict[str, Any]:
    rate = n / (last - first) * 3600.0 if n >= 2 and last > first else None  # type: ignore[operator]
    return {"answered": n, "total": total, "rate_per_hour": rate}


# Project rows never change after creation: one read per database and process.
_PROJECTS: dict[tuple[str, int], Project] = {}


def _project(s: Session, project_id: int) -> Project:
    key = (str(s.get_bind().url), project_id)
    p = _PROJECTS.get(key)
    if p is None:
        p = s.get(Project, project_id)
        if p is None:
            raise UiError(404, f"project {project_id}: no such project")
        s.expunge(p)
        _PROJECTS[key] = p
    return p


def _engine(sessions: sessionmaker) -> Engine:
    return sessions.kw["bind"]


def _project_of(sessions: sessionmaker, project_id: int) -> Project:
    p = _PROJECTS.get((str(_engine(sessions).url), project_id))
    if p is None:
        with sessions() as s:
            p = _project(s, project_id)
    return p


def next_query(
    sessions: sessionmaker, who: Annotator, *, release_after_s: float | None = None
) -> dict[str, Any]:
    """The pair ``who`` should answer now.

    ``{"state": "ready", "query": ..., "upcoming": ...}`` (``upcoming`` the likely next pair,
    for the page to preload), ``"rendering"`` while its videos are not cached yet, or
    ``"done"``. The pair is recorded as shown (the answer's latency starts now) once, with the
    side each segment is shown on (:func:`shown_swapped`; rank comparisons always show the new
    segment on the left). ``release_after_s``: pairs shown that long ago and not answered give
    their slot back first (:func:`release_abandoned`).
    """
    project = _project_of(sessions, who.project_id)
    for _ in range(3):  # a race on the unique (query, annotator) assignment: look again
        try:
            if project.mode == "rank":
                with sessions() as s, s.begin():
                    return _next_rank(s, who, project, time.time())
            with _engine(sessions).begin() as conn:
                now = time.time()
                _maybe_release(conn, project, now, release_after_s)
                return _next_pair(conn, who, project, now)
        except IntegrityError:
            continue
    raise UiError(409, "could not assign a query (too many concurrent requests); retry")


# The compare queue's hot path (every answer and every page load) in plain SQL on a Core
# connection: building ORM statements and objects cost more CPU than the database did
# (bench/ui_load.py, docs/ui.md "Load"). Columns of a pair row: query id, then (id, episode,
# start, length, video) of segment a and of segment b.
_PAIR_COLUMNS = (
    "SELECT q.id, sa.id, sa.episode, sa.start, sa.length, sa.video, "
    "sb.id, sb.episode, sb.start, sb.length, sb.video"
)
_PAIR_FROM = (
    " FROM queries q JOIN segments sa ON sa.id = q.seg_a JOIN segments sb ON sb.id = q.seg_b "
)
_PAIR = _PAIR_COLUMNS + _PAIR_FROM
# shared queries that still need annotators and that ``who`` has not been shown
_WANTED = (
    "WHERE q.project_id = :p AND q.annotator_id IS NULL AND (q.gold OR q.shown < :k) "
    "AND NOT EXISTS (SELECT 1 FROM assignments g WHERE g.query_id = q.id "
    "AND g.annotator_id = :who) "
)
_SQL_READY = text(
    _PAIR + _WANTED + "AND sa.video = 'ready' AND sb.video = 'ready' "
    f"ORDER BY q.id LIMIT {_CANDIDATES}"
)
_SQL_WAITING = text(_PAIR + _WANTED + "ORDER BY q.id LIMIT 1")
# the pair shown to ``who`` and not answered yet (a reload shows it again), and its sides
_SQL_OPEN = text(
    _PAIR_COLUMNS + ", g.swapped" + _PAIR_FROM + "JOIN assignments g ON g.query_id = q.id "
    "WHERE g.annotator_id = :who AND g.answered_at IS NULL ORDER BY g.id LIMIT 1"
)
# One conditional UPDATE claims a slot: the database re-checks the condition on the locked
# row, so two requests at once never push a query past per_query (a read-then-write would).
_SQL_CLAIM = text("UPDATE queries SET shown = shown + 1 WHERE id = :q AND (gold OR shown < :k)")
_SQL_ASSIGN = text(
    "INSERT INTO assignments (project_id, query_id, annotator_id, shown_at, swapped) "
    "VALUES (:p, :q, :who, :now, :swapped)"
)
_SQL_HURRY = text(
    "UPDATE segments SET priority = 10 WHERE id IN (:a, :b) AND video = 'pending' AND priority < 10"
)
_SQL_PROGRESS = text(
    "SELECT count(*), min(shown_at), max(answered_at), (SELECT count(*) FROM queries "
    "WHERE project_id = :p AND annotator_id IS NULL) FROM answers "
    "WHERE project_id = :p AND annotator_id = :who"
)
_SQL_LOOKUP = text("SELECT project_id, annotator_id FROM queries WHERE id = :q")
# The answer closes its assignment with a conditional UPDATE: that row's lock orders it
# against a release of the same pair (_SQL_RELEASE), and no row back means the pair was
# not shown to ``who``, was released, or is answered already.
_SQL_CLOSE = text(
    "UPDATE assignments SET answered_at = :now WHERE query_id = :q AND annotator_id = :who "
    "AND answered_at IS NULL RETURNING shown_at, swapped"
)
_SQL_ANSWERED = text("SELECT 1 FROM answers WHERE query_id = :q AND annotator_id = :who")
_SQL_ANSWER = text(
    "INSERT INTO answers (project_id, query_id, annotator_id, prefer_b, skipped, swapped, "
    "shown_at, answered_at, latency_s) "
    "VALUES (:p, :q, :who, :pb, :skipped, :swapped, :shown, :now, :latency)"
)


# Abandoned pairs: a shared, non-gold pair shown and left unanswered gives its slot back.
# DELETE ... RETURNING first: on PostgreSQL a concurrent release of the same rows waits on
# their locks and then finds them gone, so a slot is never given back twice. "Unanswered" is
# the assignment row's own answered_at, which PostgreSQL re-checks on the row's newest
# version after waiting on its lock: an answer committed meanwhile keeps its pair (a test on
# answers, another table, would be read from the snapshot taken before the wait).
_SQL_RELEASE = text(
    "DELETE FROM assignments WHERE project_id = :p AND answered_at IS NULL "
    "AND shown_at < :cutoff AND (:who < 0 OR annotator_id = :who) "
    "AND query_id IN (SELECT id FROM queries WHERE project_id = :p "
    "AND annotator_id IS NULL AND NOT gold) RETURNING query_id"
)
_SQL_UNCLAIM = text("UPDATE queries SET shown = shown - :n WHERE id = :q AND shown >= :n")
# Seconds between two releases per project and process (they run inside a request).
RELEASE_EVERY_S = 10.0
_LAST_RELEASE: dict[tuple[str, int], float] = {}


def release_abandoned(
    conn: Connection, project_id: int, cutoff: float, annotator_id: int | None = None
) -> int:
    """Give back the slots of shared, non-gold pairs shown before ``cutoff`` (a time) and not
    answered (only ``annotator_id``'s, if given): their assignments are deleted and the
    queries' ``shown`` counts lowered, so the queue serves them to someone else. Gold and rank
    pairs are never released. Returns how many were released. The annotator who held one
    gets a 409 if they answer it later, and the next pair on their next request."""
    rows = conn.execute(
        _SQL_RELEASE,
        {"p": project_id, "cutoff": cutoff, "who": -1 if annotator_id is None else annotator_id},
    ).all()
    counts: dict[int, int] = defaultdict(int)
    for (qid,) in rows:
        counts[int(qid)] += 1
    for qid, n in counts.items():
        conn.execute(_SQL_UNCLAIM, {"q": qid, "n": n})
    return len(rows)


def _maybe_release(
    conn: Connection, project: Project, now: float, release_after_s: float | None
) -> None:
    """:func:`release_abandoned` for ``project``, at most every RELEASE_EVERY_S per process."""
    if release_after_s is None:
        return
    key = (str(conn.engine.url), project.id)
    if now - _LAST_RELEASE.get(key, -np.inf) < min(RELEASE_EVERY_S, release_after_s):
        return
    _LAST_RELEASE[key] = now
    release_abandoned(conn, project.id, now - release_after_s)


def _pair_progress(conn: Connection, who: Annotator, project: Project) -> dict[str, Any]:
    n, first, last, total = conn.execute(_SQL_PROGRESS, {"p": project.id, "who": who.id}).one()
    return _rate(int(n), first, last, int(total or 0))


def _pair_dict(row: Any, swapped: bool) -> dict[str, Any]:
    a = {"id": row[1], "episode": row[2], "start": row[3], "length": row[4]}
    b = {"id": row[6], "episode": row[7], "start": row[8], "length": row[9]}
    left, right = (b, a) if swapped else (a, b)
    return {"query_id": row[0], "left": left, "right": right}


def _waiting(conn: Connection, who: Annotator, project: Project, row: Any) -> dict[str, Any]:
    """Hurry the render worker on ``row``'s videos; the 'rendering' answer."""
    conn.execute(_SQL_HURRY, {"a": row[1], "b": row[6]})
    return {"state": "rendering", "progress": _pair_progress(conn, who, project)}


def _next_pair(conn: Connection, who: Annotator, project: Project, now: float) -> dict[str, Any]:
    args = {"p": project.id, "k": project.per_query, "who": who.id}
    row = conn.execute(_SQL_OPEN, {"who": who.id}).first()
    if row is not None:
        if row[5] != "ready" or row[10] != "ready":
            return _waiting(conn, who, project, row)
        ready = conn.execute(_SQL_READY, args).all()
        return _serve(conn, who, project, row, bool(row[11]), ready)
    ready = conn.execute(_SQL_READY, args).all()
    # Concurrent requests may fill every candidate first (PostgreSQL runs them in parallel):
    # then look again, the filled ones no longer qualify.
    for _ in range(_CLAIM_ROUNDS):
        for i, row in enumerate(ready):
            if conn.execute(_SQL_CLAIM, {"q": row[0], "k": project.per_query}).rowcount == 1:
                swapped = shown_swapped(project.seed, row[0], who.id)
                conn.execute(
                    _SQL_ASSIGN,
                    {"p": project.id, "q": row[0], "who": who.id, "now": now, "swapped": swapped},
                )
                return _serve(conn, who, project, row, swapped, ready[i + 1 :])
        if not ready:
            break
        ready = conn.execute(_SQL_READY, args).all()
    waiting = conn.execute(_SQL_WAITING, args).first()
    if waiting is not None:
        return _waiting(conn, who, project, waiting)
    return {"state": "done", "progress": _pair_progress(conn, who, project)}


def _serve(
    conn: Connection, who: Annotator, project: Project, row: Any, swapped: bool, rest: list[Any]
) -> dict[str, Any]:
    up = next((r for r in rest if r[0] != row[0]), None)
    upcoming = None
    if up is not None:  # the side it will be shown on is decided already (shown_swapped)
        upcoming = _pair_dict(up, shown_swapped(project.seed, up[0], who.id))
    return {
        "state": "ready",
        "query": _pair_dict(row, swapped),
        "upcoming": upcoming,
        "progress": _pair_progress(conn, who, project),
    }


# ---- ranking by binary insertion -----------------------------------------------------------
def insertion_replay(
    order: list[int], steps: list[tuple[int, int, float | None]]
) -> tuple[list[list[int]], tuple[int, int] | None, int]:
    """Replay binary insertion of ``order`` (segment ids) against recorded comparisons.

    ``steps`` are ``(new, pivot, prefer_b)`` in the order they were answered: prefer_b 1
    (the pivot is better) sends the new segment below the pivot, 0 above it, 0.5 joins the
    pivot's tie group, None (skip) drops the new segment. Returns ``(groups, next, used)``:
    the ranked tie groups, worst first; the next comparison ``(new, pivot)`` to ask, or None
    when every segment is placed; and how many steps were consumed. A step that is not the
    comparison the replay asks for raises ValueError.
    """
    groups: list[list[int]] = []
    k = 0
    for cur in order:
        if not groups:
            groups.append([cur])
            continue
        lo, hi = 0, len(groups)
        placed = False
        while lo < hi:
            mid = (lo + hi) // 2
            pivot = groups[mid][0]
            if k == len(steps):
                return groups, (cur, pivot), k
            new, piv, pb = steps[k]
            if (new, piv) != (cur, pivot):
                raise ValueError(f"step {k} compares {(new, piv)}, expected {(cur, pivot)}")
            k += 1
            if pb is None:
                placed = True
                break
            if pb == 0.5:
                groups[mid].append(cur)
                placed = True
                break
            if pb > 0.5:
                hi = mid
            else:
                lo = mid + 1
        if not placed:
            groups.insert(lo, [cur])
    return groups, None, k


def _rank_steps(s: Session, who: Annotator) -> list[tuple[int, int, float | None]]:
    rows = s.execute(
        select(Query.seg_a, Query.seg_b, Answer.prefer_b)
        .join(Answer, Answer.query_id == Query.id)
        .where(Answer.annotator_id == who.id, Query.annotator_id == who.id)
        .order_by(Answer.id)
    ).all()
    return [(a, b, pb) for a, b, pb in rows]


def _rank_order(s: Session, project: Project) -> list[int]:
    """The segments to rank, in insertion order (the gold pairs' segments are not among them)."""
    gold = Query.project_id == project.id, Query.gold
    return list(
        s.scalars(
            select(SegmentRow.id)
            .where(
                SegmentRow.project_id == project.id,
                SegmentRow.id.not_in(select(Query.seg_a).where(*gold)),
                SegmentRow.id.not_in(select(Query.seg_b).where(*gold)),
            )
            .order_by(SegmentRow.id)
        )
    )


def _rank_replay(
    s: Session, who: Annotator, project: Project
) -> tuple[list[list[int]], tuple[int, int] | None]:
    groups, nxt, _ = insertion_replay(_rank_order(s, project), _rank_steps(s, who))
    return groups, nxt


def _assignment(s: Session, query_id: int, who: Annotator) -> Assignment | None:
    """``who``'s assignment of ``query_id`` (the pair shown to them), if any."""
    return s.scalar(
        select(Assignment).where(Assignment.query_id == query_id, Assignment.annotator_id == who.id)
    )


def _gold_due(
    s: Session, who: Annotator, project: Project, n_order: int, n_steps: int, done: bool
) -> Query | None:
    """The hidden gold pair a ranking annotator should answer now, if any: one shown and not
    answered yet (a reload), else the next one once their rank comparisons reach its place.
    The G gold pairs are spread evenly over the about n log2(n) comparisons of a ranking;
    those left when the ranking is complete come before "done"."""
    if not project.n_gold:
        return None
    golds = list(
        s.scalars(
            select(Query).where(Query.project_id == project.id, Query.gold).order_by(Query.id)
        )
    )
    shown = {
        g.query_id: g.answered_at
        for g in s.scalars(
            select(Assignment).where(
                Assignment.annotator_id == who.id,
                Assignment.query_id.in_([q.id for q in golds]),
            )
        )
    }
    open_ = [q for q in golds if q.id in shown and shown[q.id] is None]
    if open_:
        return open_[0]
    answered = sum(1 for q in golds if q.id in shown)
    if answered == len(golds):
        return None
    every = max(1, math.ceil(n_order * math.log2(max(n_order, 2)) / (len(golds) + 1)))
    if done or n_steps >= (answered + 1) * every:
        return next(q for q in golds if q.id not in shown)
    return None


def _ranked_pair(
    s: Session, who: Annotator, project: Project, q: Query, swapped: bool, now: float
) -> dict[str, Any] | None:
    """``q`` shown to ``who`` (its assignment written the first time), as the page's pair;
    None while its videos are not rendered (the worker is hurried)."""
    a, b = s.get(SegmentRow, q.seg_a), s.get(SegmentRow, q.seg_b)
    assert a is not None and b is not None
    if a.video != "ready" or b.video != "ready":
        _hurry(a, b)
        return None
    asg = _assignment(s, q.id, who)
    if asg is None:
        q.shown = q.shown + 1
        s.add(
            Assignment(
                project_id=project.id,
                query_id=q.id,
                annotator_id=who.id,
                shown_at=now,
                swapped=swapped,
            )
        )
        s.flush()
    left, right = (b, a) if swapped else (a, b)
    return {"query_id": q.id, "left": _segment_json(left), "right": _segment_json(right)}


def _next_rank(s: Session, who: Annotator, project: Project, now: float) -> dict[str, Any]:
    order, steps = _rank_order(s, project), _rank_steps(s, who)
    groups, nxt, _ = insertion_replay(order, steps)
    gold = _gold_due(s, who, project, len(order), len(steps), nxt is None)
    if gold is not None:  # shown like a compare pair: sides drawn per (query, annotator)
        pair = _ranked_pair(
            s, who, project, gold, shown_swapped(project.seed, gold.id, who.id), now
        )
        if pair is None:
            return {"state": "rendering", "progress": _progress(s, who, project)}
        return {
            "state": "ready",
            "query": pair,
            "upcoming": None,
            "ranking": groups,
            "progress": _progress(s, who, project),
        }
    if nxt is None:
        return {
            "state": "done",
            "ranking": groups,
            "progress": _progress(s, who, project),
        }
    new, pivot = nxt
    mine = select(Answer.query_id).where(Answer.annotator_id == who.id)
    q = s.scalar(
        select(Query).where(
            Query.project_id == project.id,
            Query.annotator_id == who.id,
            Query.seg_a == new,
            Query.seg_b == pivot,
            Query.id.not_in(mine),
        )
    )
    if q is None:
        q = Query(
            project_id=project.id,
            seg_a=new,
            seg_b=pivot,
            origin="rank",
            annotator_id=who.id,
            created=now,
        )
        s.add(q)
        s.flush()
    # a rank comparison is its annotator's own: shown once, never swapped (new on the left)
    pair = _ranked_pair(s, who, project, q, False, now)
    if pair is None:
        return {"state": "rendering", "progress": _progress(s, who, project)}
    out = {"state": "ready", "query": pair, "upcoming": None}
    out["ranking"] = groups
    out["progress"] = _progress(s, who, project)
    return out


# ---- answers -------------------------------------------------------------------------------
def submit_answer(sessions: sessionmaker, who: Annotator, query_id: int, choice: str) -> None:
    """Store ``who``'s answer to ``query_id``: 404 for a query that is not the project's,
    409 for a query not shown to them or answered already. Nothing is written on an error."""
    answer_and_next(sessions, who, query_id, choice, serve_next=False)


def answer_and_next(
    sessions: sessionmaker,
    who: Annotator,
    query_id: int,
    choice: str,
    *,
    serve_next: bool = True,
    release_after_s: float | None = None,
) -> dict[str, Any] | None:
    """:func:`submit_answer`, then :func:`next_query` in the same transaction (one round trip
    to the database's lock for the page's most frequent request). ``choice`` is the side the
    annotator pressed; it is stored in the query's own a/b order."""
    if choice not in CHOICES:
        raise UiError(422, f"choice: {choice!r} is not one of {', '.join(CHOICES)}")
    project = _project_of(sessions, who.project_id)
    now = time.time()
    try:
        if project.mode == "rank":
            with sessions() as s, s.begin():
                _submit_rank(s, who, project, query_id, choice, now)
                s.flush()  # a duplicate fails here, before anything else is done
                return _next_rank(s, who, project, now) if serve_next else None
        with _engine(sessions).begin() as conn:
            _submit_pair(conn, who, project, query_id, choice, now)
            if not serve_next:
                return None
            _maybe_release(conn, project, now, release_after_s)
            return _next_pair(conn, who, project, now)
    except IntegrityError as e:  # the same answer posted twice at once
        raise UiError(409, f"query {query_id}: you answered it already") from e


def _submit_pair(
    conn: Connection, who: Annotator, project: Project, query_id: int, choice: str, now: float
) -> None:
    row = conn.execute(_SQL_LOOKUP, {"q": query_id}).first()
    if row is None or row[0] != who.project_id or row[1] not in (None, who.id):
        raise UiError(404, f"query {query_id}: no such query in project '{who.project}'")
    closed = conn.execute(_SQL_CLOSE, {"q": query_id, "who": who.id, "now": now}).first()
    if closed is None:
        if conn.execute(_SQL_ANSWERED, {"q": query_id, "who": who.id}).first() is not None:
            raise UiError(409, f"query {query_id}: you answered it already")
        raise UiError(
            409,
            f"query {query_id}: was not shown to you (or it was released, unanswered for too "
            "long); load the next pair",
        )
    shown_at, swapped = closed
    pb = answer_prefer_b(choice, bool(swapped))
    conn.execute(
        _SQL_ANSWER,
        {
            "p": project.id,
            "q": query_id,
            "who": who.id,
            "pb": pb,
            "skipped": pb is None,
            "swapped": bool(swapped),
            "shown": shown_at,
            "now": now,
            "latency": max(0.0, now - shown_at),
        },
    )


def _submit_rank(
    s: Session, who: Annotator, project: Project, query_id: int, choice: str, now: float
) -> None:
    q = s.get(Query, query_id)
    if q is None or q.project_id != who.project_id or q.annotator_id not in (None, who.id):
        raise UiError(404, f"query {query_id}: no such query in project '{who.project}'")
    asg = _assignment(s, q.id, who)
    if asg is None:
        raise UiError(409, f"query {query_id}: was not shown to you")
    if asg.answered_at is not None:
        raise UiError(409, f"query {query_id}: you answered it already")
    if not q.gold:
        _, nxt = _rank_replay(s, who, project)
        if nxt != (q.seg_a, q.seg_b):
            raise UiError(409, f"query {query_id}: not the comparison your ranking needs")
    asg.answered_at = now
    # rank comparisons are never swapped (the new segment is on the left); gold pairs may be
    pb = answer_prefer_b(choice, asg.swapped)
    s.add(
        Answer(
            project_id=who.project_id,
            query_id=q.id,
            annotator_id=who.id,
            prefer_b=pb,
            skipped=pb is None,
            swapped=asg.swapped,
            shown_at=asg.shown_at,
            answered_at=now,
            latency_s=max(0.0, now - asg.shown_at),
        )
    )


def undo_last(sessions: sessionmaker, who: Annotator) -> int | None:
    """Take back ``who``'s last answer in the project: it moves to ``undone_answers`` (kept,
    with the time of the undo) and the pair is shown again, on the same sides (its latency
    restarts). Returns the query id, or None when there is nothing to undo."""
    now = time.time()
    with sessions() as s, s.begin():
        last = s.scalar(
            select(Answer)
            .where(Answer.annotator_id == who.id, Answer.project_id == who.project_id)
            .order_by(Answer.id.desc())
            .limit(1)
        )
        if last is None:
            return None
        qid = last.query_id
        s.add(
            UndoneAnswer(
                answer_id=last.id,
                project_id=last.project_id,
                query_id=qid,
                annotator_id=last.annotator_id,
                prefer_b=last.prefer_b,
                skipped=last.skipped,
                swapped=last.swapped,
                shown_at=last.shown_at,
                answered_at=last.answered_at,
                latency_s=last.latency_s,
                undone_at=now,
            )
        )
        s.delete(last)
        asg = _assignment(s, qid, who)
        if asg is not None:
            asg.shown_at, asg.answered_at = now, None
        return qid


# ---- the queue for a training loop ---------------------------------------------------------
def post_queries(
    sessions: sessionmaker,
    project: str,
    refs_a: np.ndarray,
    refs_b: np.ndarray,
    *,
    dataset: OfflineDataset | None = None,
) -> list[int]:
    """Put pairs (``(n, 3)`` refs each) at the end of ``project``'s queue; their ids.

    The refs index the project's dataset, or ``dataset`` when given: a training loop's own
    data, stored where :func:`pbrl.datasets.registry.load_dataset` finds it again by its id
    or path (the render worker runs in another process), of the project's task (so the
    project's renderer draws it) and with physics state."""
    ra = np.asarray(refs_a, dtype=np.int64)
    rb = np.asarray(refs_b, dtype=np.int64)
    if ra.ndim != 2 or ra.shape[1] != 3 or ra.shape != rb.shape:
        raise UiError(422, f"refs: expected two (n, 3) arrays, got {ra.shape} and {rb.shape}")
    with sessions() as s, s.begin():
        p = get_project(s, project)
        if p.mode != "compare":
            raise UiError(
                409, f"project '{project}' ranks segments; post pairs to a compare project"
            )
        name = None
        if dataset is None:
            ds = project_dataset(p)
        else:
            ds, name = dataset, dataset.path or dataset.id
            if p.selector not in ("uniform", "kcenter"):
                raise UiError(
                    409,
                    f"project '{project}' chooses its own queries (--selector {p.selector}) "
                    "from its dataset; post another dataset's pairs to a uniform project",
                )
            if ds.task_id != p.task_id:
                raise UiError(
                    422,
                    f"{name}: task {ds.task_id!r} is not project '{project}''s task {p.task_id!r}",
                )
            if ds.qpos is None or ds.qvel is None:  # same task: the project's renderer
                raise UiError(422, f"{name}: stores no physics state (qpos/qvel) to render")
        for what, refs in (("refs_a", ra), ("refs_b", rb)):
            try:
                ds.segment_index(refs, what)
            except DataError as e:
                raise UiError(422, str(e)) from e
        return add_queries(s, p.id, ra, rb, "posted", time.time(), dataset=name)


def query_answers(sessions: sessionmaker, project: str, ids: list[int]) -> dict[int, list[Any]]:
    """``{query id: [(annotator, prefer_b or None), ...]}`` for ``ids`` of ``project``."""
    out: dict[int, list[Any]] = {int(i): [] for i in ids}
    with sessions() as s:
        p = get_project(s, project)
        rows = s.execute(
            select(Answer.query_id, Token.name, Answer.prefer_b)
            .join(Token, Token.id == Answer.annotator_id)
            .where(Answer.project_id == p.id, Answer.query_id.in_(list(out)))
            .order_by(Answer.id)
        ).all()
    for qid, name, pb in rows:
        out[qid].append((name, pb))
    return out


# ---- status and export ---------------------------------------------------------------------
def _answer_rows(s: Session, project: Project) -> list[Any]:
    return list(
        s.execute(
            select(Answer, Query, Token.name)
            .join(Query, Query.id == Answer.query_id)
            .join(Token, Token.id == Answer.annotator_id)
            .where(Answer.project_id == project.id)
            .order_by(Answer.id)
        ).all()
    )


def _items(rows: list[Any]) -> tuple[list[int], list[dict[str, int]]]:
    """Shared (not rank) queries with at least one non-skip answer: ids and categories."""
    by_q: dict[int, dict[str, int]] = defaultdict(dict)
    for ans, q, name in rows:
        if q.annotator_id is None and not ans.skipped:
            by_q[q.id][name] = category(ans.prefer_b)
    ids = sorted(by_q)
    return ids, [by_q[i] for i in ids]


def project_status(sessions: sessionmaker, project: str) -> dict[str, Any]:
    """Counts, videos, and per-annotator and crowd measures for the owner."""
    with sessions() as s:
        p = get_project(s, project)
        rows = _answer_rows(s, p)
        videos = dict(
            s.execute(
                select(SegmentRow.video, func.count())
                .where(SegmentRow.project_id == p.id)
                .group_by(SegmentRow.video)
            ).all()
        )
        n_queries = s.scalar(
            select(func.count())
            .select_from(Query)
            .where(Query.project_id == p.id, Query.annotator_id.is_(None))
        )
        tokens = list(s.scalars(select(Token).where(Token.project_id == p.id).order_by(Token.id)))
        undone = dict(
            s.execute(
                select(UndoneAnswer.annotator_id, func.count())
                .where(UndoneAnswer.project_id == p.id)
                .group_by(UndoneAnswer.annotator_id)
            ).all()
        )
    people: dict[str, dict[str, Any]] = {
        t.name: {
            "owner": t.owner,
            "revoked": t.revoked_at is not None,
            "answers": 0,
            "skipped": 0,
            "undone": int(undone.get(t.id, 0)),
            "gold": 0,
            "gold_correct": 0,
        }
        for t in tokens
    }
    latencies: dict[str, list[float]] = defaultdict(list)
    for ans, q, name in rows:
        d = people[name]
        d["answers"] += 1
        d["skipped"] += int(ans.skipped)
        latencies[name].append(ans.latency_s)
        if q.gold and not ans.skipped:
            d["gold"] += 1
            d["gold_correct"] += int(category(ans.prefer_b) == category(q.gold_prefer_b))
    for name, d in people.items():
        d["gold_accuracy"] = d["gold_correct"] / d["gold"] if d["gold"] else None
        lat = latencies.get(name)
        d["median_latency_s"] = float(np.median(lat)) if lat else None
    _, items = _items(rows)
    agree, pairs = pairwise_agreement(items)
    return {
        "project": p.name,
        "mode": p.mode,
        "dataset": p.dataset_id,
        "task": p.task_id,
        "segment": p.segment,
        "queries": int(n_queries or 0),
        "gold": p.n_gold,
        "annotators_per_query": p.per_query,
        "answers": len(rows),
        "undone": int(sum(undone.values())),
        "videos": {k: int(v) for k, v in videos.items()},
        "annotators": people,
        "agreement": {
            "pairwise": agree,
            "pairs": pairs,
            "krippendorff_alpha": krippendorff_alpha(items),
            "fleiss_kappa": fleiss_kappa(items),
        },
    }


def export_preferences(
    sessions: sessionmaker, project: str, aggregate: str = "none", annotator: str | None = None
) -> PreferenceData:
    """The project's answers as pbrl preference data.

    ``none``: one record per (query, annotator), labeler ``human:<name>`` (rank projects: the
    pairs each annotator's final ranking implies, ``meta["derived"]``, and the rankings in
    ``meta["rankings"]``). ``majority`` / ``reliability``: one record per query, the majority
    vote or the Dawid-Skene posterior (prefer_b = P(b) + P(equal) / 2), labeler ``crowd:...``.
    ``annotator``: only that person's answers (e.g. to fit a simulated teacher to them with
    ``pbrl oracles fit``).
    """
    if aggregate not in AGGREGATES:
        raise PbrlError(f"--aggregate: {aggregate!r} is not one of {', '.join(AGGREGATES)}")
    with sessions() as s:
        p = get_project(s, project)
        rows = _answer_rows(s, p)
        tokens = list(s.scalars(select(Token).where(Token.project_id == p.id).order_by(Token.id)))
        if annotator is not None:
            if annotator not in {t.name for t in tokens}:
                raise UiError(
                    404, f"--annotator: project '{project}' has no annotator '{annotator}'"
                )
            if aggregate != "none":
                raise PbrlError(
                    "--annotator: one person's answers are not aggregated (--aggregate none)"
                )
            rows = [r for r in rows if r[2] == annotator]
            tokens = [t for t in tokens if t.name == annotator]
        segs = {r.id: r for r in s.scalars(select(SegmentRow).where(SegmentRow.project_id == p.id))}
        posted = sorted({segs[q.seg_a].dataset or "" for _, q, _ in rows} - {""})
        if posted:
            raise PbrlError(
                f"project '{project}': {len(posted)} of its datasets are a training loop's own "
                f"({', '.join(posted[:3])}{', ...' if len(posted) > 3 else ''}); a preference "
                "file covers one dataset, so this project's answers are read by the loop "
                "(pbrl.ui.service.query_answers), not exported"
            )
        rankings: dict[str, list[list[int]]] = {}
        if p.mode == "rank":
            order = _rank_order(s, p)
            for t in tokens:
                who = Annotator(t.id, t.name, p.id, p.name, t.owner)
                groups, _, _ = insertion_replay(order, _rank_steps(s, who))
                if len(groups) > 0 and _rank_steps(s, who):
                    rankings[t.name] = groups

    def ref(sid: int) -> SegmentRef:
        r = segs[sid]
        return SegmentRef(p.dataset_id, r.episode, r.start, r.length)

    feedback: list[Feedback] = []
    derived: list[bool] = []

    def answered(ans: Answer, q: Query, name: str) -> None:
        feedback.append(
            Feedback(
                query_id=f"{p.name}/{q.id}",
                a=ref(q.seg_a),
                b=ref(q.seg_b),
                prefer_b=ans.prefer_b,
                skipped=ans.skipped,
                labeler=f"human:{name}",
                time=ans.answered_at,
                latency_s=ans.latency_s,
            )
        )
        derived.append(False)

    meta: dict[str, Any] = {
        "task_id": p.task_id,
        "dataset_fingerprint": p.fingerprint,
        "source": "pbrl-ui",
        "ui_project": p.name,
        "ui_mode": p.mode,
        "aggregate": aggregate,
        "annotator": annotator,
        "segment": p.segment,
    }
    if p.dataset_path:
        meta["dataset_path"] = p.dataset_path
    if p.mode == "rank":
        if aggregate != "none":
            raise PbrlError("--aggregate: a rank project exports each annotator's ranking (none)")
        for name, groups in rankings.items():
            last = max(a.answered_at for a, q, n in rows if n == name and not q.gold)
            flat = [(g, sid) for g, grp in enumerate(groups) for sid in grp]
            for i in range(len(flat)):
                for j in range(i + 1, len(flat)):
                    (gi, si), (gj, sj) = flat[i], flat[j]
                    # worst first: the later segment is the better one unless tied
                    pb = 0.5 if gi == gj else 1.0
                    feedback.append(
                        Feedback(
                            query_id=f"{p.name}/rank/{name}/{si}-{sj}",
                            a=ref(si),
                            b=ref(sj),
                            prefer_b=pb,
                            skipped=False,
                            labeler=f"human:{name}",
                            time=last,
                        )
                    )
                    derived.append(True)
        meta["rankings"] = {
            name: [[[ref(sid).episode, ref(sid).start, ref(sid).length] for sid in g] for g in gs]
            for name, gs in rankings.items()
        }
        meta["comparisons"] = sum(1 for _, q, _ in rows if not q.gold)
        for ans, q, name in rows:  # the hidden gold pairs' answers, as asked
            if q.gold:
                answered(ans, q, name)
        meta["gold_queries"] = sorted({f"{p.name}/{q.id}" for _, q, _ in rows if q.gold})
    elif aggregate == "none":
        for ans, q, name in rows:
            answered(ans, q, name)
        meta["gold_queries"] = sorted({f"{p.name}/{q.id}" for _, q, _ in rows if q.gold})
    else:
        ids, items = _items(rows)
        qrow = {q.id: q for _, q, _ in rows}
        last = {q.id: a.answered_at for a, q, _ in rows}
        if aggregate == "majority":
            pbs = [PREFER_B[majority(it)] for it in items]  # type: ignore[index]
            spec = "crowd:majority"
        else:
            post, conf = dawid_skene(items)
            pbs = soft_prefer_b(post).tolist()
            spec = "crowd:dawid-skene"
            meta["reliability"] = {name: reliability(c) for name, c in sorted(conf.items())}
        for qid, it, pb in zip(ids, items, pbs, strict=True):
            q = qrow[qid]
            feedback.append(
                Feedback(
                    query_id=f"{p.name}/{qid}",
                    a=ref(q.seg_a),
                    b=ref(q.seg_b),
                    prefer_b=float(pb),
                    skipped=False,
                    labeler=f"{spec}(n={len(it)})",
                    time=last[qid],
                )
            )
            derived.append(False)
    meta["derived"] = derived
    n = len(feedback)
    refs_a = np.array([[f.a.episode, f.a.start, f.a.length] for f in feedback], dtype=np.int64)
    refs_b = np.array([[f.b.episode, f.b.start, f.b.length] for f in feedback], dtype=np.int64)
    return PreferenceData(
        dataset_id=p.dataset_id,
        refs_a=refs_a.reshape(n, 3),
        refs_b=refs_b.reshape(n, 3),
        prefer_b=np.array(
            [np.nan if f.skipped else f.prefer_b for f in feedback], dtype=np.float32
        ),
        skipped=np.array([f.skipped for f in feedback], dtype=bool),
        feedback=tuple(feedback),
        meta=meta,
    )
