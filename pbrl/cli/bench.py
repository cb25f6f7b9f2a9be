"""``pbrl bench`` and ``pbrl report``: run a suite, print and write its tables."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import typer


class Progress:
    """Runs done / running / failed and an ETA: a live line on a terminal, plain lines otherwise."""

    def __init__(self, live: bool) -> None:
        self.live = live
        self.total = self.done_n = self.failed = self.running = self.skipped = 0
        self.t0 = time.time()
        self.durations: list[float] = []
        self.started_at: dict[str, float] = {}
        self._live: Any = None

    def start(self, total: int, skipped: int) -> None:
        self.total, self.skipped, self.t0 = total, skipped, time.time()
        if self.live:
            from rich.live import Live

            self._live = Live(self._line(), refresh_per_second=2, transient=False)
            self._live.start()
        else:
            typer.echo(f"{total} runs, {skipped} already finished")

    def _eta(self) -> str:
        left = self.total - self.skipped - self.done_n - self.failed
        if not self.durations or left <= 0:
            return "?" if left > 0 else "0s"
        per = sum(self.durations) / len(self.durations)
        par = max(1, self.running)
        return f"{per * left / par:.0f}s"

    def _line(self) -> str:
        return (
            f"runs: {self.done_n + self.skipped}/{self.total} done, {self.running} running, "
            f"{self.failed} failed, ETA {self._eta()}"
        )

    def started(self, job: Any) -> None:
        self.running += 1
        self.started_at[job.run_id] = time.time()
        self._update(f"started  {job.label} on {job.dataset} seed {job.seed}")

    def done(self, job: Any, ok: bool) -> None:
        self.running -= 1
        self.durations.append(time.time() - self.started_at.pop(job.run_id, time.time()))
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
    device: str = typer.Option("cpu", help="cpu, cuda, or cuda:0,1 (round-robin over GPUs)."),
    backend: str = typer.Option("local", help="local (process pool) or ray."),
    ray_address: str = typer.Option(None, help="Ray cluster address (default: start a local Ray)."),
    out: Path = typer.Option(None, help="Output folder (default: runs/<suite name>)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the job list and exit."),
    list_suites: bool = typer.Option(False, "--list", help="List the shipped suites and exit."),
    plots: bool = typer.Option(True, help="Write PNG plots next to the runs."),
) -> None:
    """Sweep learners x datasets x teachers x budgets x seeds and print the table."""
    from pbrl.report import build_tables, make_plots, read_runs, render_markdown
    from pbrl.runner import ensure_datasets, ensure_prefs, plan, run_sweep
    from pbrl.suite import list_suites as shipped
    from pbrl.suite import load_suite, parse_seeds
    from pbrl.utils import atomic_path

    if list_suites:
        for name in shipped():
            s = load_suite(name)
            typer.echo(f"{name:10s} {s.description}")
        return
    s = load_suite(suite)
    seed_list = parse_seeds(seeds) if seeds else None
    jobs = plan(s, seed_list)
    out = out or Path("runs") / s.name
    if dry_run:
        from pbrl.runner import is_finished

        for j in jobs:
            state = "done" if is_finished(out, j) else "todo"
            typer.echo(
                f"{state}  {j.run_id}  {j.label:12s} {j.dataset}  teacher={j.teacher} "
                f"queries={j.budget} seed={j.seed} steps={j.steps}"
            )
        typer.echo(f"{len(jobs)} runs -> {out}")
        return
    ensure_datasets(s, typer.echo)
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
    typer.echo(
        f"{len(result.finished)} finished, {len(result.skipped)} skipped (already done), "
        f"{len(result.failed)} failed; results in {out}"
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
    """Tables (mean, IQM, 95% stratified-bootstrap CIs) and plots from finished runs."""
    from pbrl.report import report as make_report
    from pbrl.utils import atomic_path

    text = make_report(folder, format, plots=plots, plots_dir=plots_dir)
    if output:
        with atomic_path(output) as tmp:
            tmp.write_text(text)
    typer.echo(text)
