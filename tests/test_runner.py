"""The benchmark runner end to end: files, resume, kills, crashes, Ray.

Runs go through the real path (suite -> labels -> one process per run -> pbrl.run.train ->
evaluation on MetaWorld) on a tiny generated dataset. The learners are the real ``bc`` and
``mr`` with tiny networks, and a do-little plug-in (tests/plugins/runner_agent.py) whose
duration and failure the tests control.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TASK = "metaworld/button-press-topdown-v3"
PLUGIN = "plugins.runner_agent"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A Minari store holding a tiny generated MetaWorld dataset; env for child processes."""
    root = tmp_path_factory.mktemp("minari")
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        from pbrl.datasets.metaworld_gen import build

        ds_id = build(TASK, "expert", episodes=4, seed=0, workers=1, horizon=60)
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH")
        else:
            os.environ["MINARI_DATASETS_PATH"] = old
    env = dict(os.environ)
    env["MINARI_DATASETS_PATH"] = str(root)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env.setdefault("MUJOCO_GL", "egl")
    return ds_id, env


def write_suite(path: Path, ds_id: str, agents: str, seeds=(0, 1), steps=20) -> Path:
    path.write_text(
        f'name = "tiny"\nseeds = {list(seeds)}\nsteps = {steps}\neval_every = {steps}\n'
        f'eval_episodes = 1\nsegment = 10\nbudgets = [12]\nteachers = ["oracle"]\n'
        f'[[datasets]]\nid = "{ds_id}"\n{agents}'
    )
    return path


