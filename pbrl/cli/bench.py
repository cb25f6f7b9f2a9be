"""``pbrl bench`` and ``pbrl report``: run a suite, print and write its tables."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer


class Progress:
    """Runs done / running / failed and an ETA: a live line on a terminal, plain lines otherwise.

    The ETA is the work left over the workers: each run still to start counts the mean
    duration of the runs finished so far, each running run what is left of that mean. It
    does not depend on how many runs happen to be running at the moment, so it does not jump
    as runs start and finish.
    """

    def __init__(self, live: bool) -> None:
        self.live = live
        self.total = self.done_n = self.failed = self.skipped = self.elsewhere = 0
        self.workers = 1
        self.t0 = time.time()
        self.durations: list[float] = []
        self.started_at: dict[str, float] = {}
        self._live: Any = None

    @property
    def running(self) -> int:
        return len(self.started_at)

    def start(self, total: int, skipped: int, workers: int = 1) -> None:
        self.total, self.skipped, self.t0 = total, skipped, time.time()
        self.workers = max(1, workers)
        if self.live:
            from rich.live import Live

            self._live = Live(self._line(), refresh_per_second=2, transient=False)
            self._live.start()
        else:
            typer.echo(f"{total} runs, {skipped} already finished")

    def eta_seconds(self, now: float | None = None) -> float | None:
        """Seconds left (None before the first run has finished)."""
        left = self.total - self.skipped - self.done_n - self.failed - self.elsewhere
        if left <= 0:
            return 0.0
        if not self.durations:
            return None
        now = time.time() if now is None else now
        mean = sum(self.durations) / len(self.durations)
        running_left = sum(max(0.0, mean - (now - t)) for t in self.started_at.values())
        work = running_left + mean * max(0, left - self.running)
        return work / min(self.workers, left)

    def _eta(self) -> str:
        from pbrl.utils import format_duration

        eta = self.eta_seconds()
        return "?" if eta is None else format_duration(eta)

    def _line(self) -> str:
        done = self.done_n + self.skipped + self.elsewhere
        return (
            f"runs: {done}/{self.total} done, {self.running} running, "
            f"{self.failed} failed, ETA {self._eta()}"
        )

    def started(self, job: Any) -> None:
        self.started_at[job.run_id] = time.time()
        self._update(f"started  {job.label} on {job.dataset} seed {job.seed}")

    def stopped(self, job: Any) -> None:
        """A started run that did not train here (another process had claimed it)."""
        self.started_at.pop(job.run_id, None)

    def waiting(self, job: Any) -> None:
        self._update(
            f"waiting  {job.label} on {job.dataset} seed {job.seed}: another process trains it"
        )

    def done(self, job: Any, ok: bool, elsewhere: bool = False) -> None:
        began = self.started_at.pop(job.run_id, None)
        if elsewhere:
            self.elsewhere += 1
            self._update(
                f"finished {job.label} on {job.dataset} seed {job.seed} (by another process)"
            )
            return
        if began is not None:
            self.durations.append(time.time() - began)
        if ok:
            self.done_n += 1
        else:
            self.failed += 1
        self._update(
            f"{'finished' if ok else 'FAILED  '} {job.label} on {job.dataset} seed {job.seed}"
        )

    def _update(self, msg: str) -> None:
        if self._live is not None:
            self._live.console.print(msg)
            self._live.update(self._line())
        else:
            typer.echo(f"[{self._line()}] {msg}")

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self._line())
            self._live.stop()


def bench(
    suite: str = typer.Option("quick", help="Suite name (see --list) or a .toml/.yaml suite file."),
    seeds: str = typer.Option(
        None, help="Seeds to run, e.g. '0-4' or '0,2' (default: the suite's)."
    ),
    workers: int = typer.Option(2, help="Runs at a time (each in its own process)."),
    device: str = typer.Option(
        "auto", help="auto, cpu, cuda, cuda:N, or cuda:0,1 (round-robin over GPUs)."
    ),
    backend: str = typer.Option("local", help="local (process pool) or ray."),
    ray_address: str = typer.Option(None, help="Ray cluster address (default: start a local Ray)."),
    out: Path = typer.Option(None, help="Output folder (default: runs/<suite name>)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the job list and exit."),
    list_suites: bool = typer.Option(False, "--list", help="List the shipped suites and exit."),
    plots: bool = typer.Option(True, help="Write PNG plots next to the runs."),
    stack_seeds: int = typer.Option(
        None,
        help="Seeds of one job trained as one process with stacked parameters (learners "
        "with a stacked path: every offline one); each seed still "
        "gets its own run folder. Default: every seed on CUDA, 1 (off) on CPU.",
    ),
    eval_workers: int = typer.Option(
        None,
        help="Processes per run that step its evaluation envs in parallel (0: the run's "
        "own). Default: on CUDA the cores left per run (cores / --workers - 1), 0 on CPU. "
        "The results do not depend on it.",
    ),
) -> None:
    """Sweep learners x datasets x teachers x budgets x seeds and print the table.

    Everything is checked before a dataset is built or a file written. Several sweeps may
    share one output folder: each run is trained once, by whichever sweep claims it first.
    """
    from pbrl.cli.logs import progress_on_stderr
    from pbrl.envs.pool import check_eval_workers
    from pbrl.errors import PbrlError
    from pbrl.run.report import build_tables, make_plots, read_runs, render_markdown
    from pbrl.run.runner import (
        check_cached_prefs,
        check_suite,
        check_sweep_options,
        default_eval_workers,
        default_stack_seeds,
        ensure_datasets,
        ensure_prefs,
        is_finished,
        plan,
        run_sweep,
    )
    from pbrl.run.suite import list_suites as shipped
    from pbrl.run.suite import load_suite, parse_seeds
    from pbrl.utils import atomic_path, check_output_dir

    if list_suites:
        for name in shipped():
            s = load_suite(name)
            typer.echo(f"{name:10s} {s.description}")
        return
    s = load_suite(suite)
    seed_list = parse_seeds(seeds) if seeds else None
    check_sweep_options(workers=workers, backend=backend, device=device)
    if stack_seeds is not None and stack_seeds < 1:
        raise PbrlError(f"--stack-seeds: a whole number of at least 1, got {stack_seeds}")
    if eval_workers is not None:
        check_eval_workers(eval_workers)
    jobs = plan(s, seed_list)
    to_build = check_suite(s, jobs)
    out = out or Path("runs") / s.name
    check_output_dir(out, "--out")
    check_cached_prefs(jobs, out)
    if dry_run:
        for j in jobs:
            state = "done" if is_finished(out, j) else "todo"
            typer.echo(
                f"{state}  {j.run_id}  {j.label:12s} {j.dataset}  teacher={j.teacher} "
                f"queries={j.budget} seed={j.seed} steps={j.steps}"
            )
        for entry in to_build:
            typer.echo(f"build  {entry.dataset_id()}")
        typer.echo(f"{len(jobs)} runs -> {out}")
        return
    with progress_on_stderr():  # a dataset build's episodes / SAC steps, rate and ETA
        ensure_datasets(s, typer.echo, out, to_build)
        ensure_prefs(jobs, out, typer.echo)
    progress = Progress(live=sys.stdout.isatty())
    result = run_sweep(
        jobs,
        out,
        workers=workers,
        device=device,
        backend=backend,
        ray_address=ray_address,
        progress=progress,
        stack_seeds=stack_seeds
        if stack_seeds is not None
        else default_stack_seeds(device, len({j.seed for j in jobs})),
        eval_workers=eval_workers
        if eval_workers is not None
        else default_eval_workers(device, workers),
    )
    runs = [r for r in read_runs(out) if r.run_id in {j.run_id for j in jobs}]
    if runs:
        text = render_markdown(build_tables(runs))
        with atomic_path(out / "table.md") as tmp:
            tmp.write_text(text)
        if plots:
            make_plots(runs, out / "plots")
        typer.echo("")
        typer.echo(text)
    elsewhere = f", {len(result.elsewhere)} trained by another process" if result.elsewhere else ""
    typer.echo(
        f"{len(result.finished)} finished, {len(result.skipped)} skipped (already done), "
        f"{len(result.failed)} failed{elsewhere}; results in {out}"
    )
    if result.failed:
        for run_id, why in result.failed.items():
            typer.echo(
                f"FAILED {run_id}: {why.splitlines()[0]} (log: {out / '.failed' / (run_id + '.log')})"
            )
        raise typer.Exit(1)


def report(
    folder: Path = typer.Argument(..., help="A folder of finished runs (e.g. runs/quick)."),
    format: str = typer.Option("md", "--format", help="md, csv or latex."),
    plots: bool = typer.Option(False, "--plots", help="Also write PNG plots."),
    plots_dir: Path = typer.Option(None, help="Where plots go (default: <folder>/plots)."),
    output: Path = typer.Option(None, "-o", "--output", help="Write the table to a file too."),
) -> None:
    """Tables (mean, IQM, 95% stratified-bootstrap CIs) and plots from finished runs.

    A run that finished without a score (it could not evaluate) is left out of the table
    with a warning on stderr naming its folder; a malformed run file is an error.
    """
    from pbrl.run.report import report as make_report

    text = make_report(
        folder,
        format,
        plots=plots,
        plots_dir=plots_dir,
        output=output,
        warn=lambda msg: typer.echo(f"warning: left out of the table: {msg}", err=True),
    )
    typer.echo(text, nl=not text.endswith("\n"))
