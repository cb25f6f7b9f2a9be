"""``pbrl label``: label a dataset with a synthetic teacher into a preference file."""

from __future__ import annotations

from pathlib import Path

import typer


def _fmt(x: object) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def label(
    dataset: str = typer.Argument(..., help="Dataset id (e.g. d4rl/hopper-medium-v2) or path."),
    teacher: str = typer.Option(
        "oracle",
        "--teacher",
        help="Teacher preset (oracle, stoc, mistake, skip, equal, myopic, ...), a composition "
        "such as myopic+mistake, knobs as oracle(gamma=0.9), or a preset .json.",
    ),
    queries: int = typer.Option(..., "--queries", help="Number of queries to ask."),
    segment: int = typer.Option(..., "--segment", help="Segment length L in steps."),
    seed: int = typer.Option(0, "--seed", help="Seed of query selection and labelling."),
    output: Path = typer.Option(..., "-o", "--output", help="Preference file to write (.npz)."),
    selector: str = typer.Option(
        "uniform", "--selector", help="Query selector (uniform; ensemble selectors need a model)."
    ),
) -> None:
    """Select segment pairs of DATASET and label them with a teacher; write a preference file."""
    from pbrl.datasets.registry import load_dataset
    from pbrl.prefs import check_label_options, label_dataset, preference_stats, save_preferences
    from pbrl.prefs.select import check_selector
    from pbrl.teachers import make_teacher
    from pbrl.utils import check_output_file

    # Everything that needs no data is checked before the dataset is loaded.
    check_output_file(output, "--output")
    check_label_options(queries, segment, seed)
    check_selector(selector)
    make_teacher(teacher)
    ds = load_dataset(dataset)
    data = label_dataset(ds, teacher, queries, segment, seed, selector=selector)
    save_preferences(data, output)
    st = preference_stats(data)
    typer.echo(
        f"wrote {output}: {st['queries']} queries on {ds.id} (L={segment}, seed={seed}, "
        f"teacher {data.meta['teacher']}, selector {selector})"
    )
    typer.echo(
        f"answered {st['answered']}, skipped {st['skipped']}, ties {_fmt(st['tie_fraction'])}, "
        f"balance {_fmt(st['balance'])} (mean prefer_b)"
    )
