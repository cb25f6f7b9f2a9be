"""Datasets: corrupt Minari and D4RL files, ids that leave the store, `pbrl datasets` options.

Corrupt Minari datasets are private copies of the shared tiny dataset (``world.copy``) whose
HDF5 file or metadata.json is edited, passed as a folder path. Every command that reads a
dataset goes through the same loader, so each corruption is driven through one command
(``datasets verify``, ``label``, ``train``, ``datasets diagnose``, ``datasets info``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from bad_inputs import Case, World

H5 = Path("data") / "main_data.hdf5"
META = Path("data") / "metadata.json"


def _copy(w: World, name: str = "ds") -> Path:
    return w.copy(w.dataset_path, name)


def _edit_h5(w: World, edit: Callable[[h5py.File], None], name: str = "ds") -> str:
    d = _copy(w, name)
    with h5py.File(d / H5, "r+") as f:
        edit(f)
    return str(d)


def _replace(key: str, fn: Callable[[np.ndarray], Any]) -> Callable[[h5py.File], None]:
    def edit(f: h5py.File) -> None:
        a = f[key][()]
        del f[key]
        f.create_dataset(key, data=fn(a))

    return edit


def _set(a: np.ndarray, index: tuple[int, ...], value: float) -> np.ndarray:
    a = a.astype(np.float64)
    a[index] = value
    return a


def _edit_meta(w: World, edit: Callable[[dict], Any], name: str = "ds") -> str:
    d = _copy(w, name)
    meta = json.loads((d / META).read_text())
    new = edit(meta)
    (d / META).write_text(json.dumps(meta if new is None else new))
    return str(d)


def _wider_actions(w: World) -> str:
    """Every episode's actions one column wider, and the stored action space to match:
    a self-consistent file whose action size differs from its task's."""

    def edit(f: h5py.File) -> None:
        for name in [k for k in f if k.startswith("episode_")]:
            _replace(f"{name}/actions", lambda a: np.concatenate([a, a[:, :1]], axis=1))(f)

    d = Path(_edit_h5(w, edit))
    meta = json.loads((d / META).read_text())
    space = json.loads(meta["action_space"])
    space.update(shape=[5], low=[-1.0] * 5, high=[1.0] * 5)
    meta["action_space"] = json.dumps(space)
    (d / META).write_text(json.dumps(meta))
    return str(d)


def _empty_episode_0(f: h5py.File) -> None:
    """Episode 0 with no steps: one observation, every per-step field empty."""
    for key in ("actions", "rewards", "terminations", "truncations"):
        _replace(f"episode_0/{key}", lambda a: a[:0])(f)
    _replace("episode_0/observations", lambda a: a[:1])(f)


def _d4rl_file(w: World, actions: np.ndarray) -> str:
    path = w.cwd / "tiny.hdf5"
    n = actions.shape[0]
    with h5py.File(path, "w") as f:
        f["observations"] = np.zeros((n, 3), np.float32)
        f["actions"] = actions
        f["rewards"] = np.zeros(n, np.float32)
        f["terminals"] = np.zeros(n, bool)
        f["timeouts"] = np.arange(n) == n - 1
    return str(path)


def _verify(make: Callable[[World], str]) -> Callable[[World], list[str]]:
    return lambda w: ["datasets", "verify", make(w)]


def _info(make: Callable[[World], str]) -> Callable[[World], list[str]]:
    return lambda w: ["datasets", "info", make(w)]


def _label(make: Callable[[World], str]) -> Callable[[World], list[str]]:
    return lambda w: [
        "label",
        make(w),
        "--queries",
        "4",
        "--segment",
        "5",
        "-o",
        str(w.cwd / "p.npz"),
    ]


def _train(make: Callable[[World], str]) -> Callable[[World], list[str]]:
    return lambda w: [
        "train",
        "--agent",
        "bc",
        "--dataset",
        make(w),
        "--steps",
        "2",
        "--eval-episodes",
        "0",
        "--device",
        "cpu",
        "--out",
        str(w.cwd / "run"),
    ]


def _build(*extra: str, task: str | None = None) -> Callable[[World], list[str]]:
    return lambda w: ["datasets", "build", task or w.task, *extra, "--no-diagnose"]


