"""``pbrl train``: train one learner on a dataset and a preference file, evaluate, checkpoint."""

from __future__ import annotations

import re

import typer

from pbrl.errors import PbrlError


def parse_agent_args(args: list[str]) -> dict[str, str]:
    """``--agent.FIELD VALUE`` / ``--agent.FIELD=VALUE`` pairs -> {FIELD: VALUE}.

    Anything else left over on the command line is an error naming it.
    """
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        tok = args[i]
        m = re.fullmatch(r"--agent\.([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?", tok, flags=re.S)
        if not m:
            raise PbrlError(
                f"unexpected argument '{tok}' (agent options look like --agent.FIELD VALUE)"
            )
        key, value = m.group(1), m.group(2)
        if value is None:
            if i + 1 >= len(args):
                raise PbrlError(f"--agent.{key}: missing value")
            value = args[i + 1]
            i += 1
        if key in out:
            raise PbrlError(f"--agent.{key} given twice")
        out[key] = value
        i += 1
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def train(
    ctx: typer.Context,
    agent: str = typer.Option(..., "--agent", help="Agent name (pbrl agents list) or dotted path."),
    dataset: str = typer.Option(
        "", "--dataset", help="Dataset id or path (pbrl datasets list); none for online agents."
    ),
    prefs: str | None = typer.Option(
        None, "--prefs", help="Preference file (.npz); needed by every preference learner."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the run (eval envs use seed + 10000 + i)."),
    steps: int = typer.Option(
        ..., "--steps", help="Gradient updates over all phases (online agents: env steps)."
    ),
    device: str = typer.Option("auto", "--device", help="cpu, cuda, cuda:N or auto."),
    preset: str | None = typer.Option(
        None, "--preset", help="Named config of the agent (paper, quick, ...)."
    ),
    out: str | None = typer.Option(
        None, "--out", help="Run folder (default runs/<agent>-<dataset>-s<seed>)."
    ),
    eval_every: int = typer.Option(
        5000, "--eval-every", help="Evaluate every K steps (and at the end)."
    ),
    eval_episodes: int = typer.Option(
        10, "--eval-episodes", help="Episodes per evaluation (0: none)."
    ),
    log_interval: int = typer.Option(500, "--log-interval", help="Metrics every K steps."),
    eval_workers: int = typer.Option(
        0,
        "--eval-workers",
        help="Processes that step the evaluation envs in parallel (0: this one). The "
        "results do not depend on it.",
    ),
    task: str | None = typer.Option(
        None,
        "--task",
        help="Evaluation task id (default: the dataset's task); online agents act in it.",
    ),
    teacher: str | None = typer.Option(
        None,
        "--teacher",
        help="Online agents: the teacher they ask (pbrl oracles list), or ui:PROJECT for "
        "people in the labeling UI (docs/online.md).",
    ),
    budget: int = typer.Option(0, "--budget", help="Online agents: the most queries they ask."),
    segment: int = typer.Option(50, "--segment", help="Online agents: steps per segment."),
    selector: str = typer.Option(
        "uniform",
        "--selector",
        help="Online agents: query selector after the first (uniform) session.",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace a finished run already in --out (only once the new one is complete).",
    ),
    allow_dataset_mismatch: bool = typer.Option(
        False,
        "--allow-dataset-mismatch",
        help="Train on --prefs made on another dataset, or on this one before it was rebuilt "
        "(refused otherwise; a warning says so). See docs/preferences.md.",
    ),
) -> None:
    """Train a learner; writes config.json, metrics.jsonl, eval.csv, checkpoint.pt, summary.json.

    The run trains in a hidden folder beside --out and is renamed to --out when complete;
    an --out that already holds a run is refused unless --overwrite is given. Progress
    (updates, rate, ETA, latest losses) goes to standard error every --log-interval steps.

    Online agents (pebble: PEBBLE, QPA, SAC) take no dataset: they act in --task's
    environment for --steps env steps and ask --teacher up to --budget queries of
    --segment steps (docs/online.md).

    Agent options are passed as --agent.FIELD VALUE (or --agent.FIELD=VALUE):
    `pbrl agents show NAME` lists every field with its docstring and the presets;
    `pbrl agents list` lists the agents.
    """
    import json

    from pbrl.cli.agents import ensure_cwd_importable
    from pbrl.cli.logs import progress_on_stderr
    from pbrl.cli.ui import open_ui_queue
    from pbrl.run.train import TrainSpec
    from pbrl.run.train import train as run_train

    ensure_cwd_importable(agent)
    overrides = parse_agent_args(list(ctx.args))
    queue = open_ui_queue(teacher, task, segment)
    if queue is not None:
        teacher = None
    out = out or f"runs/{_slug(agent)}-{_slug(dataset or task or 'online')}-s{seed}"
    spec = TrainSpec(
        agent=agent,
        dataset=dataset,
        prefs=prefs,
        seed=seed,
        steps=steps,
        device=device,
        preset=preset,
        overrides=overrides,
        eval_every=eval_every,
        eval_episodes=eval_episodes,
        log_interval=log_interval,
        eval_workers=eval_workers,
        out=out,
        task=task,
        overwrite=overwrite,
        allow_dataset_mismatch=allow_dataset_mismatch,
        teacher=teacher,
        budget=budget,
        segment=segment,
        selector=selector,
    )
    with progress_on_stderr():
        summary = run_train(spec, queue=queue)
    typer.echo(json.dumps(summary, indent=2, sort_keys=True))
    typer.echo(f"run written to {out}")


# Typer cannot declare the dynamic --agent.* options: they arrive in ctx.args.
TRAIN_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
