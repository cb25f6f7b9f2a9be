"""Preference files: labelling, save/load, validation, batches, statistics and the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pbrl.datasets.base import OfflineDataset
from pbrl.errors import DataError, UnknownIdError
from pbrl.prefs import (
    FORMAT_VERSION,
    MAX_LABEL_STEPS,
    PreferenceData,
    check_label_options,
    check_prefs_dataset,
    dataset_fingerprint,
    from_feedback,
    label_dataset,
    load_preferences,
    make_preference_data,
    preference_stats,
    save_preferences,
)
from pbrl.types import PreferenceBatch

ROOT = Path(__file__).resolve().parents[1]


def make_ds(lengths=(60, 45, 80, 30), obs_dim=3, act_dim=2, seed=0, ds_id="test/tiny-v0"):
    """A small flat dataset; episode 0 ends by termination, the others by truncation."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths, dtype=np.int64)
    n = int(lengths.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    nxt = np.roll(obs, -1, axis=0)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    ends = starts + lengths - 1
    terminals[ends[0]] = True
    timeouts[ends[1:]] = True
    return OfflineDataset(
        id=ds_id,
        task_id=None,
        observations=obs,
        actions=rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=nxt,
        terminals=terminals,
        timeouts=timeouts,
        starts=starts,
        lengths=lengths,
    )


def test_label_save_load_to_batch_roundtrip(tmp_path):
    ds = make_ds()
    data = label_dataset(ds, "oracle", 50, 10, seed=3)
    assert data.num_queries == 50 and data.num_answered == 50
    assert data.dataset_id == ds.id
    assert data.meta["segment_length"] == 10 and data.meta["seed"] == 3
    assert all(f.labeler.startswith("teacher:oracle") for f in data.feedback)
    # The oracle prefers the larger segment return.
    ra = np.array([ds.rewards[ds.segment_rows(f.a)].sum() for f in data.feedback])
    rb = np.array([ds.rewards[ds.segment_rows(f.b)].sum() for f in data.feedback])
    np.testing.assert_array_equal(data.prefer_b, (rb > ra).astype(np.float32))

    path = tmp_path / "prefs.npz"
    save_preferences(data, path)
    back = load_preferences(path)
    np.testing.assert_array_equal(back.refs_a, data.refs_a)
    np.testing.assert_array_equal(back.refs_b, data.refs_b)
    np.testing.assert_array_equal(back.prefer_b, data.prefer_b)
    assert back.feedback == data.feedback
    assert back.meta["teacher"] == data.meta["teacher"]
    # The file is plain numpy data: readable without pickle.
    with np.load(path, allow_pickle=False) as z:
        assert {"refs_a", "refs_b", "prefer_b", "skipped"} <= set(z.files)

    batch = back.to_batch(ds, device="cpu")
    assert isinstance(batch, PreferenceBatch)
    assert batch.obs_a.shape == (50, 10, 3) and batch.act_b.shape == (50, 10, 2)
    assert batch.next_obs_a.shape == (50, 10, 3) and batch.terminal_b.shape == (50, 10)
    assert batch.prefer_b.dtype == torch.float32 and batch.prefer_b.device.type == "cpu"
    assert torch.all(batch.mask_a == 1) and torch.all(batch.mask_b == 1)
    rows = ds.segment_rows(back.feedback[7].a)
    np.testing.assert_array_equal(batch.obs_a[7].numpy(), ds.observations[rows])
    np.testing.assert_array_equal(batch.next_obs_a[7].numpy(), ds.next_observations[rows])
    # Every tensor goes to the requested device (the meta device stands in for a GPU here).
    on_meta = back.to_batch(ds, device="meta")
    assert all(v.device.type == "meta" for v in on_meta.__dict__.values())
    assert on_meta.obs_b.shape == (50, 10, 3)
    # Provenance: a PreferenceBatch has no reward field at all.
    assert not any("reward" in f.name for f in dataclasses.fields(PreferenceBatch))


def test_same_seed_same_labels_and_ids():
    ds = make_ds()
    a = label_dataset(ds, "stoc", 40, 8, seed=11)
    b = label_dataset(ds, "stoc", 40, 8, seed=11)
    c = label_dataset(ds, "stoc", 40, 8, seed=12)
    np.testing.assert_array_equal(a.prefer_b, b.prefer_b)
    np.testing.assert_array_equal(a.refs_a, b.refs_a)
    assert [f.query_id for f in a.feedback] == [f.query_id for f in b.feedback]
    assert not np.array_equal(a.refs_a, c.refs_a)
    assert len({f.query_id for f in a.feedback}) == 40


def test_skips_are_nan_and_never_batched(tmp_path):
    ds = make_ds()
    data = label_dataset(ds, "oracle(eps_skip=0.0)", 30, 10, seed=0)
    skipped = np.zeros(30, bool)
    skipped[[1, 4, 9]] = True
    data = make_preference_data(
        ds.id, data.refs_a, data.refs_b, data.prefer_b, skipped, labeler="human:test"
    )
    assert np.isnan(data.prefer_b[skipped]).all()
    assert [f.skipped for f in data.feedback] == skipped.tolist()
    save_preferences(data, tmp_path / "s.npz")
    back = load_preferences(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.skipped, skipped)
    assert back.to_batch(ds).size == 27
    ans = back.answered()
    assert ans.num_queries == 27 and not ans.skipped.any()
    st = preference_stats(back, ds)
    assert st["skipped"] == 3 and st["skip_fraction"] == pytest.approx(0.1)


def test_unequal_lengths_are_padded_and_masked():
    ds = make_ds()
    refs_a = np.array([[0, 0, 5], [2, 10, 8]])
    refs_b = np.array([[1, 3, 8], [3, 0, 3]])
    data = make_preference_data(ds.id, refs_a, refs_b, [1.0, 0.5], None, labeler="human:x")
    batch = data.to_batch(ds)
    assert batch.obs_a.shape == (2, 8, 3)
    np.testing.assert_array_equal(batch.mask_a.numpy(), [[1] * 5 + [0] * 3, [1] * 8])
    np.testing.assert_array_equal(batch.mask_b.numpy(), [[1] * 8, [1] * 3 + [0] * 5])
    assert torch.all(batch.obs_a[0, 5:] == 0)
    np.testing.assert_array_equal(
        batch.obs_b[1, :3].numpy(), ds.observations[ds.starts[3] : ds.starts[3] + 3]
    )


def test_terminal_flags_come_from_the_dataset():
    ds = make_ds()
    # The last 4 steps of episode 0, which ends by termination.
    data = make_preference_data(ds.id, [[0, 56, 4]], [[1, 0, 4]], [0.0], None, labeler="h")
    batch = data.to_batch(ds)
    np.testing.assert_array_equal(batch.terminal_a.numpy(), [[0, 0, 0, 1]])
    np.testing.assert_array_equal(batch.terminal_b.numpy(), [[0, 0, 0, 0]])


def test_to_batch_rejects_segment_crossing_episode_end():
    ds = make_ds()
    data = make_preference_data(ds.id, [[0, 55, 10]], [[1, 0, 10]], [1.0], None, labeler="h")
    with pytest.raises(DataError, match="crosses the end of episode 0"):
        data.to_batch(ds)


def test_split_partitions_queries():
    ds = make_ds()
    data = label_dataset(ds, "oracle", 40, 5, seed=1)
    train, held = data.split(0.75, np.random.default_rng(0))
    assert train.num_queries == 30 and held.num_queries == 10
    ids = {f.query_id for f in train.feedback} | {f.query_id for f in held.feedback}
    assert ids == {f.query_id for f in data.feedback}
    for part in (train, held):
        for i, f in enumerate(part.feedback):
            assert f.prefer_b == pytest.approx(float(part.prefer_b[i]))
            assert [f.a.episode, f.a.start, f.a.length] == part.refs_a[i].tolist()


def test_stats_on_hand_values():
    ds = make_ds()
    refs = np.array([[0, 0, 4]] * 5)
    refs_b = np.array([[1, 0, 4]] * 5)
    data = make_preference_data(
        ds.id,
        refs,
        refs_b,
        [1.0, 0.0, 0.5, 1.0, 0.0],
        [False, False, False, False, True],
        labeler="human:x",
    )
    st = preference_stats(data)
    assert st["queries"] == 5 and st["answered"] == 4
    assert st["skip_fraction"] == pytest.approx(0.2)
    assert st["tie_fraction"] == pytest.approx(0.25)
    assert st["balance"] == pytest.approx(2.5 / 4)
    assert st["frac_b"] == pytest.approx(0.5) and st["frac_a"] == pytest.approx(0.25)
    assert st["oracle_agreement"] is None  # no dataset given
    # With the dataset: the oracle's side of every strict pair is known.
    ra = float(ds.rewards[0:4].sum())
    rb = float(ds.rewards[ds.starts[1] : ds.starts[1] + 4].sum())
    oracle_b = rb > ra
    st = preference_stats(data, ds)
    agree = [(1.0 > 0.5) == oracle_b, (0.0 > 0.5) == oracle_b, (1.0 > 0.5) == oracle_b]
    assert st["oracle_agreement_n"] == 3
    assert st["oracle_agreement"] == pytest.approx(np.mean(agree))


def test_oracle_agrees_with_itself_and_mistake_does_not():
    ds = make_ds()
    assert preference_stats(label_dataset(ds, "oracle", 200, 10, 0), ds)["oracle_agreement"] == 1.0
    agree = preference_stats(label_dataset(ds, "mistake", 400, 10, 0), ds)["oracle_agreement"]
    assert 0.8 < agree < 0.97


def test_unknown_teacher():
    with pytest.raises(UnknownIdError, match="unknown teacher"):
        label_dataset(make_ds(), "no-such-teacher", 10, 5, 0)


def test_from_feedback_rebuilds_the_data():
    ds = make_ds()
    data = label_dataset(ds, "oracle", 12, 6, 0)
    back = from_feedback(list(data.feedback))
    np.testing.assert_array_equal(back.refs_a, data.refs_a)
    np.testing.assert_array_equal(back.prefer_b, data.prefer_b)
    assert back.dataset_id == ds.id


# ---- bad files ---------------------------------------------------------------------------------
def _write_npz(path: Path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _meta(arrays, **changes):
    meta = json.loads(arrays["meta_json"].tobytes())
    meta.update(changes)
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)


def _set(arr, idx, value):
    out = arr.copy()
    out[idx] = value
    return out


def _valid_arrays(tmp_path):
    ds = make_ds()
    save_preferences(label_dataset(ds, "oracle", 6, 5, 0), tmp_path / "ok.npz")
    with np.load(tmp_path / "ok.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.pop("refs_b"), "missing field 'refs_b'"),
        (lambda a: a.update(refs_a=a["refs_a"][:4]), "field 'refs_a' has 4 rows"),
        (lambda a: a.update(refs_a=a["refs_a"][:, :2]), "field 'refs_a' must be an \\(M, 3\\)"),
        (lambda a: a.update(prefer_b=a["prefer_b"] * 0 + 1.5), "field 'prefer_b'.*outside"),
        (lambda a: a.update(skipped=np.ones(6, bool)), "field 'skipped'.*must be NaN"),
        (lambda a: a.update(feedback_jsonl=a["feedback_jsonl"][:20]), "feedback_jsonl"),
        (lambda a: a.update(meta_json=np.frombuffer(b"{not json", np.uint8)), "meta_json"),
        (lambda a: a.update(meta_json=np.frombuffer(b"\xff\xfe{", np.uint8)), "meta_json"),
        (lambda a: _meta(a, format_version="abc"), "field 'format_version'.*'abc'"),
        (lambda a: _meta(a, format_version=2.5), "field 'format_version'.*2.5"),
        (lambda a: _meta(a, format_version=True), "field 'format_version'"),
        (lambda a: _meta(a, format_version=0), "field 'format_version'"),
        (lambda a: _meta(a, format_version=10**30), "format_version.*newer"),
        (lambda a: _meta(a, format_version=None), "field 'format_version'"),
        (lambda a: _meta(a, dataset_id=[1]), "field 'dataset_id' must be a string"),
        (lambda a: _meta(a, task_id=3), "field 'task_id' must be a string"),
        (lambda a: _meta(a, dataset_fingerprint="md5:x"), "field 'dataset_fingerprint'"),
        (lambda a: _meta(a, unresolved="no"), "field 'unresolved'"),
        (lambda a: a.update(prefer_b=np.array(["a"] * 6)), "field 'prefer_b'.*floating"),
        (lambda a: a.update(refs_a=a["refs_a"].astype(np.float64)), "field 'refs_a'.*integers"),
        (lambda a: a.update(prefer_b=_set(a["prefer_b"], 2, np.nan)), "prefer_b.*query 2"),
        (lambda a: a.update(refs_a=_set(a["refs_a"], (1, 2), -3)), "lengths must be positive"),
        (lambda a: a.update(refs_a=_set(a["refs_a"], (1, 1), -3)), "feedback_jsonl.*refs_a"),
        (lambda a: a.update(feedback_jsonl=np.frombuffer(b"[1]\n" * 6, np.uint8)), "line 1"),
        (lambda a: a.update(feedback_jsonl=np.frombuffer(b"\xff\n", np.uint8)), "UTF-8"),
    ],
)
def test_load_rejects_malformed_files(tmp_path, mutate, message):
    arrays = _valid_arrays(tmp_path)
    mutate(arrays)
    bad = tmp_path / "bad.npz"
    _write_npz(bad, **arrays)
    with pytest.raises(DataError, match=message) as e:
        load_preferences(bad)
    assert str(bad) in str(e.value)


