"""Preference files, published label files, labelling, teachers: ``pbrl prefs``, ``pbrl
label``, ``pbrl oracles`` and the labels given to ``pbrl train``."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

from bad_inputs import Case, World

PUBLISHED = Path(__file__).resolve().parents[1] / "data" / "published-labels"
PT = PUBLISHED / "preference-transformer" / "hopper-medium-replay-v2"


# ---- helpers: corrupt copies under the working folder ------------------------------------------
def _arrays(w: World) -> dict[str, np.ndarray]:
    with np.load(w.prefs) as z:
        return {k: z[k] for k in z.files}


def _write(w: World, name: str, arrays: dict[str, np.ndarray]) -> str:
    with open(w.cwd / name, "wb") as fh:
        np.savez(fh, **arrays)
    return name


def _prefs_with(w: World, name: str, **changes: np.ndarray) -> str:
    arrays = _arrays(w)
    arrays.update(changes)
    return _write(w, name, arrays)


def _prefs_meta(w: World, name: str, **changes: object) -> str:
    arrays = _arrays(w)
    meta = json.loads(arrays["meta_json"].tobytes())
    meta.update(changes)
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    return _write(w, name, arrays)


def _bytes(w: World, name: str, data: bytes) -> str:
    (w.cwd / name).write_bytes(data)
    return name


def _changed_dataset(w: World) -> str:
    """A copy of the dataset folder with one observation changed: same id, new content."""
    import h5py

    dst = w.copy(w.dataset_path, "rebuilt")
    with h5py.File(dst / "data" / "main_data.hdf5", "r+") as f:
        obs = f["episode_0"]["observations"]
        row = obs[3]
        row[0] += 1.0
        obs[3] = row
    return str(dst)


def _pt(w: World, name: str, **files: object) -> str:
    """A copy of published PT labels with some files replaced (objects pickled, bytes raw)."""
    dst = w.copy(PT, name)
    for fname, obj in files.items():
        data = obj if isinstance(obj, bytes) else pickle.dumps(obj)
        (dst / fname).write_bytes(data)
    return name


def _cpl(w: World, name: str, **changes: object) -> str:
    n, s = 6, 5
    arrays = {
        "obs": np.zeros((n, s, 3), np.float32),
        "action": np.zeros((n, s, 2), np.float32),
        "reward": np.zeros((n, s), np.float32),
        "rl_sum": np.arange(n, dtype=np.float32),
    }
    arrays.update(changes)  # type: ignore[arg-type]
    return _write(w, name, arrays)


def _frag() -> dict[str, np.ndarray]:
    return {
        "obs": np.zeros((6, 3), np.float32),
        "acts": np.zeros((5, 2), np.float32),
        "rews": np.zeros(5, np.float32),
    }


def _imitation(w: World, name: str, **changes: object) -> str:
    top: dict[str, object] = {
        "fragments1": [_frag()],
        "fragments2": [_frag()],
        "preferences": np.array([0.0]),
    }
    top.update(changes)
    return _bytes(w, name, pickle.dumps(top))


def _stats(path: str, *extra: str) -> list[str]:
    return ["prefs", "stats", path, *extra]


def _label(w: World, *extra: str, out: str = "out.npz") -> list[str]:
    args = {"--queries": "5", "--segment": "10", "-o": out}
    flat = list(extra)
    for k, v in args.items():
        if k not in flat:
            flat += [k, v]
    return ["label", w.dataset_id, *flat]


def _train(w: World, prefs: str, dataset: str) -> list[str]:
    return [
        "train", "--agent", "pt", "--dataset", dataset, "--prefs", prefs, "--steps", "2",
        "--eval-every", "2", "--eval-episodes", "0", "--device", "cpu", "--out", "run",
    ]  # fmt: skip


def _import(fmt: str, path: str, *extra: str, out: str = "out.npz") -> list[str]:
    return ["prefs", "import", "--format", fmt, path, "-o", out, *extra]


CASES = [
    # ---- preference files: the container ----
    Case("prefs-empty-file", lambda w: _stats(_bytes(w, "p.npz", b"")), ("p.npz", "empty")),
    Case(
        "prefs-not-a-zip",
        lambda w: _stats(_bytes(w, "p.npz", b"hello")),
        ("p.npz", "not a preference file"),
    ),
    Case(
        "prefs-truncated-npz",
        lambda w: _stats(_bytes(w, "p.npz", w.prefs.read_bytes()[:300])),
        ("p.npz", "not a readable"),
    ),
    Case(
        "prefs-pickle-payload",
        lambda w: _stats(_bytes(w, "p.npz", pickle.dumps({"refs_a": [1]}))),
        ("p.npz",),
    ),
    Case(
        "prefs-object-array",
        lambda w: _stats(_prefs_with(w, "p.npz", refs_a=np.array([None] * 12, dtype=object))),
        ("p.npz",),
    ),
    Case("prefs-missing-file", lambda w: _stats("nope.npz"), ("nope.npz", "no such")),
    Case("prefs-a-folder", lambda w: _stats("."), ("no such preference file",)),
    # ---- preference files: the fields ----
    Case(
        "prefs-missing-field",
        lambda w: _stats(
            _write(w, "p.npz", {k: v for k, v in _arrays(w).items() if k != "refs_b"})
        ),
        ("p.npz", "refs_b"),
    ),
    Case(
        "prefs-ragged-refs",
        lambda w: _stats(_prefs_with(w, "p.npz", refs_a=_arrays(w)["refs_a"][:5])),
        ("p.npz", "refs_a"),
    ),
    Case(
        "prefs-refs-floats",
        lambda w: _stats(_prefs_with(w, "p.npz", refs_a=_arrays(w)["refs_a"] + 0.5)),
        ("p.npz", "refs_a", "integers"),
    ),
    Case(
        "prefs-prefer-b-strings",
        lambda w: _stats(_prefs_with(w, "p.npz", prefer_b=np.array(["a"] * 12))),
        ("p.npz", "prefer_b"),
    ),
    Case(
        "prefs-prefer-b-nan",
        lambda w: _stats(
            _prefs_with(w, "p.npz", prefer_b=np.where(np.arange(12) == 4, np.nan, 1.0))
        ),
        ("p.npz", "prefer_b", "query 4"),
    ),
    Case(
        "prefs-prefer-b-out-of-range",
        lambda w: _stats(_prefs_with(w, "p.npz", prefer_b=np.full(12, 1.5, np.float32))),
        ("p.npz", "prefer_b"),
    ),
    Case(
        "prefs-negative-length",
        lambda w: _stats(
            _prefs_with(w, "p.npz", refs_b=_arrays(w)["refs_b"] * np.array([1, 1, -1]))
        ),
        ("p.npz", "lengths must be positive"),
    ),
    Case(
        "prefs-skipped-not-bool",
        lambda w: _stats(_prefs_with(w, "p.npz", skipped=np.zeros(12, np.int8))),
        ("p.npz", "skipped"),
    ),
    Case(
        "prefs-meta-not-utf8",
        lambda w: _stats(_prefs_with(w, "p.npz", meta_json=np.frombuffer(b"\xff{", np.uint8))),
        ("p.npz", "meta_json"),
    ),
    Case(
        "prefs-feedback-not-json",
        lambda w: _stats(
            _prefs_with(w, "p.npz", feedback_jsonl=np.frombuffer(b"[1]\n" * 12, np.uint8))
        ),
        ("p.npz", "feedback_jsonl"),
    ),
    Case(
        "prefs-format-version-abc",
        lambda w: _stats(_prefs_meta(w, "p.npz", format_version="abc")),
        ("p.npz", "format_version"),
    ),
    Case(
        "prefs-format-version-float",
        lambda w: _stats(_prefs_meta(w, "p.npz", format_version=2.5)),
        ("p.npz", "format_version"),
    ),
    Case(
        "prefs-format-version-huge",
        lambda w: _stats(_prefs_meta(w, "p.npz", format_version=10**30)),
        ("p.npz", "format_version", "newer"),
    ),
    Case(
        "prefs-dataset-id-not-string",
        lambda w: _stats(_prefs_meta(w, "p.npz", dataset_id=[1, 2])),
        ("p.npz", "dataset_id"),
    ),
    Case(
        "prefs-bad-fingerprint-field",
        lambda w: _stats(_prefs_meta(w, "p.npz", dataset_fingerprint=42)),
        ("p.npz", "dataset_fingerprint"),
    ),
    Case(
        "prefs-refs-past-episode-end",
        # Refs and feedback agree, but segment 0 runs past the end of its 60-step episode.
        lambda w: _stats(_prefs_refs(w, "p.npz", [3, 55, 10]), "--dataset", w.dataset_id),
        ("p.npz", "refs_a", "crosses the end"),
    ),
    Case(
        "prefs-refs-episode-out-of-range",
        lambda w: _train(w, _prefs_refs(w, "p.npz", [99, 0, 10]), w.dataset_id),
        ("p.npz", "refs_a", "episode 99"),
    ),
    # ---- data and labels stay tied ----
    Case(
        "prefs-stats-rebuilt-dataset",
        lambda w: _stats(str(w.prefs), "--dataset", _changed_dataset(w)),
        ("prefs.npz", "changed", "--allow-dataset-mismatch"),
    ),
    Case(
        "prefs-export-rebuilt-dataset",
        lambda w: [
            "prefs",
            "export",
            str(w.prefs),
            "--format",
            "cpl",
            "-o",
            "out.npz",
            "--dataset",
            _changed_dataset(w),
        ],  # fmt: skip
        ("prefs.npz", "changed"),
    ),
    Case(
        "prefs-train-rebuilt-dataset",
        lambda w: _train(w, str(w.prefs), _changed_dataset(w)),
        ("prefs.npz", "changed", "--allow-dataset-mismatch"),
    ),
    Case(
        "prefs-train-other-dataset-id",
        lambda w: _train(w, _prefs_meta(w, "p.npz", dataset_id="pbrl/other-v0"), w.dataset_id),
        ("p.npz", "pbrl/other-v0"),
    ),
    Case(
        "prefs-import-other-dataset",
        lambda w: _import(
            "pt",
            _pt(w, "hopper-medium-replay-v2"),
            "--dataset",
            w.dataset_id,
            "--segment-length",
            "10",
        ),  # fmt: skip
        ("hopper-medium-replay-v2", "label set", "--allow-dataset-mismatch"),
    ),
    # ---- pbrl label ----
    Case("prefs-label-queries-zero", lambda w: _label(w, "--queries", "0"), ("--queries",)),
    Case("prefs-label-queries-negative", lambda w: _label(w, "--queries", "-4"), ("--queries",)),
    Case(
        "prefs-label-queries-huge",
        lambda w: _label(w, "--queries", "100000000"),
        ("--queries", "more than"),
    ),
    Case("prefs-label-segment-zero", lambda w: _label(w, "--segment", "0"), ("--segment",)),
    Case(
        "prefs-label-segment-too-long",
        lambda w: _label(w, "--segment", "100000"),
        ("100000", "longest"),
    ),
    Case("prefs-label-negative-seed", lambda w: _label(w, "--seed", "-1"), ("--seed",)),
    Case(
        "prefs-label-teacher-bad-knob-value",
        lambda w: _label(w, "--teacher", "oracle(gamma=abc)"),
        ("gamma", "abc"),
    ),
    Case(
        "prefs-label-teacher-negative-beta",
        lambda w: _label(w, "--teacher", "stoc(beta=-1)"),
        ("beta",),
    ),
    Case(
        "prefs-label-teacher-unknown-knob",
        lambda w: _label(w, "--teacher", "oracle(bogus=1)"),
        ("bogus",),
    ),
    Case("prefs-label-teacher-unknown", lambda w: _label(w, "--teacher", "nope"), ("nope",)),
    Case(
        "prefs-label-teacher-regret-ties-bogus",
        lambda w: _label(w, "--teacher", "regret_cpl(ties=third)"),
        ("ties", "third"),
    ),
    Case(
        "prefs-label-teacher-regret-ties-half-stochastic",
        lambda w: _label(w, "--teacher", "regret_cpl(beta=5)"),
        ("ties=half", "beta"),
    ),
    Case(
        "prefs-label-teacher-regret-bootstrap-bogus",
        lambda w: _label(w, "--teacher", "regret_cpl(bootstrap=first)"),
        ("bootstrap", "first"),
    ),
    Case(
        "prefs-label-teacher-unclosed",
        lambda w: _label(w, "--teacher", "oracle(gamma=0.9"),
        ("oracle(gamma=0.9",),
    ),
    Case(
        "prefs-label-teacher-file-missing",
        lambda w: _label(w, "--teacher", "mine.json"),
        ("mine.json",),
    ),
    Case(
        "prefs-label-teacher-file-not-json",
        lambda w: _label(w, "--teacher", _bytes(w, "t.json", b"\xff\xfe not json")),
        ("t.json",),
    ),
    Case("prefs-label-selector-unknown", lambda w: _label(w, "--selector", "best"), ("best",)),
    Case(
        "prefs-label-selector-needs-model",
        lambda w: _label(w, "--selector", "disagreement"),
        ("disagreement", "ensemble"),
    ),
    Case(
        "prefs-label-unknown-dataset",
        lambda w: ["label", "pbrl/none/such-v0", "--queries", "5", "--segment", "5", "-o", "o.npz"],
        ("pbrl/none/such-v0",),
    ),
    Case("prefs-label-out-proc", lambda w: _label(w, out="/proc/x.npz"), ("--output", "/proc")),
    Case(
        "prefs-label-out-under-file",
        lambda w: _label(w, out=_bytes(w, "f", b"x") + "/x.npz"),
        ("--output", "is a file"),
    ),
    Case(
        "prefs-label-out-no-parent",
        lambda w: _label(w, out="nodir/x.npz"),
        ("--output", "does not exist"),
    ),
    Case("prefs-label-out-folder", lambda w: _label(w, out="."), ("--output", "folder")),
    # ---- pbrl prefs import: published label files ----
    Case(
        "prefs-import-unknown-format",
        lambda w: _import("bogus", str(PT)),
        ("bogus", "format"),
    ),
    Case("prefs-import-missing-path", lambda w: _import("pt", "nope"), ("nope",)),
    Case(
        "prefs-import-pt-ragged",
        lambda w: _import("pt", _pt(w, "pt", indices_num500=[[1, 2], [3]] * 250)),
        ("indices_num500",),
    ),
    Case(
        "prefs-import-pt-string-labels",
        lambda w: _import("pt", _pt(w, "pt", label_human=["a"] * 500)),
        ("label_human", "integers"),
    ),
    Case(
        "prefs-import-pt-label-value",
        lambda w: _import("pt", _pt(w, "pt", label_human=[2] * 500)),
        ("label_human", "label 2"),
    ),
    Case(
        "prefs-import-pt-nan-index",
        lambda w: _import("pt", _pt(w, "pt", indices_num500=np.full(500, np.nan))),
        ("indices_num500",),
    ),
    Case(
        "prefs-import-pt-negative-index",
        lambda w: _import("pt", _pt(w, "pt", indices_num500=np.full(500, -3))),
        ("negative",),
    ),
    Case(
        "prefs-import-pt-count-mismatch",
        lambda w: _import("pt", _pt(w, "pt", label_human=[0] * 499)),
        ("different lengths",),
    ),
    Case(
        "prefs-import-pt-empty-file",
        lambda w: _import("pt", _pt(w, "pt", label_human=b"")),
        ("label_human", "pickle"),
    ),
    Case(
        "prefs-import-pt-truncated",
        lambda w: _import("pt", _pt(w, "pt", label_human=pickle.dumps(list(range(500)))[:40])),
        ("label_human", "truncated"),
    ),
    Case(
        "prefs-import-pt-malicious-pickle",
        lambda w: _import("pt", _pt(w, "pt", label_human=b"cos\nsystem\n(S'echo x'\ntR.")),
        ("label_human", "os.system"),
    ),
    Case(
        "prefs-import-segment-length-zero",
        lambda w: _import("pt", str(PT), "--segment-length", "0"),
        ("--segment-length",),
    ),
    Case(
        "prefs-import-capacity-zero",
        lambda w: _import("cpl", _cpl(w, "c.npz"), "--capacity", "0"),
        ("--capacity",),
    ),
    Case(
        "prefs-import-cpl-with-dataset",
        lambda w: _import("cpl", _cpl(w, "c.npz"), "--dataset", w.dataset_id),
        ("--dataset", "cpl"),
    ),
    Case(
        "prefs-import-cpl-string-obs",
        lambda w: _import("cpl", _cpl(w, "c.npz", obs=np.full((6, 5, 3), "a"))),
        ("c.npz", "obs"),
    ),
    Case(
        "prefs-import-cpl-nan-reward",
        lambda w: _import("cpl", _cpl(w, "c.npz", reward=np.full((6, 5), np.nan, np.float32))),
        ("c.npz", "reward", "nan"),
    ),
    Case(
        "prefs-import-cpl-string-score",
        lambda w: _import("cpl", _cpl(w, "c.npz", rl_sum=np.array(["x"] * 6))),
        ("c.npz", "rl_sum"),
    ),
    Case(
        "prefs-import-cpl-wrong-shape",
        lambda w: _import("cpl", _cpl(w, "c.npz", obs=np.zeros((6, 5), np.float32))),
        ("c.npz", "obs", "dimension"),
    ),
    Case(
        "prefs-import-cpl-missing-score",
        lambda w: _import("cpl", _cpl(w, "c.npz"), "--score-key", "success"),
        ("c.npz", "success"),
    ),
    Case(
        "prefs-import-cpl-truncated",
        lambda w: _import("cpl", _bytes(w, "c.npz", (w.cwd / _cpl(w, "ok.npz")).read_bytes()[:90])),
        ("c.npz",),
    ),
    Case(
        "prefs-import-imitation-string-prefs",
        lambda w: _import("imitation", _imitation(w, "i.pkl", preferences=["a"])),
        ("i.pkl", "preferences"),
    ),
    Case(
        "prefs-import-imitation-fragments-int",
        lambda w: _import("imitation", _imitation(w, "i.pkl", fragments1=5)),
        ("i.pkl", "fragments1"),
    ),
    Case(
        "prefs-import-imitation-complex-rewards",
        lambda w: _import(
            "imitation",
            _imitation(w, "i.pkl", fragments1=[dict(_frag(), rews=np.zeros(5, complex))]),
        ),
        ("i.pkl", "rews"),
    ),
    Case(
        "prefs-import-imitation-malicious",
        lambda w: _import("imitation", _bytes(w, "i.pkl", b"cos\nsystem\n(S'echo x'\ntR.")),
        ("i.pkl", "os.system"),
    ),
    Case(
        "prefs-import-out-proc",
        lambda w: _import("pt", str(PT), out="/proc/x.npz"),
        ("--output", "/proc"),
    ),
    Case(
        "prefs-import-out-no-parent",
        lambda w: _import("pt", str(PT), out="no/x.npz"),
        ("--output", "does not exist"),
    ),
    # ---- pbrl prefs export ----
    Case(
        "prefs-export-unknown-format",
        lambda w: ["prefs", "export", str(w.prefs), "--format", "json", "-o", "x"],
        ("json",),
    ),
    Case(
        "prefs-export-out-proc",
        lambda w: ["prefs", "export", str(w.prefs), "--format", "cpl", "-o", "/proc/x.npz"],
        ("--output", "/proc"),
    ),
    Case(
        "prefs-export-out-under-file",
        lambda w: [
            "prefs",
            "export",
            str(w.prefs),
            "--format",
            "cpl",
            "-o",
            _bytes(w, "f", b"x") + "/x.npz",
        ],  # fmt: skip
        ("--output", "is a file"),
    ),
    Case(
        "prefs-export-out-no-parent",
        lambda w: ["prefs", "export", str(w.prefs), "--format", "pt", "-o", "a/b"],
        ("--output", "does not exist"),
    ),
    Case(
        "prefs-export-folder-exists",
        lambda w: [
            "prefs",
            "export",
            str(w.prefs),
            "--format",
            "uni-rlhf",
            "-o",
            _mkdir(w, "exists"),
        ],  # fmt: skip
        ("--output", "already exists"),
    ),
    Case(
        "prefs-export-pt-not-representable",
        # The generated dataset's episodes end in timeouts: segments using that last row have
        # no D4RL qlearning index. Fails midway: nothing is left at -o.
        lambda w: [
            "prefs",
            "export",
            _prefs_refs(w, "p.npz", [0, 50, 10]),
            "--format",
            "pt",
            "-o",
            "pt-out",
        ],  # fmt: skip
        ("drops",),
    ),
    # ---- pbrl oracles fit ----
    Case(
        "prefs-fit-not-utf8",
        lambda w: ["oracles", "fit", _bytes(w, "h.jsonl", b"\xff\xfe"), "-o", "t.json"],
        ("h.jsonl", "utf-8"),
    ),
    Case(
        "prefs-fit-string-prefer-b",
        lambda w: [
            "oracles",
            "fit",
            _bytes(w, "h.jsonl", b'{"rewards_a": [1], "rewards_b": [2], "prefer_b": "x"}\n'),
            "-o",
            "t.json",
        ],  # fmt: skip
        ("h.jsonl", "prefer_b"),
    ),
    Case(
        "prefs-fit-nan-rewards",
        lambda w: [
            "oracles",
            "fit",
            _bytes(w, "h.jsonl", b'{"rewards_a": [NaN], "rewards_b": [2], "prefer_b": 1}\n'),
            "-o",
            "t.json",
        ],  # fmt: skip
        ("h.jsonl", "rewards_a"),
    ),
    Case(
        "prefs-fit-empty",
        lambda w: ["oracles", "fit", _bytes(w, "h.jsonl", b""), "-o", "t.json"],
        ("h.jsonl", "no records"),
    ),
    Case(
        "prefs-fit-out-proc",
        lambda w: ["oracles", "fit", str(w.prefs), "-o", "/proc/t.json"],
        ("--output", "/proc"),
    ),
    Case(
        "prefs-fit-rebuilt-dataset",
        # The file's dataset is in the store, but not the content these labels were made on.
        lambda w: [
            "oracles",
            "fit",
            _prefs_meta(w, "p.npz", dataset_fingerprint="sha256:" + "0" * 64),
            "-o",
            "t.json",
        ],  # fmt: skip
        ("p.npz", "changed", "--allow-dataset-mismatch"),
    ),
]


def _mkdir(w: World, name: str) -> str:
    (w.cwd / name).mkdir()
    return name


def _prefs_refs(w: World, name: str, first_a: list[int]) -> str:
    """The shared labels with query 0's segment a moved to ``first_a`` (refs and feedback)."""
    from pbrl.prefs import load_preferences, make_preference_data, save_preferences

    data = load_preferences(w.prefs)
    refs_a = data.refs_a.copy()
    refs_a[0] = first_a
    meta = {k: v for k, v in data.meta.items() if k != "path"}
    moved = make_preference_data(
        data.dataset_id, refs_a, data.refs_b, data.prefer_b, data.skipped, labeler="x", meta=meta
    )
    save_preferences(moved, w.cwd / name)
    return name
