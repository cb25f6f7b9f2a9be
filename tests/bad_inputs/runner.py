"""Runs, suites and sweeps: ``pbrl train`` and ``pbrl bench`` with bad output folders, devices,
seeds, worker counts, backends and suites. Everything is found before a dataset is built,
a label written or a run started."""

from __future__ import annotations

import json

import numpy as np

from bad_inputs import Case, World


def _train(w: World, *extra: str, out: str = "run") -> list[str]:
    argv = ["train", "--agent", "bc", "--dataset", w.dataset_id, "--steps", "2"]
    argv += ["--eval-episodes", "0", "--device", "cpu"]
    if out:
        argv += ["--out", out]
    return argv + list(extra)


def _bench(w: World, suite: str | None = None, *extra: str) -> list[str]:
    return ["bench", "--suite", suite or str(w.suite), "--device", "cpu", "--no-plots", *extra]


HEAD = "seeds = [0]\nsteps = 4\neval_every = 4\neval_episodes = 1\nsegment = 10\nbudgets = [12]\n"


def _suite(
    w: World, body: str, *, name: str = "tiny", file: str = "s.toml", seeds: str = "[0]"
) -> str:
    """A suite file in the working folder: HEAD, then ``body`` (datasets and agents)."""
    head = HEAD.replace("seeds = [0]", f"seeds = {seeds}")
    text = f"name = {json.dumps(name)}\n" + head + body
    (w.cwd / file).write_text(text)
    return file


def _ds(w: World) -> str:
    return f'[[datasets]]\nid = "{w.dataset_id}"\n'


def _gen(w: World, kind: str, build: str = "{ diagnose = false }") -> str:
    return f'[[datasets]]\ntask = "{w.task}"\nkind = "{kind}"\nbuild = {build}\n'


MR = '[[agents]]\nname = "mr"\n'
BC = '[[agents]]\nname = "bc"\n'


def _file(w: World, name: str = "f") -> str:
    (w.cwd / name).write_text("a regular file\n")
    return name


def _finished_run(w: World) -> str:
    w.copy(w.run, "old")
    return "old"


def _not_empty(w: World) -> str:
    (w.cwd / "mine").mkdir()
    (w.cwd / "mine" / "notes.txt").write_text("keep me\n")
    return "mine"


def _stale_prefs(w: World) -> list[str]:
    """A sweep folder whose cached labels were made from another build of the dataset."""
    from pbrl.run.runner import plan, prefs_path
    from pbrl.run.suite import load_suite

    suite = _suite(w, _ds(w) + MR)
    out = w.cwd / "out"
    job = plan(load_suite(str(w.cwd / suite)))[0]
    p = prefs_path(out, job)
    assert p is not None
    p.parent.mkdir(parents=True)
    with np.load(w.prefs) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta_json"].tobytes())
    meta["dataset_fingerprint"] = "sha256:" + "0" * 64  # labelled from an older build
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(p, "wb") as fh:
        np.savez(fh, **arrays)
    return _bench(w, suite, "--out", "out")


def _not_utf8(w: World) -> str:
    (w.cwd / "latin.toml").write_bytes(f'name = "caf\xe9"\n{HEAD}{_ds(w)}{BC}'.encode("latin-1"))
    return "latin.toml"


