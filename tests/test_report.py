"""The report on hand-made results: known IQM and intervals, formats, plots."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pbrl.report import (
    build_tables,
    iqm,
    read_runs,
    render_csv,
    render_latex,
    render_markdown,
    stratified_bootstrap_ci,
)


def _write_run(root, run_id, label, dataset, seed, score, teacher="oracle", budget=100, curve=()):
    d = root / run_id
    d.mkdir(parents=True)
    job = {
        "agent": label.split("-")[0],
        "label": label,
        "dataset": dataset,
        "teacher": teacher,
        "budget": budget,
        "seed": seed,
    }
    (d / "job.json").write_text(json.dumps(job))
    (d / "summary.json").write_text(json.dumps({"score": score}))
    rows = ["step,score"] + [f"{s},{v}" for s, v in curve]
    (d / "eval.csv").write_text("\n".join(rows) + "\n")


def test_iqm_known_value():
    # Middle 50% of 1..8 is 3,4,5,6.
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)


def test_constant_tasks_give_degenerate_interval():
    per_task = [np.full(3, 10.0), np.full(3, 30.0)]
    p, lo, hi = stratified_bootstrap_ci(per_task, np.mean, reps=200)
    assert (p, lo, hi) == (20.0, 20.0, 20.0)


def test_stratified_bootstrap_keeps_task_mix():
    # Task means 0 and 100 with spread: every resample keeps one of each per run slot,
    # so the interval of the mean stays inside the per-task extremes averaged.
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, 5)
    b = rng.normal(100, 1, 5)
    p, lo, hi = stratified_bootstrap_ci([a, b], np.mean, reps=2000, rng=rng)
    assert lo < p < hi
    assert 49 < lo and hi < 51


def test_bootstrap_matches_exact_enumeration():
    # 2 tasks x 2 runs: the stratified bootstrap distribution of the mean can be enumerated
    # exactly (each task resamples one of 4 equally likely pairs), so its quantiles are known.
    import itertools

    a, b = np.array([0.0, 10.0]), np.array([50.0, 90.0])
    exact = sorted(
        np.mean(np.concatenate([a[list(i)], b[list(j)]]))
        for i in itertools.product(range(2), repeat=2)
        for j in itertools.product(range(2), repeat=2)
    )
    # 16 equally likely values; the 2.5% and 97.5% quantiles are the extremes.
    p, lo, hi = stratified_bootstrap_ci([a, b], np.mean, reps=20000, rng=np.random.default_rng(0))
    assert p == pytest.approx(37.5)
    assert lo == pytest.approx(exact[0])
    assert hi == pytest.approx(exact[-1])


def test_tables_formats_and_plots(tmp_path):
    for seed in range(3):
        _write_run(
            tmp_path,
            f"cpl{seed}",
            "cpl",
            "pbrl/metaworld/a/medium-replay-v0",
            seed,
            50 + seed,
            curve=[(0, 0), (10, 50 + seed)],
        )
        _write_run(
            tmp_path,
            f"t{seed}",
            "iql-true",
            "pbrl/metaworld/a/medium-replay-v0",
            seed,
            80.0,
            teacher=None,
            budget=None,
            curve=[(0, 0), (10, 80)],
        )
        _write_run(
            tmp_path,
            f"z{seed}",
            "iql-zero",
            "pbrl/metaworld/a/medium-replay-v0",
            seed,
            10.0,
            teacher=None,
            budget=None,
        )
    (tmp_path / ".tmp-x").mkdir()  # an unfinished run is ignored
    runs = read_runs(tmp_path)
    assert len(runs) == 9
    tables = build_tables(runs, reps=500)
    assert len(tables) == 1
    rows = dict(tables[0].rows)
    # Reference rows last, present in the table although they used no preferences.
    assert [r[0] for r in tables[0].rows] == ["cpl", "iql-true", "iql-zero"]
    assert rows["cpl"][0].point == pytest.approx(51.0)
    assert rows["iql-true"][-1].point == pytest.approx(80.0)  # IQM column
    assert (rows["iql-zero"][0].low, rows["iql-zero"][0].high) == (10.0, 10.0)
    md = render_markdown(tables)
    assert "| cpl | 3 | 51.0 [" in md
    assert "iql-zero" in render_csv(tables)
    assert r"\begin{tabular}" in render_latex(tables)
    out = subprocess.run(
        [sys.executable, "-m", "pbrl", "report", str(tmp_path), "--format", "csv", "--plots"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "plots" / "learning_curves.png").stat().st_size > 1000
    assert (tmp_path / "plots" / "performance_profile.png").exists()


def test_report_on_empty_folder_is_a_clear_error(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "pbrl", "report", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "no finished runs" in out.stderr
    assert "Traceback" not in out.stderr
