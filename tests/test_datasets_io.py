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


# ---- the one field rule, the Minari loader on corrupt files, ids, the task match -------------
def test_check_field_accepts_floats_and_0_1_flags_only():
    from pbrl.datasets.base import check_field

    assert check_field(np.zeros((3, 2), np.float16), "x", "w").dtype == np.float16
    for bad, words in [
        (np.zeros((3, 2), np.int64), "dtype int64"),
        (np.zeros((3, 2), bool), "dtype bool"),
        (np.zeros((3, 2), np.complex64), "dtype complex64"),
        (np.array([["a", "b"]] * 3), "dtype <U1"),
        (np.array([1.0, np.nan, 2.0]), r"NaN or inf value \(row 1\)"),
        (np.array([1.0, 1e39]), r"beyond float32's range \(row 1\)"),
        (np.float64(1.0), "scalar"),
    ]:
        with pytest.raises(DataError, match=rf"^w: field 'x' .*{words}"):
            check_field(bad, "x", "w")
    with pytest.raises(DataError, match="has 2 rows, expected 3"):
        check_field(np.zeros(2), "x", "w", rows=3)
    with pytest.raises(DataError, match="expected 1 dimension"):
        check_field(np.zeros((2, 2)), "x", "w", ndim=1)
    flags = check_field(np.array([0, 1, 1], np.int8), "f", "w", flag=True)
    assert flags.dtype == bool and flags.tolist() == [False, True, True]
    assert check_field(np.array([0.0, 1.0]), "f", "w", flag=True).tolist() == [False, True]
    with pytest.raises(DataError, match=r"other than 0/1 \(row 1: 2\)"):
        check_field(np.array([0, 2]), "f", "w", flag=True)


def _corrupt_copy(minari_home, tmp_path, edit):
    import shutil

    import h5py

    src = _write(_hopper_episodes())
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    with h5py.File(dst / "data" / "main_data.hdf5", "r+") as f:
        edit(f)
    return dst


def _swap(key, fn):
    def edit(f):
        a = f[key][()]
        del f[key]
        f.create_dataset(key, data=fn(a))

    return edit


def _with_nan(a):
    a = a.astype(np.float64)
    a[2, 1] = np.nan
    return a


@pytest.mark.parametrize(
    "edit, words",
    [
        (_swap("episode_1/observations", _with_nan), "episode 1: field 'observations' has a NaN"),
        (_swap("episode_0/actions", lambda a: a.astype(np.int32)), "'actions' has dtype int32"),
        (_swap("episode_2/rewards", lambda a: a.astype(np.complex128)), "'rewards' has dtype"),
        (_swap("episode_0/rewards", lambda a: a[:-1]), "'rewards' has 14 rows, expected 15"),
        (_swap("episode_1/truncations", lambda a: a + 2.0), "'truncations' has a value other"),
        (_swap("episode_1/observations", lambda a: a[:, :5]), "'observations' has 5 values"),
        (_swap("episode_0/infos/qvel", _with_nan), "'infos/qvel' has a NaN"),
        (lambda f: f.__delitem__("episode_2/terminations"), "missing field.*'terminations'"),
        (lambda f: f.__delitem__("episode_1"), "episode 1 is missing"),
    ],
)
def test_minari_loader_refuses_corrupt_files_naming_file_and_field(
    minari_home, tmp_path, edit, words
):
    folder = _corrupt_copy(minari_home, tmp_path, edit)
    with pytest.raises(DataError, match=words) as err:
        load_minari(folder)
    assert str(folder / "data" / "main_data.hdf5") in str(err.value)
    with pytest.raises(DataError, match=words):
        verify(str(folder))


def test_minari_loader_refuses_truncated_files_and_bad_metadata(minari_home, tmp_path):
    folder = _corrupt_copy(minari_home, tmp_path, lambda f: None)
    h5 = folder / "data" / "main_data.hdf5"
    h5.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_minari(folder)
    with pytest.raises(DataError, match="truncated or corrupt"):
        dataset_info(str(folder))  # info opens the file too, without reading steps
    meta_path = folder / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    for key, value, words in [
        ("ref_max_score", "high", "'ref_max_score' must be a finite number"),
        ("dataset_id", "../../x-v0", "'dataset_id'.*'..'"),
        ("total_episodes", -1, "'total_episodes' must be a count"),
    ]:
        meta_path.write_text(json.dumps({**meta, key: value}))
        with pytest.raises(DataError, match=words):
            load_minari(folder)


def test_dataset_ids_never_leave_the_store(minari_home, tmp_path):
    from pbrl.datasets.minari_io import check_dataset_id

    for ok in ("mujoco/hopper/medium-v0", "D4RL/pen/human-v2", "x-v1", "a.b/c_d-v10"):
        assert check_dataset_id(ok) == ok
    for bad, words in [
        ("pbrl/../../etc/x-v0", "part '..'"),
        ("pbrl/./x-v0", "part '.'"),
        ("pbrl/.pbrl-tmp-1/x-v0", "part '.pbrl-tmp-1'"),
        ("/tmp/x-v0", "a path"),
        ("~/x-v0", "a path"),
        ("a//b-v0", "empty part"),
        ("bogus", "version"),
        ("a\\..\\b-v0", "a path"),
    ]:
        with pytest.raises(UnknownIdError, match=words):
            check_dataset_id(bad)
        with pytest.raises(UnknownIdError, match="dataset id"):
            load_dataset(bad) if not bad.startswith(("/", "~")) else check_dataset_id(bad)
    # A dataset outside the store reached through '..' is refused, not loaded under the id.
    _write(_hopper_episodes())
    escape = "pbrl/mujoco/hopper/../hopper/unit-v0"
    with pytest.raises(UnknownIdError, match=r"part '\.\.'"):
        load_dataset(escape)
    with pytest.raises(UnknownIdError, match=r"part '\.\.'"):
        dataset_info(escape)


