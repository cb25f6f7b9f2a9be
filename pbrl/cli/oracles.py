"""``pbrl oracles``: list the simulated teachers, fit a teacher to a human's answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    help="Simulated teachers (oracles): list presets, fit a teacher to human labels.",
    no_args_is_help=True,
)


@app.command("list")
def list_cmd() -> None:
    """Show every teacher preset with the knobs it sets."""
    from rich.console import Console
    from rich.table import Table

    from pbrl.teachers import TEACHER_PRESETS, list_teachers, make_teacher

    table = Table(title="teacher presets (combine with '+', set knobs with name(key=value,...))")
    table.add_column("name")
    table.add_column("kind")
    table.add_column("knobs")
    table.add_column("description")
    for name in list_teachers():
        p = TEACHER_PRESETS[name]
        table.add_row(name, p.kind, make_teacher(name).spec(), p.doc)
    Console(width=160).print(table)


def _records_from_jsonl(path: Path) -> list[dict[str, Any]]:
    from pbrl.errors import DataError
    from pbrl.utils import read_text_file

    text = read_text_file(path)
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise DataError(f"{path}: line {i} is not JSON ({e})") from e
        if not isinstance(rec, dict) or not {"rewards_a", "rewards_b"} <= set(rec):
            raise DataError(f"{path}: line {i} needs fields rewards_a, rewards_b, prefer_b")
        out.append(rec)
    return out


def _records_from_prefs(path: Path, allow_mismatch: bool) -> list[dict[str, Any]]:
    """Human answers from a pbrl preference file, with the rewards of their dataset."""
    import numpy as np

    from pbrl.errors import DataError
    from pbrl.prefs import check_prefs_dataset, load_preferences

    data = load_preferences(path)
    if not data.resolved:
        raise DataError(
            f"{path}: the segments are unresolved published indices; import again with "
            "--dataset before fitting a teacher"
        )
    ds = data.dataset()
    if ds.rewards is None:
        raise DataError(f"{path}: dataset {data.dataset_id} has no rewards to fit against")
    # Same id, task and content as when labelled; every segment inside the dataset.
    check_prefs_dataset(data, ds, where=str(path), allow_mismatch=allow_mismatch)
    rows_a, mask_a = ds.segment_index(data.refs_a, "refs_a", where=str(path))
    rows_b, mask_b = ds.segment_index(data.refs_b, "refs_b", where=str(path))
    records = []
    for i in range(len(data.prefer_b)):
        skipped = bool(data.skipped[i]) or not np.isfinite(data.prefer_b[i])
        records.append(
            {
                "rewards_a": ds.rewards[rows_a[i][mask_a[i]]],
                "rewards_b": ds.rewards[rows_b[i][mask_b[i]]],
                "prefer_b": None if skipped else float(data.prefer_b[i]),
            }
        )
    return records


@app.command("fit")
def fit_cmd(
    labels: Path = typer.Argument(
        ...,
        help="A pbrl preference file (pbrl label / UI export) or a JSONL of "
        "{rewards_a, rewards_b, prefer_b} records (prefer_b null = skipped).",
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the preset JSON."),
    name: str = typer.Option("", help="Preset name (default: the output file's stem)."),
    allow_mismatch: bool = typer.Option(
        False,
        "--allow-dataset-mismatch",
        help="Fit against the preference file's dataset even if its content changed since "
        "labelling (a warning says so).",
    ),
) -> None:
    """Fit beta, gamma, eps and the equal (and skip) thresholds of a B-Pref teacher to a
    human's answers by maximum likelihood, and save it as a preset for --teacher."""
    from pbrl.errors import DataError
    from pbrl.teachers import fit_teacher_details, save_teacher
    from pbrl.utils import check_output_file

    check_output_file(output, "--output")
    if not labels.is_file():
        raise DataError(f"{labels}: no such file")
    if labels.suffix == ".jsonl":
        records = _records_from_jsonl(labels)
    else:
        records = _records_from_prefs(labels, allow_mismatch)
    try:
        teacher, info = fit_teacher_details(records, name=name or output.stem)
    except DataError as e:
        raise DataError(f"{labels}: {e}") from e
    info["source"] = str(labels)
    save_teacher(teacher, output, extra=info)
    typer.echo(f"fitted {teacher.spec()}")
    typer.echo(
        f"{info['answered']} answers ({info['ties']} ties) of {info['records']} records; "
        f"NLL per strict answer {info['nll_per_answer']:.4f}"
    )
    typer.echo(f"wrote {output} (use: --teacher {output})")
