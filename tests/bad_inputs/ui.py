"""The labeling UI's commands (``pbrl ui ...``): options are checked, and the dataset loaded
and checked, before a database or a folder is created."""

from __future__ import annotations

from bad_inputs import Case, World


def _create(w: World, *extra: str) -> list[str]:
    return ["ui", "project", "create", w.dataset_id, "--queries", "3", "--segment", "10", *extra]


def _with_db(w: World) -> None:
    from pbrl.ui.db import open_db

    (w.cwd / "pbrl-ui").mkdir()
    open_db(f"sqlite:///{w.cwd / 'pbrl-ui' / 'ui.db'}")[0].dispose()


def _status_unknown(w: World) -> list[str]:
    _with_db(w)
    return ["ui", "status", "nope"]


def _revoke(w: World, revoked: bool) -> None:
    """A project 'p' with alice's token (revoked already if ``revoked``)."""
    from pbrl.datasets.registry import load_dataset
    from pbrl.ui.db import open_db
    from pbrl.ui.service import ProjectOptions, add_token, create_project, revoke_token

    (w.cwd / "pbrl-ui").mkdir()
    engine, sessions = open_db(f"sqlite:///{w.cwd / 'pbrl-ui' / 'ui.db'}")
    opts = ProjectOptions(name="p", queries=2, segment=10)
    create_project(sessions, load_dataset(w.dataset_id), opts, dataset_arg=w.dataset_id)
    add_token(sessions, "p", "alice")
    if revoked:
        revoke_token(sessions, "p", "alice")
    engine.dispose()


def _revoke_unknown(w: World) -> list[str]:
    _revoke(w, False)
    return ["ui", "token", "revoke", "p", "bob"]


def _revoke_twice(w: World) -> list[str]:
    _revoke(w, True)
    return ["ui", "token", "revoke", "p", "alice"]


_DB_FILES = ("pbrl-ui", "pbrl-ui/ui.db", "pbrl-ui/ui.db-wal", "pbrl-ui/ui.db-shm")

CASES = [
    Case("ui-create-bad-mode", lambda w: _create(w, "--mode", "sideways"), expect=("--mode",)),
    Case(
        "ui-create-bad-selector", lambda w: _create(w, "--selector", "best"), expect=("--selector",)
    ),
    Case(
        "ui-create-negative-queries",
        lambda w: ["ui", "project", "create", w.dataset_id, "--queries", "-1", "--segment", "10"],
        expect=("--queries",),
    ),
    Case("ui-create-gold-exceeds", lambda w: _create(w, "--gold", "5"), expect=("--gold",)),
    Case(
        "ui-create-rank-active",
        lambda w: _create(w, "--mode", "rank", "--selector", "disagreement"),
        expect=("--mode rank", "--selector"),
    ),
    Case("ui-create-bad-name", lambda w: _create(w, "--name", "../x"), expect=("project name",)),
    Case("ui-create-huge-video", lambda w: _create(w, "--size", "5000"), expect=("--width",)),
    Case(
        "ui-create-segment-too-long",
        lambda w: ["ui", "project", "create", w.dataset_id, "--queries", "3", "--segment", "500"],
        expect=("--segment", "longest"),
    ),
    Case(
        "ui-create-unknown-dataset",
        lambda w: ["ui", "project", "create", "pbrl/nope/x-v0", "--queries", "3", "--segment", "5"],
        expect=("nope",),
    ),
    Case(
        "ui-token-no-database", lambda w: ["ui", "token", "add", "p", "alice"], expect=("--home",)
    ),
    Case(
        "ui-token-bad-name",
        lambda w: ["ui", "token", "add", "p", "bad name!"],
        expect=("annotator name",),
    ),
    Case(
        "ui-token-revoke-bad-name",
        lambda w: ["ui", "token", "revoke", "p", "../x"],
        expect=("annotator name",),
    ),
    Case(
        "ui-token-revoke-unknown-project",
        lambda w: (_with_db(w), ["ui", "token", "revoke", "nope", "alice"])[1],
        expect=("nope",),
        may_write=_DB_FILES,
    ),
    Case("ui-token-revoke-unknown-name", _revoke_unknown, expect=("bob",), may_write=_DB_FILES),
    Case(
        "ui-token-revoke-twice",
        _revoke_twice,
        expect=("alice", "revoked already"),
        may_write=_DB_FILES,
    ),
    Case(
        "ui-export-bad-aggregate",
        lambda w: ["ui", "export", "p", "-o", "x.npz", "--aggregate", "mean"],
        expect=("--aggregate",),
    ),
    Case("ui-bad-db-url", lambda w: ["ui", "status", "p", "--db", "not a url"], expect=("--db",)),
    Case("ui-serve-bad-port", lambda w: ["ui", "serve", "--port", "0"], expect=("--port",)),
    Case(
        "ui-serve-negative-release",
        lambda w: ["ui", "serve", "--release-after", "-1"],
        expect=("--release-after",),
    ),
    Case(
        "ui-status-unknown-project",
        _status_unknown,
        expect=("nope",),
        may_write=("pbrl-ui", "pbrl-ui/ui.db", "pbrl-ui/ui.db-wal", "pbrl-ui/ui.db-shm"),
    ),
]
