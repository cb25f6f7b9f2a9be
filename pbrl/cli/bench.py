"""``pbrl bench``: run a benchmark suite (the runner lands with issue 5)."""

from __future__ import annotations

import typer


def bench(
    suite: str = typer.Option("quick", help="Suite name or path to a suite file."),
) -> None:
    """Run a benchmark suite and print its table."""
    typer.echo(
        f"pbrl bench: no suite runner exists yet (suite '{suite}' not run); "
        "the benchmark runner is tracked as its own issue."
    )
