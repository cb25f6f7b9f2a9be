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
import io
import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.errors import DataError, PbrlError
from pbrl.utils import (
    atomic_path,
    check_output_dir,
    make_output_dir,
    read_json_object,
    read_text_file,
)

# Rows every table shows so a reader sees what the preferences bought (docs/runner.md).
REFERENCE_ROWS = ("iql-true", "iql-zero", "sac-true")
# Online runs (``pbrl bench`` on an ``online`` task entry): their dataset field.
ONLINE_PREFIX = "online/"

log = logging.getLogger(__name__)


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
    folder: Path = field(default_factory=Path)
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, score)
    # online runs: queries asked by each logged step, from metrics.jsonl (step, queries)
    queries: list[tuple[int, float]] = field(default_factory=list)

    @property
    def online(self) -> bool:
        return self.dataset.startswith(ONLINE_PREFIX)

    def queries_at(self, step: int) -> float:
        """Queries asked by env step ``step`` (the last logged count at or before it)."""
        done = [q for s, q in self.queries if s <= step]
        return done[-1] if done else 0.0


# The summary keys a score is read from, first present wins (pbrl train writes final_score).
SCORE_KEYS = ("score", "final_score", "normalized_score")


def _str_field(obj: dict[str, Any], key: str, where: Path, *, optional: bool = False) -> Any:
    if key not in obj or obj[key] is None:
        if optional:
            return None
        raise DataError(f"{where}: field '{key}' is missing")
    value = obj[key]
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field '{key}' must be a non-empty string, got {value!r}")
    return value


def _int_field(
    obj: dict[str, Any], key: str, where: Path, *, optional: bool = False, minimum: int = 0
) -> Any:
    if key not in obj or obj[key] is None:
        if optional:
            return None
        raise DataError(f"{where}: field '{key}' is missing")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"{where}: field '{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def summary_score(summary: dict[str, Any], where: str | Path) -> float | None:
    """The run's normalized score, or None when the run could not evaluate (a null score).

    Anything else that is not a finite number (a string, NaN, inf, a missing key) is a
    malformed ``summary.json``.
    """
    for key in SCORE_KEYS:
        if key in summary:
            value = summary[key]
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DataError(f"{where}: field '{key}' must be a number or null, got {value!r}")
            if not math.isfinite(value):
                raise DataError(f"{where}: field '{key}' is {value}, not a finite number")
            return float(value)
    raise DataError(f"{where}: no score field ({', '.join(SCORE_KEYS)})")


def read_curve(path: Path) -> list[tuple[int, float]]:
    """(step, score) rows of an ``eval.csv``, sorted by step; rows with an empty score skip.

    A file without a ``step``/``score`` header, a row with the wrong number of fields, a
    step that is not a whole number >= 0, or a score that is not a finite number is a
    :class:`DataError` naming the file, the line and the field.
    """
    text = read_text_file(path)
    points: dict[int, float] = {}
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path}: empty file (no header line)")
        for col in ("step", "score"):
            if col not in header:
                raise DataError(f"{path}: no '{col}' column in the header {header}")
        i_step, i_score = header.index("step"), header.index("score")
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}: line {line}: {len(row)} fields, the header has {len(header)}"
                )
            raw_step, raw_score = row[i_step].strip(), row[i_score].strip()
            try:
                step_f = float(raw_step)
            except ValueError:
                step_f = math.nan
            if not (math.isfinite(step_f) and step_f >= 0 and step_f == int(step_f)):
                raise DataError(
                    f"{path}: line {line}: 'step' must be a whole number >= 0, got {raw_step!r}"
                )
            if raw_score == "":
                continue  # an evaluation that produced no score
            try:
                score = float(raw_score)
            except ValueError:
                score = math.nan
            if not math.isfinite(score):
                raise DataError(
                    f"{path}: line {line}: 'score' must be a finite number, got {raw_score!r}"
                )
            points[int(step_f)] = score
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from e
    return sorted(points.items())


