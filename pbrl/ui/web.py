"""The FastAPI app of the labeling UI: the annotator's page, the owner's dashboard, a JSON API.

Every ``/api/projects/{project}/...`` route needs a token (``Authorization: Bearer <token>``,
or ``?token=`` where a header cannot be set, as in a ``<video src>``); a token opens only the
project it was made for, and the owner routes (status, export, posting queries) need an owner
token. Bodies are validated by pydantic models that forbid unknown fields; errors are JSON
``{"detail": "..."}`` with a 4xx status, and nothing is written when one is returned.
Videos are served from the project's cache by segment id (an integer): a path is never taken
from the request.
"""

from __future__ import annotations

import logging
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import sessionmaker

from pbrl.datasets.registry import load_dataset
from pbrl.errors import PbrlError
from pbrl.prefs.io import save_preferences
from pbrl.ui.db import Project
from pbrl.ui.service import (
    AGGREGATES,
    Annotator,
    ProjectOptions,
    UiError,
    add_token,
    answer_and_next,
    authenticate,
    check_project_dataset,
    check_renderable,
    create_project,
    export_preferences,
    next_query,
    post_queries,
    project_status,
    query_answers,
    revoke_token,
    segment_state,
    undo_last,
)
from pbrl.ui.video import video_path

log = logging.getLogger(__name__)
# Seconds a verified token is trusted without a database read (see who()).
AUTH_TTL_S = 2.0
# Seconds after which a pair shown and not answered goes back to the queue (serve's default).
RELEASE_AFTER_S = 1800.0


class AnswerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query_id: int = Field(ge=1, strict=True)
    choice: Literal["left", "right", "equal", "skip"]


class PostBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refs_a: list[Annotated[list[int], Field(min_length=3, max_length=3)]] = Field(
        min_length=1, max_length=10000
    )
    refs_b: list[Annotated[list[int], Field(min_length=3, max_length=3)]] = Field(
        min_length=1, max_length=10000
    )


def who(
    request: Request,
    project: str,
    authorization: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query()] = None,
) -> Annotator:
    """The caller, from ``Authorization: Bearer`` (or ``?token=``), invited to ``project``."""
    secret = token
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise UiError(401, "Authorization header must be 'Bearer <token>'")
        secret = value.strip()
    # A verified token is remembered for AUTH_TTL_S (bounded), which saves a database round
    # trip on most requests; a revocation through this server clears it at once, one made by
    # the CLI (another process) is seen within AUTH_TTL_S.
    cache = request.app.state.auth_cache
    key = (secret, project)
    now = time.monotonic()
    hit = cache.get(key)
    if hit is None or hit[1] < now:
        who = authenticate(request.app.state.sessions, secret, project)
        if len(cache) > 10000:
            cache.clear()
        cache[key] = hit = (who, now + request.app.state.auth_ttl_s)
    return hit[0]


Who = Annotated[Annotator, Depends(who)]


def owner(a: Who) -> Annotator:
    if not a.owner:
        raise UiError(403, "this needs an owner token")
    return a


Owner = Annotated[Annotator, Depends(owner)]


class ProjectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = Field(min_length=1, max_length=1000)
    name: str = Field(min_length=1, max_length=64)
    queries: int = Field(ge=1, le=100000, strict=True)
    segment: int = Field(ge=1, le=10000, strict=True)
    mode: Literal["compare", "rank"] = "compare"
    selector: str = "uniform"
    annotators_per_query: int = Field(default=1, ge=1, le=1000, strict=True)
    gold: int = Field(default=0, ge=0, strict=True)
    seed: int = Field(default=0, ge=0, strict=True)
    fps: int = Field(default=25, ge=1, le=120, strict=True)
    size: int = Field(default=256, ge=16, le=1024, strict=True)
    instruction: str = Field(default="", max_length=2000)


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    owner: bool = False


def _page(name: str) -> str:
    return resources.files("pbrl.ui").joinpath("static", name).read_text(encoding="utf-8")


