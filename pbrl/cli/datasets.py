"""``pbrl datasets``: list, inspect, verify and build offline datasets."""

from __future__ import annotations

import inspect
import json
import sys
from typing import Any

import typer

from pbrl.cli.logs import progress_on_stderr
from pbrl.errors import PbrlError

app = typer.Typer(
    help="Offline datasets: D4RL files, the local Minari store and locally generated datasets.",
    no_args_is_help=True,
)


# domain -> module whose build(task_id, kind, ...) -> dataset_id generates its datasets
def _fmt(v: Any) -> str:
    return "-" if v is None else str(v)


@app.command("list")
def list_cmd(
    source: str = typer.Option(None, help="Only rows from this source: d4rl, minari or generated."),
    local: bool = typer.Option(False, "--local", help="Only datasets present on this machine."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """List the D4RL names (local or not), Minari datasets in the local store and generated ones."""
    from pbrl.datasets.registry import list_datasets

    if source is not None and source not in ("d4rl", "minari", "generated"):
        raise PbrlError(f"--source {source}: expected d4rl, minari or generated")
    rows = [
        r
        for r in list_datasets()
        if (source is None or r["source"] == source) and (not local or r["local"])
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    cols = ("id", "source", "local", "episodes", "steps")
    cells = [
        [r["id"], r["source"], "yes" if r["local"] else "no", _fmt(r["episodes"]), _fmt(r["steps"])]
        for r in rows
    ]
    if not sys.stdout.isatty():
        # Piped or redirected: plain columns, full ids, no width limit.
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
        for row in [list(cols), *cells]:
            typer.echo(
                "  ".join(
                    v.rjust(w) if i >= 3 else v.ljust(w)
                    for i, (v, w) in enumerate(zip(row, widths, strict=True))
                ).rstrip()
            )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} datasets")
    for col in cols:
        # Ids are folded onto several lines on a narrow terminal, never cut.
        table.add_column(
            col,
            justify="right" if col in ("episodes", "steps") else "left",
            overflow="fold",
            no_wrap=col != "id",
        )
    for row in cells:
        table.add_row(*row)
    Console().print(table)


@app.command("info")
def info_cmd(dataset: str = typer.Argument(..., help="Dataset id or path.")) -> None:
    """Show a dataset's metadata and card (without loading its steps)."""
    from pbrl.datasets.registry import dataset_info

    text = json.dumps(dataset_info(dataset), default=str, indent=2)
    if not sys.stdout.isatty():
        typer.echo(text)
        return
    from rich.console import Console

    Console().print_json(text)


@app.command("verify")
def verify_cmd(
    dataset: str = typer.Argument(..., help="Dataset id or path (.hdf5 file or Minari folder)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Check shapes, finiteness, episode lengths and reference scores; print a summary."""
    from pbrl.datasets.registry import verify

    summary = verify(dataset)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    typer.echo(f"{summary['id']}: OK")
    for key, value in summary.items():
        if key in ("id", "warnings"):
            continue
        if isinstance(value, dict):
            value = "  ".join(f"{k}={v:.4g}" for k, v in value.items())
        typer.echo(f"  {key:<18} {value}")
    for w in summary["warnings"]:
        typer.echo(f"  warning: {w}")


@app.command("download")
def download_cmd(
    dataset: str = typer.Argument(..., help="d4rl/<env>-<kind>-v2 or a Minari remote id."),
) -> None:
    """Fetch a dataset: D4RL files from D4RL's host into ~/.d4rl/datasets, Minari ids from Minari's remote."""
    from pbrl.datasets.minari_io import check_dataset_id
    from pbrl.datasets.registry import load_dataset

    if not dataset.startswith("d4rl/"):
        check_dataset_id(dataset)  # an id, never a path: nothing is fetched for a bad one
    ds = load_dataset(dataset, download=True, check_task=False)
    typer.echo(f"{ds.id}: {ds.num_episodes} episodes, {ds.num_steps} steps at {ds.path}")


def _call_build(build: Any, task_id: str, kind: str, options: dict[str, Any]) -> str:
    """Call a generator's build with the options its signature accepts."""
    params = inspect.signature(build).parameters
    accepted = {k: v for k, v in options.items() if k in params}
    return str(build(task_id, kind, **accepted))


@app.command("build")
def build_cmd(
    task: str = typer.Argument(..., help="Task id, e.g. metaworld/button-press-topdown-v3."),
    kind: str = typer.Option(
        ...,
        "--kind",
        help="random, medium, medium-replay, medium-expert, expert (MetaWorld also: noisy-expert).",
    ),
    episodes: int = typer.Option(
        None, "--episodes", help="Number of episodes (generator default if unset)."
    ),
    steps: int = typer.Option(None, "--steps", help="SAC training steps (mujoco/dmc only)."),
    seed: int = typer.Option(0, "--seed", help="Base seed; every episode's seed is recorded."),
    workers: int = typer.Option(None, "--workers", help="Worker processes (metaworld only)."),
    device: str = typer.Option(
        "auto", "--device", help="SAC device (mujoco/dmc): auto, cpu, cuda."
    ),
    diagnose: bool = typer.Option(
        True, "--diagnose/--no-diagnose", help="Run the dataset diagnosis after building."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset."),
) -> None:
    """Generate pbrl/<domain>/<task>/<kind>-v0 into the local Minari store.

    Every option, the dataset id, an existing dataset (without --overwrite) and the store's
    writability are checked before any episode is generated. Progress (episodes or SAC
    steps, rate, ETA) goes to standard error as it happens.
    """
    from pbrl.datasets.generators import generator_for
    from pbrl.datasets.minari_io import check_new_dataset
    from pbrl.datasets.registry import generated_dataset_id
    from pbrl.envs import get_task
    from pbrl.utils import check_seed, resolve_device

    spec = get_task(task)  # UnknownIdError names the task
    module = generator_for(spec.id)
    if steps is not None and spec.domain == "metaworld" and kind != "rollouts":
        raise PbrlError(
            "--steps: MetaWorld datasets other than rollouts come from the scripted expert; "
            "use --episodes"
        )
    if workers is not None and spec.domain != "metaworld":
        raise PbrlError("--workers applies to MetaWorld generation only")
    for name, value in (("--episodes", episodes), ("--steps", steps), ("--workers", workers)):
        if value is not None and value < 1:
            raise PbrlError(f"{name}: must be >= 1, got {value}")
    kinds = getattr(module, "KINDS", None)
    if kinds is not None and kind not in kinds:
        raise PbrlError(
            f"--kind {kind}: unknown kind for {spec.domain} (known: {', '.join(kinds)})"
        )
    check_seed(seed, "--seed")
    if spec.domain != "metaworld":
        resolve_device(device)
    check_new_dataset(generated_dataset_id(spec.id, kind), overwrite)
    options: dict[str, Any] = {
        "episodes": episodes,
        "steps": steps,
        "seed": seed,
        "workers": workers,
        "device": device,
        "overwrite": overwrite,
    }
    with progress_on_stderr():
        dataset_id = _call_build(module.build, spec.id, kind, options)
        if diagnose:
            from pbrl.run.diagnose import brief_diagnosis

            brief_diagnosis(dataset_id, module, workers)
    typer.echo(dataset_id)


@app.command("diagnose")
def diagnose_cmd(
    dataset: str = typer.Argument(..., help="Dataset id or path (pbrl datasets list)."),
    steps: int = typer.Option(5000, "--steps", help="Gradient updates per learner and seed."),
    seeds: int = typer.Option(3, "--seeds", help="Seeds per learner (CIs are over seeds)."),
    eval_episodes: int = typer.Option(10, "--eval-episodes", help="Evaluation episodes per run."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    workers: int = typer.Option(
        1, "--workers", help="Trainings run in parallel processes (one torch thread each)."
    ),
    record: bool = typer.Option(
        True, "--record/--no-record", help="Write the table into the dataset card."
    ),
) -> None:
    """Train BC (all / top 10%) and IQL (true / zero reward) briefly; print and record the table.

    Each training is reported on standard error as it starts and finishes.
    """
    from pbrl.run import diagnose as dg
    from pbrl.utils import resolve_device

    for name, value, low in (
        ("--workers", workers, 1),
        ("--steps", steps, 1),
        ("--seeds", seeds, 1),
        ("--eval-episodes", eval_episodes, 1),
    ):
        if value < low:
            raise PbrlError(f"{name}: must be >= {low}, got {value}")
    resolve_device(device)
    kw = dict(steps=steps, seeds=seeds, eval_episodes=eval_episodes, device=device, workers=workers)
    with progress_on_stderr():
        table = dg.run_and_record(dataset, **kw) if record else dg.diagnose(dataset, **kw)
    typer.echo(dg.format_table(table))
