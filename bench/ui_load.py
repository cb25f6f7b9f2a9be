"""Load test of the labeling UI: N concurrent annotators on loopback, each answering M pairs.

    python bench/ui_load.py --annotators 50 --answers 100 [--think-s 1] [--db URL] [--per-query 10]

What it does: writes a small dataset (6 episodes with qpos/qvel) into a private Minari store,
creates a compare project of ``annotators * answers / per_query`` queries, gives every
segment the same small MP4 (rendering is not what is measured: the worker renders ahead, see
docs/ui.md), starts ``pbrl ui serve --no-render`` in its own process, and runs the annotators
as asyncio tasks with one HTTP client each; an annotator watches each pair for ``--think-s``
seconds on average before answering (0: answer as fast as the server allows, a stress test):

- ``submit``: the round trip of ``POST /answers`` (stores the answer and returns the next
  pair, so the page can show it at once);
- ``next ready``: from sending the answer until the next pair's two videos are downloaded
  (the page prefetches them while the current pair plays; this is the time without that).

At the end it checks the database: exactly one row per (query, annotator) for every 200
response, no query answered by more than ``per_query`` people, nothing lost or duplicated.
Prints the percentiles, the machine and its load average (sampled every 5 s during the run,
and after it), and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _setup(home: Path, url: str, n_queries: int, per_query: int, n_people: int) -> list[str]:
    from sqlalchemy import update

    from pbrl.datasets.base import EpisodeData
    from pbrl.datasets.minari_io import write_minari_dataset
    from pbrl.datasets.registry import load_dataset
    from pbrl.ui.db import SegmentRow, open_db
    from pbrl.ui.service import ProjectOptions, add_token, create_project
    from pbrl.ui.video import encode_mp4, video_path

    rng = np.random.default_rng(0)
    eps = []
    for e in range(6):
        t = 200
        eps.append(
            EpisodeData(
                observations=rng.normal(size=(t + 1, 3)).astype(np.float32),
                actions=rng.uniform(-1, 1, size=(t, 2)).astype(np.float32),
                rewards=np.full(t, float(e), np.float32),
                terminations=np.zeros(t, bool),
                truncations=np.r_[np.zeros(t - 1, bool), True],
                qpos=rng.normal(size=(t + 1, 2)),
                qvel=rng.normal(size=(t + 1, 2)),
            )
        )
    write_minari_dataset(
        "bench/uiload-v0", eps, env_id=None, ref_min_score=0, ref_max_score=1, card={}
    )
    ds = load_dataset("bench/uiload-v0")
    _, sessions = open_db(url)
    opts = ProjectOptions(
        name="load", queries=n_queries, segment=25, per_query=per_query, width=128, height=128
    )
    p = create_project(sessions, ds, opts, dataset_arg="bench/uiload-v0")
    frames = np.zeros((25, 128, 128, 3), np.uint8)
    frames[:, :, :, 2] = np.linspace(0, 255, 25, dtype=np.uint8)[:, None, None]
    one = home / "one.mp4"
    encode_mp4(frames, one, 25)
    with sessions() as s, s.begin():
        ids = [r.id for r in s.query(SegmentRow).filter(SegmentRow.project_id == p.id)]
        for sid in ids:
            dst = video_path(home / "videos", p.id, sid)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(one, dst)
        s.execute(update(SegmentRow).values(video="ready"))
    return [add_token(sessions, "load", f"a{i}") for i in range(n_people)]


async def _annotator(
    base: str, token: str, answers: int, think_s: float, out: dict, rng: np.random.Generator
) -> None:
    import httpx

    head = {"Authorization": f"Bearer {token}"}
    api = f"{base}/api/projects/load"
    async with httpx.AsyncClient(timeout=60, headers=head) as c:
        r = (await c.get(f"{api}/next")).json()
        for _ in range(answers):
            if r.get("state") != "ready":
                out["not_ready"] += 1
                break
            q = r["query"]
            if think_s > 0:  # watching the clips: uniform in [0.5, 1.5] x think_s
                await asyncio.sleep(think_s * float(rng.uniform(0.5, 1.5)))
            choice = ("left", "right", "equal", "skip")[int(rng.integers(0, 4))]
            t0 = time.perf_counter()
            try:
                res = await c.post(
                    f"{api}/answers", json={"query_id": q["query_id"], "choice": choice}
                )
            except httpx.TransportError as e:  # counted, never retried: a retry could hide a loss
                out["errors"].append(type(e).__name__)
                break
            t1 = time.perf_counter()
            if res.status_code != 200:
                out["errors"].append(res.status_code)
                break
            out["submit"].append(t1 - t0)
            out["ok"] += 1
            r = res.json()["next"]
            if r.get("state") == "ready":
                n = r["query"]
                for side in ("left", "right"):
                    v = await c.get(f"{api}/videos/{n[side]['id']}.mp4")
                    if v.status_code != 200:
                        out["errors"].append(v.status_code)
                out["ready"].append(time.perf_counter() - t0)


async def _load_sampler(out: dict, stop: asyncio.Event) -> None:
    """The machine's 1-minute load average every 5 s while the annotators run (the machine
    may be shared: the figures are only comparable with the load they were taken under)."""
    while not stop.is_set():
        out["load"].append(os.getloadavg()[0])
        try:
            await asyncio.wait_for(stop.wait(), 5.0)
        except TimeoutError:
            pass


async def _run(base: str, tokens: list[str], answers: int, think_s: float) -> dict:
    out = {"submit": [], "ready": [], "ok": 0, "errors": [], "not_ready": 0, "load": []}
    rngs = [np.random.default_rng(i) for i in range(len(tokens))]
    stop = asyncio.Event()
    sampler = asyncio.create_task(_load_sampler(out, stop))
    t0 = time.perf_counter()
    await asyncio.gather(
        *(_annotator(base, t, answers, think_s, out, g) for t, g in zip(tokens, rngs, strict=True))
    )
    out["wall_s"] = time.perf_counter() - t0
    stop.set()
    await sampler
    return out


def _check(url: str, ok: int, per_query: int) -> dict:
    from sqlalchemy import func, select

    from pbrl.ui.db import Answer, open_db

    _, sessions = open_db(url)
    with sessions() as s:
        rows = s.execute(select(Answer.query_id, Answer.annotator_id)).all()
        per_q = dict(
            s.execute(select(Answer.query_id, func.count()).group_by(Answer.query_id)).all()
        )
    return {
        "rows": len(rows),
        "unique": len(set(rows)),
        "max_per_query": max(per_q.values()) if per_q else 0,
        "ok_responses": ok,
        "consistent": len(rows) == len(set(rows)) == ok and max(per_q.values()) <= per_query,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotators", type=int, default=50)
    ap.add_argument("--answers", type=int, default=100)
    ap.add_argument("--per-query", type=int, default=10)
    ap.add_argument(
        "--think-s",
        type=float,
        default=1.0,
        help="Mean seconds an annotator watches a pair before answering (0: answer at once).",
    )
    ap.add_argument("--db", default=None, help="SQLAlchemy URL (default: SQLite in a temp dir)")
    args = ap.parse_args()
    # 10% spare: near the end an annotator may find only pairs they have answered already
    n_queries = -(-args.annotators * args.answers * 11 // (10 * args.per_query))
    home = Path(tempfile.mkdtemp(prefix="pbrl-ui-load-"))
    env = dict(os.environ, MINARI_DATASETS_PATH=str(home / "minari"), PBRL_UI_HOME=str(home))
    os.environ.update(env)
    url = f"sqlite:///{home / 'ui.db'}"
    admin = None
    if args.db:  # a database of its own on that server, dropped at the end
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        admin = create_engine(args.db, isolation_level="AUTOCOMMIT")
        name = f"pbrl_ui_load_{os.getpid()}"
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(args.db).set(database=name).render_as_string(hide_password=False)
    server = None
    try:
        t = time.perf_counter()
        tokens = _setup(home, url, n_queries, args.per_query, args.annotators)
        print(
            f"setup: {n_queries} queries, {args.annotators} tokens in {time.perf_counter() - t:.1f} s"
        )
        port = _free_port()
        cmd = [sys.executable, "-m", "pbrl", "ui", "serve", "--no-render", "--port", str(port)]
        if args.db:
            cmd += ["--db", url]
        server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        import httpx

        for _ in range(200):
            try:
                httpx.get(base + "/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        out = asyncio.run(_run(base, tokens, args.answers, args.think_s))
        check = _check(url, out["ok"], args.per_query)
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        shutil.rmtree(home, ignore_errors=True)
        if admin is not None:
            from sqlalchemy import text

            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    sub = np.array(out["submit"]) * 1000
    rdy = np.array(out["ready"]) * 1000
    cpu = ""
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text()).group(1)
    except (OSError, AttributeError):
        cpu = platform.processor()
    result = {
        "annotators": args.annotators,
        "answers_each": args.answers,
        "per_query": args.per_query,
        "think_s": args.think_s,
        "db": "postgresql" if args.db and args.db.startswith("postgres") else "sqlite",
        "answers_ok": out["ok"],
        "errors": len(out["errors"]),
        "not_ready": out["not_ready"],
        "submit_ms_p50": round(float(np.percentile(sub, 50)), 1),
        "submit_ms_p99": round(float(np.percentile(sub, 99)), 1),
        "next_ready_ms_p50": round(float(np.percentile(rdy, 50)), 1),
        "next_ready_ms_p99": round(float(np.percentile(rdy, 99)), 1),
        "answers_per_s": round(out["ok"] / out["wall_s"], 1),
        "db_check": check,
        "machine": f"{os.cpu_count()} cores, {cpu}",
        "load_avg_1min_during_min_mean_max": [
            round(float(f(out["load"])), 2) for f in (np.min, np.mean, np.max)
        ],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