def bench(
    suite: Path, out: Path, env: dict, *extra: str, timeout=600
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pbrl",
            "bench",
            "--suite",
            str(suite),
            "--out",
            str(out),
            "--workers",
            "2",
            "--no-plots",
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def run_dirs(out: Path) -> dict[str, Path]:
    return {
        p.name: p for p in out.iterdir() if p.is_dir() and not p.name.startswith((".", "prefs"))
    }


REAL_AGENTS = """
[[agents]]
name = "bc"
overrides = { hidden = "16,16", batch_size = 8 }
[[agents]]
name = "mr"
overrides = { hidden = "16,16", batch_size = 8, reward_batch = 4 }
"""


@pytest.mark.slow
def test_sweep_writes_files_and_rerun_is_a_no_op(store, tmp_path):
    ds_id, env = store
    suite = write_suite(tmp_path / "s.toml", ds_id, REAL_AGENTS)
    out = tmp_path / "out"
    first = bench(suite, out, env)
    assert first.returncode == 0, first.stdout + first.stderr
    runs = run_dirs(out)
    assert len(runs) == 4  # 2 agents x 2 seeds
    for d in runs.values():
        for f in ("job.json", "config.json", "metrics.jsonl", "eval.csv", "summary.json"):
            assert (d / f).is_file(), (d, f)
        job = json.loads((d / "job.json").read_text())
        assert job["teacher"] == ("oracle" if job["agent"] == "mr" else None)
    assert len(list((out / "prefs").glob("*.npz"))) == 2  # one label set per seed, for mr
    assert "| bc |" in first.stdout and "| mr |" in first.stdout  # the table is printed
    mtimes = {k: (v / "summary.json").stat().st_mtime_ns for k, v in runs.items()}
    again = bench(suite, out, env)
    assert again.returncode == 0, again.stderr
    assert "0 finished, 4 skipped" in again.stdout
    assert mtimes == {k: (v / "summary.json").stat().st_mtime_ns for k, v in run_dirs(out).items()}


@pytest.mark.slow
def test_failed_run_is_reported_and_others_finish(store, tmp_path):
    ds_id, env = store
    agents = f"""
[[agents]]
name = "{PLUGIN}"
label = "ok"
[[agents]]
name = "{PLUGIN}"
label = "broken"
overrides = {{ fail = true }}
"""
    suite = write_suite(tmp_path / "s.toml", ds_id, agents, seeds=(0,))
    out = tmp_path / "out"
    res = bench(suite, out, env)
    assert res.returncode == 1
    assert "1 finished, 0 skipped (already done), 1 failed" in res.stdout
    assert "FAILED" in res.stdout
    logs = list((out / ".failed").glob("*.log"))
    assert len(logs) == 1 and "told to fail" in logs[0].read_text()
    assert len(run_dirs(out)) == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
def test_sigkill_midway_resumes_without_rerunning_finished(store, tmp_path):
    ds_id, env = store
    agents = f"""
[[agents]]
name = "{PLUGIN}"
label = "fast"
[[agents]]
name = "{PLUGIN}"
label = "slow"
overrides = {{ sleep_s = 4.0 }}
"""
    suite = write_suite(tmp_path / "s.toml", ds_id, agents, seeds=(0,))
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "pbrl",
        "bench",
        "--suite",
        str(suite),
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-plots",
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            if (
                out.is_dir()
                and run_dirs(out)
                and any(p.name.startswith(".tmp-") for p in out.iterdir())
            ):
                break  # one run finished, the other is training
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.1)
        else:
            pytest.fail("the sweep never reached its second run")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = run_dirs(out)
    assert len(finished) == 1
    for d in finished.values():  # what is visible is whole
        assert (d / "summary.json").is_file()
    stamp = {k: (v / "summary.json").stat().st_mtime_ns for k, v in finished.items()}
    res = bench(suite, out, env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 finished, 1 skipped" in res.stdout
    after = run_dirs(out)
    assert len(after) == 2
    assert all((after[k] / "summary.json").stat().st_mtime_ns == v for k, v in stamp.items())
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.slow
def test_ray_backend_gives_the_same_files(store, tmp_path):
    ds_id, env = store
    agents = f"""
[[agents]]
name = "{PLUGIN}"
label = "a"
[[agents]]
name = "{PLUGIN}"
label = "b"
overrides = {{ action = 0.5 }}
"""
    suite = write_suite(tmp_path / "s.toml", ds_id, agents)
    local, remote = tmp_path / "local", tmp_path / "ray"
    r1 = bench(suite, local, env)
    assert r1.returncode == 0, r1.stdout + r1.stderr
    r2 = bench(suite, remote, env, "--backend", "ray")
    assert r2.returncode == 0, r2.stdout + r2.stderr
    a, b = run_dirs(local), run_dirs(remote)
    assert set(a) == set(b) and len(a) == 4
    for run_id in a:
        assert sorted(p.name for p in a[run_id].iterdir()) == sorted(
            p.name for p in b[run_id].iterdir()
        )
        ea = [r.rsplit(",", 1)[0] for r in (a[run_id] / "eval.csv").read_text().splitlines()]
        eb = [r.rsplit(",", 1)[0] for r in (b[run_id] / "eval.csv").read_text().splitlines()]
        assert ea[0].endswith("episodes") and ea == eb  # all but the wall-clock column
        sa = json.loads((a[run_id] / "summary.json").read_text())
        sb = json.loads((b[run_id] / "summary.json").read_text())
        assert sa["final_score"] == sb["final_score"]


def test_a_finished_run_under_an_older_preset_is_stale(tmp_path):
    """The run id hashes the preset's NAME; a run whose stored agent config differs from what
    the preset resolves to today must train again instead of being reused."""
    from pbrl.run.runner import is_finished, resolved_agent_config, stale_fields
    from pbrl.run.suite import Job

    job = Job(
        suite="s", agent="mr", label="mr", preset="quick", overrides={"hidden": "16,16"},
        dataset="pbrl/x", teacher="oracle", budget=10, segment=5, selector="uniform",
        label_seed=0, seed=0, steps=10, eval_every=10, eval_episodes=1,
    )  # fmt: skip
    folder = tmp_path / job.run_id
    folder.mkdir()
    assert not is_finished(tmp_path, job)  # no summary
    (folder / "summary.json").write_text("{}")
    cfg = resolved_agent_config(job)
    assert cfg["hidden"] == [16, 16] and cfg["reward_input"] == "obs"
    (folder / "config.json").write_text(json.dumps({"agent_config": cfg}))
    assert not is_finished(tmp_path, job)  # no job.json: a half-published folder
    (folder / "job.json").write_text(json.dumps({"agent": "mr"}))
    assert is_finished(tmp_path, job) and stale_fields(folder, job) == []
    old = {**cfg, "reward_input": "obs_act"}
    old.pop("reward_norm")
    (folder / "config.json").write_text(json.dumps({"agent_config": old}))
    assert stale_fields(folder, job) == ["reward_input", "reward_norm"]
    assert not is_finished(tmp_path, job)


def test_a_folder_missing_or_garbling_a_run_file_is_not_finished(tmp_path):
    """job.json, config.json and summary.json must all be readable JSON objects; a summary
    whose final_score is null (a run that could not evaluate) still counts as finished."""
    from pbrl.run.runner import is_finished, resolved_agent_config
    from pbrl.run.suite import Job

    job = Job(
        suite="s", agent="bc", label="bc", preset=None, overrides={}, dataset="pbrl/x",
        teacher=None, budget=None, segment=None, selector=None, label_seed=None, seed=0,
        steps=10, eval_every=10, eval_episodes=1,
    )  # fmt: skip
    folder = tmp_path / job.run_id
    folder.mkdir()
    good = {
        "job.json": json.dumps({"agent": "bc"}),
        "config.json": json.dumps({"agent_config": resolved_agent_config(job)}),
        "summary.json": json.dumps({"final_score": None}),
    }
    for name, text in good.items():
        (folder / name).write_text(text)
    assert is_finished(tmp_path, job)
    for name in good:
        for bad in ("", "{not json", "[1, 2]", "null"):
            (folder / name).write_text(bad)
            assert not is_finished(tmp_path, job), (name, bad)
        (folder / name).unlink()
        assert not is_finished(tmp_path, job), name
        (folder / name).write_text(good[name])
    assert is_finished(tmp_path, job)


def test_claims_are_exclusive_and_die_with_their_process(tmp_path):
    """A run's lock is held by one process; a second claim fails while it lives and succeeds
    once it is killed (the kernel drops the flock), and staging folders are removed only
    when their run's lock is free."""
    from pbrl.run.runner import claim, clean_partial, is_claimed, lock_path

    out = tmp_path
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from pbrl.run.runner import claim, lock_path\n"
         "with claim(lock_path(Path(sys.argv[1]), 'bc-aaaa')) as got:\n"
         "    print(got, flush=True); time.sleep(60)\n", str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "True"
        assert is_claimed(out, "bc-aaaa") and not is_claimed(out, "bc-bbbb")
        with claim(lock_path(out, "bc-aaaa")) as got:
            assert not got
        (out / ".tmp-bc-aaaa-123").mkdir()  # the holder's staging folder
        (out / ".tmp-bc-bbbb-456").mkdir()  # a dead process's
        (out / ".tmp-bc-bbbb-456-old").mkdir()
        (out / ".tmp-notes").mkdir()  # not a staging folder's name: left alone
        assert clean_partial(out) == 2
        assert sorted(p.name for p in out.glob(".tmp-*")) == [".tmp-bc-aaaa-123", ".tmp-notes"]
    finally:
        holder.kill()
        holder.wait()
    assert not is_claimed(out, "bc-aaaa")
    with claim(lock_path(out, "bc-aaaa")) as got:
        assert got
    assert clean_partial(out) == 1


def test_bench_eta_does_not_jump_as_runs_start_and_finish(capsys):
    """The ETA is the work left over the workers (mean duration of finished runs), not a
    function of how many runs happen to be running: starting a run at the same instant
    leaves it unchanged, and it falls steadily as time passes."""
    from types import SimpleNamespace

    from pbrl.cli.bench import Progress

    def job(i: int) -> SimpleNamespace:
        return SimpleNamespace(run_id=f"r{i}", label="x", dataset="d", seed=i)

    p = Progress(live=False)
    p.start(total=6, skipped=0, workers=2)
    assert p.eta_seconds() is None  # nothing finished yet
    p.durations = [10.0, 10.0]
    p.done_n = 2  # 4 left, none running: 4 x 10 s over 2 workers
    assert p.eta_seconds(now=100.0) == pytest.approx(20.0)
    p.started_at = {"r2": 100.0}  # one starts: the same work is left
    assert p.eta_seconds(now=100.0) == pytest.approx(20.0)
    p.started_at["r3"] = 100.0  # a second starts: still the same
    assert p.eta_seconds(now=100.0) == pytest.approx(20.0)
    assert p.eta_seconds(now=104.0) == pytest.approx(16.0)  # 2 x 6 s left + 2 x 10 s, / 2
    p.started(job(4))  # the real methods keep the count consistent
    p.stopped(job(4))
    assert p.running == 2
    p.done(job(5), ok=True, elsewhere=True)  # finished by another sweep: 3 left
    assert p.eta_seconds(now=104.0) == pytest.approx((6 + 6 + 10) / 2)
    capsys.readouterr()


STACKABLE = """
[[agents]]
name = "bc"
overrides = { hidden = "16,16", batch_size = 8, dropout = 0.0 }
[[agents]]
name = "cpl"
overrides = { hidden = "16,16", batch_size = 4, dropout = 0.0 }
[[agents]]
name = "mr"
overrides = { hidden = "16,16", batch_size = 8, reward_batch = 4 }
"""


def _metric_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_stacked_seeds_write_the_runs_separate_processes_write(store, tmp_path):
    """--stack-seeds 3 trains bc's, cpl's and mr's three seeds each in one process (mr's
    reward phases one after the other, then its IQL phases stacked), and evaluates the
    three together in 2 env worker processes (--eval-workers 2); the folders, run ids and
    files are those of separate runs, and the losses and scores agree with them to
    floating-point tolerance."""
    ds_id, env = store
    suite = write_suite(tmp_path / "s.toml", ds_id, STACKABLE, seeds=(0, 1, 2), steps=16)
    sep, stk = tmp_path / "separate", tmp_path / "stacked"
    a = bench(suite, sep, env, "--stack-seeds", "1")
    assert a.returncode == 0, a.stdout + a.stderr
    b = bench(suite, stk, env, "--stack-seeds", "3", "--eval-workers", "2")
    assert b.returncode == 0, b.stdout + b.stderr
    runs_a, runs_b = run_dirs(sep), run_dirs(stk)
    assert sorted(runs_a) == sorted(runs_b) and len(runs_a) == 9
    for run_id, da in runs_a.items():
        db = runs_b[run_id]
        assert sorted(f.name for f in da.iterdir()) == sorted(f.name for f in db.iterdir())
        cfg = json.loads((db / "config.json").read_text())
        stacked = cfg["spec"]["agent"] in ("bc", "cpl", "mr")
        assert cfg.get("stacked_seeds") == ([0, 1, 2] if stacked else None), run_id
        assert cfg["spec"]["eval_workers"] == 2, run_id
        ra, rb = _metric_rows(da), _metric_rows(db)
        assert [r["step"] for r in ra] == [r["step"] for r in rb]
        for x, y in zip(ra, rb, strict=True):
            for key in x:
                if key != "wall_s":
                    assert y[key] == pytest.approx(x[key], rel=1e-3, abs=1e-5), (run_id, key)
        sa = json.loads((da / "summary.json").read_text())
        sb = json.loads((db / "summary.json").read_text())
        assert sb["final_return"] == pytest.approx(sa["final_return"], rel=1e-3), run_id
    # a stacked sweep resumes like any other: nothing left to do
    again = bench(suite, stk, env, "--stack-seeds", "3")
    assert again.returncode == 0 and "0 finished, 9 skipped" in again.stdout


def test_stack_groups_take_the_seeds_of_one_job(monkeypatch):
    from pbrl.run.runner import plan, stack_groups

    monkeypatch.syspath_prepend(str(TESTS.parent))  # the plug-in learner examples.my_agent
    from pbrl.run.suite import load_suite

    suite_file = TESTS / "data" / "stack_groups.toml"
    jobs = plan(load_suite(str(suite_file)))
    groups = stack_groups(jobs, 2)
    for g in groups:
        assert len({(j.agent, j.label, j.dataset, j.budget) for j in g}) == 1
        assert len({j.seed for j in g}) == len(g) <= 2
    by_agent = {j.agent: [] for j in jobs}
    for g in groups:
        by_agent[g[0].agent].append(len(g))
    assert by_agent["bc"] == [2, 1] and by_agent["mr"] == [2, 1]
    # a plug-in without a stacked path: one run per process
    assert by_agent["examples.my_agent"] == [1, 1, 1]
    assert stack_groups(jobs, 1) == [[j] for j in jobs]
