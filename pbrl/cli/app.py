"""The root ``pbrl`` Typer app; each command group is attached here with one line."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="pbrl",
    help="pbrl: a preference-based RL benchmark (datasets, preference oracles, learners, runner).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command("version")
def version() -> None:
    """Print the installed pbrl version."""
    from pbrl import __version__

    typer.echo(__version__)


# --- command groups (one module each; keep one line per group) ---------------------------
from pbrl.cli import bench as _bench  # noqa: E402

app.command("bench")(_bench.bench)
app.command("report")(_bench.report)
from pbrl.cli import datasets as _datasets  # noqa: E402

app.add_typer(_datasets.app, name="datasets")
from pbrl.cli import label as _label  # noqa: E402

app.command("label")(_label.label)
from pbrl.cli import prefs as _prefs  # noqa: E402

app.add_typer(_prefs.app, name="prefs")
from pbrl.cli import oracles as _oracles  # noqa: E402

app.add_typer(_oracles.app, name="oracles")
from pbrl.cli import tasks as _tasks  # noqa: E402

app.add_typer(_tasks.app, name="tasks")
from pbrl.cli import train as _train  # noqa: E402

app.command("train", context_settings=_train.TRAIN_CONTEXT)(_train.train)
from pbrl.cli import agents as _agents  # noqa: E402

app.add_typer(_agents.app, name="agents")
from pbrl.cli import ui as _ui  # noqa: E402

app.add_typer(_ui.app, name="ui")
