"""``pbrl prefs``: statistics, import and export of preference files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import typer

from pbrl.errors import PbrlError

app = typer.Typer(
    help="Preference files: statistics, and import/export of published label formats.",
    no_args_is_help=True,
)
log = logging.getLogger(__name__)


ALLOW_MISMATCH_HELP = (
    "Use the labels with a dataset other than the one they were made on (another id, or "
    "its content changed since: see docs/preferences.md); a warning says so."
)


def _load_ds(dataset: str | None) -> Any:
    if dataset is None:
        return None
    from pbrl.datasets.registry import load_dataset

    return load_dataset(dataset)


def _dataset_for(data: Any, file: Path, dataset: str | None, allow_mismatch: bool) -> Any:
    """The dataset ``--dataset`` names (or the file's own, when it needs one), checked
    against the labels (:func:`pbrl.prefs.check_prefs_dataset`); None when none is needed."""
    from pbrl.prefs import check_prefs_dataset

    ds = _load_ds(dataset)
    if ds is None and data.inline is None and data.resolved:
        ds = data.dataset()
    if ds is not None:
        check_prefs_dataset(data, ds, where=str(file), allow_mismatch=allow_mismatch)
    return ds


@app.command("stats")
def stats(
    file: Path = typer.Argument(..., help="Preference file (.npz)."),
    dataset: str = typer.Option(
        None,
        "--dataset",
        help="Dataset id or path for the oracle agreement (default: the file's dataset).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
    allow_mismatch: bool = typer.Option(
        False, "--allow-dataset-mismatch", help=ALLOW_MISMATCH_HELP
    ),
) -> None:
    """Label balance, tie and skip fractions, and agreement with the oracle teacher.

    Without --dataset, a file whose dataset cannot be loaded or has changed since still gets
    its label statistics; the oracle agreement is then left out, with the reason.
    """
    from pbrl.prefs import load_preferences, preference_stats

    data = load_preferences(file)
    note = ""
    if dataset is not None:
        ds = _dataset_for(data, file, dataset, allow_mismatch)
    else:
        try:
            ds = _dataset_for(data, file, None, allow_mismatch)
        except PbrlError as e:
            ds = None
            note = f"dataset '{data.dataset_id}' not used ({e}); no oracle agreement"
    st = preference_stats(data, ds)
    if note:
        st["oracle_agreement_note"] = note
    if as_json:
        typer.echo(json.dumps(st, indent=2, sort_keys=True))
        return
    rows = [
        ("file", str(file)),
        ("dataset", st["dataset_id"]),
        ("queries", st["queries"]),
        ("answered", st["answered"]),
        ("skip fraction", st["skip_fraction"]),
        ("tie fraction", st["tie_fraction"]),
        ("balance (mean prefer_b)", st["balance"]),
        ("prefer b / prefer a", f"{_f(st['frac_b'])} / {_f(st['frac_a'])}"),
        ("segment lengths", ", ".join(map(str, st["segment_lengths"]))),
        ("labelers", ", ".join(f"{k} ({v})" for k, v in st["labelers"].items())),
        (
            "oracle agreement",
            f"{_f(st['oracle_agreement'])} over {st['oracle_agreement_n']} strict pairs"
            if st["oracle_agreement"] is not None
            else f"- ({st['oracle_agreement_note']})",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        typer.echo(f"{k.ljust(width)}  {_f(v)}")


def _f(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


@app.command("import")
def import_cmd(
    paths: list[Path] = typer.Argument(..., help="Label files, or the folder holding them."),
    fmt: str = typer.Option(..., "--format", help="pt, uni-rlhf, cpl or imitation."),
    output: Path = typer.Option(..., "-o", "--output", help="Preference file to write (.npz)."),
    dataset: str = typer.Option(
        None,
        "--dataset",
        help="D4RL dataset (id or .hdf5) the pt/uni-rlhf indices point into; without it the "
        "refs stay unresolved published indices.",
    ),
    dataset_id: str = typer.Option(None, "--dataset-id", help="Override the recorded dataset id."),
    segment_length: int = typer.Option(
        None, "--segment-length", help="Segment length (default: pt 100, uni-rlhf from the name)."
    ),
    score_key: str = typer.Option("rl_sum", "--score-key", help="cpl: the score that labels."),
    capacity: int = typer.Option(
        None, "--capacity", help="cpl: pairs i vs i + capacity (default N // 2)."
    ),
    allow_mismatch: bool = typer.Option(
        False,
        "--allow-dataset-mismatch",
        help="pt/uni-rlhf: resolve the indices against --dataset even though the label set "
        "names another dataset; a warning says so.",
    ),
) -> None:
    """Import published labels into a pbrl preference file."""
    from pbrl.prefs import preference_stats, save_preferences
    from pbrl.prefs.formats import check_import_options, import_labels
    from pbrl.utils import check_output_file

    check_output_file(output, "--output")
    check_import_options(
        fmt,
        dataset_given=dataset is not None,
        segment_length=segment_length,
        capacity=capacity,
        score_key=score_key,
    )
    if dataset_id is not None and not dataset_id.strip():
        raise PbrlError("--dataset-id must not be empty")
    ds = _load_ds(dataset)
    data = import_labels(
        fmt,
        [str(p) for p in paths],
        dataset=ds,
        dataset_id=dataset_id,
        segment_length=segment_length,
        score_key=score_key,
        capacity=capacity,
        allow_mismatch=allow_mismatch,
    )
    save_preferences(data, output)
    st = preference_stats(data)
    state = "resolved" if data.resolved else "unresolved (published indices; pass --dataset)"
    typer.echo(
        f"wrote {output}: {st['queries']} {fmt} labels for {data.dataset_id}, {state}; "
        f"ties {_f(st['tie_fraction'])}, balance {_f(st['balance'])}"
    )


@app.command("export")
def export_cmd(
    file: Path = typer.Argument(..., help="Preference file (.npz)."),
    fmt: str = typer.Option(..., "--format", help="pt, uni-rlhf, cpl or imitation."),
    output: Path = typer.Option(
        ...,
        "-o",
        "--output",
        help="Output: a new folder (pt, uni-rlhf) or a file (cpl, imitation).",
    ),
    dataset: str = typer.Option(
        None, "--dataset", help="Dataset id or path (default: the file's dataset when needed)."
    ),
    allow_mismatch: bool = typer.Option(
        False, "--allow-dataset-mismatch", help=ALLOW_MISMATCH_HELP
    ),
) -> None:
    """Write a preference file in a published label format."""
    from pbrl.prefs import load_preferences
    from pbrl.prefs.formats import check_export_output, export_labels

    check_export_output(fmt, output)
    data = load_preferences(file)
    ds = _dataset_for(data, file, dataset, allow_mismatch)
    written = export_labels(data, fmt, output, dataset=ds)
    typer.echo(f"wrote {fmt}: " + ", ".join(str(p) for p in written))
