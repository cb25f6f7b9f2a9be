"""The report on hand-made results: known IQM and intervals, formats, plots."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from pbrl.errors import DataError, PbrlError
from pbrl.run.report import (
    Cell,
    Table,
    build_tables,
    iqm,
    latex_escape,
    learning_curves_figure,
    performance_profile_figure,
    read_runs,
    render_csv,
    render_latex,
    render_markdown,
    report,
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


def _two_learners(root, curve=((500, 10.0),)):
    for seed in range(2):
        for label, score in (("cpl", 0.0), ("mr", 0.0), ("iql-true", 40.0 + seed)):
            _write_run(root, f"{label}{seed}", label, "pbrl/a-v0", seed, score, curve=curve)


def test_csv_quotes_labels_and_round_trips():
    label = 'cpl, "dense" x2'
    title = "teacher=a,b, queries=10"
    cells = [Cell(1.5, 1.0, 2.0, 3), Cell(float("nan"), float("nan"), float("nan"), 0)]
    text = render_csv([Table(title, ["d,1", "mean"], [(label, cells)], {label: 3})])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["table", "agent", "column", "point", "low", "high", "n"]
    assert rows[1] == [title, label, "d,1", "1.5", "1", "2", "3"]
    assert rows[2] == [title, label, "mean", "", "", "", "0"]  # no runs: empty, not 'nan'


def test_latex_and_markdown_escape_labels():
    assert latex_escape("a_b & 50% #1 $x$ {y} ~^\\") == (
        r"a\_b \& 50\% \#1 \$x\$ \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{}"
    )
    t = Table("t_1", ["d_x"], [("[x]_a|b", [Cell(1.0, 1.0, 1.0, 1)])], {"[x]_a|b": 1})
    tex = render_latex([t])
    assert r"{[}x]\_a|b & 1.0 [1.0, 1.0] \\" in tex  # a leading [ is not \\'s argument
    assert r"\caption{t\_1;" in tex and r"agent & d\_x \\" in tex
    assert r"| [x]_a\|b | 1 |" in render_markdown([t])


def test_single_point_curves_are_markers_and_stay_apart(tmp_path):
    _two_learners(tmp_path)
    fig = learning_curves_figure(read_runs(tmp_path))
    ax = fig.axes[0]
    # errorbar(): the label is the container's, its first line holds the markers.
    lines = {c.get_label(): c.lines[0] for c in ax.containers}
    assert sorted(lines) == ["cpl", "iql-true", "mr"]
    assert all(ln.get_marker() not in ("None", "", None) for ln in lines.values())
    # cpl and mr both score 0 at step 500: nudged apart, so both markers show.
    xs = {k: float(ln.get_xdata()[0]) for k, ln in lines.items()}
    assert len(set(xs.values())) == 3 and min(xs.values()) < 500 < max(xs.values())
    assert ax.get_legend() is not None


def test_long_curves_are_lines_with_a_band(tmp_path):
    _two_learners(tmp_path, curve=[(i * 100, float(i)) for i in range(1, 30)])
    ax = learning_curves_figure(read_runs(tmp_path)).axes[0]
    line = next(ln for ln in ax.lines if ln.get_label() == "cpl")
    assert list(line.get_xdata()) == [i * 100 for i in range(1, 30)]  # not nudged
    assert ax.collections  # the min-max band


def test_profile_curves_differ_in_style(tmp_path):
    _two_learners(tmp_path)
    fig = performance_profile_figure(read_runs(tmp_path))
    lines = fig.axes[0].lines
    styles = {(ln.get_linestyle(), ln.get_marker(), ln.get_color()) for ln in lines}
    assert len(lines) == 3 and len(styles) == 3
    # cpl and mr are the same curve (both 0): their markers sit at different taus.
    marks = {ln.get_label(): ln.get_markevery() for ln in lines}
    assert marks["cpl (2)"] != marks["mr (2)"]
    assert fig.axes[0].get_legend() is not None


def _train_run(root, name="r", score=12.5, **summary):
    """A ``pbrl train --out`` folder: config.json and summary.json, no job.json."""
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    base = {"agent": "bc", "dataset": "pbrl/a-v0", "seed": 3, "final_score": score}
    (d / "summary.json").write_text(json.dumps({**base, **summary}))
    (d / "eval.csv").write_text("step,score\n4,12.5\n")
    return d


def test_train_run_folders_are_read_from_summary(tmp_path):
    _train_run(tmp_path)
    (run,) = read_runs(tmp_path)
    assert (run.label, run.agent, run.dataset, run.seed, run.score) == (
        "bc",
        "bc",
        "pbrl/a-v0",
        3,
        12.5,
    )
    assert run.curve == [(4, 12.5)] and run.teacher is None


def test_runs_without_a_score_are_left_out_with_a_warning(tmp_path):
    _train_run(tmp_path, "good")
    _train_run(tmp_path, "noeval", score=None)
    (tmp_path / "stray").mkdir()
    (tmp_path / "stray" / "summary.json").write_text('{"score": 1}')
    said: list[str] = []
    text = report(tmp_path, warn=said.append)
    assert "| bc | 1 | 12.5 [" in text
    assert len(said) == 2
    assert any("noeval" in m and "no score" in m for m in said)
    assert any("stray" in m and "job.json" in m for m in said)
    # Nothing with a score at all: an error naming what was left out.
    summary = json.loads((tmp_path / "good" / "summary.json").read_text())
    (tmp_path / "good" / "summary.json").write_text(json.dumps({**summary, "final_score": None}))
    with pytest.raises(PbrlError, match="no finished runs.*left out.*no score"):
        report(tmp_path, warn=said.append)


@pytest.mark.parametrize(
    ("file", "content", "words"),
    [
        ("summary.json", b"{not json", ("summary.json", "JSON")),
        ("summary.json", b'{"final_score": 1, "agent": "\xff"}', ("summary.json", "UTF-8")),
        ("summary.json", b"[1, 2]", ("summary.json", "object")),
        ("summary.json", b'{"final_score": "high", "agent": "bc"}', ("final_score", "number")),
        ("summary.json", b'{"final_score": NaN}', ("final_score", "finite")),
        ("summary.json", b'{"final_score": Infinity}', ("final_score", "finite")),
        ("summary.json", b'{"final_score": true}', ("final_score",)),
        ("summary.json", b'{"agent": "bc"}', ("summary.json", "score")),
        ("summary.json", b'{"final_score": 1, "dataset": "d", "seed": 0}', ("'agent'", "missing")),
        (
            "summary.json",
            b'{"final_score": 1, "agent": "bc", "dataset": "d", "seed": "0"}',
            ("'seed'",),
        ),
        (
            "summary.json",
            b'{"final_score": 1, "agent": "bc", "dataset": "d", "seed": -1}',
            ("'seed'",),
        ),
        (
            "summary.json",
            b'{"final_score": 1, "agent": 7, "dataset": "d", "seed": 0}',
            ("'agent'",),
        ),
        (
            "job.json",
            b'{"agent": "bc", "dataset": "d", "seed": 0, "budget": "many"}',
            ("job.json", "budget"),
        ),
        (
            "job.json",
            b'{"agent": "bc", "dataset": "d", "seed": 0, "label": 3}',
            ("job.json", "label"),
        ),
        ("job.json", b"", ("job.json", "JSON")),
        ("eval.csv", b"", ("eval.csv", "empty")),
        ("eval.csv", b"step,return\n1,2\n", ("eval.csv", "score")),
        ("eval.csv", b"step,score\n1,abc\n", ("eval.csv", "line 2", "score")),
        ("eval.csv", b"step,score\n1,nan\n", ("eval.csv", "score", "finite")),
        ("eval.csv", b"step,score\n1,2\n3,inf\n", ("eval.csv", "line 3")),
        ("eval.csv", b"step,score\nx,2\n", ("eval.csv", "step")),
        ("eval.csv", b"step,score\n1.5,2\n", ("eval.csv", "step")),
        ("eval.csv", b"step,score\n-1,2\n", ("eval.csv", "step")),
        ("eval.csv", b"step,score\n1,2,3\n", ("eval.csv", "fields")),
        ("eval.csv", b"step,score\n1\n", ("eval.csv", "fields")),
        ("eval.csv", b"step,score\n1,\xff\n", ("eval.csv", "UTF-8")),
        ("eval.csv", b"step,score\n1,\x002\n", ("eval.csv",)),
    ],
)
def test_malformed_run_files_name_file_and_field(tmp_path, file, content, words):
    d = _train_run(tmp_path)
    if file == "job.json" and content:
        payload = json.loads(content)
        (d / "job.json").write_text(json.dumps(payload))
    else:
        (d / file).write_bytes(content)
    with pytest.raises(DataError) as e:
        read_runs(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w.lower() in msg.lower(), msg


def test_eval_csv_rows_without_score_are_skipped_and_sorted(tmp_path):
    d = _train_run(tmp_path)
    (d / "eval.csv").write_text("step,score,wall_s\n8,3,1\n4,,1\n2,1.0,1\n\n")
    (run,) = read_runs(tmp_path)
    assert run.curve == [(2, 1.0), (8, 3.0)]


def test_outputs_are_checked_before_anything_is_written(tmp_path):
    _train_run(tmp_path / "runs")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for kwargs, words in [
        ({"fmt": "bogus"}, "--format"),
        ({"output": blocker / "t.md", "plots": True}, "-o"),
        ({"output": tmp_path, "plots": True}, "-o"),
        ({"plots": True, "plots_dir": blocker / "p"}, "--plots-dir"),
        ({"plots": True, "plots_dir": "/proc/pbrl-x", "output": tmp_path / "t.md"}, "--plots-dir"),
        ({"output": "/proc/pbrl-x.md"}, "-o"),
    ]:
        with pytest.raises(PbrlError, match=words):
            report(tmp_path / "runs", **kwargs)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    for root, words in [(tmp_path / "nope", "does not exist"), (blocker, "not a folder")]:
        with pytest.raises(PbrlError, match=words):
            report(root)


def test_intervals_equal_rliables_on_the_same_scores():
    """pbrl's IQM / mean and their stratified-bootstrap 95% intervals against rliable's
    (the field's reference, Agarwal et al. 2021) on the same score matrix (issue 18).

    The point estimates are equal to float precision. The intervals are percentile
    intervals of the same resampling scheme (runs resampled within each task) but drawn
    from different random streams (rliable uses numpy's global RNG), so they agree up to
    Monte Carlo error: with 10,000 replicates, each end within 4% of the interval's width.
    """
    from rliable import library as rly
    from rliable import metrics

    from pbrl.run.report import iqm, stratified_bootstrap_ci

    saved = np.random.get_state()  # noqa: NPY002 - restored below for the other tests
    try:
        _compare_with_rliable(rly, metrics, iqm, stratified_bootstrap_ci)
    finally:
        np.random.set_state(saved)  # noqa: NPY002


def _compare_with_rliable(rly, metrics, iqm, stratified_bootstrap_ci) -> None:  # noqa: ANN001
    for seed in range(2):
        scores = np.random.default_rng(seed).uniform(0, 100, (5, 4)) + [0, 20, 40, 60]
        np.random.seed(seed)  # noqa: NPY002 - rliable draws from numpy's global RNG
        points, intervals = rly.get_interval_estimates(
            {"x": scores},
            lambda s: np.array([metrics.aggregate_iqm(s), metrics.aggregate_mean(s)]),
            reps=10000,
        )
        per_task = [scores[:, k] for k in range(scores.shape[1])]
        for j, agg in enumerate((iqm, np.mean)):
            point, lo, hi = stratified_bootstrap_ci(
                per_task, agg, reps=10000, rng=np.random.default_rng(seed)
            )
            r_lo, r_hi = intervals["x"][:, j]
            assert point == pytest.approx(points["x"][j], abs=1e-9)
            width = r_hi - r_lo
            assert abs(lo - r_lo) < 0.04 * width and abs(hi - r_hi) < 0.04 * width
