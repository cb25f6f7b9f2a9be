"""A D4RL file that carries ``infos/qpos`` and ``infos/qvel`` as a labeling project: a real
Hopper rollout written in D4RL's HDF5 layout, ``pbrl ui project create`` on its id and on its
path, its segments rendered by the real MuJoCo renderer into MP4, answered and exported."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
h5py = pytest.importorskip("h5py")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import select  # noqa: E402

from pbrl.datasets.registry import load_dataset  # noqa: E402
from pbrl.envs.base import get_task, physics_state  # noqa: E402
from pbrl.prefs import load_preferences  # noqa: E402
from pbrl.prefs.io import check_prefs_dataset  # noqa: E402
from pbrl.ui.db import SegmentRow, open_db  # noqa: E402
from pbrl.ui.video import task_renderer  # noqa: E402
from pbrl.ui.web import create_app  # noqa: E402

pytestmark = pytest.mark.slow
NAME = "hopper-medium-replay-v2"  # one of D4RL's names: its task (mujoco/hopper) is known


def run(argv: list[str]) -> int:
    from pbrl.cli import main

    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def write_hopper_d4rl(path: Path, episodes: int = 2, steps: int = 20, seed: int = 0) -> Path:
    """Random-action Hopper episodes in D4RL's layout: row i holds the observation, the
    action, its reward and flags, and the physics state the observation was taken in
    (``infos/qpos`` (N, 6), ``infos/qvel`` (N, 6)), as D4RL's own files do."""
    env = get_task("mujoco/hopper").make(seed=seed)
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("obs", "act", "rew", "term", "tout", "qp", "qv")}
    for e in range(episodes):
        obs, _ = env.reset(seed=seed + e)
        for t in range(steps):
            qp, qv = physics_state(env)
            act = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
            nxt, rew, term, trunc, _ = env.step(act)
            for k, v in zip(
                cols, (obs, act, rew, term, t == steps - 1 and not term, qp, qv), strict=True
            ):
                cols[k].append(v)
            obs = nxt
            if term:
                break
    env.close()
    with h5py.File(path, "w") as f:
        f["observations"] = np.asarray(cols["obs"], np.float32)
        f["actions"] = np.asarray(cols["act"], np.float32)
        f["rewards"] = np.asarray(cols["rew"], np.float32)
        f["terminals"] = np.asarray(cols["term"], bool)
        f["timeouts"] = np.asarray(cols["tout"], bool)
        f["infos/qpos"] = np.asarray(cols["qp"], np.float64)
        f["infos/qvel"] = np.asarray(cols["qv"], np.float64)
    return path


def test_d4rl_file_with_qpos_is_labelled_rendered_and_exported(
    tmp_path, minari_home, monkeypatch, capsys
):
    import imageio_ffmpeg

    d4rl = tmp_path / "d4rl"
    d4rl.mkdir()
    monkeypatch.setenv("D4RL_DATASET_DIR", str(d4rl))
    monkeypatch.setenv("PBRL_UI_HOME", str(tmp_path / "ui"))
    monkeypatch.chdir(tmp_path)
    path = write_hopper_d4rl(d4rl / "hopper_medium_replay-v2.hdf5")
    ds = load_dataset(f"d4rl/{NAME}")
    assert ds.task_id == "mujoco/hopper" and ds.qpos.shape[1] == 6 and ds.num_episodes == 2

    # the segment's frames are the renderer's pictures of the stored states: they move
    frames = task_renderer(ds, 0, 2, 4, 48, 48)
    assert frames.shape == (4, 48, 48, 3) and frames.std() > 0
    assert not np.array_equal(frames[0], frames[-1])

    create = ["--queries", "2", "--segment", "4", "--size", "48", "--fps", "10"]
    assert run(["ui", "project", "create", f"d4rl/{NAME}", *create, "--name", "hop"]) == 0
    assert run(["ui", "project", "create", str(path), *create, "--name", "hop-file"]) == 0
    assert run(["ui", "token", "add", "hop", "alice"]) == 0
    alice = re.findall(r"token for alice on hop: (\S+)", capsys.readouterr().out)[0]
    assert run(["ui", "render"]) == 0
    assert "rendered 8 segment videos" in capsys.readouterr().out
    _, sessions = open_db(f"sqlite:///{tmp_path / 'ui' / 'ui.db'}")
    with sessions() as s:
        segs = list(s.scalars(select(SegmentRow)))
    assert {g.video for g in segs} == {"ready"}
    for g in segs:
        reader = imageio_ffmpeg.read_frames(
            str(tmp_path / "ui" / "videos" / f"p{g.project_id}" / f"s{g.id}.mp4")
        )
        meta = next(reader)
        assert meta["size"] == (48, 48) and sum(1 for _ in reader) == 4

    client = TestClient(create_app(sessions, tmp_path / "ui" / "videos"))
    head = {"Authorization": f"Bearer {alice}"}
    n = 0
    while (r := client.get("/api/projects/hop/next", headers=head).json())["state"] == "ready":
        for side in ("left", "right"):
            v = client.get(f"/api/projects/hop/videos/{r['query'][side]['id']}.mp4", headers=head)
            assert v.status_code == 200 and v.headers["content-type"] == "video/mp4"
        body = {"query_id": r["query"]["query_id"], "choice": "left"}
        assert client.post("/api/projects/hop/answers", headers=head, json=body).status_code == 200
        n += 1
    assert r["state"] == "done" and n == 2
    assert run(["ui", "export", "hop", "-o", "prefs.npz"]) == 0
    data = load_preferences(tmp_path / "prefs.npz")
    assert data.dataset_id == f"d4rl/{NAME}" and data.num_queries == 2
    check_prefs_dataset(data, ds, where="prefs.npz")