CASES = [
    # ---- pbrl train: output folder ---------------------------------------------------------
    Case("run-train-out-proc", lambda w: _train(w, out="/proc/x"), expect=("--out", "/proc/x")),
    Case(
        "run-train-out-under-a-file",
        lambda w: _train(w, out=f"{_file(w)}/run"),
        expect=("--out", "a file"),
    ),
    Case("run-train-out-is-a-file", lambda w: _train(w, out=_file(w)), expect=("--out", "a file")),
    Case(
        "run-train-out-holds-a-finished-run",
        lambda w: _train(w, out=_finished_run(w)),
        expect=("--out", "finished run", "--overwrite"),
    ),
    Case(
        "run-train-out-not-empty",
        lambda w: _train(w, out=_not_empty(w)),
        expect=("--out", "not empty"),
    ),
    # ---- pbrl train: device, seed, schedule ---------------------------------------------
    Case("run-train-device-bogus", lambda w: _train(w, "--device", "bogus"), expect=("--device",)),
    Case(
        "run-train-device-cpu-index", lambda w: _train(w, "--device", "cpu:0"), expect=("--device",)
    ),
    Case(
        "run-train-device-no-such-gpu",
        lambda w: _train(w, "--device", "cuda:99"),
        expect=("--device", "cuda:99"),
    ),
    Case("run-train-seed-negative", lambda w: _train(w, "--seed", "-1"), expect=("--seed",)),
    Case(
        "run-train-dppo-temperature-zero",
        lambda w: (
            ["train", "--agent", "dppo", "--dataset", w.dataset_id, "--prefs", str(w.prefs)]
            + ["--steps", "2", "--device", "cpu", "--out", "run", "--agent.temperature", "0"]
        ),
        expect=("--agent.temperature",),
    ),
    Case("run-train-seed-huge", lambda w: _train(w, "--seed", str(2**40)), expect=("--seed",)),
    Case(
        "run-train-log-interval-zero",
        lambda w: _train(w, "--log-interval", "0"),
        expect=("--log-interval",),
    ),
    Case(
        "run-train-eval-every-negative",
        lambda w: _train(w, "--eval-every", "-5"),
        expect=("--eval-every",),
    ),
    Case(
        "run-train-eval-episodes-negative",
        lambda w: _train(w, "--eval-episodes", "-1"),
        expect=("--eval-episodes",),
    ),
    Case(
        "run-train-eval-workers-negative",
        lambda w: _train(w, "--eval-workers", "-1"),
        expect=("--eval-workers",),
    ),
    # ---- pbrl bench: command-line options -------------------------------------------------
    Case(
        "run-bench-out-proc",
        lambda w: _bench(w, None, "--out", "/proc/x"),
        expect=("--out", "/proc/x"),
    ),
    Case(
        "run-bench-out-under-a-file",
        lambda w: _bench(w, None, "--out", f"{_file(w)}/out"),
        expect=("--out", "a file"),
    ),
    Case(
        "run-bench-device-bogus",
        lambda w: _bench(w, None, "--device", "bogus"),
        expect=("--device", "bogus"),
    ),
    Case(
        "run-bench-device-no-such-gpu",
        lambda w: _bench(w, None, "--device", "cuda:99"),
        expect=("--device",),
    ),
    Case(
        "run-bench-device-gpu-list",
        lambda w: _bench(w, None, "--device", "cuda:0,x"),
        expect=("--device",),
    ),
    Case(
        "run-bench-seeds-negative",
        lambda w: _bench(w, None, "--seeds", "-3-2"),
        expect=("--seeds", "non-negative"),
    ),
    Case(
        "run-bench-seeds-too-many",
        lambda w: _bench(w, None, "--seeds", "0-100000000", "--dry-run"),
        expect=("--seeds", "10000"),
    ),
    Case(
        "run-bench-seeds-twice",
        lambda w: _bench(w, None, "--seeds", "0,0"),
        expect=("--seeds", "twice"),
    ),
    Case(
        "run-bench-workers-zero", lambda w: _bench(w, None, "--workers", "0"), expect=("--workers",)
    ),
    Case(
        "run-bench-workers-negative",
        lambda w: _bench(w, None, "--workers", "-2"),
        expect=("--workers",),
    ),
    Case(
        "run-bench-eval-workers-negative",
        lambda w: _bench(w, None, "--eval-workers", "-3"),
        expect=("--eval-workers",),
    ),
    Case(
        "run-bench-stack-seeds-zero",
        lambda w: _bench(w, None, "--stack-seeds", "0"),
        expect=("--stack-seeds",),
    ),
    Case(
        "run-bench-stack-seeds-not-a-number",
        lambda w: _bench(w, None, "--stack-seeds", "many"),
        expect=("--stack-seeds",),
        usage=True,
    ),
    Case(
        "run-suite-agent-teachers-empty",
        lambda w: _bench(w, _suite(w, _ds(w) + MR + "teachers = []\n")),
        expect=("agents[0]", "teachers"),
    ),
    Case(
        "run-suite-agent-teachers-bogus",
        lambda w: _bench(w, _suite(w, _ds(w) + MR + 'teachers = ["bogus"]\n')),
        expect=("teachers", "bogus"),
    ),
    Case(
        "run-bench-backend-bogus",
        lambda w: _bench(w, None, "--backend", "slurm"),
        expect=("--backend", "slurm"),
    ),
    # ---- pbrl bench: suite files ---------------------------------------------------------------
    Case(
        "run-suite-name-climbs-out",
        lambda w: _bench(w, _suite(w, _ds(w) + BC, name="../../escape")),
        expect=("name", "folder name"),
    ),
    Case(
        "run-suite-name-absolute",
        lambda w: _bench(w, _suite(w, _ds(w) + BC, name="/tmp/escape")),
        expect=("name",),
    ),
    Case(
        "run-suite-name-hidden",
        lambda w: _bench(w, _suite(w, _ds(w) + BC, name=".locks")),
        expect=("name",),
    ),
    Case("run-suite-not-utf8", lambda w: _bench(w, _not_utf8(w)), expect=("latin.toml", "utf-8")),
    Case(
        "run-suite-seeds-negative",
        lambda w: _bench(w, _suite(w, _ds(w) + BC, seeds="[-1]")),
        expect=("seeds",),
    ),
    Case(
        "run-suite-unknown-teacher",
        lambda w: _bench(w, _suite(w, 'teachers = ["bogus"]\n' + _ds(w) + MR)),
        expect=("teachers", "bogus"),
    ),
    Case(
        "run-suite-ensemble-selector",
        lambda w: _bench(w, _suite(w, 'selector = "disagreement"\n' + _ds(w) + MR)),
        expect=("selector",),
    ),
    Case(
        "run-suite-unknown-agent",
        lambda w: _bench(w, _suite(w, _ds(w) + '[[agents]]\nname = "bogus"\n')),
        expect=("bogus",),
    ),
    Case(
        "run-suite-unknown-preset",
        lambda w: _bench(w, _suite(w, _ds(w) + '[[agents]]\nname = "bc"\npreset = "bogus"\n')),
        expect=("bogus",),
    ),
    Case(
        "run-suite-unknown-override",
        lambda w: _bench(
            w, _suite(w, _ds(w) + '[[agents]]\nname = "bc"\noverrides = { bogus = 1 }\n')
        ),
        expect=("bogus",),
    ),
    Case(
        "run-suite-missing-dataset",
        lambda w: _bench(
            w, _suite(w, '[[datasets]]\nid = "pbrl/metaworld/none-v3/expert-v0"\n' + BC)
        ),
        expect=("datasets[0]", "none-v3"),
    ),
    Case(
        "run-suite-unknown-kind",
        lambda w: _bench(w, _suite(w, _gen(w, "bogus") + BC)),
        expect=("datasets[0]", "bogus"),
    ),
    Case(
        "run-suite-unknown-task",
        lambda w: _bench(
            w, _suite(w, '[[datasets]]\ntask = "metaworld/bogus-v3"\nkind = "expert"\n' + BC)
        ),
        expect=("datasets[0]", "bogus-v3"),
    ),
    Case(
        "run-suite-unknown-build-option",
        lambda w: _bench(w, _suite(w, _gen(w, "medium", "{ bogus = 1 }") + BC)),
        expect=("datasets[0]", "bogus"),
    ),
    Case(
        "run-suite-build-option-type",
        lambda w: _bench(w, _suite(w, _gen(w, "medium", '{ episodes = "many" }') + BC)),
        expect=("datasets[0]", "episodes"),
    ),
    Case(
        "run-suite-build-differs-from-stored-dataset",
        lambda w: _bench(
            w, _suite(w, _gen(w, "expert", "{ episodes = 7, diagnose = false }") + BC)
        ),
        expect=("datasets[0]", "episodes", "built differently"),
    ),
    # ---- pbrl bench: an output folder that holds labels from another build of the data -------
    Case("run-bench-cached-labels-from-another-build", _stale_prefs, expect=("prefs", "out")),
]
