"""Importers/exporters of published label formats, the restricted unpickler and index mapping."""

from __future__ import annotations

import os
import pickle
import pickletools
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_prefs import make_ds  # tests/ is on sys.path under pytest's rootdir import mode

from pbrl.datasets.d4rl import load_d4rl_hdf5
from pbrl.errors import DataError, PbrlError, UnknownIdError
from pbrl.prefs import label_dataset, load_preferences, make_preference_data, save_preferences
from pbrl.prefs.formats import (
    export_labels,
    import_labels,
    qlearning_refs,
    resolve_qlearning_refs,
    safe_load_pickle,
)

ROOT = Path(__file__).resolve().parents[1]
# Unchanged copies of the published files (provenance in their README.md).
PUBLISHED = Path(__file__).resolve().parent / "data" / "published-labels"
PT = PUBLISHED / "preference-transformer"
UNI = PUBLISHED / "uni-rlhf"


def _counts(prefer_b: np.ndarray) -> dict[float, int]:
    vals, counts = np.unique(prefer_b, return_counts=True)
    return {float(v): int(c) for v, c in zip(vals, counts, strict=True)}


# ---- the real published files ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("task", "n", "counts"),
    [
        # label_human counts: (-1 tie, 0 first, 1 second), read with pickletools-checked loads.
        ("hopper-medium-replay-v2", 500, {0.0: 121, 0.5: 191, 1.0: 188}),
        ("walker2d-medium-replay-v2", 500, {0.0: 164, 0.5: 117, 1.0: 219}),
        ("antmaze-medium-play-v2", 1000, {0.0: 243, 0.5: 488, 1.0: 269}),
    ],
)
def test_import_real_preference_transformer(task, n, counts):
    data = import_labels("pt", [PT / task])
    assert data.num_queries == n and data.num_answered == n
    assert _counts(data.prefer_b) == counts  # -1 ties preserved as 0.5
    assert data.dataset_id == f"d4rl/{task}"
    assert not data.resolved and data.meta["segment_length"] == 100
    assert (data.refs_a[:, 0] == -1).all() and (data.refs_a[:, 2] == 100).all()
    raw = safe_load_pickle(PT / task / f"indices_num{n}")
    np.testing.assert_array_equal(data.refs_a[:, 1], raw)
    assert all(f.labeler == "human:preference-transformer" for f in data.feedback)


@pytest.mark.parametrize(
    ("env", "counts"),
    [
        ("hopper-medium-replay-v2", {0.0: 875, 0.5: 292, 1.0: 833}),
        ("walker2d-medium-replay-v2", {0.0: 960, 0.5: 175, 1.0: 865}),
    ],
)
def test_import_real_uni_rlhf(env, counts):
    folder = UNI / f"{env}_human_labels"
    data = import_labels("uni-rlhf", [folder])
    assert data.num_queries == 2000
    assert _counts(data.prefer_b) == counts
    assert data.meta["segment_length"] == 200 and (data.refs_b[:, 2] == 200).all()
    assert data.meta["env"] == env and data.dataset_id == f"d4rl/{env}"
    # The three files given one by one work the same.
    again = import_labels("uni-rlhf", sorted(folder.iterdir()))
    np.testing.assert_array_equal(again.refs_b, data.refs_b)


def test_real_files_round_trip_through_exporters(tmp_path):
    for fmt, src in (
        ("pt", PT / "hopper-medium-replay-v2"),
        ("uni-rlhf", UNI / "hopper-medium-replay-v2_human_labels"),
    ):
        data = import_labels(fmt, [src])
        save_preferences(data, tmp_path / f"{fmt}.npz")
        loaded = load_preferences(tmp_path / f"{fmt}.npz")
        assert not loaded.resolved
        out = tmp_path / f"{fmt}-out"
        written = export_labels(loaded, fmt, out)
        assert sorted(p.name for p in written) == sorted(p.name for p in src.iterdir())
        back = import_labels(fmt, [out])
        np.testing.assert_array_equal(back.refs_a, data.refs_a)
        np.testing.assert_array_equal(back.refs_b, data.refs_b)
        np.testing.assert_array_equal(back.prefer_b, data.prefer_b)
        # Same values as the published files, file by file.
        for p in written:
            mine, theirs = safe_load_pickle(p), safe_load_pickle(src / p.name)
            assert type(mine) is type(theirs)
            np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))