def read_run(folder: Path) -> Run | None:
    """The finished run in ``folder`` (which holds ``summary.json``), or None without a score.

    Its learner, dataset and seed come from ``job.json`` (written by ``pbrl bench``: also
    the row label, teacher and query budget) or, for a ``pbrl train --out`` folder, from
    ``summary.json``. Any malformed field is a :class:`DataError` naming file and field.
    """
    summary_file, job_file = folder / "summary.json", folder / "job.json"
    summary = read_json_object(summary_file)
    score = summary_score(summary, summary_file)
    if job_file.exists():
        job = read_json_object(job_file)
        meta, where = job, job_file
    else:
        job, meta, where = {}, summary, summary_file
    agent = _str_field(meta, "agent", where)
    run = Run(
        run_id=folder.name,
        label=_str_field(job, "label", job_file, optional=True) or agent,
        agent=agent,
        dataset=_str_field(meta, "dataset", where),
        teacher=_str_field(job, "teacher", job_file, optional=True),
        budget=_int_field(job, "budget", job_file, optional=True, minimum=1),
        seed=_int_field(meta, "seed", where),
        score=math.nan if score is None else score,
        summary=summary,
        folder=folder,
    )
    eval_file = folder / "eval.csv"
    if eval_file.exists():
        run.curve = read_curve(eval_file)
    metrics_file = folder / "metrics.jsonl"
    if run.online and metrics_file.exists():
        run.queries = read_queries(metrics_file)
    return None if score is None else run


def read_queries(path: Path) -> list[tuple[int, float]]:
    """(step, queries asked so far) of every metrics row that logs ``queries``."""
    out = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {i} is not JSON ({e.msg})") from e
        if isinstance(row, dict) and "queries" in row and "step" in row:
            out.append((int(row["step"]), float(row["queries"])))
    return sorted(out)


def _check_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise PbrlError(f"report: folder '{root}' does not exist")
    if not root.is_dir():
        raise PbrlError(f"report: '{root}' is not a folder")
    return root


