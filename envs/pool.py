"""Evaluation environments by slot, stepped in this process or spread over worker processes.

An evaluation steps many independent episodes in lockstep (every episode of a wave, for
every stacked seed). :class:`EnvPool` holds them by slot number: :meth:`EnvPool.open`
builds and resets an env per slot (``task.make(seed)`` then ``reset(seed=seed)``, exactly
as a lone evaluation does), :meth:`EnvPool.step` steps the slots it is given, one action
each, and :meth:`EnvPool.close` closes them. With ``workers=0`` the envs live in this
process; with ``workers=W`` each slot lives in worker ``slot % W`` (an OS process forked
from this one, so tasks registered at run time exist there too) and a step sends every
worker its slots' actions before it reads any answer, so the W workers step at once. The
results do not depend on ``workers``: each env is built, seeded and stepped the same way.
"""

from __future__ import annotations

import multiprocessing as mp
import traceback
import warnings
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from pbrl.envs.base import get_task
from pbrl.errors import PbrlError

Opened = tuple[np.ndarray, np.ndarray, np.ndarray]
"""An opened slot: its first observation, the action space's low and high (float32)."""
Stepped = tuple[np.ndarray, float, bool, bool | None]
"""A stepped slot: observation, reward, done (terminated or truncated), success (None when
the env reports no ``info["success"]``)."""


class _Envs:
    """The envs of some slots, in the process that steps them."""

    def __init__(self) -> None:
        self.envs: dict[int, Any] = {}

    def open(self, items: list[tuple[int, str, int]]) -> list[Opened]:
        out = []
        for slot, task_id, seed in items:
            env = get_task(task_id).make(seed=seed)
            self.envs[slot] = env
            obs = np.asarray(env.reset(seed=seed)[0], dtype=np.float32)
            low = np.asarray(env.action_space.low, dtype=np.float32)
            high = np.asarray(env.action_space.high, dtype=np.float32)
            out.append((obs, low, high))
        return out

    def step(self, items: list[tuple[int, np.ndarray]]) -> list[Stepped]:
        out = []
        for slot, action in items:
            o, r, term, trunc, info = self.envs[slot].step(action)
            success = bool(info["success"]) if "success" in info else None
            out.append((np.asarray(o, dtype=np.float32), float(r), bool(term or trunc), success))
        return out

    def close(self, items: list[tuple[int]]) -> list[None]:
        for (slot,) in items:
            env = self.envs.pop(slot, None)
            if env is not None:
                env.close()
        return [None] * len(items)


def _serve(conn: Connection) -> None:
    """A worker process: run the parent's (method, items) requests on its own envs."""
    envs = _Envs()
    while True:
        try:
            method, items = conn.recv()
        except EOFError:
            break
        if method == "quit":
            break
        try:
            conn.send(("ok", getattr(envs, method)(items)))
        except Exception as e:  # noqa: BLE001 - sent back to the parent, which raises it
            conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    envs.close([(s,) for s in envs.envs])


def check_eval_workers(workers: object) -> int:
    """``--eval-workers``: a whole number of at least 0 (one line naming the option)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise PbrlError(f"--eval-workers: a whole number of at least 0, got {workers!r}")
    return workers


class EnvPool:
    """Envs by slot, in ``workers`` worker processes (0: in this process). Use it as a
    context manager, or call :meth:`shutdown`."""

    def __init__(self, workers: int = 0) -> None:
        self.workers = check_eval_workers(workers)
        self.local = _Envs()
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        if workers:
            ctx = mp.get_context("fork")
            for _ in range(workers):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_serve, args=(child,), daemon=True)
                with warnings.catch_warnings():
                    # Python 3.12+ warns on forking a process with threads (torch's); the
                    # worker only builds and steps envs, and takes no lock a thread may hold
                    warnings.filterwarnings("ignore", "This process .* is multi-threaded")
                    proc.start()
                child.close()
                self.conns.append(parent)
                self.procs.append(proc)

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def _call(self, method: str, items: list[tuple[Any, ...]]) -> list[Any]:
        """``method`` on every slot of ``items`` (slot first), answers in ``items``' order."""
        if not self.workers:
            return list(getattr(self.local, method)(items))
        parts: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            parts.setdefault(item[0] % self.workers, []).append(i)
        for w, idx in parts.items():  # every worker gets its share before any is read
            self.conns[w].send((method, [items[i] for i in idx]))
        out: list[Any] = [None] * len(items)
        errors = []
        for w, idx in parts.items():
            try:
                status, answer = self.conns[w].recv()
            except EOFError:
                raise PbrlError(
                    f"evaluation worker {w} died (exit code {self.procs[w].exitcode})"
                ) from None
            if status != "ok":
                errors.append(answer)
                continue
            for i, a in zip(idx, answer, strict=True):
                out[i] = a
        if errors:
            raise PbrlError(f"evaluation worker: {errors[0].splitlines()[0]}")
        return out

    def open(self, items: list[tuple[int, str, int]]) -> list[Opened]:
        """Build and reset an env per ``(slot, task_id, seed)``."""
        return self._call("open", items)

    def step(self, items: list[tuple[int, np.ndarray]]) -> list[Stepped]:
        """Step each ``(slot, action)``'s env once."""
        return self._call("step", items)

    def close(self, slots: list[int]) -> None:
        self._call("close", [(s,) for s in slots])

    def shutdown(self) -> None:
        """Close every env and stop the workers."""
        self.local.close([(s,) for s in self.local.envs])
        for conn in self.conns:
            try:
                conn.send(("quit", None))
            except (BrokenPipeError, OSError):
                pass
            conn.close()
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        self.conns, self.procs, self.workers = [], [], 0