# ---- the restricted unpickler ------------------------------------------------------------------
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "label_human"
    bad.write_bytes(pickle.dumps([0, 1, _Evil(marker)]))
    with pytest.raises(
        DataError, match=r"pickle refers to (posix|os|nt)\.system, which is not plain"
    ):
        safe_load_pickle(bad)
    assert not marker.exists()
    # Through an importer too: nothing runs, nothing is written.
    for name, arr in (("indices_num3", [1, 2, 3]), ("indices_2_num3", [4, 5, 6])):
        (tmp_path / name).write_bytes(pickle.dumps(np.array(arr, dtype=np.int32)))
    out = tmp_path / "out.npz"
    r = _pbrl("prefs", "import", "--format", "pt", str(tmp_path), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 2 and "not plain data" in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists() and not out.exists()


def test_unpickler_admits_plain_data_and_refuses_other_globals(tmp_path):
    plain = {
        "a": [1, 2.5, "x", None, True, (3, 4)],
        "arr": np.arange(5, dtype=np.int32),
        "obj": np.array([{"k": 1}], dtype=object),
        "scalar": np.float32(1.5),
        "set": {1, 2},
        "bytes": b"\x00\x01",
    }
    for proto in (2, 4, 5):
        p = tmp_path / f"plain{proto}.pkl"
        p.write_bytes(pickle.dumps(plain, protocol=proto))
        got = safe_load_pickle(p)
        np.testing.assert_array_equal(got["arr"], plain["arr"])
        assert got["a"] == plain["a"] and got["scalar"] == np.float32(1.5)
        assert got["obj"][0] == {"k": 1} and got["set"] == {1, 2} and got["bytes"] == b"\x00\x01"
    p = tmp_path / "eval.pkl"
    p.write_bytes(b"cbuiltins\neval\n(V1+1\ntR.")
    with pytest.raises(DataError, match=r"builtins\.eval, which is not plain data"):
        safe_load_pickle(p)
    p.write_bytes(b"\x80\x04\x95\x05\x00")  # truncated
    with pytest.raises(DataError, match="not a readable pickle"):
        safe_load_pickle(p)


# ---- D4RL index mapping on a small file in D4RL's layout ----------------------------------------
@pytest.fixture()
def d4rl_file(tmp_path) -> Path:
    """400 rows: terminal at row 120, timeouts at rows 59 and 249.

    Episodes: rows 0-59, 60-120, 121-249, 250-399. qlearning rows skip 59, 249 and the last
    row 399: k -> k (k < 59), k + 1 (59 <= k < 248), k + 2 (k >= 248); 397 rows.
    """
    path = tmp_path / "tiny_medium-v2.hdf5"
    rng = np.random.default_rng(0)
    n = 400
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
    return path


def _write_pt(folder: Path, a, b, labels) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    (folder / f"indices_num{len(a)}").write_bytes(pickle.dumps(np.asarray(a, dtype=np.int32)))
    (folder / f"indices_2_num{len(b)}").write_bytes(pickle.dumps(np.asarray(b, dtype=np.int32)))
    (folder / "label_human").write_bytes(pickle.dumps(list(labels)))
    assert n == len(labels)
    return folder


def test_qlearning_indices_map_to_episodes(d4rl_file, tmp_path):
    ds = load_d4rl_hdf5(d4rl_file)
    refs = qlearning_refs(ds, np.array([0, 49, 59, 120, 250, 387]), 10)
    assert refs.tolist() == [
        [0, 0, 10],
        [0, 49, 10],
        [1, 0, 10],
        [2, 0, 10],
        [3, 2, 10],
        [3, 139, 10],
    ]
    folder = _write_pt(tmp_path / "pt", [0, 59, 250], [49, 120, 387], [0, 1, -1])
    data = import_labels("pt", [folder], dataset=ds, dataset_id=ds.id, segment_length=10)
    assert data.resolved and data.dataset_id == ds.id
    assert data.refs_a.tolist() == [[0, 0, 10], [1, 0, 10], [3, 2, 10]]
    assert data.refs_b.tolist() == [[0, 49, 10], [2, 0, 10], [3, 139, 10]]
    np.testing.assert_array_equal(data.prefer_b, [0.0, 1.0, 0.5])
    # The segment's steps are the raw rows the published index names.
    batch = data.to_batch(ds)
    np.testing.assert_array_equal(batch.obs_a[2].numpy(), ds.observations[252:262])
    # Unresolved first, resolved later: the same result.
    later = resolve_qlearning_refs(import_labels("pt", [folder], segment_length=10), ds)
    np.testing.assert_array_equal(later.refs_a, data.refs_a)
    np.testing.assert_array_equal(later.refs_b, data.refs_b)
    assert later.feedback[1].a.episode == 1 and later.feedback[1].a.dataset_id == ds.id
    # Export back to indices with the dataset: the published numbers again.
    out = export_labels(data, "pt", tmp_path / "pt-out", dataset=ds)
    assert safe_load_pickle(out[0]).tolist() == [0, 59, 250]
    assert safe_load_pickle(out[1]).tolist() == [49, 120, 387]
    assert safe_load_pickle(out[2]) == [0, 1, -1]


@pytest.mark.parametrize(
    ("k", "message"),
    [
        (50, "crosses the end of episode 0"),  # runs into the skipped timeout row 59
        (115, "crosses the end of episode 1"),  # runs over the terminal at row 120
        (388, "runs past the end"),
        (10_000, "runs past the end"),
    ],
)
def test_bad_indices_against_the_dataset(d4rl_file, tmp_path, k, message):
    ds = load_d4rl_hdf5(d4rl_file)
    folder = _write_pt(tmp_path / "pt", [0, k], [5, 6], [0, 1])
    with pytest.raises(DataError, match=message) as e:
        import_labels("pt", [folder], dataset=ds, dataset_id=ds.id, segment_length=10)
    assert str(folder) in str(e.value)


def test_export_refuses_segments_outside_qlearning_rows(d4rl_file, tmp_path):
    ds = load_d4rl_hdf5(d4rl_file)
    # Episode 0's last 5 steps include its timeout row 59, which qlearning_dataset drops.
    data = make_preference_data(ds.id, [[0, 55, 5]], [[1, 0, 5]], [1.0], None, labeler="h")
    with pytest.raises(DataError, match="drops"):
        export_labels(data, "pt", tmp_path / "out", dataset=ds)
    assert not (tmp_path / "out").exists()


# ---- bad published files -----------------------------------------------------------------------
def test_bad_label_values_and_lengths(tmp_path):
    folder = _write_pt(tmp_path / "a", [1, 2], [3, 4], [0, 2])
    with pytest.raises(DataError, match="label 2 at position 1 is outside") as e:
        import_labels("pt", [folder])
    assert "label_human" in str(e.value)
    folder = _write_pt(tmp_path / "b", [1, 2, 3], [3, 4, 5], [0, 1])
    with pytest.raises(DataError, match="arrays of different lengths"):
        import_labels("pt", [folder])
    folder = _write_pt(tmp_path / "c", [1, 2], [3, 4], [0.5, 1])
    with pytest.raises(DataError, match="integers"):
        import_labels("pt", [folder])
    with pytest.raises(DataError, match="no file matching"):
        import_labels("pt", [tmp_path / "c" / "label_human"])
    with pytest.raises(UnknownIdError, match="unknown label format 'csv'"):
        import_labels("csv", [folder])


def test_uni_rlhf_bad_names_and_values(tmp_path):
    tag = "domain_mujoco_env_hopper-medium-replay-v2_num_3_len_20_abc"
    folder = tmp_path / "uni"
    folder.mkdir()
    for pre, arr in (
        ("indices_1", [1, 2, 3]),
        ("indices_2", [4, 5, 6]),
        ("human_label", [0, 1, 7]),
    ):
        (folder / f"{pre}_{tag}.pkl").write_bytes(pickle.dumps(np.array(arr)))
    with pytest.raises(DataError, match="label 7"):
        import_labels("uni-rlhf", [folder])
    (folder / f"human_label_{tag}.pkl").write_bytes(pickle.dumps(np.array([0, 1, -1])))
    data = import_labels("uni-rlhf", [folder])
    assert data.meta["segment_length"] == 20 and data.num_queries == 3
    (folder / f"human_label_{tag}.pkl").rename(folder / "human_label_other_tag.pkl")
    with pytest.raises(DataError, match="different label sets"):
        import_labels("uni-rlhf", [folder])


# ---- CPL -----------------------------------------------------------------------------------------
def _cpl_file(path: Path, n=6, s=5, d=3, a=2, scores=(1, 2, 3, 0, 2, 5)) -> Path:
    rng = np.random.default_rng(1)
    with open(path, "wb") as fh:
        np.savez(
            fh,
            obs=rng.normal(size=(n, s, d)).astype(np.float32),
            action=rng.uniform(-1, 1, size=(n, s, a)).astype(np.float32),
            reward=rng.normal(size=(n, s)).astype(np.float32),
            done=np.zeros(n, bool),
            discount=np.ones(n, np.float32),
            rl_sum=np.asarray(scores, np.float32),
        )
    return path


def test_cpl_import_pairs_i_with_i_plus_capacity(tmp_path):
    path = _cpl_file(tmp_path / "mw_drawer-open-v2_ep2500_n0.3.npz")
    data = import_labels("cpl", [path])
    # Pairs (0,3), (1,4), (2,5); scores 1 vs 0, 2 vs 2, 3 vs 5.
    np.testing.assert_array_equal(data.prefer_b, [0.0, 0.5, 1.0])
    assert data.refs_a.tolist() == [[0, 0, 5], [1, 0, 5], [2, 0, 5]]
    assert data.refs_b.tolist() == [[3, 0, 5], [4, 0, 5], [5, 0, 5]]
    with np.load(path) as z:
        obs = z["obs"]
    batch = data.to_batch()  # the inline dataset
    np.testing.assert_array_equal(batch.obs_b[2].numpy(), obs[5])
    np.testing.assert_array_equal(batch.next_obs_a[0, :4].numpy(), obs[0, 1:])
    save_preferences(data, tmp_path / "p.npz")
    back = load_preferences(tmp_path / "p.npz")
    np.testing.assert_array_equal(back.to_batch().obs_b.numpy(), batch.obs_b.numpy())
    # capacity picks other pairs: (0,2), (1,3)
    two = import_labels("cpl", [path], capacity=2)
    np.testing.assert_array_equal(two.prefer_b, [1.0, 0.0])
    with pytest.raises(DataError, match="capacity 4"):
        import_labels("cpl", [path], capacity=4)
    with pytest.raises(DataError, match="missing field 'rl_dir'"):
        import_labels("cpl", [path], score_key="rl_dir")


def test_cpl_round_trip_from_a_labelled_dataset(tmp_path):
    ds = make_ds()
    data = label_dataset(ds, "equal", 20, 6, seed=2)
    out = export_labels(data, "cpl", tmp_path / "out.npz", dataset=ds)
    back = import_labels("cpl", out)
    np.testing.assert_array_equal(back.prefer_b, data.prefer_b)
    b1, b2 = data.to_batch(ds), back.to_batch()
    np.testing.assert_array_equal(b1.obs_a.numpy(), b2.obs_a.numpy())
    np.testing.assert_array_equal(b1.act_b.numpy(), b2.act_b.numpy())
    # Imported again from the exported file, then exported: same bytes of data.
    out2 = export_labels(back, "cpl", tmp_path / "out2.npz")
    with np.load(out[0]) as z1, np.load(out2[0]) as z2:
        for k in z1.files:
            np.testing.assert_array_equal(z1[k], z2[k])


def test_cpl_bad_file(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.npz"):
        import_labels("cpl", [bad])
    with open(tmp_path / "short.npz", "wb") as fh:
        np.savez(
            fh,
            obs=np.zeros((4, 5, 3)),
            action=np.zeros((3, 5, 2)),
            reward=np.zeros((4, 5)),
            rl_sum=np.zeros(4),
        )
    with pytest.raises(DataError, match="different lengths"):
        import_labels("cpl", [tmp_path / "short.npz"])


# ---- imitation -------------------------------------------------------------------------------------
def test_imitation_round_trip_and_pickle_names(tmp_path):
    ds = make_ds()
    data = label_dataset(ds, "stoc", 15, 7, seed=4)
    out = export_labels(data, "imitation", tmp_path / "prefs.pkl", dataset=ds)[0]
    names = {
        arg
        for op, arg, _ in pickletools.genops(out.read_bytes())
        if op.name == "SHORT_BINUNICODE" and isinstance(arg, str)
    }
    assert {"imitation.algorithms.preference_comparisons", "PreferenceDataset"} <= names
    assert {"imitation.data.types", "TrajectoryWithRew"} <= names
    back = import_labels("imitation", [out])
    np.testing.assert_allclose(back.prefer_b, data.prefer_b, atol=1e-7)
    b1, b2 = data.to_batch(ds), back.to_batch()
    np.testing.assert_array_equal(b1.obs_a.numpy(), b2.obs_a.numpy())
    np.testing.assert_array_equal(b1.next_obs_b.numpy(), b2.next_obs_b.numpy())
    np.testing.assert_array_equal(b1.terminal_a.numpy(), b2.terminal_a.numpy())


def test_imitation_export_loads_with_plain_pickle_and_the_library_classes(tmp_path):
    ds = make_ds()
    data = label_dataset(ds, "oracle", 4, 5, seed=0)
    out = export_labels(data, "imitation", tmp_path / "prefs.pkl", dataset=ds)[0]
    # Minimal stand-ins of imitation's classes, importable under the real module names.
    pkg = tmp_path / "fake" / "imitation"
    (pkg / "algorithms").mkdir(parents=True)
    (pkg / "data").mkdir()
    for p in (pkg, pkg / "algorithms", pkg / "data"):
        (p / "__init__.py").write_text("")
    (pkg / "algorithms" / "preference_comparisons.py").write_text(
        "class PreferenceDataset:\n    pass\n"
    )
    (pkg / "data" / "types.py").write_text("class TrajectoryWithRew:\n    pass\n")
    code = (
        "import pickle, sys; d = pickle.load(open(sys.argv[1], 'rb')); "
        "print(type(d).__name__, len(d.fragments1), type(d.fragments2[0]).__name__, "
        "d.fragments1[0].obs.shape, d.preferences.tolist())"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(tmp_path / "fake")),
    )
    assert r.returncode == 0, r.stderr
    expected = (1.0 - data.prefer_b).tolist()
    assert r.stdout.split(" ", 4)[:4] == ["PreferenceDataset", "4", "TrajectoryWithRew", "(6,"]
    assert str(expected) in r.stdout


def test_imitation_plain_dict_and_bad_values(tmp_path):
    rng = np.random.default_rng(0)

    def frag(n):
        return {
            "obs": rng.normal(size=(n + 1, 2)),
            "acts": rng.normal(size=(n, 1)),
            "rews": rng.normal(size=n),
            "terminal": False,
        }

    obj = {
        "fragments1": [frag(4), frag(6)],
        "fragments2": [frag(4), frag(3)],
        "preferences": np.array([1.0, 0.5]),
    }
    p = tmp_path / "d.pkl"
    p.write_bytes(pickle.dumps(obj))
    data = import_labels("imitation", [p])
    np.testing.assert_array_equal(data.prefer_b, [0.0, 0.5])  # P(first) 1.0 -> prefer_b 0
    assert data.refs_a[:, 2].tolist() == [4, 6] and data.refs_b[:, 2].tolist() == [4, 3]
    batch = data.to_batch()
    assert batch.obs_a.shape == (2, 6, 2)
    np.testing.assert_array_equal(batch.mask_b.numpy()[1], [1, 1, 1, 0, 0, 0])
    obj["preferences"] = np.array([1.0, 1.5])
    p.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataError, match="outside imitation's convention"):
        import_labels("imitation", [p])
    obj["preferences"] = np.array([1.0])
    p.write_bytes(pickle.dumps(obj))
    with pytest.raises(DataError, match="different lengths"):
        import_labels("imitation", [p])


