"""``pbrl ui``: the labeling web UI (needs the ``ui`` extra: ``pip install 'pbrl[ui]'``).

The database is ``--db URL`` (any SQLAlchemy URL), else ``$PBRL_UI_DB``, else the SQLite file
``<home>/ui.db``; videos are cached under ``<home>/videos``; ``--home`` defaults to
``$PBRL_UI_HOME`` or ``./pbrl-ui``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import typer

app = typer.Typer(
    help="The labeling web UI: serve it, create projects, add tokens, see status, export.",
    no_args_is_help=True,
)
project_app = typer.Typer(help="Labeling projects.", no_args_is_help=True)
token_app = typer.Typer(help="Annotator and owner tokens.", no_args_is_help=True)
app.add_typer(project_app, name="project")
app.add_typer(token_app, name="token")

HomeOpt = typer.Option(
    None,
    "--home",
    help="Folder of the SQLite file and the video cache [$PBRL_UI_HOME or ./pbrl-ui].",
)
DbOpt = typer.Option(
    None, "--db", help="SQLAlchemy database URL [$PBRL_UI_DB or sqlite:///<home>/ui.db]."
)


def _need_extra() -> None:
    from pbrl.errors import PbrlError

    missing = []
    for mod in ("fastapi", "sqlalchemy", "alembic", "uvicorn", "imageio_ffmpeg"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise PbrlError(
            f"the labeling UI needs the 'ui' extra (missing: {', '.join(missing)}); "
            "pip install 'pbrl[ui]'"
        )


def _where(home: Path | None, db: str | None, *, create: bool) -> tuple[Path, str]:
    from pbrl.errors import PbrlError

    home = Path(home or os.environ.get("PBRL_UI_HOME") or "pbrl-ui")
    url = db or os.environ.get("PBRL_UI_DB")
    if home.exists() and not home.is_dir():
        raise PbrlError(f"--home: {home} is not a folder")
    if url is None:
        if not home.is_dir():
            if not create:
                raise PbrlError(
                    f"--home: {home} holds no UI database yet (create a project first, or "
                    "pass --home/--db)"
                )
            home.mkdir(parents=True)
        url = f"sqlite:///{(home / 'ui.db').resolve()}"
    return home, url


def open_ui_queue(teacher: str | None, task: str | None, segment: int) -> Any:
    """``--teacher ui:PROJECT`` of ``pbrl train``: a :class:`pbrl.ui.queue.UiQueue` posting
    to PROJECT in the UI database of ``$PBRL_UI_DB`` / ``$PBRL_UI_HOME`` / ``./pbrl-ui``
    (the one ``pbrl ui serve`` uses with the same settings); None for any other teacher."""
    if teacher is None or not teacher.startswith("ui:"):
        return None
    _need_extra()
    from pbrl.errors import PbrlError
    from pbrl.ui.db import check_db_url
    from pbrl.ui.queue import UiQueue, parse_ui_teacher

    project = parse_ui_teacher(teacher)
    if not task:
        raise PbrlError("--teacher ui:PROJECT: teaches online agents; pass --task")
    # nothing is opened or made here: the run connects once its checks have passed
    home = Path(os.environ.get("PBRL_UI_HOME") or "pbrl-ui")
    url = os.environ.get("PBRL_UI_DB")
    if url is None and home.exists() and not home.is_dir():
        raise PbrlError(f"$PBRL_UI_HOME: {home} is not a folder")
    return UiQueue(
        check_db_url(url or f"sqlite:///{(home / 'ui.db').resolve()}"),
        str(project),
        task_id=task,
        segment=segment,
        home=None if url else home,
    )


def _open(home: Path | None, db: str | None, *, create: bool = False) -> tuple[Path, Any]:
    _need_extra()
    from pbrl.ui.db import check_db_url, open_db

    home, url = _where(home, db, create=create)
    check_db_url(url)
    _, sessions = open_db(url)
    return home, sessions


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="Port."),
    home: Path = HomeOpt,
    db: str = DbOpt,
    render: bool = typer.Option(
        True, "--render/--no-render", help="Run the render worker (a separate process)."
    ),
    release_after: float = typer.Option(
        30.0,
        "--release-after",
        help="Minutes after which a pair shown and not answered goes back to the queue (0: never).",
    ),
) -> None:
    """Serve the annotator page (/?project=P&token=T) and the dashboard (/dashboard?...)."""
    from pbrl.errors import PbrlError

    if not 0 < port < 65536:
        raise PbrlError(f"--port: must be 1-65535, got {port}")
    if not release_after >= 0 or release_after == float("inf"):
        raise PbrlError(f"--release-after: minutes >= 0 (0: never), got {release_after}")
    home, sessions = _open(home, db, create=True)
    import multiprocessing

    import uvicorn

    from pbrl.ui.video import render_loop
    from pbrl.ui.web import create_app

    _, url = _where(home, db, create=True)
    worker = None
    if render:
        worker = multiprocessing.get_context("spawn").Process(
            target=render_loop, args=(url, str(home / "videos")), daemon=True
        )
        worker.start()
    typer.echo(f"pbrl ui: http://{host}:{port}/?project=<project>&token=<token> (db {url})")
    try:
        # Annotators think for seconds between requests: a keep-alive shorter than that makes
        # the server close connections the browser is about to reuse.
        uvicorn.run(
            create_app(sessions, home / "videos", release_after_s=release_after * 60 or None),
            host=host,
            port=port,
            log_level="warning",
            timeout_keep_alive=75,
        )
    finally:
        if worker is not None:
            worker.terminate()
            worker.join(5)


def _default_name(dataset_id: str) -> str:
    parts = [p for p in dataset_id.split("/") if p][-2:]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(parts)).strip("-.")[:64] or "project"


@project_app.command("create")
def project_create(
    dataset: str = typer.Argument(..., help="Dataset id or path (it must store qpos/qvel)."),
    queries: int = typer.Option(
        ...,
        "--queries",
        help="Pairs to ask (0: none, a training loop posts them; rank mode: segments to rank).",
    ),
    segment: int = typer.Option(..., "--segment", help="Segment length L in steps."),
    mode: str = typer.Option("compare", "--mode", help="compare (pairs) or rank (insertion)."),
    selector: str = typer.Option(
        "uniform", "--selector", help="Query selector (uniform, kcenter, disagreement, ...)."
    ),
    per_query: int = typer.Option(
        1, "--annotators-per-query", help="Annotators who answer each query."
    ),
    gold: int = typer.Option(
        0, "--gold", help="Hidden gold queries labelled by the oracle teacher."
    ),
    name: str = typer.Option(None, "--name", help="Project name [from the dataset id]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the query draw."),
    fps: int = typer.Option(25, "--fps", help="Video frames per second."),
    size: int = typer.Option(256, "--size", help="Video width and height in pixels."),
    instruction: str = typer.Option("", "--instruction", help="Text shown above the videos."),
    home: Path = HomeOpt,
    db: str = DbOpt,
) -> None:
    """Create a labeling project on DATASET (segments and queries drawn now)."""
    _need_extra()
    from pbrl.ui.service import ProjectOptions

    opts = ProjectOptions(
        name=name or "project",
        queries=queries,
        segment=segment,
        mode=mode,
        selector=selector,
        per_query=per_query,
        gold=gold,
        seed=seed,
        fps=fps,
        width=size,
        height=size,
        instruction=instruction,
    )
    opts.check()  # everything but the dataset, before anything is loaded or created
    from dataclasses import replace

    from pbrl.datasets.registry import load_dataset
    from pbrl.ui.service import check_project_dataset, check_renderable, create_project

    ds = load_dataset(dataset)
    check_renderable(ds)
    if name is None:
        opts = replace(opts, name=_default_name(ds.id))
    check_project_dataset(ds, opts)
    _, sessions = _open(home, db, create=True)
    p = create_project(sessions, ds, opts, dataset_arg=dataset)
    typer.echo(
        f"created project '{p.name}' on {ds.id}: {queries} "
        f"{'segments' if mode == 'rank' else 'queries'} of {segment} steps ({mode}, {selector}"
        f", {per_query} per query, {gold} gold)"
    )
    typer.echo(f"next: pbrl ui token add {p.name} <name> [--owner]; pbrl ui serve")


@project_app.command("list")
def project_list(home: Path = HomeOpt, db: str = DbOpt) -> None:
    """List the projects."""
    _, sessions = _open(home, db)
    from sqlalchemy import select

    from pbrl.ui.db import Project

    with sessions() as s:
        for p in s.scalars(select(Project).order_by(Project.id)):
            typer.echo(f"{p.name}\t{p.mode}\t{p.dataset_id}\tL={p.segment}\tqueries={p.n_queries}")


@token_app.command("add")
def token_add(
    project: str = typer.Argument(..., help="Project name."),
    name: str = typer.Argument(..., help="Annotator name (labeler human:<name>)."),
    owner: bool = typer.Option(False, "--owner", help="An owner token (status, export)."),
    host: str = typer.Option("127.0.0.1:8000", "--host", help="host:port for the printed link."),
    home: Path = HomeOpt,
    db: str = DbOpt,
) -> None:
    """Make a token for NAME on PROJECT; print it once with the annotator's link."""
    _need_extra()
    from pbrl.ui.service import add_token, check_name

    check_name(name, "annotator name")
    _, sessions = _open(home, db)
    secret = add_token(sessions, project, name, owner=owner)
    typer.echo(f"token for {name} on {project}{' (owner)' if owner else ''}: {secret}")
    typer.echo(f"annotate:  http://{host}/?project={project}&token={secret}")
    if owner:
        typer.echo(f"dashboard: http://{host}/dashboard?project={project}&token={secret}")