def create_app(
    sessions: sessionmaker, cache_dir: Path, *, release_after_s: float | None = RELEASE_AFTER_S
) -> FastAPI:
    """The app on an open database (:func:`pbrl.ui.db.open_db`) and a video cache folder.

    ``release_after_s``: a pair shown and not answered for that long gives its slot back to
    the queue (:func:`pbrl.ui.service.release_abandoned`); None: never."""
    app = FastAPI(title="pbrl labeling UI", docs_url=None, redoc_url=None, openapi_url=None)
    cache_dir = Path(cache_dir)
    app.state.sessions = sessions
    app.state.auth_cache = {}
    app.state.auth_ttl_s = AUTH_TTL_S
    ready_videos: dict[int, int] = {}  # segment id -> project id, once its video is ready
    pages = {"annotate": _page("annotate.html"), "dashboard": _page("dashboard.html")}

    @app.exception_handler(UiError)
    async def _ui_error(_request: Request, exc: UiError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(PbrlError)
    async def _pbrl_error(_request: Request, exc: PbrlError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.get("/", response_class=HTMLResponse)
    def annotate_page() -> str:
        return pages["annotate"]

    @app.get("/dashboard", response_class=HTMLResponse)
    def dashboard_page() -> str:
        return pages["dashboard"]

    @app.get("/api/projects/{project}/me")
    def me(a: Who) -> dict[str, Any]:
        with sessions() as s:
            p = s.get(Project, a.project_id)
            assert p is not None
            return {
                "name": a.name,
                "owner": a.owner,
                "project": p.name,
                "mode": p.mode,
                "instruction": p.instruction,
                "segment": p.segment,
                "fps": p.fps,
                "task": p.task_id,
            }

    @app.get("/api/projects/{project}/next")
    def get_next(a: Who) -> dict[str, Any]:
        return next_query(sessions, a, release_after_s=release_after_s)

    @app.post("/api/projects/{project}/answers")
    def post_answer(body: AnswerBody, a: Who) -> JSONResponse:
        # plain JSON types only: skip FastAPI's jsonable_encoder walk on the busiest route
        nxt = answer_and_next(
            sessions, a, body.query_id, body.choice, release_after_s=release_after_s
        )
        return JSONResponse({"stored": body.query_id, "next": nxt})

    @app.post("/api/projects/{project}/undo")
    def post_undo(a: Who) -> dict[str, Any]:
        qid = undo_last(sessions, a)
        return {"undone": qid, "next": next_query(sessions, a, release_after_s=release_after_s)}

    @app.get("/api/projects/{project}/videos/{segment_id}.mp4")
    def video(segment_id: int, a: Who) -> FileResponse:
        # A ready video stays ready: remember whose it is, and serve it again without the
        # database (whose single SQLite writer the answers need).
        owner_project = ready_videos.get(segment_id)
        if owner_project is None:
            seg = segment_state(sessions, segment_id)
            if seg is None:
                owner_project = -1
            else:
                owner_project, state = seg
                if owner_project == a.project_id and state != "ready":
                    raise UiError(409, f"segment {segment_id}: video is {state}")
                if state == "ready":
                    ready_videos[segment_id] = owner_project
        if owner_project != a.project_id:
            raise UiError(404, f"segment {segment_id}: no such segment in project '{a.project}'")
        path = video_path(cache_dir, a.project_id, segment_id)
        if not path.is_file():
            raise UiError(404, f"segment {segment_id}: video missing from the cache")
        return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private"})

    @app.get("/api/projects/{project}/status")
    def status(a: Owner) -> dict[str, Any]:
        return project_status(sessions, a.project)

    @app.get("/api/projects/{project}/export")
    def export(a: Owner, aggregate: str = "none") -> Response:
        if aggregate not in AGGREGATES:
            raise UiError(422, f"aggregate: {aggregate!r} is not one of {', '.join(AGGREGATES)}")
        data = export_preferences(sessions, a.project, aggregate)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "prefs.npz"
            save_preferences(data, path)
            blob = path.read_bytes()
        return Response(
            blob,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{a.project}-prefs.npz"'},
        )

    @app.post("/api/projects")
    def new_project(
        body: ProjectBody,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        """Any project's owner may create a project; they become its owner too."""
        scheme, _, secret = (authorization or "").partition(" ")
        creator = authenticate(
            sessions, secret.strip() if scheme.lower() == "bearer" else None, None
        )
        if not creator.owner:
            raise UiError(403, "creating a project needs an owner token")
        opts = ProjectOptions(
            name=body.name,
            queries=body.queries,
            segment=body.segment,
            mode=body.mode,
            selector=body.selector,
            per_query=body.annotators_per_query,
            gold=body.gold,
            seed=body.seed,
            fps=body.fps,
            width=body.size,
            height=body.size,
            instruction=body.instruction,
        )
        try:
            opts.check()
            ds = load_dataset(body.dataset)
            check_renderable(ds)
            check_project_dataset(ds, opts)
            p = create_project(sessions, ds, opts, dataset_arg=body.dataset)
        except UiError:
            raise
        except PbrlError as e:
            raise UiError(422, str(e)) from e
        secret = add_token(sessions, p.name, creator.name, owner=True)
        return {"project": p.name, "owner_token": secret}

    @app.post("/api/projects/{project}/tokens")
    def new_token(body: TokenBody, a: Owner) -> dict[str, Any]:
        try:
            secret = add_token(sessions, a.project, body.name, owner=body.owner)
        except UiError:
            raise
        except PbrlError as e:
            raise UiError(422, str(e)) from e
        return {"name": body.name, "owner": body.owner, "token": secret}

    @app.delete("/api/projects/{project}/tokens/{name}")
    def delete_token(name: str, a: Owner) -> dict[str, Any]:
        """Revoke ``name``'s token: 401 from now on, its answers kept."""
        if name == a.name:
            raise UiError(409, "an owner cannot revoke their own token here (use the CLI)")
        revoke_token(sessions, a.project, name)
        for key, (hit, _) in list(app.state.auth_cache.items()):
            if hit.project_id == a.project_id and hit.name == name:
                app.state.auth_cache.pop(key, None)
        return {"name": name, "revoked": True}

    @app.post("/api/projects/{project}/queries")
    def post_pairs(body: PostBody, a: Owner) -> dict[str, Any]:
        ids = post_queries(sessions, a.project, np.array(body.refs_a), np.array(body.refs_b))
        return {"query_ids": ids}

    @app.get("/api/projects/{project}/queries")
    def get_pairs(a: Owner, ids: str) -> dict[str, Any]:
        try:
            wanted = [int(x) for x in ids.split(",") if x.strip()]
        except ValueError as e:
            raise UiError(422, f"ids: comma-separated query ids, got {ids!r}") from e
        got = query_answers(sessions, a.project, wanted)
        return {"answers": {str(k): v for k, v in got.items()}}

    return app