# ---- exporters: what cannot be written -----------------------------------------------------------
def test_export_refusals(tmp_path):
    ds = make_ds()
    soft = make_preference_data(ds.id, [[0, 0, 5]], [[1, 0, 5]], [0.7], None, labeler="h")
    with pytest.raises(DataError, match="only holds first / second / tie"):
        export_labels(soft, "pt", tmp_path / "x", dataset=ds)
    data = import_labels("pt", [PT / "hopper-medium-replay-v2"])
    (tmp_path / "exists").mkdir()
    with pytest.raises(PbrlError, match="already exists"):
        export_labels(data, "pt", tmp_path / "exists")
    with pytest.raises(PbrlError, match="pass the dataset"):
        export_labels(label_dataset(ds, "oracle", 3, 5, 0), "cpl", tmp_path / "c.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]


# ---- CLI ----------------------------------------------------------------------------------------------
def _pbrl(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "pbrl", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_cli_import_stats_export(tmp_path, d4rl_file):
    out = tmp_path / "uni.npz"
    src = UNI / "walker2d-medium-replay-v2_human_labels"
    r = _pbrl("prefs", "import", "--format", "uni-rlhf", str(src), "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2000 uni-rlhf labels" in r.stdout and "unresolved" in r.stdout
    r = _pbrl("prefs", "stats", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2000" in r.stdout and "unresolved" in r.stdout
    r = _pbrl(
        "prefs", "export", str(out), "--format", "uni-rlhf", "-o", str(tmp_path / "e"), cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "e").iterdir())) == 3
    # With the dataset: resolved refs; a bad index fails with one line and writes nothing.
    folder = _write_pt(tmp_path / "tiny-medium-v2", [0, 59], [120, 50], [1, -1])
    bad = tmp_path / "bad.npz"
    r = _pbrl(
        "prefs", "import", "--format", "pt", str(folder), "--dataset", str(d4rl_file),
        "--segment-length", "10", "-o", str(bad), cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 2 and "crosses the end of episode 0" in r.stderr
    assert not bad.exists()


# ---- data and labels stay tied -----------------------------------------------------------------
def test_import_against_another_dataset_is_refused_unless_allowed(d4rl_file, tmp_path, caplog):
    from pbrl.prefs import dataset_fingerprint

    ds = load_d4rl_hdf5(d4rl_file)
    folder = _write_pt(tmp_path / "hopper-medium-v2", [0, 59], [49, 120], [0, 1])
    with pytest.raises(DataError, match="'d4rl/hopper-medium-v2'.*--allow-dataset-mismatch"):
        import_labels("pt", [folder], dataset=ds, segment_length=10)
    data = import_labels("pt", [folder], dataset=ds, segment_length=10, allow_mismatch=True)
    assert "used anyway" in caplog.text
    # Resolved against ds: the file now records ds's id and content.
    assert data.dataset_id == ds.id
    assert data.meta["dataset_fingerprint"] == dataset_fingerprint(ds)


@pytest.mark.parametrize(
    ("fmt", "kwargs", "message"),
    [
        ("cpl", {"dataset_given": True}, "--dataset"),
        ("imitation", {"segment_length": 5}, "--segment-length"),
        ("pt", {"segment_length": 0}, "--segment-length"),
        ("cpl", {"capacity": 0}, "--capacity"),
        ("pt", {"capacity": 3}, "--capacity"),
        ("csv", {}, "unknown label format"),
    ],
)
def test_import_options_are_checked_first(fmt, kwargs, message):
    from pbrl.prefs.formats import check_import_options

    with pytest.raises(PbrlError, match=message):
        check_import_options(fmt, **kwargs)


def test_export_output_is_checked_before_any_work(tmp_path):
    from pbrl.prefs.formats import check_export_output

    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    for fmt, out, message in [
        ("cpl", tmp_path / "file" / "x.npz", "is a file"),
        ("cpl", tmp_path / "nope" / "x.npz", "does not exist"),
        ("cpl", tmp_path / "folder", "is a folder"),
        ("pt", tmp_path / "folder", "already exists"),
        ("imitation", "/proc/x.pkl", "cannot write"),
    ]:
        with pytest.raises(PbrlError, match=message):
            check_export_output(fmt, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"obs": np.full((4, 3, 2), "a")}, "field 'obs' has dtype"),
        ({"reward": np.full((4, 3), np.nan, np.float32)}, "field 'reward' has a NaN"),
        ({"rl_sum": np.array(["x"] * 4)}, "field 'rl_sum' has dtype"),
        ({"obs": np.zeros((4, 3), np.float32)}, "field 'obs' has shape"),
        ({"done": np.array(["y"] * 4)}, "field 'done'"),
    ],
)
def test_cpl_malformed_fields(tmp_path, changes, message):
    arrays = {
        "obs": np.zeros((4, 3, 2), np.float32),
        "action": np.zeros((4, 3, 1), np.float32),
        "reward": np.zeros((4, 3), np.float32),
        "rl_sum": np.arange(4, dtype=np.float32),
    }
    arrays.update(changes)
    path = tmp_path / "c.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match=message) as e:
        import_labels("cpl", [path])
    assert str(path) in str(e.value)


def test_ragged_published_indices(tmp_path):
    folder = tmp_path / "pt"
    folder.mkdir()
    (folder / "indices_num2").write_bytes(pickle.dumps([[1, 2], [3]]))
    (folder / "indices_2_num2").write_bytes(pickle.dumps(np.array([1, 2])))
    (folder / "label_human").write_bytes(pickle.dumps([0, 1]))
    with pytest.raises(DataError, match="indices_num2: indices is not a flat sequence"):
        import_labels("pt", [folder])