@token_app.command("revoke")
def token_revoke(
    project: str = typer.Argument(..., help="Project name."),
    name: str = typer.Argument(..., help="Whose token to revoke."),
    home: Path = HomeOpt,
    db: str = DbOpt,
) -> None:
    """Revoke NAME's token on PROJECT: it is refused (401) from now on; the answers it gave
    stay. A running server notices within 2 seconds."""
    _need_extra()
    from pbrl.ui.service import check_name, revoke_token

    check_name(name, "annotator name")
    _, sessions = _open(home, db)
    revoke_token(sessions, project, name)
    typer.echo(f"revoked the token of {name} on {project}; their answers are kept")


@app.command("status")
def status(
    project: str = typer.Argument(..., help="Project name."),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    home: Path = HomeOpt,
    db: str = DbOpt,
) -> None:
    """Answers, videos, each annotator's gold accuracy and the crowd's agreement."""
    _need_extra()
    import json

    from pbrl.ui.service import project_status

    _, sessions = _open(home, db)
    st = project_status(sessions, project)
    if as_json:
        typer.echo(json.dumps(st, indent=2, sort_keys=True))
        return

    def f(x: Any) -> str:
        return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

    v = st["videos"]
    typer.echo(
        f"{st['project']} ({st['mode']}) on {st['dataset']}: {st['queries']} queries, "
        f"{st['answers']} answers; videos ready {v.get('ready', 0)}, pending "
        f"{v.get('pending', 0)}, failed {v.get('failed', 0)}"
    )
    for n, d in st["annotators"].items():
        typer.echo(
            f"  {n}{' (owner)' if d['owner'] else ''}{' (revoked)' if d['revoked'] else ''}: "
            f"{d['answers']} answers, {d['skipped']} skipped, {d['undone']} undone, gold {d['gold_correct']}/{d['gold']} "
            f"(accuracy {f(d['gold_accuracy'])}), median latency {f(d['median_latency_s'])} s"
        )
    a = st["agreement"]
    typer.echo(
        f"  agreement: pairwise {f(a['pairwise'])} over {a['pairs']} pairs, Krippendorff's "
        f"alpha {f(a['krippendorff_alpha'])}, Fleiss' kappa {f(a['fleiss_kappa'])}"
    )


