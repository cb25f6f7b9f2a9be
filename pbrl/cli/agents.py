"""``pbrl agents``: list the registered learners and show one learner's options."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

app = typer.Typer(
    help="Learners: registered agents, their options (--agent.FIELD) and presets.",
    no_args_is_help=True,
    add_completion=False,
)


def ensure_cwd_importable(name: str) -> None:
    """Let a dotted-path plug-in be found relative to the working directory.

    ``python -m pbrl`` puts the working directory on ``sys.path`` but the ``pbrl`` console
    script does not; plug-ins such as ``examples.my_agent`` should work from both. The
    directory goes last, so it never shadows installed packages.
    """
    import os
    import sys

    cwd = os.getcwd()
    if "." in name and cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


def config_field_docs(config_cls: type) -> dict[str, str]:
    """Field docstrings of a Config dataclass, inherited fields included (base classes first)."""
    from pbrl.agent import field_docs

    docs: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(field_docs(klass))
    return docs


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return "(required)"


@app.command("list")
def list_cmd() -> None:
    """One line per registered agent: name and summary."""
    from pbrl.agent import list_agents, load_agent_module, summary_line
    from pbrl.errors import PbrlError

    names = list_agents()
    width = max((len(n) for n in names), default=0)
    for name in names:
        try:
            line = summary_line(load_agent_module(name))
        except (PbrlError, ImportError) as e:
            # One broken module must not hide the others.
            line = f"(cannot load: {e})"
        typer.echo(f"{name.ljust(width)}  {line}")


@app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Agent name (e.g. cpl) or dotted path of a plug-in."),
) -> None:
    """Every Config field (type, default, docstring) and the presets of one agent."""
    from pbrl.agent import load_agent_module, summary_line

    ensure_cwd_importable(name)
    mod = load_agent_module(name)
    typer.echo(f"{name}: {summary_line(mod)}")
    typer.echo("")
    typer.echo("options (pbrl train --agent.FIELD VALUE):")
    docs = config_field_docs(mod.Config)
    hints = {}
    try:
        import typing

        hints = typing.get_type_hints(mod.Config)
    except Exception:  # noqa: BLE001 - types are decoration only
        hints = {}
    for f in dataclasses.fields(mod.Config):
        tp = hints.get(f.name, f.type)
        tname = getattr(tp, "__name__", None) or str(tp)
        if getattr(tp, "__origin__", None) is tuple:
            tname = str(tp).replace("typing.", "")
        typer.echo(f"  --agent.{f.name} ({tname}, default {_default(f)!r})")
        typer.echo(f"      {docs.get(f.name, '(undocumented)')}")
    presets = getattr(mod, "PRESETS", {})
    if presets:
        typer.echo("")
        typer.echo("presets (pbrl train --preset NAME):")
        for pname, values in presets.items():
            shown = ", ".join(f"{k}={v!r}" for k, v in values.items()) or "(the defaults)"
            typer.echo(f"  {pname}: {shown}")
