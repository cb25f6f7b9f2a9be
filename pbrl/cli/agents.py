"""``pbrl agents``: list the registered learners, show one learner's options, check a plug-in."""

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
    """Let a plug-in (dotted path or bare module name) be found in the working directory.

    ``python -m pbrl`` puts the working directory on ``sys.path`` but the ``pbrl`` console
    script does not; plug-ins such as ``examples.my_agent`` or ``my_algo`` should work from
    both. The directory goes last, so it never shadows installed packages; a shipped
    learner's name needs nothing.
    """
    import os
    import sys

    from pbrl.learn.api import list_agents

    cwd = os.getcwd()
    if cwd in sys.path or "" in sys.path:
        return
    if "." in name or name not in list_agents():
        sys.path.append(cwd)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return "(required)"


@app.command("list")
def list_cmd() -> None:
    """One line per registered agent: name and summary."""
    from pbrl.errors import PbrlError
    from pbrl.learn.api import list_agents, load_agent_module, summary_line

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
    from pbrl.learn.api import load_agent_module, summary_line

    ensure_cwd_importable(name)
    mod = load_agent_module(name)
    typer.echo(f"{name}: {summary_line(mod)}")
    typer.echo("")
    typer.echo("options (pbrl train --agent.FIELD VALUE):")
    from pbrl.learn.api import config_field_docs

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


@app.command("check")
def check_cmd(
    module: str = typer.Argument(
        ..., help="Agent name (e.g. cpl), dotted path (examples.my_agent) or bare module name."
    ),
    device: str = typer.Option("cpu", help="Device of the check run: cpu, cuda, cuda:N or auto."),
) -> None:
    """Run the learner contract's conformance checks on a learner module; print each result.

    Tiny networks (the module's TEST_OVERRIDES), 12 updates on a small synthetic dataset
    with 12 labelled pairs. Exit status 0 when every check passes, 1 when one fails (a
    module that does not load is a failed check); 2 for a bad option.
    """
    from pbrl.learn.check import check_agent, failures
    from pbrl.utils import resolve_device

    dev = resolve_device(device)
    ensure_cwd_importable(module)
    results = check_agent(module, device=dev)
    width = max(len(r.name) for r in results)
    for r in results:
        mark = "PASS" if r.ok else "FAIL"
        typer.echo(f"{mark}  {r.name.ljust(width)}  {r.detail}".rstrip())
    failed = failures(results)
    typer.echo("")
    if failed:
        typer.echo(f"{module}: {len(failed)} of {len(results)} checks failed")
        raise typer.Exit(1)
    typer.echo(f"{module}: all {len(results)} checks passed")