def test_load_rejects_non_npz_and_pickled_objects(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match="not a preference file"):
        load_preferences(junk)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        load_preferences(empty)
    arrays = _valid_arrays(tmp_path)
    arrays["refs_a"] = np.array([object()] * 6, dtype=object)
    _write_npz(tmp_path / "obj.npz", **arrays)
    with pytest.raises(DataError, match="obj.npz"):
        load_preferences(tmp_path / "obj.npz")
    with pytest.raises(DataError, match="no such preference file"):
        load_preferences(tmp_path / "missing.npz")


def test_save_is_atomic(tmp_path):
    ds = make_ds()
    good = label_dataset(ds, "oracle", 6, 5, 0)
    path = tmp_path / "p.npz"
    save_preferences(good, path)
    before = path.read_bytes()
    broken = dataclasses.replace(good, inline=ds.without_rewards())
    with pytest.raises(Exception, match="no rewards"):
        save_preferences(broken, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npz"]


def test_load_rejects_out_of_range_refs_kept_consistent(tmp_path):
    # Refs and feedback agree, but a start is negative: refused at load, naming the field.
    ds = make_ds()
    data = label_dataset(ds, "oracle", 4, 5, 0)
    refs = data.refs_b.copy()
    refs[2, 1] = -1
    bad = make_preference_data(
        ds.id, data.refs_a, refs, data.prefer_b, data.skipped, labeler="x", meta=dict(data.meta)
    )
    save_preferences(bad, tmp_path / "neg.npz")
    with pytest.raises(DataError, match="neg.npz: field 'refs_b' row 2"):
        load_preferences(tmp_path / "neg.npz")


# ---- data and labels stay tied ----------------------------------------------------------------
def test_fingerprint_covers_the_steps_not_the_name():
    ds = make_ds()
    fp = dataset_fingerprint(ds)
    assert fp.startswith("sha256:") and len(fp) == 7 + 64
    # Same content under another id, path or dtype: same fingerprint.
    same = dataclasses.replace(
        ds, id="other/id-v0", path="/x", observations=ds.observations.astype(np.float64)
    )
    assert dataset_fingerprint(same) == fp
    # Any step changed: another fingerprint.
    for name in ("observations", "actions", "rewards", "next_observations"):
        arr = getattr(ds, name).copy()
        arr.reshape(-1)[7] += 1e-3
        assert dataset_fingerprint(dataclasses.replace(ds, **{name: arr})) != fp, name
    flags = ds.timeouts.copy()
    flags[3] = ~flags[3]
    assert dataset_fingerprint(dataclasses.replace(ds, timeouts=flags)) != fp
    # Moved episode boundary, same steps.
    lengths = ds.lengths.copy()
    lengths[0] -= 1
    lengths[1] += 1
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    moved = dataclasses.replace(ds, lengths=lengths, starts=starts)
    assert dataset_fingerprint(moved) != fp


def test_label_records_the_fingerprint_and_the_check_passes(tmp_path):
    ds = make_ds()
    save_preferences(label_dataset(ds, "oracle", 6, 5, 0), tmp_path / "p.npz")
    data = load_preferences(tmp_path / "p.npz")
    assert data.meta["format_version"] == FORMAT_VERSION == 2
    assert data.meta["dataset_fingerprint"] == dataset_fingerprint(ds)
    assert check_prefs_dataset(data, ds, where="p.npz") == []


def test_check_refuses_another_dataset_a_rebuilt_one_and_another_task():
    ds = make_ds()
    data = label_dataset(ds, "oracle", 6, 5, 0)
    other = make_ds(ds_id="test/other-v0")
    with pytest.raises(DataError, match="p.npz: labels refer to dataset 'test/tiny-v0'.*--allow"):
        check_prefs_dataset(data, other, where="p.npz")
    rebuilt = make_ds(seed=1)  # same id, other content
    with pytest.raises(DataError, match="p.npz: dataset 'test/tiny-v0' has changed"):
        check_prefs_dataset(data, rebuilt, where="p.npz")
    tasked = dataclasses.replace(data, meta=dict(data.meta, task_id="mujoco/hopper"))
    with pytest.raises(DataError, match="task 'mujoco/hopper'"):
        check_prefs_dataset(tasked, dataclasses.replace(ds, task_id="mujoco/ant"), where="p")
    # The override: a warning line instead, naming the flag.
    (w,) = check_prefs_dataset(data, rebuilt, where="p.npz", allow_mismatch=True)
    assert w.startswith("warning: p.npz:") and "--allow-dataset-mismatch" in w
    # Even with the override, segments outside the dataset are refused.
    short = make_ds(lengths=(5, 5, 5, 5))
    with pytest.raises(DataError, match="p.npz: field 'refs_a'"):
        check_prefs_dataset(data, short, where="p.npz", allow_mismatch=True)


def test_files_without_a_fingerprint_are_used_with_a_warning(tmp_path):
    ds = make_ds()
    arrays = _valid_arrays(tmp_path)
    meta = json.loads(arrays["meta_json"].tobytes())
    meta.pop("dataset_fingerprint")
    meta["format_version"] = 1
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    _write_npz(tmp_path / "v1.npz", **arrays)
    data = load_preferences(tmp_path / "v1.npz")
    (w,) = check_prefs_dataset(data, ds, where="v1.npz")
    assert "format version 1" in w and "cannot be checked" in w
    # Unresolved data (published indices) has nothing to check yet.
    unresolved = make_preference_data(
        "d4rl/x", [[-1, 3, 5]], [[-1, 9, 5]], [1.0], None, labeler="h", meta={"unresolved": True}
    )
    assert check_prefs_dataset(unresolved, ds, where="u") == []


@pytest.mark.parametrize(
    ("queries", "segment", "seed", "message"),
    [
        (0, 5, 0, "--queries"),
        (-3, 5, 0, "--queries"),
        (5, 0, 0, "--segment"),
        (5, -1, 0, "--segment"),
        (5, 5, -1, "--seed"),
        (MAX_LABEL_STEPS, 5, 0, "more than pbrl allows"),
    ],
)
def test_label_options_are_checked(queries, segment, seed, message):
    from pbrl.errors import PbrlError

    with pytest.raises(PbrlError, match=message):
        check_label_options(queries, segment, seed)
    with pytest.raises(PbrlError, match=message):
        label_dataset(make_ds(), "oracle", queries, segment, seed)


def test_constructor_validates():
    with pytest.raises(DataError, match="feedback"):
        PreferenceData(
            "x",
            np.zeros((2, 3), np.int64) + 1,
            np.zeros((2, 3), np.int64) + 1,
            np.zeros(2, np.float32),
            np.zeros(2, bool),
            (),
        )


# ---- CLI -----------------------------------------------------------------------------------------
def _write_d4rl(path: Path, n: int = 400) -> None:
    import h5py

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["observations"] = rng.normal(size=(n, 4)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, size=(n, 2)).astype(np.float32)
        f["rewards"] = rng.normal(size=n).astype(np.float32)
        term = np.zeros(n, bool)
        term[120] = True
        tout = np.zeros(n, bool)
        tout[[59, 249]] = True
        f["terminals"] = term
        f["timeouts"] = tout


def _pbrl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "pbrl", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_cli_label_and_stats(tmp_path):
    data_file = tmp_path / "tiny.hdf5"
    _write_d4rl(data_file)
    out = tmp_path / "prefs.npz"
    r = _pbrl(
        "label", str(data_file), "--teacher", "mistake", "--queries", "300", "--segment", "20",
        "--seed", "0", "-o", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "300 queries" in r.stdout
    data = load_preferences(out)
    assert data.num_queries == 300 and data.meta["teacher_name"] == "mistake"
    r = _pbrl("prefs", "stats", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "oracle agreement" in r.stdout and "strict pairs" in r.stdout
    r = _pbrl("prefs", "stats", str(out), "--json", cwd=tmp_path)
    import json

    st = json.loads(r.stdout)
    assert 0.8 < st["oracle_agreement"] < 0.97 and st["queries"] == 300
    # An unknown teacher: a one-line error, exit 2, nothing written.
    bad = tmp_path / "bad.npz"
    r = _pbrl(
        "label", str(data_file), "--teacher", "nosuch", "--queries", "5", "--segment", "5",
        "-o", str(bad), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2 and "unknown teacher 'nosuch'" in r.stderr
    assert "Traceback" not in r.stderr and not bad.exists()


@pytest.mark.slow
def test_cli_label_by_minari_id(tmp_path, minari_home):
    """A dataset in the local Minari store, labelled and inspected by its id."""
    from pbrl.datasets.base import EpisodeData
    from pbrl.datasets.minari_io import write_minari_dataset

    rng = np.random.default_rng(0)
    eps = []
    for t in (40, 55, 35):
        eps.append(
            EpisodeData(
                observations=rng.normal(size=(t + 1, 3)).astype(np.float32),
                actions=rng.uniform(-1, 1, size=(t, 2)).astype(np.float32),
                rewards=rng.normal(size=t).astype(np.float32),
                terminations=np.zeros(t, bool),
                truncations=np.eye(1, t, t - 1, dtype=bool)[0],
            )
        )
    write_minari_dataset(
        "pbrltest/tiny-v0", eps, env_id=None, ref_min_score=0.0, ref_max_score=1.0, card={}
    )
    out = tmp_path / "p.npz"
    r = _pbrl(
        "label", "pbrltest/tiny-v0", "--teacher", "skip", "--queries", "60", "--segment", "8",
        "--seed", "1", "-o", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = load_preferences(out)
    assert data.dataset_id == "pbrltest/tiny-v0" and data.num_queries == 60
    assert data.num_answered < 60  # the skip teacher dropped some
    r = _pbrl("prefs", "stats", str(out), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import json

    st = json.loads(r.stdout)
    assert st["oracle_agreement"] == 1.0 and st["skipped"] == 60 - data.num_answered