def test_a_renamed_folder_in_the_store_does_not_claim_its_old_id(minari_home, episodes):
    import shutil

    path = _write(episodes)
    shutil.copytree(path, minari_home / "pbrl/mujoco/hopper/renamed-v0")
    with pytest.raises(DataError, match="names dataset 'pbrl/mujoco/hopper/unit-v0' but is stored"):
        load_dataset("pbrl/mujoco/hopper/renamed-v0")
    # By path it is a copy of that dataset, and says so.
    assert load_dataset(str(minari_home / "pbrl/mujoco/hopper/renamed-v0")).id == DS_ID


def test_action_size_must_match_the_task(minari_home, episodes):
    wide = [replace(e, actions=np.concatenate([e.actions, e.actions[:, :1]], 1)) for e in episodes]
    _write(wide, dataset_id="pbrl/mujoco/hopper/wide-v0", env_id=None)
    with pytest.raises(
        DataError, match=r"wide-v0.*field 'actions' has 4 dimensions per step.*mujoco/hopper' has 3"
    ):
        load_dataset("pbrl/mujoco/hopper/wide-v0")
    with pytest.raises(DataError, match="verify failed: field 'actions' has 4 dimensions"):
        verify("pbrl/mujoco/hopper/wide-v0")


def test_writer_refuses_integer_observations_and_flags_other_than_0_1(minari_home, episodes):
    with pytest.raises(DataError, match="episode 0: field 'observations' has dtype int64"):
        _write(_bad(episodes, 0, observations=episodes[0].observations.astype(np.int64)))
    flags = episodes[2].truncations.astype(np.int64) * 2
    with pytest.raises(DataError, match="episode 2: field 'truncations' has a value other"):
        _write(_bad(episodes, 2, truncations=flags))
    assert _files(minari_home) == []


def test_a_failed_install_leaves_the_store_as_it_was(minari_home, episodes, monkeypatch):
    import pbrl.datasets.minari_io as mio

    real_replace = os.replace

    def fail_on_final(src, dst):
        if str(dst).endswith("unit-v0"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(mio.os, "replace", fail_on_final)
    with pytest.raises(OSError, match="No space"):
        _write(episodes)
    assert _files(minari_home) == []


def test_new_dataset_checks_come_before_any_work(minari_home, episodes, tmp_path, monkeypatch):
    from pbrl.datasets.minari_io import check_new_dataset
    from pbrl.errors import PbrlError

    _write(episodes)
    with pytest.raises(DataError, match="already exists"):
        check_new_dataset(DS_ID, overwrite=False)
    assert check_new_dataset(DS_ID, overwrite=True) == minari_home / DS_ID
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "file" / "store"))
    with pytest.raises(PbrlError, match="MINARI_DATASETS_PATH.*not a folder"):
        check_new_dataset("pbrl/mujoco/hopper/other-v0", overwrite=False)


def test_rate_log_throttles_and_reports_rate_and_eta():
    import logging

    from pbrl.datasets.progress import RateLog

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("pbrl.test.progress")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    now = [100.0]
    p = RateLog(logger, "build", 10, every_s=5.0, clock=lambda: now[0])
    p.begin()
    for k in range(1, 11):
        now[0] += 1.0  # one episode a second
        p.update(k)
    p.update(10)  # the final line is written once
    assert records == [
        "build: episodes 5/10 (50%), 1.0 episodes/s, ETA 5s",
        "build: episodes 10/10 (100%), 1.0 episodes/s, done in 10s",
    ]


def test_cli_list_prints_full_ids_when_piped(minari_home, tmp_path):
    long_id = "pbrl/mujoco/hopper/" + "a-very-long-dataset-kind-name-" * 3 + "v0"
    _write(_hopper_episodes(n=1), dataset_id=long_id)
    env = {"MINARI_DATASETS_PATH": str(minari_home), "D4RL_DATASET_DIR": str(tmp_path / "d4rl")}
    out = _cli("list", "--source", "generated", env_extra=env)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["id", "source", "local", "episodes", "steps"]
    assert lines[1].split() == [long_id, "generated", "yes", "1", "15"]


def test_build_and_diagnose_show_library_progress_on_stderr_only_while_they_run(capsys):
    import logging

    from pbrl.cli.logs import progress_on_stderr

    logger = logging.getLogger("pbrl.datasets.metaworld_gen")
    with progress_on_stderr():
        logger.info("episodes 1/2")
        logging.getLogger("OpenGL.acceleratesupport").info("third-party chatter stays out")
    logger.info("after the command")
    out, err = capsys.readouterr()
    assert err.splitlines() == ["episodes 1/2"] and out == ""
    assert not logging.getLogger("pbrl").handlers