@app.command("export")
def export(
    project: str = typer.Argument(..., help="Project name."),
    output: Path = typer.Option(..., "-o", "--output", help="Preference file to write (.npz)."),
    aggregate: str = typer.Option(
        "none", "--aggregate", help="none (every answer), majority or reliability (Dawid-Skene)."
    ),
    annotator: str = typer.Option(
        None, "--annotator", help="Only this person's answers (for pbrl oracles fit)."
    ),
    home: Path = HomeOpt,
    db: str = DbOpt,
) -> None:
    """Write PROJECT's answers as a pbrl preference file (pbrl train --prefs FILE)."""
    from pbrl.errors import PbrlError
    from pbrl.utils import check_output_file

    if aggregate not in ("none", "majority", "reliability"):
        raise PbrlError(f"--aggregate: {aggregate!r} is not one of none, majority, reliability")
    check_output_file(output, "--output")
    _, sessions = _open(home, db)
    from pbrl.prefs import save_preferences
    from pbrl.ui.service import export_preferences

    data = export_preferences(sessions, project, aggregate, annotator)
    if data.num_queries == 0:
        raise PbrlError(f"project '{project}': no answers to export yet")
    save_preferences(data, output)
    typer.echo(
        f"wrote {output}: {data.num_queries} records ({data.num_answered} answered) from "
        f"project '{project}' (aggregate {aggregate})"
    )


@app.command("render")
def render(
    limit: int = typer.Option(None, "--limit", help="Render at most this many segments."),
    home: Path = HomeOpt,
    db: str = DbOpt,
) -> None:
    """Render pending videos now, in the foreground (serve does it in the background)."""
    home, sessions = _open(home, db)
    from pbrl.ui.video import render_pending

    n = render_pending(sessions, home / "videos", limit=limit)
    typer.echo(f"rendered {n} segment videos into {home / 'videos'}")