def read_runs(
    root: str | Path,
    *,
    run_ids: Collection[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[Run]:
    """Every finished run with a score below ``root`` (any depth), sorted by folder.

    A finished run is a folder holding ``summary.json`` and ``job.json`` or ``config.json``
    (folders whose name starts with ``.`` are temporary and skipped). A run whose
    ``summary.json`` has a null score (it finished but could not evaluate) and a folder
    with ``summary.json`` but neither of the others are left out: ``warn`` (default: the
    log) gets one line naming the folder. ``run_ids`` keeps only those folder names.
    A malformed file is a :class:`DataError` naming the file and field.
    """
    root = _check_root(root)
    say = warn if warn is not None else log.warning
    runs = []
    for summary_file in sorted(root.rglob("summary.json")):
        d = summary_file.parent
        if any(part.startswith(".") for part in d.relative_to(root).parts):
            continue  # temporary folders of unfinished runs
        if run_ids is not None and d.name not in run_ids:
            continue
        if not (d / "job.json").exists() and not (d / "config.json").exists():
            say(f"{d}: summary.json without job.json or config.json (not a run folder)")
            continue
        run = read_run(d)
        if run is None:
            say(f"{d}: no score (summary.json's score is null: the run could not evaluate)")
            continue
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
    tables = []
    for teacher, budget in groups:
        members = [r for r in runs if r.teacher is None or _group_key(r) == (teacher, budget)]
        # the datasets run at this budget (online suites give each task its own budgets)
        asked = {r.dataset for r in members if r.teacher is not None}
        datasets = sorted(asked or {r.dataset for r in runs})
        members = [r for r in members if r.dataset in datasets]
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


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|")


def render_markdown(tables: list[Table]) -> str:
    out = []
    for t in tables:
        out.append(f"### {t.title}\n")
        out.append("Normalized score, mean over seeds [95% stratified-bootstrap CI].\n")
        head = ["agent", "seeds", *[_short(c) for c in t.columns]]
        out.append("| " + " | ".join(map(_md_cell, head)) + " |")
        out.append("|" + "---|" * len(head))
        for label, cells in t.rows:
            row = [label, str(t.n_seeds[label]), *[c.fmt() for c in cells]]
            out.append("| " + " | ".join(map(_md_cell, row)) + " |")
        out.append("")
    return "\n".join(out)


def _num(x: float) -> str:
    return "" if math.isnan(x) else f"{x:.6g}"


def render_csv(tables: list[Table]) -> str:
    """One row per (table, agent, column); fields quoted by the csv module (RFC 4180)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "agent", "column", "point", "low", "high", "n"])
    for t in tables:
        for label, cells in t.rows:
            for col, c in zip(t.columns, cells, strict=True):
                w.writerow([t.title, label, col, _num(c.point), _num(c.low), _num(c.high), c.n])
    return buf.getvalue()


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(s: str) -> str:
    """``s`` as LaTeX text: the ten special characters escaped, nothing else changed."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in s)


def render_latex(tables: list[Table]) -> str:
    def first(s: str) -> str:
        # A row's first cell follows the previous row's \\, which would read a leading
        # '[' as its optional argument.
        e = latex_escape(s)
        return "{[}" + e[1:] if e.startswith("[") else e

    out = []
    for t in tables:
        cols = [_short(c) for c in t.columns]
        out.append(r"\begin{table}[t]\centering")
        out.append(r"\caption{" + latex_escape(t.title) + r"; mean [95\% CI] over seeds}")
        out.append(r"\begin{tabular}{l" + "c" * len(cols) + "}")
        out.append(r"\toprule")
        out.append(" & ".join(["agent", *map(latex_escape, cols)]) + r" \\")
        out.append(r"\midrule")
        for label, cells in t.rows:
            out.append(" & ".join([first(label), *[latex_escape(c.fmt()) for c in cells]]) + r" \\")
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        out.append(r"\end{table}")
        out.append("")
    return "\n".join(out)


RENDERERS = {"md": render_markdown, "csv": render_csv, "latex": render_latex}


# --------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------
# Curves with at most this many evaluation points are drawn as markers with min-max error
# bars (a line through one point draws nothing); longer ones as a line with a min-max band.
FEW_POINTS = 12
# Learning-curve panels (one per dataset) per row of the figure.
PANELS_PER_ROW = 3
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
_LINESTYLES = ("-", "--", "-.", ":")


def _style(i: int) -> dict[str, Any]:
    """Colour, marker and line style of the i-th label: pairs stay distinct past 10 labels."""
    return {
        "color": f"C{i % 10}",
        "marker": _MARKERS[i % len(_MARKERS)],
        "linestyle": _LINESTYLES[(i // 2) % len(_LINESTYLES)],
    }


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panel_grid(plt: Any, n: int) -> tuple[Any, list[Any], int]:
    """A figure of ``n`` panels, PANELS_PER_ROW to a row (spare cells hidden):
    (figure, the axes in reading order, columns)."""
    ncols = min(PANELS_PER_ROW, n)
    nrows = -(-n // ncols)
    fig, grid = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.4 * nrows + 0.3), squeeze=False)
    axes = list(grid.ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes, ncols


def learning_curves_figure(runs: list[Run]) -> Any:
    """Score against updates, one panel per dataset: the mean over seeds, min-max spread.

    Few evaluation points (the usual case: one at the end of a run) are markers with error
    bars; learners evaluated at the same steps are nudged apart (1.2% of the axis each) so
    equal values stay visible.
    """
    plt = _pyplot()
    datasets = sorted({r.dataset for r in runs})
    labels = _ordered_labels(runs)
    fig, axes, ncols = _panel_grid(plt, len(datasets))
    for ax, d in zip(axes, datasets, strict=False):
        by_label: dict[str, list[list[tuple[int, float]]]] = defaultdict(list)
        for r in runs:
            if r.dataset == d and r.curve:
                by_label[r.label].append(r.curve)
        all_steps = [s for cs in by_label.values() for c in cs for s, _ in c]
        span = (max(all_steps) - min(all_steps) or max(all_steps) or 1) if all_steps else 1
        present = [lab for lab in labels if lab in by_label]
        steps_of = {lab: tuple(sorted({s for c in by_label[lab] for s, _ in c})) for lab in present}
        for label in present:
            curves = by_label[label]
            style = _style(labels.index(label))
            steps = list(steps_of[label])
            # Learners evaluated at the same steps are spread apart by 1.2% of the axis.
            twins = [lab for lab in present if steps_of[lab] == steps_of[label]]
            nudge = (twins.index(label) - (len(twins) - 1) / 2) * 0.012 * span
            vals = np.array(
                [[dict(c).get(s, np.nan) for s in steps] for c in curves], dtype=np.float64
            )
            m = np.nanmean(vals, axis=0)
            lo, hi = np.nanmin(vals, axis=0), np.nanmax(vals, axis=0)
            x = np.asarray(steps, dtype=np.float64)
            if len(steps) <= FEW_POINTS:
                x = x + nudge
                ax.errorbar(
                    x,
                    m,
                    yerr=[m - lo, hi - m],
                    label=label,
                    capsize=2,
                    markersize=6,
                    linewidth=1.2,
                    alpha=0.9,
                    **style,
                )
            else:
                ax.plot(x, m, label=label, markevery=max(1, len(steps) // 8), **style)
                ax.fill_between(x, lo, hi, color=style["color"], alpha=0.15)
        y0, y1 = ax.get_ylim()
        if y1 - y0 < 10:  # all scores (nearly) equal: a readable scale, not +-0.05
            ax.set_ylim((y0 + y1) / 2 - 5, (y0 + y1) / 2 + 5)
        if len(set(all_steps)) == 1:  # tick the evaluated step, not the nudged positions
            ax.set_xticks(all_steps[:1])
        ax.set_title(_short(d), fontsize=9)
        ax.set_xlabel("env steps" if d.startswith(ONLINE_PREFIX) else "updates")
        ax.set_ylabel("normalized score")
        ax.grid(alpha=0.3)
        if not present:
            ax.text(0.5, 0.5, "no evaluations", ha="center", va="center", transform=ax.transAxes)
    handles, names = [], []
    for ax in axes:
        for h, n in zip(*ax.get_legend_handles_labels(), strict=True):
            if n not in names:
                handles.append(h)
                names.append(n)
    order = sorted(range(len(names)), key=lambda j: labels.index(names[j]))
    handles, names = [handles[j] for j in order], [names[j] for j in order]
    if handles:
        # Beside the top-right panel; savefig(bbox_inches="tight") keeps it in the image.
        axes[ncols - 1].legend(
            handles,
            names,
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            frameon=False,
            title="learner",
            title_fontsize=7,
        )
    fig.suptitle(
        "learning curves: mean over a learner's runs, bars or band: min to max\n"
        "(learners evaluated at the same steps are drawn slightly apart)",
        fontsize=8,
    )
    fig.tight_layout()
    return fig


def performance_profile_figure(runs: list[Run]) -> Any:
    """Fraction of runs scoring above tau, per learner (rliable's performance profile).

    Identical curves are common (several learners at 0 everywhere): each learner has its
    own line style and markers placed at staggered taus, so every one stays visible.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.6, 3.8))
    all_scores = np.array([r.score for r in runs])
    taus = np.linspace(min(0.0, all_scores.min()), max(100.0, all_scores.max()), 101)
    labels = _ordered_labels(runs)
    # Marker k of learner i sits at tau index i * gap + k * every: no two learners share one.
    gap = 2
    every = max(20, gap * len(labels))
    for i, label in enumerate(labels):
        s = np.array([r.score for r in runs if r.label == label])
        frac = (s[:, None] > taus[None, :]).mean(axis=0)
        ax.plot(
            taus,
            frac,
            label=f"{label} ({s.size})",
            drawstyle="steps-post",
            markevery=((i * gap) % every, every),
            markersize=5,
            linewidth=2.6 - 1.6 * i / max(1, len(labels) - 1),
            alpha=0.85,
            **_style(i),
        )
    ax.set_title("performance profile: fraction of a learner's runs scoring above tau", fontsize=9)
    ax.set_xlabel("normalized score tau")
    ax.set_ylabel("fraction of runs > tau")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(
        fontsize=7,
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        frameon=False,
        title="learner (runs)",
        title_fontsize=7,
    )
    fig.tight_layout()
    return fig


def score_vs_queries_figure(runs: list[Run], budgets: list[int]) -> Any:
    """Mean score against the number of queries (log axis), references as dashed lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 3.6))
    labels = _ordered_labels(runs)
    for label in sorted({r.label for r in runs if r.budget is not None}):
        ys = [
            mean(np.array([r.score for r in runs if r.label == label and r.budget == b]))
            for b in budgets
        ]
        ax.plot(budgets, ys, label=label, **_style(labels.index(label)))
    for label in REFERENCE_ROWS:
        ref = [r.score for r in runs if r.label == label]
        if ref:
            style = _style(labels.index(label))
            ax.axhline(
                mean(np.array(ref)), linestyle="--", linewidth=1, color=style["color"], label=label
            )
    ax.set_xscale("log")
    ax.set_xlabel("queries")
    ax.set_ylabel("normalized score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def online_queries_figure(runs: list[Run]) -> Any:
    """Online runs: score at each evaluation against the queries asked by then, one panel per
    task; the mean over a learner's runs at each evaluation step (references: dashed, at
    their final mean score)."""
    plt = _pyplot()
    online = [r for r in runs if r.online]
    datasets = sorted({r.dataset for r in online})
    labels = _ordered_labels(online)
    fig, axes, _ = _panel_grid(plt, len(datasets))
    for ax, d in zip(axes, datasets, strict=False):
        for label in labels:
            mine = [r for r in online if r.dataset == d and r.label == label and r.curve]
            if not mine:
                continue
            style = _style(labels.index(label))
            if all(r.teacher is None for r in mine):  # asks nobody: a reference line
                ax.axhline(
                    mean(np.array([r.score for r in mine])),
                    linestyle="--",
                    linewidth=1,
                    color=style["color"],
                    label=label,
                )
                continue
            for budget in sorted({r.budget or 0 for r in mine}):
                group = [r for r in mine if (r.budget or 0) == budget]
                steps = sorted({s for r in group for s, _ in r.curve})
                xs = [float(np.mean([r.queries_at(s) for r in group])) for s in steps]
                ys = [
                    float(np.nanmean([dict(r.curve).get(s, np.nan) for r in group])) for s in steps
                ]
                name = label if len({r.budget for r in mine}) == 1 else f"{label} ({budget})"
                ax.plot(xs, ys, label=name, markevery=max(1, len(xs) // 8), **style)
        ax.set_title(_short(d), fontsize=9)
        ax.set_xlabel("queries asked")
        ax.set_ylabel("normalized score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(
        "online runs: score against the queries asked so far (mean over seeds)", fontsize=8
    )
    fig.tight_layout()
    return fig


def make_plots(runs: list[Run], out_dir: str | Path) -> list[Path]:
    """Learning curves (score vs updates), score vs query budget, performance profile."""

    plt = _pyplot()
    if not runs:
        return []
    out_dir = make_output_dir(out_dir, "--plots-dir")
    figures = [("learning_curves.png", learning_curves_figure(runs))]
    budgets = sorted({r.budget for r in runs if r.budget is not None})
    if len(budgets) > 1:  # only when several budgets were run
        figures.append(("score_vs_queries.png", score_vs_queries_figure(runs, budgets)))
    if any(r.online and r.queries for r in runs):
        figures.append(("online_score_vs_queries.png", online_queries_figure(runs)))
    figures.append(("performance_profile.png", performance_profile_figure(runs)))
    written = []
    try:
        for name, fig in figures:
            p = out_dir / name
            try:
                with atomic_path(p) as tmp:
                    fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
            except OSError as e:
                raise PbrlError(
                    f"--plots-dir {out_dir}: cannot write {name} ({e.strerror or e})"
                ) from e
            written.append(p)
    finally:
        for _, fig in figures:
            plt.close(fig)
    return written


def _check_output_file(path: Path, what: str) -> None:

    if path.is_dir():
        raise PbrlError(f"{what} {path}: is a folder, not a file")
    check_output_dir(path.parent, f"{what} {path}: its folder")


def report(
    root: str | Path,
    fmt: str = "md",
    *,
    plots: bool = False,
    plots_dir: str | Path | None = None,
    output: str | Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> str:
    """The tables of the runs below ``root`` in ``fmt``; optionally written to ``output``
    and plotted into ``plots_dir`` (default ``<root>/plots``).

    Every input is checked before anything is written: the format, the folder, the output
    paths, every run file. Runs left out (no score) go to ``warn`` once the table stands;
    when no run is left, the error names them.
    """

    if fmt not in RENDERERS:
        raise PbrlError(f"--format {fmt!r}: unknown format (use {', '.join(RENDERERS)})")
    root = _check_root(root)
    out_file = Path(output) if output is not None else None
    if out_file is not None:
        _check_output_file(out_file, "-o")
    pdir = Path(plots_dir) if plots_dir is not None else root / "plots"
    if plots:
        check_output_dir(pdir, "--plots-dir")
    left_out: list[str] = []
    runs = read_runs(root, warn=left_out.append)
    if not runs:
        more = f" and {len(left_out) - 1} more" if len(left_out) > 1 else ""
        why = f" (left out: {left_out[0]}{more})" if left_out else ""
        raise PbrlError(f"report: no finished runs with a score in '{root}'{why}")
    text = RENDERERS[fmt](build_tables(runs))
    for msg in left_out:
        (warn if warn is not None else log.warning)(msg)
    if out_file is not None:
        try:
            with atomic_path(out_file) as tmp:
                tmp.write_text(text)
                if plots:  # inside, so a failed plot leaves no table behind
                    make_plots(runs, pdir)
        except OSError as e:
            raise PbrlError(f"-o {out_file}: cannot write ({e.strerror or e})") from e
    elif plots:
        make_plots(runs, pdir)
    return text