CASES = [
    # ---- the Minari loader: what the D4RL loader refuses, refused here too ---------------
    Case(
        "data-minari-nan-observations",
        _verify(
            lambda w: _edit_h5(
                w, _replace("episode_1/observations", lambda a: _set(a, (3, 2), np.nan))
            )
        ),
        expect=("main_data.hdf5", "episode 1", "'observations'", "nan"),
    ),
    Case(
        "data-minari-inf-rewards-label",
        _label(
            lambda w: _edit_h5(w, _replace("episode_2/rewards", lambda a: _set(a, (5,), np.inf)))
        ),
        expect=("main_data.hdf5", "episode 2", "'rewards'", "inf"),
    ),
    Case(
        "data-minari-nan-actions-train",
        _train(
            lambda w: _edit_h5(w, _replace("episode_0/actions", lambda a: _set(a, (1, 1), np.nan)))
        ),
        expect=("main_data.hdf5", "'actions'", "nan"),
    ),
    Case(
        "data-minari-string-actions",
        _verify(
            lambda w: _edit_h5(w, _replace("episode_0/actions", lambda a: np.full(a.shape, b"x")))
        ),
        expect=("'actions'", "dtype"),
    ),
    Case(
        "data-minari-integer-actions-label",
        _label(lambda w: _edit_h5(w, _replace("episode_0/actions", lambda a: a.astype(np.int64)))),
        expect=("'actions'", "dtype int64"),
    ),
    Case(
        "data-minari-complex-observations",
        _verify(
            lambda w: _edit_h5(
                w, _replace("episode_0/observations", lambda a: a.astype(np.complex128))
            )
        ),
        expect=("'observations'", "complex128"),
    ),
    Case(
        "data-minari-huge-observation",
        _verify(
            lambda w: _edit_h5(
                w, _replace("episode_0/observations", lambda a: _set(a, (2, 0), 1e300))
            )
        ),
        expect=("'observations'", "float32"),
    ),
    Case(
        "data-minari-short-observations",
        _verify(lambda w: _edit_h5(w, _replace("episode_0/observations", lambda a: a[:-5]))),
        expect=("'observations'", "rows"),
    ),
    Case(
        "data-minari-ragged-observation-width",
        _verify(lambda w: _edit_h5(w, _replace("episode_1/observations", lambda a: a[:, :30]))),
        expect=("episode 1", "'observations'", "30"),
    ),
    Case(
        "data-minari-action-width-one-episode",
        _verify(
            lambda w: _edit_h5(
                w, _replace("episode_2/actions", lambda a: np.concatenate([a, a[:, :1]], 1))
            )
        ),
        expect=("episode 2", "'actions'", "(5,)"),
    ),
    Case(
        "data-minari-rewards-two-columns",
        _verify(
            lambda w: _edit_h5(w, _replace("episode_0/rewards", lambda a: np.stack([a, a], 1)))
        ),
        expect=("'rewards'", "shape"),
    ),
    Case(
        "data-minari-short-rewards",
        _verify(lambda w: _edit_h5(w, _replace("episode_0/rewards", lambda a: a[:-3]))),
        expect=("'rewards'", "rows"),
    ),
    Case(
        "data-minari-flags-not-0-1",
        _verify(lambda w: _edit_h5(w, _replace("episode_0/terminations", lambda a: a + 0.5))),
        expect=("'terminations'", "0/1"),
    ),
    Case(
        "data-minari-missing-actions",
        _verify(lambda w: _edit_h5(w, lambda f: f.__delitem__("episode_0/actions"))),
        expect=("main_data.hdf5", "episode 0", "missing", "'actions'"),
    ),
    Case(
        "data-minari-missing-episode",
        _label(lambda w: _edit_h5(w, lambda f: f.__delitem__("episode_3"))),
        expect=("episode 3", "missing"),
    ),
    Case(
        "data-minari-episode-count-too-high",
        _verify(lambda w: _edit_meta(w, lambda m: m.update(total_episodes=9))),
        expect=("episode 4", "missing"),
    ),
    Case(
        "data-minari-empty-episode",
        _verify(lambda w: _edit_h5(w, _empty_episode_0)),
        expect=("episode 0", "'actions'", "no rows"),
    ),
    Case(
        "data-minari-truncated-hdf5-train",
        _train(
            lambda w: (
                lambda d: (open(d / H5, "r+b").truncate((d / H5).stat().st_size // 2), str(d))[1]
            )(_copy(w))
        ),
        expect=("main_data.hdf5", "truncated or corrupt"),
    ),
    Case(
        "data-minari-garbage-hdf5-info",
        _info(lambda w: (lambda d: ((d / H5).write_bytes(b"not hdf5" * 64), str(d))[1])(_copy(w))),
        expect=("main_data.hdf5", "not a readable hdf5"),
    ),
    Case(
        "data-minari-hdf5-missing-info",
        _info(lambda w: (lambda d: ((d / H5).unlink(), str(d))[1])(_copy(w))),
        expect=("main_data.hdf5", "missing"),
    ),
    Case(
        "data-minari-missing-field-info",
        _info(lambda w: _edit_h5(w, lambda f: f.__delitem__("episode_1/rewards"))),
        expect=("episode 1", "'rewards'"),
    ),
    Case(
        "data-minari-metadata-not-json",
        _info(lambda w: (lambda d: ((d / META).write_text("{bad"), str(d))[1])(_copy(w))),
        expect=("metadata.json", "unreadable"),
    ),
    Case(
        "data-minari-metadata-not-utf8",
        _verify(lambda w: (lambda d: ((d / META).write_bytes(b"\xff\xfe{"), str(d))[1])(_copy(w))),
        expect=("metadata.json",),
    ),
    Case(
        "data-minari-metadata-a-list",
        _verify(lambda w: _edit_meta(w, lambda m: [1, 2])),
        expect=("metadata.json", "json object"),
    ),
    Case(
        "data-minari-metadata-ref-score-string",
        _label(lambda w: _edit_meta(w, lambda m: m.update(ref_min_score="x"))),
        expect=("metadata.json", "ref_min_score"),
    ),
    Case(
        "data-minari-metadata-id-escapes",
        _verify(lambda w: _edit_meta(w, lambda m: m.update(dataset_id="../../elsewhere-v0"))),
        expect=("metadata.json", "dataset_id", ".."),
    ),
    Case(
        "data-minari-episode-info-not-json",
        _verify(
            lambda w: _edit_h5(w, lambda f: f["episode_0"].attrs.__setitem__("pbrl_info", "{bad"))
        ),
        expect=("episode 0", "pbrl_info"),
    ),
    Case(
        "data-minari-qpos-nan",
        _verify(
            lambda w: _edit_h5(
                w, _replace("episode_0/infos/qpos", lambda a: _set(a, (3, 0), np.nan))
            )
        ),
        expect=("'infos/qpos'", "nan"),
    ),
    Case(
        "data-minari-qpos-rows",
        _verify(lambda w: _edit_h5(w, _replace("episode_0/infos/qpos", lambda a: a[:10]))),
        expect=("'infos/qpos'", "rows"),
    ),
    Case(
        "data-minari-success-strings",
        _verify(
            lambda w: _edit_h5(
                w, _replace("episode_0/infos/success", lambda a: np.full(a.shape, b"y"))
            )
        ),
        expect=("'infos/success'", "dtype"),
    ),
    # ---- the dataset against its task: verify passed what train then crashed on ---------
    Case(
        "data-action-size-differs-from-task-verify",
        _verify(_wider_actions),
        expect=("'actions'", "5 dimensions", "metaworld/button-press-topdown-v3", "4"),
    ),
    Case(
        "data-action-size-differs-from-task-train",
        _train(_wider_actions),
        expect=("'actions'", "5 dimensions", "4"),
    ),
    # ---- D4RL-layout files: the same rule --------------------------------------------------
    Case(
        "data-d4rl-string-actions",
        _verify(lambda w: _d4rl_file(w, np.full((10, 2), b"x"))),
        expect=("tiny.hdf5", "'actions'", "dtype"),
    ),
    Case(
        "data-d4rl-integer-actions",
        _verify(lambda w: _d4rl_file(w, np.zeros((10, 2), np.int32))),
        expect=("tiny.hdf5", "'actions'", "int32"),
    ),
    # ---- ids: never followed out of the store ----------------------------------------------
    Case(
        "data-id-dotdot-verify",
        lambda w: [
            "datasets",
            "verify",
            "pbrl/metaworld/../metaworld/button-press-topdown-v3/expert-v0",
        ],
        expect=("dataset id", ".."),
    ),
    Case(
        "data-id-dotdot-label",
        _label(lambda w: "pbrl/../../elsewhere/x-v0"),
        expect=("dataset id", ".."),
    ),
    Case(
        "data-id-dotdot-train",
        _train(lambda w: "pbrl/metaworld/../metaworld/button-press-topdown-v3/expert-v0"),
        expect=("dataset id", ".."),
    ),
    Case(
        "data-id-dotdot-info",
        lambda w: ["datasets", "info", "pbrl/../../../etc/x-v0"],
        expect=("dataset id", ".."),
    ),
    Case(
        "data-id-hidden-part",
        lambda w: ["datasets", "verify", "pbrl/.pbrl-tmp-x/y-v0"],
        expect=("dataset id", ".pbrl-tmp-x"),
    ),
    Case(
        "data-id-dotdot-diagnose",
        lambda w: ["datasets", "diagnose", "pbrl/../x-v0", "--steps", "1", "--seeds", "1"],
        expect=("dataset id", ".."),
    ),
    Case(
        "data-download-id-without-version",
        lambda w: ["datasets", "download", "bogus"],
        expect=("bogus", "version"),
    ),
    Case(
        "data-download-dotdot",
        lambda w: ["datasets", "download", "mujoco/../../x-v0"],
        expect=("dataset id", ".."),
    ),
    Case(
        "data-download-path",
        lambda w: ["datasets", "download", "/tmp/x-v0"],
        expect=("/tmp/x-v0", "path"),
    ),
    Case(
        "data-download-unknown-d4rl",
        lambda w: ["datasets", "download", "d4rl/hopper-bogus-v2"],
        expect=("d4rl/hopper-bogus-v2",),
    ),
    # ---- datasets build: everything checked before any episode is generated ----------------
    Case(
        "data-build-existing-dataset",
        _build("--kind", "expert", "--episodes", "2"),
        expect=("already exists", "--overwrite"),
    ),
    Case("data-build-unknown-kind", _build("--kind", "bogus"), expect=("--kind", "bogus")),
    Case(
        "data-build-kind-of-another-domain",
        _build("--kind", "noisy-expert", task="mujoco/hopper"),
        expect=("--kind", "noisy-expert", "mujoco"),
    ),
    Case(
        "data-build-unknown-task",
        _build("--kind", "expert", task="metaworld/bogus-v3"),
        expect=("metaworld/bogus-v3",),
    ),
    Case(
        "data-build-negative-seed",
        _build("--kind", "random", "--seed", "-1"),
        expect=("--seed",),
    ),
    Case(
        "data-build-zero-episodes",
        _build("--kind", "random", "--episodes", "0"),
        expect=("--episodes",),
    ),
    Case(
        "data-build-bogus-device",
        _build("--kind", "expert", "--device", "bogus", task="mujoco/hopper"),
        expect=("--device", "bogus"),
    ),
    Case(
        "data-build-steps-on-a-scripted-metaworld-kind",
        _build("--kind", "random", "--steps", "10"),
        expect=("--steps", "rollouts"),
    ),
    Case(
        # CPL's protocol: no SAC run (or none that succeeds) behind the rollouts yet
        "data-build-rollouts-without-a-sac-run",
        _build("--kind", "rollouts", "--episodes", "2"),
        expect=("SAC run", "no evaluated checkpoint"),
        env={"PBRL_HOME": "/nonexistent-pbrl-home"},
    ),
    Case(
        "data-build-store-in-proc",
        _build("--kind", "random", "--episodes", "1"),
        expect=("MINARI_DATASETS_PATH", "/proc/pbrl-store"),
        env={"MINARI_DATASETS_PATH": "/proc/pbrl-store"},
    ),
    Case(
        "data-build-store-under-a-file",
        _build("--kind", "random", "--episodes", "1"),
        expect=("MINARI_DATASETS_PATH", "/dev/null", "not a folder"),
        env={"MINARI_DATASETS_PATH": "/dev/null/pbrl-store"},
    ),
    # ---- datasets diagnose / info / list -----------------------------------------------------
    Case(
        "data-diagnose-corrupt-dataset",
        lambda w: [
            "datasets",
            "diagnose",
            _edit_h5(w, _replace("episode_1/observations", lambda a: _set(a, (3, 2), np.inf))),
            "--steps",
            "1",
            "--seeds",
            "1",
        ],
        expect=("'observations'", "inf"),
    ),
    Case(
        "data-diagnose-zero-steps",
        lambda w: ["datasets", "diagnose", w.dataset_id, "--steps", "0"],
        expect=("--steps",),
    ),
    Case(
        "data-diagnose-bogus-device",
        lambda w: ["datasets", "diagnose", w.dataset_id, "--device", "bogus"],
        expect=("--device", "bogus"),
    ),
    Case(
        "data-diagnose-record-into-a-d4rl-file",
        lambda w: [
            "datasets",
            "diagnose",
            _d4rl_file(w, np.zeros((10, 2), np.float32)),
            "--steps",
            "1",
            "--seeds",
            "1",
        ],
        expect=("tiny.hdf5", "--no-record"),
    ),
    Case(
        "data-info-not-a-dataset",
        lambda w: [
            "datasets",
            "info",
            str((w.cwd / "notes.txt", (w.cwd / "notes.txt").write_text("x"))[0]),
        ],
        expect=("notes.txt",),
    ),
    Case(
        "data-list-unknown-source",
        lambda w: ["datasets", "list", "--source", "bogus"],
        expect=("--source",),
    ),
]
