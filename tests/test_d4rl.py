"""Original D4RL HDF5 files: loading, episode bounds, the qlearning index map, bad input."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import h5py
import numpy as np
import pytest

from pbrl.datasets import d4rl
from pbrl.datasets.d4rl import (
    D4RL_URLS,
    d4rl_url,
    load_d4rl,
    load_d4rl_hdf5,
    qlearning_index_map,
    raw_row_to_episode,
)
from pbrl.datasets.registry import list_datasets, load_dataset, verify
from pbrl.errors import DataError, PbrlError, UnknownIdError

# Episodes: rows 0-3 end with a terminal, rows 4-8 end with a timeout, rows 9-11 are a
# final partial episode with no flag (D4RL keeps it).
N = 12
TERMINALS = np.zeros(N, bool)
TERMINALS[3] = True
TIMEOUTS = np.zeros(N, bool)
TIMEOUTS[8] = True


def _arrays(obs_dim: int = 11) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "observations": rng.normal(size=(N, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(N, 3)).astype(np.float32),
        "rewards": rng.normal(size=N).astype(np.float32),
        "terminals": TERMINALS.copy(),
        "timeouts": TIMEOUTS.copy(),
        "infos/qpos": rng.normal(size=(N, 6)),
        "infos/qvel": rng.normal(size=(N, 6)),
    }


def _write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return path


@pytest.fixture()
def d4rl_dir(tmp_path, monkeypatch):
    path = tmp_path / "d4rl"
    monkeypatch.setenv("D4RL_DATASET_DIR", str(path))
    return path


def _d4rl_qlearning_rows(terminals, timeouts):
    """D4RL's qlearning_dataset loop (terminate_on_end=False), recording the raw row of each
    transition it emits: rows 0..N-2, a row whose timeout flag is set is skipped."""
    rows = []
    for i in range(len(terminals) - 1):
        if timeouts[i]:
            continue
        rows.append(i)
    return rows


def test_index_map_skips_timeouts_and_the_last_row():
    m = qlearning_index_map(TERMINALS, TIMEOUTS)
    # hand-worked: rows 0..10 (row 11 has no successor), row 8 (timeout) skipped,
    # row 3 (terminal) kept
    np.testing.assert_array_equal(m, [0, 1, 2, 3, 4, 5, 6, 7, 9, 10])
    np.testing.assert_array_equal(m, _d4rl_qlearning_rows(TERMINALS, TIMEOUTS))
    np.testing.assert_array_equal(
        qlearning_index_map(TERMINALS, TIMEOUTS, terminate_on_end=True), range(11)
    )
    rng = np.random.default_rng(1)
    term, tout = rng.random(500) < 0.02, rng.random(500) < 0.03
    np.testing.assert_array_equal(qlearning_index_map(term, tout), _d4rl_qlearning_rows(term, tout))
    with pytest.raises(DataError, match="rows"):
        qlearning_index_map(TERMINALS, TIMEOUTS[:-1])


def test_loader_splits_episodes_and_keeps_the_partial_one(tmp_path):
    arrays = _arrays()
    path = _write(tmp_path / "hopper_medium_replay-v2.hdf5", arrays)
    ds = load_d4rl_hdf5(path)
    assert ds.id == "d4rl/hopper-medium-replay-v2" and ds.task_id == "mujoco/hopper"
    np.testing.assert_array_equal(ds.starts, [0, 4, 9])
    np.testing.assert_array_equal(ds.lengths, [4, 5, 3])
    np.testing.assert_array_equal(ds.observations, arrays["observations"])
    np.testing.assert_array_equal(ds.qpos, arrays["infos/qpos"])
    np.testing.assert_array_equal(ds.terminals, TERMINALS)
    np.testing.assert_array_equal(ds.timeouts, TIMEOUTS)
    # no next_observations in the file: shifted within episodes, last rows repeat themselves
    np.testing.assert_array_equal(ds.next_observations[0], arrays["observations"][1])
    np.testing.assert_array_equal(ds.next_observations[3], arrays["observations"][3])
    np.testing.assert_array_equal(ds.next_observations[8], arrays["observations"][8])
    assert (ds.ref_min_score, ds.ref_max_score) == (-20.272305, 3234.3)
    # published label indices -> raw rows -> (episode, offset)
    m = qlearning_index_map(ds.terminals, ds.timeouts)
    assert raw_row_to_episode(ds, m[8]) == (2, 0)  # k=8 is raw row 9
    assert raw_row_to_episode(ds, 8) == (1, 4)
    assert raw_row_to_episode(ds, 3) == (0, 3)
    with pytest.raises(DataError, match="out of range"):
        raw_row_to_episode(ds, N)


def test_next_observations_from_the_file_and_column_vectors(tmp_path):
    arrays = _arrays()
    arrays["next_observations"] = arrays["observations"] + 1
    arrays["rewards"] = arrays["rewards"][:, None]  # some D4RL files store (N, 1)
    ds = load_d4rl_hdf5(_write(tmp_path / "walker.hdf5", arrays), name="custom-set")
    np.testing.assert_array_equal(ds.next_observations, arrays["observations"] + 1)
    assert ds.rewards.shape == (N,)
    assert ds.id == "d4rl/custom-set" and ds.task_id is None and ds.ref_min_score is None


def test_cache_lookup_registry_and_listing(d4rl_dir):
    assert d4rl_url("hopper-medium-replay-v2") == (
        "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/"
        "hopper_medium_replay-v2.hdf5"
    )
    assert len(D4RL_URLS) == 20
    assert D4RL_URLS["halfcheetah-medium-expert-v2"].endswith("/halfcheetah_medium_expert-v2.hdf5")
    with pytest.raises(UnknownIdError, match="not in the cache"):
        load_d4rl("hopper-medium-replay-v2")
    _write(d4rl_dir / "hopper_medium_replay-v2.hdf5", _arrays())
    ds = load_dataset("d4rl/hopper-medium-replay-v2")  # checks 11 == Hopper-v5's obs size
    assert ds.task_id == "mujoco/hopper" and ds.num_episodes == 3
    rows = {r["id"]: r for r in list_datasets()}
    assert rows["d4rl/hopper-medium-replay-v2"]["local"] is True
    assert rows["d4rl/hopper-medium-replay-v2"]["episodes"] == 3
    assert rows["d4rl/hopper-medium-replay-v2"]["steps"] == N
    assert rows["d4rl/walker2d-medium-v2"]["local"] is False
    summary = verify("d4rl/hopper-medium-replay-v2")
    assert summary["episodes"] == 3 and summary["timeouts"] == 1
    assert summary["warnings"] == []


def _missing(arrays, key):
    arrays = dict(arrays)
    del arrays[key]
    return arrays


def _changed(arrays, key, value):
    arrays = dict(arrays)
    arrays[key] = value
    return arrays


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda a: _missing(a, "timeouts"), "'timeouts'"),
        (lambda a: _missing(a, "observations"), "'observations'"),
        (lambda a: _changed(a, "actions", a["actions"][:-1]), "field 'actions' has 11 rows"),
        (lambda a: _changed(a, "infos/qpos", a["infos/qpos"][:5]), "field 'infos/qpos' has 5 rows"),
        (
            lambda a: _changed(a, "rewards", np.where(np.arange(N) == 7, np.nan, a["rewards"])),
            "field 'rewards' has a NaN or inf value \\(row 7\\)",
        ),
        (
            lambda a: _changed(a, "observations", a["observations"] * np.inf),
            "field 'observations' has a NaN",
        ),
    ],
)
def test_bad_files_name_the_file_and_field(tmp_path, make, field):
    path = _write(tmp_path / "hopper_medium-v2.hdf5", make(_arrays()))
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(DataError, match=field) as err:
        load_d4rl_hdf5(path)
    assert str(path) in str(err.value)
    assert sorted(tmp_path.rglob("*")) == before


def test_truncated_and_corrupt_files(tmp_path):
    path = _write(tmp_path / "hopper_medium-v2.hdf5", _arrays())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load_d4rl_hdf5(path)
    assert str(path) in str(err.value)
    garbage = tmp_path / "garbage.hdf5"
    garbage.write_bytes(b"\x00not hdf5 at all" * 100)
    with pytest.raises(DataError, match="not a readable HDF5 file"):
        load_dataset(str(garbage))


def test_observation_size_mismatch(d4rl_dir):
    _write(d4rl_dir / "hopper_medium-v2.hdf5", _arrays(obs_dim=7))
    with pytest.raises(
        DataError, match=r"d4rl/hopper-medium-v2.*7 dimensions.*'mujoco/hopper' has 11"
    ):
        load_dataset("d4rl/hopper-medium-v2")


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_is_atomic(d4rl_dir, tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(d4rl.urllib.request, "urlopen", offline)
    with pytest.raises(PbrlError, match="cannot download.*hopper_random-v2.hdf5"):
        load_d4rl("d4rl/hopper-random-v2", download=True)
    assert list(d4rl_dir.iterdir()) == []  # no partial file

    monkeypatch.setattr(
        d4rl.urllib.request, "urlopen", lambda url, timeout=None: _FakeResponse(b"<html>")
    )
    with pytest.raises(DataError, match="not valid HDF5"):
        load_d4rl("d4rl/hopper-random-v2", download=True)
    assert list(d4rl_dir.iterdir()) == []

    payload = _write(tmp_path / "src.hdf5", _arrays()).read_bytes()
    seen = []

    def serve(url, timeout=None):
        seen.append(url)
        return _FakeResponse(payload)

    monkeypatch.setattr(d4rl.urllib.request, "urlopen", serve)
    ds = load_d4rl("d4rl/hopper-random-v2", download=True)
    assert seen == [D4RL_URLS["hopper-random-v2"]]
    assert ds.num_steps == N
    assert sorted(p.name for p in d4rl_dir.iterdir()) == ["hopper_random-v2.hdf5"]


def test_cli_reports_a_corrupt_file_without_traceback(tmp_path):
    path = tmp_path / "hopper_medium-v2.hdf5"
    path.write_bytes(b"truncated")
    env = {k: v for k, v in os.environ.items() if k != "PBRL_DEBUG"}
    out = subprocess.run(
        [sys.executable, "-m", "pbrl", "datasets", "verify", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2
    assert str(path) in out.stderr and "Traceback" not in out.stderr
