"""Reports: tables with confidence intervals, learning curves and performance profiles.

Reads only the files a run writes (``job.json``, ``summary.json``, ``eval.csv``), never
folder names. Aggregation follows rliable (Agarwal et al., 2021): the mean and the
interquartile mean (IQM) of normalized scores, with 95% percentile confidence intervals
from a *stratified* bootstrap — runs are resampled with replacement within each task, so
every resample keeps the task mix. The bootstrap is implemented here with an explicit
numpy Generator (no global state); tests check it against rliable itself.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.errors import DataError, PbrlError

# Rows every table shows so a reader sees what the preferences bought (docs/report.md).
REFERENCE_ROWS = ("iql-true", "iql-zero")


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------
def iqm(x: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% (scipy's trim_mean(x, 0.25))."""
    from scipy.stats import trim_mean

    x = np.asarray(x, dtype=np.float64).ravel()
    return float(trim_mean(x, 0.25)) if x.size else float("nan")


def mean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64).ravel()
    return float(x.mean()) if x.size else float("nan")


AGGREGATES: dict[str, Callable[[np.ndarray], float]] = {"mean": mean, "iqm": iqm}


def stratified_bootstrap_ci(
    per_task: Sequence[np.ndarray],
    aggregate: Callable[[np.ndarray], float],
    *,
    reps: int = 2000,
    confidence: float = 0.95,
    rng: np.random.Generator | None = None,
) -> tuple[float, float, float]:
    """(point, low, high) of ``aggregate`` over all runs of all tasks.

    ``per_task[k]`` holds the scores of the runs (seeds) on task k; each bootstrap
    replicate resamples runs within every task independently.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    tasks = [np.asarray(t, dtype=np.float64).ravel() for t in per_task if len(t)]
    if not tasks:
        return float("nan"), float("nan"), float("nan")
    point = aggregate(np.concatenate(tasks))
    stats = np.empty(reps)
    for r in range(reps):
        stats[r] = aggregate(np.concatenate([t[rng.integers(0, t.size, t.size)] for t in tasks]))
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(stats, [alpha, 1.0 - alpha])
    return point, float(lo), float(hi)


# --------------------------------------------------------------------------------------
# Reading runs
# --------------------------------------------------------------------------------------
@dataclass
class Run:
    run_id: str
    label: str
    agent: str
    dataset: str
    teacher: str | None
    budget: int | None
    seed: int
    score: float
    summary: dict[str, Any]
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, score)


def summary_score(summary: dict[str, Any], where: str) -> float:
    for key in ("score", "final_score", "normalized_score"):
        if key in summary:
            return float(summary[key])
    raise DataError(f"{where}: summary.json has no 'score'")


def read_runs(root: str | Path) -> list[Run]:
    """Every finished run below ``root`` (any depth): folders holding job.json + summary.json."""
    root = Path(root)
    if not root.is_dir():
        raise PbrlError(f"report: '{root}' is not a folder")
    runs = []
    for summary_file in sorted(root.rglob("summary.json")):
        d = summary_file.parent
        if any(part.startswith(".") for part in d.relative_to(root).parts):
            continue  # temporary folders of unfinished runs
        job_file = d / "job.json"
        if not job_file.is_file():
            continue
        try:
            job = json.loads(job_file.read_text())
            summary = json.loads(summary_file.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{d}: unreadable run file ({e})") from e
        run = Run(
            run_id=d.name,
            label=job.get("label", job["agent"]),
            agent=job["agent"],
            dataset=job["dataset"],
            teacher=job.get("teacher"),
            budget=job.get("budget"),
            seed=int(job["seed"]),
            score=summary_score(summary, str(summary_file)),
            summary=summary,
        )
        eval_file = d / "eval.csv"
        if eval_file.is_file():
            with open(eval_file, newline="") as fh:
                for row in csv.DictReader(fh):
                    if "step" in row and "score" in row and row["score"] not in ("", None):
                        run.curve.append((int(float(row["step"])), float(row["score"])))
        runs.append(run)
    return runs


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------
@dataclass
class Cell:
    point: float
    low: float
    high: float
    n: int

    def fmt(self, digits: int = 1) -> str:
        if self.n == 0 or math.isnan(self.point):
            return "-"
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[tuple[str, list[Cell]]]
    n_seeds: dict[str, int]


def _group_key(run: Run) -> tuple[str | None, int | None]:
    return (run.teacher, run.budget)


def build_tables(runs: list[Run], *, reps: int = 2000, seed: int = 0) -> list[Table]:
    """One table per (teacher, budget): rows = learners, columns = datasets + aggregates.

    Learners that read no preferences (true-/zero-reward IQL, BC) appear in every table.
    """
    if not runs:
        raise PbrlError("report: no finished runs found")
    rng = np.random.default_rng(seed)
    groups = sorted({_group_key(r) for r in runs if r.teacher is not None}, key=str) or [
        (None, None)
    ]
    datasets = sorted({r.dataset for r in runs})
    tables = []
    for teacher, budget in groups:
        members = [r for r in runs if r.teacher is None or _group_key(r) == (teacher, budget)]
        labels = _ordered_labels(members)
        rows = []
        n_seeds = {}
        for label in labels:
            mine = [r for r in members if r.label == label]
            n_seeds[label] = len({r.seed for r in mine})
            per_task = [np.array([r.score for r in mine if r.dataset == d]) for d in datasets]
            cells = []
            for scores in per_task:
                p, lo, hi = stratified_bootstrap_ci([scores], mean, reps=reps, rng=rng)
                cells.append(Cell(p, lo, hi, len(scores)))
            for agg in ("mean", "iqm"):
                p, lo, hi = stratified_bootstrap_ci(per_task, AGGREGATES[agg], reps=reps, rng=rng)
                cells.append(Cell(p, lo, hi, sum(len(s) for s in per_task)))
            rows.append((label, cells))
        title = "all runs" if teacher is None else f"teacher={teacher}, queries={budget}"
        tables.append(Table(title, [*datasets, "mean", "IQM"], rows, n_seeds))
    return tables


def _ordered_labels(runs: list[Run]) -> list[str]:
    labels = sorted({r.label for r in runs})
    refs = [x for x in REFERENCE_ROWS if x in labels]
    return [x for x in labels if x not in refs] + refs


def _short(name: str) -> str:
    return name.removeprefix("pbrl/").removesuffix("-v0")


def render_markdown(tables: list[Table]) -> str:
    out = []
    for t in tables:
        out.append(f"### {t.title}\n")
        out.append("Normalized score, mean over seeds [95% stratified-bootstrap CI].\n")
        head = ["agent", "seeds", *[_short(c) for c in t.columns]]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for label, cells in t.rows:
            out.append(
                "| " + " | ".join([label, str(t.n_seeds[label]), *[c.fmt() for c in cells]]) + " |"
            )
        out.append("")
    return "\n".join(out)


def render_csv(tables: list[Table]) -> str:
    lines = ["table,agent,column,point,low,high,n"]
    for t in tables:
        for label, cells in t.rows:
            for col, c in zip(t.columns, cells, strict=True):
                lines.append(
                    f'"{t.title}",{label},{col},{c.point:.6g},{c.low:.6g},{c.high:.6g},{c.n}'
                )
    return "\n".join(lines) + "\n"


def render_latex(tables: list[Table]) -> str:
    def esc(s: str) -> str:
        return s.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")

    out = []
    for t in tables:
        cols = [_short(c) for c in t.columns]
        out.append(r"\begin{table}[t]\centering")
        out.append(r"\caption{" + esc(t.title) + r"; mean [95\% CI] over seeds}")
        out.append(r"\begin{tabular}{l" + "c" * len(cols) + "}")
        out.append(r"\toprule")
        out.append(" & ".join(["agent", *map(esc, cols)]) + r" \\")
        out.append(r"\midrule")
        for label, cells in t.rows:
            out.append(" & ".join([esc(label), *[esc(c.fmt()) for c in cells]]) + r" \\")
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        out.append(r"\end{table}")
        out.append("")
    return "\n".join(out)


RENDERERS = {"md": render_markdown, "csv": render_csv, "latex": render_latex}


# --------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------
def make_plots(runs: list[Run], out_dir: str | Path) -> list[Path]:
    """Learning curves (score vs updates), score vs query budget, performance profile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    # Learning curves, one panel per dataset, mean over seeds with min/max band.
    datasets = sorted({r.dataset for r in runs})
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
    for ax, d in zip(axes[0], datasets, strict=True):
        by_label: dict[str, list[list[tuple[int, float]]]] = defaultdict(list)
        for r in runs:
            if r.dataset == d and r.curve:
                by_label[r.label].append(r.curve)
        for label, curves in sorted(by_label.items()):
            steps = sorted({s for c in curves for s, _ in c})
            vals = np.array(
                [[dict(c).get(s, np.nan) for s in steps] for c in curves], dtype=np.float64
            )
            m = np.nanmean(vals, axis=0)
            ax.plot(steps, m, label=label)
            ax.fill_between(steps, np.nanmin(vals, axis=0), np.nanmax(vals, axis=0), alpha=0.15)
        ax.set_title(_short(d), fontsize=9)
        ax.set_xlabel("updates")
        ax.set_ylabel("normalized score")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    p = out_dir / "learning_curves.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)

    # Score against the number of queries (only when several budgets were run).
    budgets = sorted({r.budget for r in runs if r.budget is not None})
    if len(budgets) > 1:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for label in sorted({r.label for r in runs if r.budget is not None}):
            ys = [
                mean(np.array([r.score for r in runs if r.label == label and r.budget == b]))
                for b in budgets
            ]
            ax.plot(budgets, ys, marker="o", label=label)
        for label in REFERENCE_ROWS:
            ref = [r.score for r in runs if r.label == label]
            if ref:
                ax.axhline(mean(np.array(ref)), linestyle="--", linewidth=1, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("queries")
        ax.set_ylabel("normalized score")
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = out_dir / "score_vs_queries.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)

    # Performance profile: fraction of runs scoring above tau.
    fig, ax = plt.subplots(figsize=(5, 3.6))
    all_scores = np.array([r.score for r in runs])
    taus = np.linspace(min(0.0, all_scores.min()), max(100.0, all_scores.max()), 101)
    for label in _ordered_labels(runs):
        s = np.array([r.score for r in runs if r.label == label])
        ax.plot(taus, [(s > t).mean() for t in taus], label=label)
    ax.set_xlabel("normalized score tau")
    ax.set_ylabel("fraction of runs > tau")
    ax.legend(fontsize=7)
    fig.tight_layout()
    p = out_dir / "performance_profile.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)
    return written


def report(
    root: str | Path, fmt: str = "md", *, plots: bool = False, plots_dir: str | Path | None = None
) -> str:
    if fmt not in RENDERERS:
        raise PbrlError(f"--format {fmt}: unknown format (md, csv, latex)")
    runs = read_runs(root)
    text = RENDERERS[fmt](build_tables(runs))
    if plots:
        make_plots(runs, plots_dir or Path(root) / "plots")
    return text
