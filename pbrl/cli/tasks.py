"""``pbrl tasks``: list the registered tasks and show one task's details."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Tasks (environments): ids, horizons, normalizers, known datasets.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("list")
def list_cmd(
    domain: str | None = typer.Option(
        None, "--domain", help="Only this domain: mujoco, metaworld, dmc or minari."
    ),
) -> None:
    """List tasks as a table: id, domain, horizon, normalizer, known datasets."""
    from rich.console import Console
    from rich.table import Table

    from pbrl.envs.base import list_tasks

    tasks = list_tasks(domain)
    cols = ("id", "domain", "horizon", "normalizer", "datasets")
    rows = [
        (t.id, t.domain, str(t.horizon), str(t.extra.get("normalizer", "")), str(len(t.datasets)))
        for t in tasks
    ]
    table = Table(title=f"{len(tasks)} tasks" + (f" in domain '{domain}'" if domain else ""))
    for col in cols:
        table.add_column(
            col, justify="right" if col in ("horizon", "datasets") else "left", no_wrap=True
        )
    for row in rows:
        table.add_row(*row)
    # As wide as the widest row (cells + borders), so no id is cut or wrapped, piped or not.
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(cols)]
    Console(width=sum(widths) + 3 * len(cols) + 1).print(table)


def _space_str(space: object) -> str:
    """A one-line space summary (a Box's full bound arrays can run to many lines)."""
    import numpy as np

    low, high = getattr(space, "low", None), getattr(space, "high", None)
    if low is None or high is None:
        return str(space)
    return (
        f"{type(space).__name__}(shape={space.shape}, dtype={space.dtype}, "  # type: ignore[attr-defined]
        f"low min {np.min(low):g}, high max {np.max(high):g})"
    )


@app.command("info")
def info_cmd(
    task_id: str = typer.Argument(..., help="Task id, e.g. mujoco/hopper or dmc/walker-walk."),
    spaces: bool = typer.Option(
        True, "--spaces/--no-spaces", help="Build the env once to show its spaces."
    ),
) -> None:
    """Show one task: description, horizon, normalizer, camera, spaces and datasets."""
    from pbrl.envs.base import get_task
    from pbrl.errors import PbrlError

    t = get_task(task_id)
    typer.echo(f"id:          {t.id}")
    typer.echo(f"domain:      {t.domain}")
    typer.echo(f"description: {t.description}")
    typer.echo(f"horizon:     {t.horizon}")
    for key in ("normalizer", "gym_id", "gym_kwargs", "camera", "requires"):
        if t.extra.get(key) not in (None, "", {}):
            typer.echo(f"{key + ':':<13}{t.extra[key]}")
    if spaces:
        try:
            obs_space, act_space = t.spaces()
            typer.echo(f"observation: {_space_str(obs_space)}")
            typer.echo(f"action:      {_space_str(act_space)}")
        except PbrlError as e:
            typer.echo(f"spaces:      unavailable ({e})")
    typer.echo(f"datasets ({len(t.datasets)}):")
    for d in t.datasets:
        typer.echo(f"  {d}")
