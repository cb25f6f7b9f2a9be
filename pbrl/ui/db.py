"""The labeling UI's database: schema (SQLAlchemy 2), engine set-up and migrations.

One row per fact, so that nothing an annotator did is lost or merged:

- ``projects``: a dataset, a segment length, a mode (``compare`` or ``rank``), a selector,
  annotators per query, gold queries, video settings;
- ``tokens``: one per person and project (only the SHA-256 of the secret is stored),
  ``owner`` for the project's owner;
- ``segments``: ``[episode, start, length]`` windows of the dataset, with the state of their
  cached video (``pending``, ``ready``, ``failed``);
- ``queries``: segment pairs to compare; ``gold`` ones carry the oracle teacher's answer;
  ``shown`` counts the annotators it went to (claimed atomically, at most ``per_query``);
  ``origin`` says who put them in the queue (``initial``, ``active``, ``posted`` by a training
  loop, ``rank`` for binary-insertion comparisons, which belong to one annotator);
- ``assignments``: a query shown to an annotator, and when (the latency's start) and when it
  was answered;
- ``answers``: one row per (query, annotator), unique, with the answer (in the query's own a/b
  order, whichever side each segment was shown on), when it was shown and answered, and the
  latency;
- ``undone_answers``: answers taken back with undo, kept with the time of the undo.

The schema is created and upgraded by Alembic (``pbrl/ui/migrations``); :func:`open_db` runs
the migrations to ``head`` on every start. SQLite files run in WAL mode (readers never wait
for the writer) with a busy timeout, so several server threads and the render worker share one
file. Revisions: 0001 the tables, 0002 ``queries.shown``, 0003 ``undone_answers``,
``assignments.swapped`` / ``answers.swapped`` and ``tokens.revoked_at``, 0004
``assignments.answered_at``, 0005 ``segments.dataset``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    false,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from pbrl.errors import PbrlError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Seconds a SQLite writer waits for the lock before failing.
SQLITE_BUSY_S = 30
# Connections kept open by the pool (the request threads of the web server).
POOL_SIZE = 40


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    dataset: Mapped[str] = mapped_column(Text)  # what the user passed: id or path
    dataset_id: Mapped[str] = mapped_column(Text)
    dataset_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    task_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    fingerprint: Mapped[str] = mapped_column(String(80))
    mode: Mapped[str] = mapped_column(String(16))  # compare | rank
    selector: Mapped[str] = mapped_column(String(32))
    segment: Mapped[int] = mapped_column(Integer)
    n_queries: Mapped[int] = mapped_column(Integer)
    per_query: Mapped[int] = mapped_column(Integer)  # annotators per query
    n_gold: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    fps: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    instruction: Mapped[str] = mapped_column(Text)
    created: Mapped[float] = mapped_column(Float)


class Token(Base):
    __tablename__ = "tokens"
    __table_args__ = (UniqueConstraint("project_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    owner: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[float] = mapped_column(Float)
    # set by ``pbrl ui token revoke``: the token opens nothing afterwards, its answers stay
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class SegmentRow(Base):
    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    episode: Mapped[int] = mapped_column(Integer)
    start: Mapped[int] = mapped_column(Integer)
    length: Mapped[int] = mapped_column(Integer)
    video: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Larger first: the worker renders what an annotator is waiting for before the rest.
    priority: Mapped[int] = mapped_column(Integer, default=0)
    # the dataset (id or path) of a segment posted from a training loop's own data; None:
    # the project's dataset (migration 0005)
    dataset: Mapped[str | None] = mapped_column(Text, nullable=True)


class Query(Base):
    __tablename__ = "queries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    seg_a: Mapped[int] = mapped_column(ForeignKey("segments.id"))
    seg_b: Mapped[int] = mapped_column(ForeignKey("segments.id"))
    gold: Mapped[bool] = mapped_column(Boolean, default=False)
    gold_prefer_b: Mapped[float | None] = mapped_column(Float, nullable=True)
    origin: Mapped[str] = mapped_column(String(16), default="initial")
    # annotators it has been shown to; claimed by a conditional UPDATE (never over per_query)
    shown: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # rank-mode comparisons belong to one annotator's insertion; None for shared queries
    annotator_id: Mapped[int | None] = mapped_column(
        ForeignKey("tokens.id"), nullable=True, index=True
    )
    created: Mapped[float] = mapped_column(Float)


class Assignment(Base):
    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("query_id", "annotator_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    query_id: Mapped[int] = mapped_column(ForeignKey("queries.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("tokens.id"), index=True)
    shown_at: Mapped[float] = mapped_column(Float)
    # True: segment b was shown on the left (drawn per (query, annotator) from the project's
    # seed, service.shown_swapped); answers are stored in the query's own a/b order
    swapped: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # set in the answer's transaction (a conditional UPDATE of this row), cleared by undo;
    # the release of abandoned pairs takes only rows where it is None (migration 0004)
    answered_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Answer(Base):
    __tablename__ = "answers"
    __table_args__ = (
        UniqueConstraint("query_id", "annotator_id"),
        Index("ix_answers_project_annotator", "project_id", "annotator_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    query_id: Mapped[int] = mapped_column(ForeignKey("queries.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("tokens.id"))
    prefer_b: Mapped[float | None] = mapped_column(Float, nullable=True)  # None iff skipped
    skipped: Mapped[bool] = mapped_column(Boolean)
    shown_at: Mapped[float] = mapped_column(Float)
    answered_at: Mapped[float] = mapped_column(Float)
    latency_s: Mapped[float] = mapped_column(Float)
    swapped: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class UndoneAnswer(Base):
    """An answer its annotator took back with undo: the row as it was, and when it was undone.
    ``answers`` holds each (query, annotator)'s current answer; this table its history."""

    __tablename__ = "undone_answers"
    __table_args__ = (Index("ix_undone_answers_project_annotator", "project_id", "annotator_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    answer_id: Mapped[int] = mapped_column(Integer)  # its id in ``answers`` before the undo
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    query_id: Mapped[int] = mapped_column(ForeignKey("queries.id"), index=True)
    annotator_id: Mapped[int] = mapped_column(ForeignKey("tokens.id"))
    prefer_b: Mapped[float | None] = mapped_column(Float, nullable=True)
    skipped: Mapped[bool] = mapped_column(Boolean)
    swapped: Mapped[bool] = mapped_column(Boolean)
    shown_at: Mapped[float] = mapped_column(Float)
    answered_at: Mapped[float] = mapped_column(Float)
    latency_s: Mapped[float] = mapped_column(Float)
    undone_at: Mapped[float] = mapped_column(Float)


def default_db_url(home: Path) -> str:
    return f"sqlite:///{(home / 'ui.db').resolve()}"


def check_db_url(url: str) -> str:
    """A URL SQLAlchemy can parse; PbrlError naming ``--db`` otherwise."""
    try:
        make_url(url)
    except ArgumentError as e:
        raise PbrlError(f"--db: not a database URL: {url!r} ({e})") from e
    return url


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL mode, a busy timeout and foreign keys."""
    check_db_url(url)
    u = make_url(url)
    kw: dict[str, Any] = {}
    if u.get_backend_name() == "sqlite":
        db = u.database
        if db and db != ":memory:":
            parent = Path(db).expanduser().resolve().parent
            if not parent.is_dir():
                raise PbrlError(f"--db: folder {parent} does not exist")
        kw["connect_args"] = {"check_same_thread": False, "timeout": SQLITE_BUSY_S}
    else:
        kw["pool_pre_ping"] = True
    if u.get_backend_name() != "sqlite" or (u.database and u.database != ":memory:"):
        # As many kept connections as the server has request threads (anyio's 40): with
        # fewer, a busy server closed and reopened connections (and ran the pragmas) on
        # most requests.
        kw["pool_size"] = POOL_SIZE
        kw["max_overflow"] = 20
    try:
        engine = create_engine(url, **kw)
    except (ArgumentError, ModuleNotFoundError) as e:
        raise PbrlError(f"--db: cannot use {url!r}: {e}") from e
    if u.get_backend_name() == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            # Transactions start with BEGIN IMMEDIATE (below): a read that later writes
            # never fails on a stale snapshot, it waits for the lock (busy timeout).
            conn.isolation_level = None
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        # One writer at a time inside this process, queued on a lock: SQLite makes a waiting
        # writer sleep and poll (1, 2, 5, 10, ... 100 ms), which is where a busy server's
        # latency tail came from. Taken when a transaction begins, released when its
        # connection goes back to the pool (after the commit or rollback).
        lock = threading.Lock()
        local = threading.local()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            if not getattr(local, "held", False):
                lock.acquire()
                local.held = True
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        @event.listens_for(engine.pool, "checkin")
        def _checkin(_dbapi_conn: Any, _record: Any) -> None:
            if getattr(local, "held", False):
                local.held = False
                lock.release()

    return engine


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def open_db(url: str) -> tuple[Engine, sessionmaker]:
    """Engine and session factory for ``url``, schema migrated to ``head``."""
    from sqlalchemy.exc import OperationalError

    engine = make_engine(url)
    try:
        migrate(engine)
    except OperationalError as e:
        raise PbrlError(f"--db: cannot open {engine.url!r}: {str(e).splitlines()[0]}") from e
    return engine, sessionmaker(engine, expire_on_commit=False)
