"""Segment videos: rendered offscreen from the stored qpos/qvel, encoded once to H.264 MP4,
cached under the project's folder, rendered ahead by a background worker.

Rendering is the slow part (MuJoCo offscreen; on a 2-core machine with software EGL about
0.3 s a frame), so it never runs in a request: :func:`render_pending` takes the pending
segments, most wanted first (a segment an annotator waits for has a higher ``priority``),
renders and encodes each, and marks it ``ready`` (or ``failed`` with the error). ``pbrl ui
serve`` runs :func:`render_loop` in a separate process, so the web server's threads never
wait on the GIL of a renderer. The cache path of a segment is built from integers only
(:func:`video_path`), never from text a client sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from pbrl.datasets.base import OfflineDataset
from pbrl.envs.base import get_task
from pbrl.errors import PbrlError
from pbrl.ui.active import active_pass
from pbrl.ui.db import Project, SegmentRow, open_db
from pbrl.ui.service import segment_dataset
from pbrl.utils import atomic_path

log = logging.getLogger(__name__)

# (dataset, episode, start, length, width, height) -> frames (length, height, width, 3) uint8
Renderer = Callable[[OfflineDataset, int, int, int, int, int], np.ndarray]


def task_renderer(
    ds: OfflineDataset, episode: int, start: int, length: int, width: int, height: int
) -> np.ndarray:
    """Frames of a segment from the dataset's qpos/qvel through its task's renderer."""
    if ds.qpos is None or ds.qvel is None:
        raise PbrlError(f"{ds.id}: stores no qpos/qvel to render")
    task = get_task(str(ds.task_id))
    if task.render is None:
        raise PbrlError(f"{ds.task_id}: task has no renderer")
    rows = ds.episode_rows(episode)
    lo = rows.start + start
    info = ds.episode_info[episode] if episode < len(ds.episode_info) else {}
    return task.render(
        ds.qpos[lo : lo + length], ds.qvel[lo : lo + length], info, width, height, None
    )


def video_path(cache_dir: Path, project_id: int, segment_id: int) -> Path:
    """Where a segment's MP4 lives: ``<cache>/p<project>/s<segment>.mp4`` (integers only)."""
    return Path(cache_dir) / f"p{int(project_id)}" / f"s{int(segment_id)}.mp4"


def encode_mp4(frames: np.ndarray, path: Path, fps: int) -> None:
    """H.264 (yuv420p, faststart) MP4 of ``frames`` (T, H, W, 3) uint8, written atomically.

    Sides are padded to even sizes (yuv420p needs them); browsers play the result in a
    ``<video>`` element.
    """
    import imageio_ffmpeg

    f = np.asarray(frames, dtype=np.uint8)
    if f.ndim != 4 or f.shape[-1] != 3 or f.shape[0] == 0:
        raise PbrlError(f"encode_mp4: frames must be (T, H, W, 3), got {f.shape}")
    h, w = f.shape[1] + f.shape[1] % 2, f.shape[2] + f.shape[2] % 2
    if (h, w) != f.shape[1:3]:
        f = np.pad(f, ((0, 0), (0, h - f.shape[1]), (0, w - f.shape[2]), (0, 0)))
    with atomic_path(path) as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp),
            (w, h),
            fps=fps,
            codec="libx264",
            pix_fmt_out="yuv420p",
            macro_block_size=1,
            output_params=["-movflags", "+faststart", "-f", "mp4"],
            ffmpeg_log_level="error",
        )
        writer.send(None)
        for frame in f:
            writer.send(np.ascontiguousarray(frame))
        writer.close()


def render_pending(
    sessions: sessionmaker,
    cache_dir: Path,
    *,
    renderer: Renderer = task_renderer,
    limit: int | None = None,
    datasets: dict[int, Any] | None = None,
) -> int:
    """Render and cache pending segments, most wanted first; the number rendered or failed."""
    done = 0
    while limit is None or done < limit:
        with sessions() as s:
            seg = s.scalar(
                select(SegmentRow)
                .where(SegmentRow.video == "pending")
                .order_by(SegmentRow.priority.desc(), SegmentRow.id)
                .limit(1)
            )
            if seg is None:
                return done
            project = s.get(Project, seg.project_id)
        assert project is not None
        status, error = "ready", None
        try:
            ds = segment_dataset(project, seg)
            frames = renderer(ds, seg.episode, seg.start, seg.length, project.width, project.height)
            encode_mp4(frames, video_path(cache_dir, project.id, seg.id), project.fps)
        except Exception as e:  # noqa: BLE001 - one bad segment must not stop the worker
            log.exception("segment %s of project %s: rendering failed", seg.id, project.name)
            status, error = "failed", f"{type(e).__name__}: {e}"
        with sessions() as s, s.begin():
            row = s.get(SegmentRow, seg.id)
            if row is not None:
                row.video, row.error = status, error
        done += 1
    return done


def worker_pass(
    sessions: sessionmaker, cache_dir: Path, *, renderer: Renderer = task_renderer
) -> int:
    """One pass of the worker: render what is pending, then run the active-query rounds that
    are due (:func:`pbrl.ui.active.active_pass`). Returns the work done (0: idle)."""
    busy = render_pending(sessions, cache_dir, renderer=renderer)
    try:
        busy += active_pass(sessions)
    except Exception:  # noqa: BLE001 - a failed round is logged; labelling goes on
        log.exception("active round failed")
    return busy


def render_loop(db_url: str, cache_dir: str, poll_s: float = 0.5) -> None:
    """The worker's process (``pbrl ui serve`` starts it): :func:`worker_pass` forever,
    sleeping ``poll_s`` when there was nothing to do."""
    logging.basicConfig(level=logging.INFO, format="ui worker: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    _, sessions = open_db(db_url)
    while True:
        if worker_pass(sessions, Path(cache_dir)) == 0:
            time.sleep(poll_s)
