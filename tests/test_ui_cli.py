"""``pbrl ui`` from the command line on a generated MetaWorld dataset, with real MuJoCo
rendering: create a project, add tokens, render its videos, answer, see the status, export,
and train ``cpl`` on the export with ``pbrl train`` (the README's flow, minus the browser)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import select  # noqa: E402

from pbrl.prefs import load_preferences  # noqa: E402
from pbrl.ui.db import Assignment, open_db  # noqa: E402
from pbrl.ui.service import answer_prefer_b  # noqa: E402
from pbrl.ui.web import create_app  # noqa: E402

TASK = "metaworld/button-press-topdown-v3"
pytestmark = pytest.mark.slow


def run(argv: list[str]) -> int:
    from pbrl.cli import main

    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_create_render_answer_export_and_train(tmp_path, minari_home, monkeypatch, capsys):
    from pbrl.datasets.metaworld_gen import build

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PBRL_UI_HOME", str(tmp_path / "ui"))
    ds_id = build(TASK, "expert", episodes=2, seed=0, workers=1, horizon=30)
    argv = ["ui", "project", "create", ds_id, "--queries", "3", "--segment", "6"]
    assert run([*argv, "--size", "64", "--gold", "1", "--name", "demo"]) == 0
    assert run(["ui", "token", "add", "demo", "alice"]) == 0
    assert run(["ui", "token", "add", "demo", "boss", "--owner"]) == 0
    out = capsys.readouterr().out
    alice, boss = re.findall(r"token for \w+ on demo(?: \(owner\))?: (\S+)", out)
    assert run(["ui", "render"]) == 0
    assert "rendered 6 segment videos" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "ui" / "videos" / "p1").iterdir()) == [
        f"s{i}.mp4" for i in range(1, 7)
    ]

    _, sessions = open_db(f"sqlite:///{tmp_path / 'ui' / 'ui.db'}")
    client = TestClient(create_app(sessions, tmp_path / "ui" / "videos"))
    head = {"Authorization": f"Bearer {alice}"}
    choices = iter(["left", "right", "equal"])
    pressed = {}
    while (r := client.get("/api/projects/demo/next", headers=head).json())["state"] == "ready":
        body = {"query_id": r["query"]["query_id"], "choice": next(choices)}
        assert client.post("/api/projects/demo/answers", headers=head, json=body).status_code == 200
        pressed[body["query_id"]] = body["choice"]
    assert r["state"] == "done"
    assert client.get("/dashboard").status_code == 200
    st = client.get("/api/projects/demo/status", headers={"Authorization": f"Bearer {boss}"})
    assert st.json()["annotators"]["alice"]["answers"] == 3

    assert run(["ui", "status", "demo"]) == 0
    assert "alice: 3 answers" in capsys.readouterr().out
    assert run(["ui", "export", "demo", "-o", "prefs.npz"]) == 0
    data = load_preferences(tmp_path / "prefs.npz")
    assert data.num_queries == 3 and data.dataset_id == ds_id
    assert {f.labeler for f in data.feedback} == {"human:alice"}
    with sessions() as s:
        sides = dict(s.execute(select(Assignment.query_id, Assignment.swapped)).all())
    # the side pressed, in each query's a/b order
    assert {f.query_id: f.prefer_b for f in data.feedback} == {
        f"demo/{q}": answer_prefer_b(c, sides[q]) for q, c in pressed.items()
    }
    train = ["train", "--agent", "cpl", "--dataset", ds_id, "--prefs", "prefs.npz"]
    train += ["--steps", "4", "--eval-every", "4", "--eval-episodes", "1", "--device", "cpu"]
    assert run([*train, "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "summary.json").is_file()
