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


CASES = [
    Case("ui-create-bad-mode", lambda w: _create(w, "--mode", "sideways"), expect=("--mode",)),
    Case(
        "ui-create-bad-selector", lambda w: _create(w, "--selector", "best"), expect=("--selector",)
    ),
    Case(
        "ui-create-zero-queries",
        lambda w: ["ui", "project", "create", w.dataset_id, "--queries", "0", "--segment", "10"],
        expect=("--queries",),
    ),
    Case("ui-create-gold-exceeds", lambda w: _create(w, "--gold", "5"), expect=("--gold",)),
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
        "ui-export-bad-aggregate",
        lambda w: ["ui", "export", "p", "-o", "x.npz", "--aggregate", "mean"],
        expect=("--aggregate",),
    ),
    Case("ui-bad-db-url", lambda w: ["ui", "status", "p", "--db", "not a url"], expect=("--db",)),
    Case("ui-serve-bad-port", lambda w: ["ui", "serve", "--port", "0"], expect=("--port",)),
    Case(
        "ui-status-unknown-project",
        _status_unknown,
        expect=("nope",),
        may_write=("pbrl-ui", "pbrl-ui/ui.db", "pbrl-ui/ui.db-wal", "pbrl-ui/ui.db-shm"),
    ),
]
