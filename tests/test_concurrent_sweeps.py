"""Two ``pbrl bench`` processes on one output folder, over overlapping suites.

Each run must be trained exactly once (a per-run lock decides which sweep trains it; the
other waits and counts it), the preference file they share labelled once, both tables
complete, both exit 0, and nothing half-written or shared left behind. The learner is a
plug-in written here that leaves one marker file per training it starts.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_runner import run_dirs, store, write_suite  # noqa: F401 - store is a fixture

MARKING_AGENT = '''
"""Counts its trainings: one marker file per fit, named tag-seed-pid."""
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Config:
    tag: str = "x"
    needs_prefs: bool = False
    sleep_s: float = 1.5


TEST_OVERRIDES = {}


class Agent:
    requires_true_reward = False

    def __init__(self, cfg, spec):
        self.cfg, self.spec = cfg, spec
        self.requires_preferences = cfg.needs_prefs

    def fit(self, ctx):
        marks = Path(os.environ["PBRL_TEST_MARKS"])
        (marks / f"{self.cfg.tag}-{ctx.seed}-{os.getpid()}").write_text("")
        for step in range(1, ctx.steps + 1):
            time.sleep(self.cfg.sleep_s / ctx.steps)
            if step % ctx.log_interval == 0 or step == ctx.steps:
                yield {"step": step, "loss": 1.0 / step}

    def act(self, obs):
        obs = np.asarray(obs)
        return np.zeros((*obs.shape[:-1], self.spec.act_dim), np.float32)

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass
'''


def agents(*tags: str) -> str:
    return "".join(
        f'[[agents]]\nname = "marking.agent"\nlabel = "{t}"\n'
        f'overrides = {{ tag = "{t}", needs_prefs = {str(t == "b").lower()} }}\n'
        for t in tags
    )


@pytest.mark.slow
def test_two_sweeps_on_one_folder_train_each_run_once(store, tmp_path):  # noqa: F811
    ds_id, env = store
    plugins = tmp_path / "plugins"
    (plugins / "marking").mkdir(parents=True)
    (plugins / "marking" / "__init__.py").write_text("")
    (plugins / "marking" / "agent.py").write_text(MARKING_AGENT)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {
        **env,
        "PBRL_TEST_MARKS": str(marks),
        "PYTHONPATH": f"{plugins}:{env['PYTHONPATH']}",
    }
    first = write_suite(tmp_path / "first.toml", ds_id, agents("a", "b", "c"), steps=6)
    second = write_suite(tmp_path / "second.toml", ds_id, agents("b", "c", "d"), steps=6)
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pbrl",
                "bench",
                "--suite",
                str(s),
                "--out",
                str(out),
                "--workers",
                "2",
                "--device",
                "cpu",
                "--no-plots",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for s in (first, second)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    for p, (stdout, stderr) in zip(procs, results, strict=True):
        assert p.returncode == 0, stdout + stderr
        assert "Traceback" not in stdout + stderr
    # Every run (4 tags x 2 seeds) trained exactly once, by one sweep or the other.
    trained = sorted(m.name.rsplit("-", 1)[0] for m in marks.iterdir())
    assert trained == sorted(f"{t}-{s}" for t in "abcd" for s in (0, 1)), trained
    runs = run_dirs(out)
    assert len(runs) == 8
    for d in runs.values():
        for f in ("job.json", "config.json", "summary.json", "eval.csv"):
            assert (d / f).is_file(), (d, f)
        assert json.loads((d / "summary.json").read_text())["steps"] == 6
    assert len(list((out / "prefs").glob("*.npz"))) == 2  # b's labels, one file per seed
    # Both tables are complete: each sweep's three learners, over both seeds.
    for (stdout, _), tags in zip(results, ("abc", "bcd"), strict=True):
        for t in tags:
            assert f"| {t} |" in stdout, stdout
        line = next(ln for ln in stdout.splitlines() if " skipped (already done)" in ln)
        counts = [int(w) for w in line.replace(",", " ").split() if w.isdigit()]
        assert sum(counts) == 6 and "0 failed" in line, line  # finished + skipped + elsewhere
    # Nothing half-written or shared is left: no staging folder, no log, no failure.
    assert not list(out.glob(".tmp-*"))
    assert not list((out / ".logs").iterdir())
    assert not (out / ".failed").exists() or not list((out / ".failed").iterdir())
