"""Minari writer/loader, the dataset registry and the ``pbrl datasets`` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest

from pbrl.datasets.base import EpisodeData
from pbrl.datasets.minari_io import load_minari, minari_root, write_minari_dataset
from pbrl.datasets.registry import (
    dataset_info,
    generated_dataset_id,
    list_datasets,
    load_dataset,
    verify,
)
from pbrl.errors import DataError, UnknownIdError

DS_ID = "pbrl/mujoco/hopper/unit-v0"


def _hopper_episodes(n: int = 3, max_steps: int = 15, seed: int = 0) -> list[EpisodeData]:
    """A few short random-action Hopper-v5 episodes with their physics states."""
    env = gym.make("Hopper-v5")
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        obs, _ = env.reset(seed=seed + i)
        data = env.unwrapped.data
        OBS, A, R, TE, TR = [obs], [], [], [], []
        QP, QV = [data.qpos.copy()], [data.qvel.copy()]
        for t in range(max_steps - i):  # different lengths per episode
            a = rng.uniform(-1, 1, 3).astype(np.float32)
            obs, r, term, trunc, _ = env.step(a)
            trunc = (trunc or t == max_steps - i - 1) and not term
            OBS.append(obs)
            A.append(a)
            R.append(r)
            TE.append(term)
            TR.append(trunc)
            QP.append(data.qpos.copy())
            QV.append(data.qvel.copy())
            if term or trunc:
                break
        succ = np.zeros(len(OBS), bool)
        succ[-1] = i == 1  # one episode "succeeds" at its last step
        out.append(
            EpisodeData(
                observations=np.array(OBS),
                actions=np.array(A),
                rewards=np.array(R),
                terminations=np.array(TE),
                truncations=np.array(TR),
                qpos=np.array(QP),
                qvel=np.array(QV),
                successes=succ,
                info={"source": "random", "seed": seed + i, "rand_vec": np.arange(3.0) + i},
            )
        )
    env.close()
    return out


@pytest.fixture(scope="module")
def episodes() -> list[EpisodeData]:
    return _hopper_episodes()


def _write(eps, dataset_id=DS_ID, **kw):
    args = dict(
        env_id="Hopper-v5",
        ref_min_score=-20.272305,
        ref_max_score=3234.3,
        card={"generator": "unit-test", "task_id": "mujoco/hopper", "seeds": [0, 1, 2]},
    )
    args.update(kw)
    return write_minari_dataset(dataset_id, eps, **args)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_written_dataset_loads_with_plain_minari(minari_home, episodes):
    path = _write(episodes)
    assert path == minari_home / DS_ID
    d = minari.load_dataset(DS_ID)
    assert d.total_episodes == 3
    assert d.total_steps == sum(e.length for e in episodes)
    meta = d.storage.metadata
    assert meta["ref_min_score"] == pytest.approx(-20.272305)
    assert meta["ref_max_score"] == pytest.approx(3234.3)
    assert minari.get_normalized_score(d, np.array([-20.272305]))[0] == pytest.approx(0.0)
    assert meta["pbrl_card"]["generator"] == "unit-test"
    assert meta["pbrl_card"]["package_versions"]["minari"] == minari.__version__
    assert DS_ID in minari.list_local_datasets()
    ep = d[1]
    np.testing.assert_array_equal(ep.observations, episodes[1].observations)
    np.testing.assert_array_equal(ep.infos["qpos"], episodes[1].qpos)
    env = d.recover_environment()
    assert env.observation_space.shape == (11,)
    env.close()
    # nothing but the dataset and Minari's namespace markers: no temporary folder left
    assert not [f for f in _files(minari_home) if "/." in "/" + f]


def test_round_trip_is_bit_exact(minari_home, episodes):
    _write(episodes)
    ds = load_minari(DS_ID)
    lengths = [e.length for e in episodes]
    np.testing.assert_array_equal(ds.lengths, lengths)
    np.testing.assert_array_equal(ds.starts, np.concatenate([[0], np.cumsum(lengths)[:-1]]))
    cat = np.concatenate
    # observations/next_observations: float32 by OfflineDataset's contract, no other change
    np.testing.assert_array_equal(
        ds.observations, cat([e.observations[:-1] for e in episodes]).astype(np.float32)
    )
    np.testing.assert_array_equal(
        ds.next_observations, cat([e.observations[1:] for e in episodes]).astype(np.float32)
    )
    np.testing.assert_array_equal(ds.actions, cat([e.actions for e in episodes]))
    np.testing.assert_array_equal(ds.rewards, cat([e.rewards for e in episodes]).astype(np.float32))
    np.testing.assert_array_equal(ds.terminals, cat([e.terminations for e in episodes]))
    np.testing.assert_array_equal(ds.timeouts, cat([e.truncations for e in episodes]))
    # physics states stay float64, bit-exact: the state each action was taken in
    assert ds.qpos.dtype == np.float64
    np.testing.assert_array_equal(ds.qpos, cat([e.qpos[:-1] for e in episodes]))
    np.testing.assert_array_equal(ds.qvel, cat([e.qvel[:-1] for e in episodes]))
    # success of step t is the info the step returned: row t+1
    np.testing.assert_array_equal(ds.successes, cat([e.successes[1:] for e in episodes]))
    assert [i["seed"] for i in ds.episode_info] == [0, 1, 2]
    assert ds.episode_info[2]["rand_vec"] == [2.0, 3.0, 4.0]
    assert [i["success"] for i in ds.episode_info] == [False, True, False]
    assert ds.ref_min_score == -20.272305 and ds.ref_max_score == 3234.3
    assert ds.card["task_id"] == "mujoco/hopper" and ds.task_id == "mujoco/hopper"
    # same result through the registry, by id and by folder path
    by_path = load_dataset(str(minari_home / DS_ID))
    assert by_path.id == DS_ID and by_path.task_id == "mujoco/hopper"
    np.testing.assert_array_equal(by_path.qpos, ds.qpos)


def test_existing_dataset_needs_overwrite(minari_home, episodes):
    _write(episodes)
    with pytest.raises(DataError, match="already exists"):
        _write(episodes[:1])
    assert minari.load_dataset(DS_ID).total_episodes == 3
    _write(episodes[:1], overwrite=True)
    assert minari.load_dataset(DS_ID).total_episodes == 1
    assert not [f for f in _files(minari_home) if "/." in "/" + f]


def _bad(eps, i, **changes):
    eps = list(eps)
    eps[i] = replace(eps[i], **changes)
    return eps


@pytest.mark.parametrize(
    "make_bad, field",
    [
        (lambda e: _bad(e, 1, rewards=e[1].rewards[:-1]), "rewards"),
        (lambda e: _bad(e, 1, terminations=e[1].terminations[:-2]), "terminations"),
        (lambda e: _bad(e, 1, observations=e[1].observations[:-1]), "observations"),
        (
            lambda e: _bad(
                e, 1, observations=np.where(np.eye(1, 11, 3, bool), np.nan, e[1].observations)
            ),
            "observations",
        ),
        (lambda e: _bad(e, 1, qpos=e[1].qpos * np.inf), "qpos"),
        (lambda e: _bad(e, 1, actions=np.full_like(e[1].actions, np.nan)), "actions"),
        (lambda e: _bad(e, 1, qvel=None), "qvel"),
        (lambda e: _bad(e, 1, observations=e[1].observations[:, :5]), "observations"),
    ],
)
def test_bad_episodes_are_rejected_and_nothing_is_written(minari_home, episodes, make_bad, field):
    with pytest.raises(DataError, match=rf"episode 1: field '{field}'"):
        _write(make_bad(episodes))
    assert _files(minari_home) == []


def test_a_failure_inside_minari_leaves_nothing_behind(minari_home, episodes, monkeypatch):
    from minari.dataset._storages.hdf5_storage import HDF5Storage

    def boom(self, *a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(HDF5Storage, "update_episode_metadata", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _write(episodes)
    assert _files(minari_home) == []
    assert os.environ["MINARI_DATASETS_PATH"] == str(minari_home)  # the root is restored


def test_writer_rejects_bad_arguments(minari_home, episodes):
    with pytest.raises(DataError, match="ref_min_score"):
        _write(episodes, ref_min_score=10.0, ref_max_score=1.0)
    with pytest.raises(DataError, match="NoSuchEnv-v0"):
        _write(episodes, env_id="NoSuchEnv-v0")
    with pytest.raises(DataError, match="info"):
        _write(_bad(episodes, 0, info={"seed": object()}))
    short = [replace(e, observations=e.observations[:, :7]) for e in episodes]
    with pytest.raises(
        DataError, match=r"\(7,\) but env 'Hopper-v5' has observation shape \(11,\)"
    ):
        _write(short)
    with pytest.raises(UnknownIdError, match="dataset id"):
        _write(episodes, dataset_id="not a valid id")
    assert _files(minari_home) == []


def test_no_env_keeps_reference_scores_and_extra_files(minari_home, episodes, tmp_path):
    extra = tmp_path / "critic.pt"
    extra.write_bytes(b"weights")
    path = _write(episodes, env_id=None, extra_files={"expert_critic.pt": extra})
    assert (path / "expert_critic.pt").read_bytes() == b"weights"
    d = minari.load_dataset(DS_ID)
    assert d.storage.metadata["ref_max_score"] == pytest.approx(3234.3)  # Minari alone drops it
    assert d.observation_space.shape == (11,)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_dict_observations_are_flattened(minari_home):
    from minari.data_collector import EpisodeBuffer

    space = gym.spaces.Dict(
        {
            "achieved_goal": gym.spaces.Box(-1, 1, (2,), np.float64),
            "observation": gym.spaces.Box(-1, 1, (3,), np.float64),
        }
    )
    rng = np.random.default_rng(0)
    obs = {"achieved_goal": rng.normal(size=(5, 2)), "observation": rng.normal(size=(5, 3))}
    buf = EpisodeBuffer(
        id=0,
        observations=obs,
        actions=rng.normal(size=(4, 2)).astype(np.float32),
        rewards=[0.0, 1.0, 0.0, 1.0],
        terminations=[False] * 4,
        truncations=[False, False, False, True],
    )
    minari.create_dataset_from_buffers(
        "test/dict-v0",
        [buf],
        observation_space=space,
        action_space=gym.spaces.Box(-1, 1, (2,), np.float32),
    )
    ds = load_minari("test/dict-v0")
    flat = np.concatenate([obs["achieved_goal"], obs["observation"]], axis=1)
    np.testing.assert_array_equal(ds.observations, flat[:4].astype(np.float32))
    np.testing.assert_array_equal(ds.next_observations, flat[1:].astype(np.float32))
    assert ds.qpos is None and ds.successes is None
    assert ds.ref_min_score is None and ds.episode_info[0]["source"] == "minari"


def test_unknown_ids_and_paths(minari_home, tmp_path):
    with pytest.raises(UnknownIdError, match="pbrl/mujoco/hopper/nothing-v0"):
        load_dataset("pbrl/mujoco/hopper/nothing-v0")
    with pytest.raises(UnknownIdError, match="d4rl/hopper-bogus-v2"):
        load_dataset("d4rl/hopper-bogus-v2")
    with pytest.raises(DataError, match="no such"):
        load_dataset(str(tmp_path / "missing.hdf5"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="not a dataset"):
        load_dataset(str(tmp_path / "notes.txt"))
    with pytest.raises(UnknownIdError, match="expected"):
        generated_dataset_id("hopper", "medium")


def test_observation_size_must_match_the_task(minari_home, episodes):
    short = [replace(e, observations=e.observations[:, :7]) for e in episodes]
    _write(short, dataset_id="pbrl/mujoco/hopper/short-v0", env_id=None)
    with pytest.raises(
        DataError, match=r"pbrl/mujoco/hopper/short-v0.*7 dimensions.*mujoco/hopper"
    ):
        load_dataset("pbrl/mujoco/hopper/short-v0")
    with pytest.raises(DataError, match="verify failed"):
        verify("pbrl/mujoco/hopper/short-v0")


def test_registry_ids_list_info_and_verify(minari_home, episodes):
    assert generated_dataset_id("metaworld/button-press-topdown-v3", "medium-replay") == (
        "pbrl/metaworld/button-press-topdown-v3/medium-replay-v0"
    )
    _write(episodes)
    rows = {r["id"]: r for r in list_datasets()}
    d4rl_rows = [r for r in rows.values() if r["source"] == "d4rl"]
    assert len(d4rl_rows) == 20 and "d4rl/hopper-medium-replay-v2" in rows
    assert rows[DS_ID]["source"] == "generated" and rows[DS_ID]["episodes"] == 3
    info = dataset_info(DS_ID)
    assert info["task_id"] == "mujoco/hopper" and info["card"]["seeds"] == [0, 1, 2]
    assert "pbrl_card" not in info["metadata"]
    summary = verify(DS_ID)
    assert summary["episodes"] == 3 and summary["has_qpos_qvel"]
    assert summary["episode_length"]["max"] == 15
    returns = [float(np.sum(e.rewards)) for e in episodes]
    assert summary["return"]["max"] == pytest.approx(max(returns), rel=1e-6)
    assert summary["success_rate"] == pytest.approx(1 / 3)


def test_verify_reports_missing_reference_scores(minari_home, episodes):
    path = _write(episodes)
    meta_path = path / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["ref_min_score"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="reference scores"):
        verify(DS_ID)


def _cli(*args, env_extra=None):
    env = dict(os.environ)
    env.update(env_extra or {})
    env.pop("PBRL_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "pbrl", "datasets", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_list_info_verify_and_errors(minari_home, episodes, tmp_path):
    _write(episodes)
    env = {"MINARI_DATASETS_PATH": str(minari_home), "D4RL_DATASET_DIR": str(tmp_path / "d4rl")}
    out = _cli("list", "--json", env_extra=env)
    assert out.returncode == 0, out.stderr
    ids = {r["id"] for r in json.loads(out.stdout)}
    assert {DS_ID, "d4rl/walker2d-medium-replay-v2"} <= ids
    out = _cli("verify", DS_ID, env_extra=env)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr
    for args, needle in [
        (("verify", "pbrl/mujoco/hopper/nothing-v0"), "pbrl/mujoco/hopper/nothing-v0"),
        (("build", "nosuch/task", "--kind", "random"), "unknown task id 'nosuch/task'"),
    ]:
        out = _cli(*args, env_extra=env)
        assert out.returncode == 2
        assert needle in out.stderr and "Traceback" not in out.stderr
    assert minari_root() == minari_home


def test_cli_build_refuses_options_that_do_not_apply(minari_home, capsys):
    from pbrl.cli import main

    with pytest.raises(SystemExit) as ex:
        main(
            [
                "datasets",
                "build",
                "metaworld/button-press-topdown-v3",
                "--kind",
                "random",
                "--steps",
                "5",
            ]
        )
    assert ex.value.code == 2
    assert "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ex:
        main(["datasets", "build", "mujoco/hopper", "--kind", "random", "--workers", "2"])
    assert ex.value.code == 2
    assert "--workers" in capsys.readouterr().err
    assert _files(minari_home) == []


def test_stale_temporary_roots_are_cleaned(minari_home, episodes):
    stale, fresh = minari_home / ".pbrl-tmp-stale", minari_home / ".pbrl-tmp-fresh"
    stale.mkdir()
    fresh.mkdir()
    os.utime(stale, (0, 0))  # a writer killed long ago
    _write(episodes)
    assert not stale.exists() and fresh.exists()  # a concurrent writer's root is left alone
