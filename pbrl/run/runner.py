"""The benchmark runner: datasets -> preference files -> one process per training run.

Layout of an output folder (the report reads only these files, never folder names)::

    <out>/<run_id>/{job.json, config.json, metrics.jsonl, eval.csv, summary.json, checkpoint.pt}
    <out>/prefs/<key>.npz            preference files shared by runs with the same labels
    <out>/.failed/<run_id>.log       why a run failed (removed when it later succeeds)
    <out>/.locks/                    one lock file per run / preference file / dataset build
    <out>/.logs/<run_id>.<pid>.log   a running run's output, per sweep process

Guarantees:

- a run's id is a hash of its resolved job (:class:`pbrl.run.suite.Job`); a folder
  ``<out>/<run_id>`` holds a finished run only: it is trained in a hidden staging folder
  (``.tmp-<run_id>-<pid>``) and renamed once ``job.json``, ``config.json`` and
  ``summary.json`` are all written, and a folder lacking any of them (or with an unreadable
  one) is never counted as finished, so a killed sweep resumes where it stopped;
- a run is claimed by exactly one process: the worker that trains it holds an exclusive
  ``flock`` on ``<out>/.locks/<run_id>.lock`` for as long as it trains (the kernel drops
  it when the process dies, so a claim by a killed process frees itself). Several sweeps
  may share one output folder: a sweep that finds a run claimed waits for it, counts it
  when the other process finishes it, and trains it itself if the other one failed or
  died. Staging folders are removed only under their run's lock, never another live
  process's;
- each run is its own OS process: a crash, a segfault or a CUDA out-of-memory loses that
  run only; failures are listed at the end and retried on the next invocation. With
  ``stack_seeds`` K > 1, up to K seeds of one job share a process that trains them stacked
  (:func:`stack_groups`); a failure there fails those K runs, each still published into
  its own folder when the group succeeds;
- devices are assigned round-robin; several runs share a GPU when ``--workers`` exceeds
  the number of devices;
- ``backend="ray"`` sends the same job list to a Ray cluster (a local one when no address
  is given); each Ray task runs the same worker command, so the files are identical.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pbrl.datasets.generators import generator_for
from pbrl.datasets.minari_io import CARD_KEY, read_minari_metadata
from pbrl.datasets.registry import generated_dataset_id, load_dataset
from pbrl.envs import get_task
from pbrl.envs.pool import check_eval_workers
from pbrl.errors import PbrlError
from pbrl.learn.api import AgentSpec, load_agent_module, make_config
from pbrl.prefs import (
    check_prefs_dataset,
    check_selector,
    label_dataset,
    load_preferences,
    save_preferences,
)
from pbrl.run.diagnose import brief_diagnosis
from pbrl.run.suite import DatasetEntry, Job, Suite, expand
from pbrl.run.train import STAGING_PREFIX, TrainSpec, train, train_stacked
from pbrl.teachers import make_teacher
from pbrl.utils import atomic_path, jsonable, resolve_device, resolve_devices, write_json_atomic

log = logging.getLogger(__name__)

TMP_PREFIX = STAGING_PREFIX
LOCKS = ".locks"
BACKENDS = ("local", "ray")
# Selectors the runner can label with (the ensemble selectors need a reward model).
RUNNER_SELECTORS = ("uniform", "kcenter")
# A worker that finds its run claimed by another process exits with this status (EX_TEMPFAIL).
EXIT_BUSY = 75
# Dataset build options that change a generated dataset's content (checked against its card).
CONTENT_OPTIONS = ("episodes", "horizon", "seed", "steps")


# --------------------------------------------------------------------------------------
# Claims: one flock per run / preference file / dataset build
# --------------------------------------------------------------------------------------
def lock_path(out: Path, name: str) -> Path:
    return out / LOCKS / f"{name}.lock"


@contextlib.contextmanager
def claim(path: Path, *, wait: bool = False) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``path`` for the block; yields whether it was taken.

    With ``wait`` it blocks until the holder lets go. The lock lives as long as the open
    file: the kernel releases it when the process ends, however it ends. Lock files are
    never deleted (deleting one that another process has open would let two hold "it").
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def is_claimed(out: Path, run_id: str) -> bool:
    """Whether a live process holds the run's lock now (a momentary probe)."""
    if not lock_path(out, run_id).exists():
        return False
    with claim(lock_path(out, run_id)) as got:
        return not got


# --------------------------------------------------------------------------------------
# Job bookkeeping
# --------------------------------------------------------------------------------------
def job_from_dict(d: dict[str, Any]) -> Job:
    return Job(**d)


def resolved_agent_config(job: Job) -> dict[str, Any]:
    """The job's agent config as ``config.json`` stores it (preset + overrides resolved)."""

    mod = load_agent_module(job.agent)
    cfg = make_config(mod, job.preset, {k: str(v) for k, v in job.overrides.items()})
    return json.loads(json.dumps(jsonable(cfg), sort_keys=True))


RUN_FILES = ("job.json", "config.json", "summary.json")


def _read_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def stale_fields(folder: Path, job: Job) -> list[str]:
    """Agent-config fields whose stored value differs from what the job resolves to now.

    A run id hashes the job (agent, preset NAME, overrides, ...), not what the preset
    contains, so a finished run trained under an older preset keeps its id; this compares
    the stored ``config.json`` with today's resolution. Empty when current; a config without
    a readable ``agent_config`` table is reported as ``["agent_config"]``.
    """
    cfg = _read_object(folder / "config.json")
    stored = None if cfg is None else cfg.get("agent_config")
    if not isinstance(stored, dict):
        return ["agent_config"]
    now = resolved_agent_config(job)
    keys = sorted(set(stored) | set(now))
    return [k for k in keys if stored.get(k, "<absent>") != now.get(k, "<absent>")]


def is_finished(out: Path, job: Job) -> bool:
    """A run counts as done when its folder holds readable ``job.json``, ``config.json`` and
    ``summary.json`` (JSON objects; ``final_score`` may be null for a run that could not
    evaluate) and its stored agent config is what the job resolves to today (otherwise it
    is stale and trains again)."""
    folder = out / job.run_id
    if any(_read_object(folder / name) is None for name in RUN_FILES):
        return False
    stale = stale_fields(folder, job)
    if stale:
        log.warning(
            "run %s is stale (agent config changed: %s); training it again",
            job.run_id,
            ", ".join(stale),
        )
        return False
    return True


_STAGING_RE = re.compile(re.escape(TMP_PREFIX) + r"(?P<run>.+)-(?P<pid>\d+)(?:-old)?")


def clean_partial(out: Path, run_id: str | None = None) -> int:
    """Remove staging folders left by killed processes; returns how many.

    A staging folder ``.tmp-<run_id>-<pid>`` is removed only while this process holds (or
    can take) its run's lock, so a folder another live process is training in is left alone.
    ``run_id`` limits the sweep to one run (the caller already holds its lock).
    """
    n = 0
    if not out.is_dir():
        return 0
    for p in sorted(out.iterdir()):
        m = _STAGING_RE.fullmatch(p.name)
        if m is None or not p.is_dir():
            continue
        if run_id is not None:
            if m.group("run") == run_id:
                shutil.rmtree(p, ignore_errors=True)
                n += 1
            continue
        with claim(lock_path(out, m.group("run"))) as got:
            if got:
                shutil.rmtree(p, ignore_errors=True)
                n += 1
    return n


def prefs_path(out: Path, job: Job) -> Path | None:
    key = job.prefs_key()
    return None if key is None else out / "prefs" / f"{key}.npz"


def agent_needs_prefs(name: str, preset: str | None, overrides: dict[str, Any]) -> bool:
    """Whether a learner reads preferences, asked of the learner itself.

    The agent is built on a 1-D placeholder spec (cheap: tiny tensors) and its
    ``requires_preferences`` attribute read (default True, see pbrl/learn/api.py).
    """
    import numpy as np

    mod = load_agent_module(name)
    cfg = make_config(mod, preset, {k: str(v) for k, v in overrides.items()})
    spec = AgentSpec(obs_dim=3, act_dim=2, act_low=-np.ones(2), act_high=np.ones(2), device="cpu")
    agent = mod.Agent(cfg, spec)
    if getattr(mod, "ONLINE", False):
        # An online learner asks its teacher while it trains (SAC on the true reward does not).
        return bool(getattr(agent, "asks_teacher", True))
    return bool(getattr(agent, "requires_preferences", True))


def plan(suite: Suite, seeds: tuple[int, ...] | None = None) -> list[Job]:
    return expand(
        suite,
        seeds=seeds,
        prefs_needed=lambda a: agent_needs_prefs(a.name, a.preset, a.overrides),
    )


# --------------------------------------------------------------------------------------
# Checks before any work: everything a suite and the command line name
# --------------------------------------------------------------------------------------
def check_sweep_options(*, workers: int, backend: str, device: str) -> list[str]:
    """Workers, backend and device(s), checked before anything is built or written."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PbrlError(f"--workers: must be a positive number of runs at a time, got {workers}")
    if backend not in BACKENDS:
        raise PbrlError(f"--backend {backend!r}: unknown backend (known: {', '.join(BACKENDS)})")
    if backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as e:
            raise PbrlError("--backend ray needs Ray: pip install 'pbrl[ray]'") from e
    return resolve_devices(device)


def _check_build_options(where: str, gen: Any, options: dict[str, Any]) -> None:
    """The suite's ``build`` table against the generator's ``build`` keyword arguments."""
    params = inspect.signature(gen.build).parameters
    known = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and n != "options"]
    known.append("diagnose")  # the runner's own: the brief diagnosis after the build
    for key, value in options.items():
        if key not in known:
            raise PbrlError(f"{where}: build option '{key}' is unknown (known: {', '.join(known)})")
        ann = "bool" if key == "diagnose" else str(params[key].annotation)
        if ann.startswith("bool"):
            ok = isinstance(value, bool)
            want = "true or false"
        elif ann.startswith("int"):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            want = "a non-negative integer"
        elif ann.startswith("str"):
            ok = isinstance(value, str)
            want = "a string"
        else:
            ok, want = True, ""
        if not ok:
            raise PbrlError(f"{where}: build option '{key}' must be {want}, got {value!r}")
    if options.get("overwrite"):
        raise PbrlError(
            f"{where}: build option 'overwrite' is not allowed in a suite "
            "(rebuild by hand: pbrl datasets build ... --overwrite)"
        )


def _card_mismatch(ds_id: str, options: dict[str, Any]) -> str | None:
    """The first content option (episodes, horizon, seed, steps) that the suite sets and the
    stored dataset's card records differently, as 'name: stored X, suite Y'."""

    try:
        card = read_minari_metadata(ds_id).get(CARD_KEY) or {}
    except PbrlError:
        return None
    for key in CONTENT_OPTIONS:
        if key in options and key in card and card[key] != options[key]:
            return (
                f"{key}: the stored dataset has {card[key]!r}, the suite asks for {options[key]!r}"
            )
    return None


def check_suite(suite: Suite, jobs: list[Job]) -> list[DatasetEntry]:
    """Everything a suite names, before any dataset build, labelling or job file: teachers,
    the selector, each dataset entry (a local dataset, or a task + kind + build options a
    generator accepts; a stored dataset built with other content options is refused).
    Agents, presets and overrides are checked when the job list is planned.
    Returns the dataset entries that must be built."""

    where = suite.source or f"suite '{suite.name}'"
    checked: set[str] = set()
    for j in jobs:
        key = json.dumps([j.agent, j.preset, j.overrides], sort_keys=True, default=str)
        if key not in checked:  # a dataset entry's overrides meet the agent's config here
            checked.add(key)
            try:
                make_config(
                    load_agent_module(j.agent),
                    j.preset,
                    {k: str(v) for k, v in j.overrides.items()},
                )
            except PbrlError as e:
                raise PbrlError(f"{where}: agent '{j.label}' on {j.dataset}: {e}") from e
        online_mod = bool(getattr(load_agent_module(j.agent), "ONLINE", False))
        if online_mod != j.online:
            what = "an online learner" if online_mod else "an offline learner"
            data = "a dataset" if online_mod else "an 'online' task entry"
            raise PbrlError(
                f"{where}: agent '{j.label}' is {what} and cannot run on {data} ({j.dataset}); "
                "keep online and offline learners in separate suites"
            )
    if any(j.uses_prefs for j in jobs):
        for t in sorted({j.teacher for j in jobs if j.teacher is not None}):
            try:
                make_teacher(t)
            except PbrlError as e:
                raise PbrlError(f"{where}: field 'teachers': {e}") from e
        if any(j.online for j in jobs):
            # online learners select their own queries with their reward model
            check_selector(suite.selector, has_ensemble=True)
        elif suite.selector not in RUNNER_SELECTORS:
            raise PbrlError(
                f"{where}: field 'selector' {suite.selector!r}: the runner labels with "
                f"{' or '.join(RUNNER_SELECTORS)} (ensemble selectors need a reward model)"
            )
    to_build = []
    for i, entry in enumerate(suite.datasets):
        w = f"{where}: datasets[{i}]"
        if entry.online:
            try:
                get_task(str(entry.task))
            except PbrlError as e:
                raise PbrlError(f"{w}: {e}") from e
            if entry.build:
                raise PbrlError(f"{w}: an 'online' entry builds nothing; remove 'build'")
            continue
        try:
            ds_id = entry.dataset_id()
            if entry.task is not None:
                generated_dataset_id(entry.task, entry.kind or "")
                get_task(entry.task)
        except PbrlError as e:
            raise PbrlError(f"{w}: {e}") from e
        if entry.task is not None:
            gen = generator_for(entry.task)
            kinds = getattr(gen, "KINDS", None)
            if kinds is not None and entry.kind not in kinds:
                raise PbrlError(f"{w}: unknown kind '{entry.kind}' (known: {', '.join(kinds)})")
            _check_build_options(w, gen, entry.build)
        if dataset_exists(ds_id):
            if entry.task is not None:
                why = _card_mismatch(ds_id, entry.build)
                if why:
                    raise PbrlError(
                        f"{w}: dataset '{ds_id}' exists but was built differently ({why}); "
                        "rebuild it with `pbrl datasets build --overwrite`, or change the suite"
                    )
            continue
        if entry.task is None:
            raise PbrlError(
                f"{w}: dataset '{ds_id}' is not available locally "
                "(download it first, or name a task + kind to generate)"
            )
        to_build.append(entry)
    return to_build


# --------------------------------------------------------------------------------------
# Preparation: datasets and preference files (in this process, before any run starts)
# --------------------------------------------------------------------------------------
def ensure_datasets(
    suite: Suite, echo: Callable[[str], None], out: Path, to_build: list[DatasetEntry] | None = None
) -> None:
    """Build every generated dataset the suite names that is not in the local store.

    Each build holds a lock in ``<out>/.locks``: a second sweep on the same folder waits for
    it and then finds the dataset built."""
    if to_build is None:
        to_build = [
            e for e in suite.datasets if not e.online and not dataset_exists(e.dataset_id())
        ]
    for entry in to_build:
        ds_id = entry.dataset_id()
        if entry.task is None:
            raise PbrlError(f"{suite.source}: dataset '{ds_id}' is not available locally")
        key = hashlib.sha256(ds_id.encode()).hexdigest()[:16]
        with claim(lock_path(out, f"dataset-{key}"), wait=True):
            if dataset_exists(ds_id):
                echo(f"dataset {ds_id} was built by another process")
                continue
            echo(f"building dataset {ds_id} ...")
            t0 = time.time()
            build_dataset(entry.task, entry.kind, entry.build)  # type: ignore[arg-type]
            echo(f"built {ds_id} in {time.time() - t0:.0f}s")


def dataset_exists(ds_id: str) -> bool:

    try:
        load_dataset(ds_id)
    except PbrlError:
        return False
    return True


def build_dataset(task: str, kind: str, options: dict[str, Any]) -> str:
    """Generate a dataset with its domain's generator (MetaWorld scripted, or SAC), then its
    brief diagnosis unless the suite's ``build`` says ``diagnose = false``."""

    gen = generator_for(task)
    opts = dict(options)
    diagnose = opts.pop("diagnose", True)
    dataset_id = str(gen.build(task, kind, **opts))
    if diagnose:
        brief_diagnosis(dataset_id, gen, opts.get("workers"))
    return dataset_id


def check_cached_prefs(jobs: list[Job], out: Path, *, only_local: bool = True) -> None:
    """Refuse cached preference files (``<out>/prefs/<key>.npz``) labelled from another
    build of their dataset: the runs beside them were trained on the old data, so the
    sweep stops with one line naming the file instead of mixing the two in one table.
    ``only_local`` skips datasets not in the store yet (checked again after the build)."""

    cached: dict[Path, Job] = {}
    for job in jobs:
        p = prefs_path(out, job)
        if p is not None and p.is_file():
            cached.setdefault(p, job)
    datasets: dict[str, Any] = {}
    for p, job in sorted(cached.items(), key=lambda kv: kv[1].dataset):
        if job.dataset not in datasets:
            if only_local and not dataset_exists(job.dataset):
                continue
            datasets.clear()
            datasets[job.dataset] = load_dataset(job.dataset)
        try:
            check_prefs_dataset(load_preferences(p), datasets[job.dataset], where=str(p))
        except PbrlError as e:
            raise type(e)(
                f"{e} (the runs in {out} used the old data: choose another --out, "
                "or remove that folder to start over)"
            ) from e


def ensure_prefs(jobs: list[Job], out: Path, echo: Callable[[str], None]) -> None:
    """Label each distinct (dataset, teacher, budget, segment, selector, seed) once.

    Each file is written under a lock in ``<out>/.locks``: a second sweep on the same
    folder waits for it and then uses the file instead of labelling again. Cached files
    labelled from another build of their dataset are refused (:func:`check_cached_prefs`)."""

    check_cached_prefs(jobs, out, only_local=False)
    todo: dict[Path, Job] = {}
    for job in jobs:
        p = prefs_path(out, job)
        if p is not None and not p.exists():
            todo.setdefault(p, job)
    cache: dict[str, Any] = {}
    for p, job in todo.items():
        with claim(lock_path(out, f"prefs-{p.stem}"), wait=True):
            if p.exists():
                continue  # labelled by another process meanwhile
            if job.dataset not in cache:
                cache.clear()
                cache[job.dataset] = load_dataset(job.dataset)
            data = label_dataset(
                cache[job.dataset],
                job.teacher,
                job.budget,
                job.segment,
                job.label_seed,
                selector=job.selector or "uniform",
            )
            save_preferences(data, p)
        echo(f"labelled {job.budget} queries of {job.dataset} with '{job.teacher}' -> {p.name}")


# --------------------------------------------------------------------------------------
# Running one job (inside its own process)
# --------------------------------------------------------------------------------------
class RunBusy(PbrlError):
    """The run is claimed by another live process."""


def _train_spec(job: Job, out: Path, device: str, eval_workers: int = 0) -> TrainSpec:
    p = prefs_path(out, job)
    online = job.online and job.uses_prefs
    return TrainSpec(
        agent=job.agent,
        dataset="" if job.online else job.dataset,
        task=job.task,
        teacher=job.teacher if online else None,
        budget=int(job.budget or 0) if online else 0,
        segment=int(job.segment or 50) if online else 50,
        selector=(job.selector or "uniform") if online else "uniform",
        prefs=None if p is None else str(p),
        seed=job.seed,
        steps=job.steps,
        device=device,
        preset=job.preset,
        overrides={k: str(v) for k, v in job.overrides.items()},
        eval_every=job.eval_every,
        eval_episodes=job.eval_episodes,
        eval_workers=eval_workers,
        out=str(out / job.run_id),
        overwrite=True,  # what is there is unfinished or stale, and this process holds it
    )


def run_job(job: Job, out: Path, device: str, eval_workers: int = 0) -> dict[str, Any]:
    """Claim the run, train it (:func:`pbrl.run.train.train` stages it in a hidden folder and
    publishes ``<out>/<run_id>`` only complete) and release the claim.

    Raises :class:`RunBusy` when another process holds the run.
    """
    return run_jobs([job], out, device, eval_workers)[0]


def run_jobs(
    jobs: list[Job], out: Path, device: str, eval_workers: int = 0
) -> list[dict[str, Any]]:
    """Claim every run and train them: one as :func:`run_job` describes, several (seeds of
    one job, ``--stack-seeds``) as one stacked run (:func:`pbrl.run.train.train_stacked`)
    that still publishes one folder per run. Runs already finished are skipped.
    ``eval_workers`` processes step the evaluation envs (:class:`pbrl.envs.pool.EnvPool`).

    Raises :class:`RunBusy` when another process holds any of them (none is trained then).
    """
    with contextlib.ExitStack() as stack:
        for job in jobs:
            if not stack.enter_context(claim(lock_path(out, job.run_id))):
                raise RunBusy(f"run {job.run_id} is being trained by another process")
        todo = [j for j in jobs if not is_finished(out, j)]
        for job in todo:
            clean_partial(out, job.run_id)  # a killed process's staging folders for this run
        if len(todo) > 1:
            train_stacked(
                [_train_spec(j, out, device, eval_workers) for j in todo],
                extra_files=[{"job.json": asdict(j)} for j in todo],
            )
        elif todo:
            train(
                _train_spec(todo[0], out, device, eval_workers),
                extra_files={"job.json": asdict(todo[0])},
            )
        return [json.loads((out / j.run_id / "summary.json").read_text()) for j in jobs]


def worker_command(
    job_files: list[Path], out: Path, device: str, eval_workers: int = 0
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pbrl.run.runner",
        str(out),
        device,
        str(eval_workers),
        *map(str, job_files),
    ]


def _worker_main(argv: list[str]) -> int:
    out, device, eval_workers = Path(argv[0]), argv[1], int(argv[2])
    job_files = [Path(a) for a in argv[3:]]
    # pbrl's progress at INFO in the run's log; other libraries only from WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("pbrl").setLevel(logging.INFO)
    jobs = [job_from_dict(json.loads(f.read_text())) for f in job_files]
    try:
        run_jobs(jobs, out, device, eval_workers)
    except RunBusy as e:
        print(e, file=sys.stderr)
        return EXIT_BUSY
    return 0


def stack_groups(jobs: list[Job], k: int) -> list[list[Job]]:
    """Jobs grouped for ``--stack-seeds k``: runs of one job that differ only in their seed
    (and label seed), k at most per group, in plan order, when the learner has a stacked
    path (``fit_stacked``) and learns offline; every other job alone."""
    if k <= 1:
        return [[j] for j in jobs]
    groups: dict[str, list[list[Job]]] = {}
    order: list[list[Job]] = []
    stackable: dict[str, bool] = {}
    for job in jobs:
        if job.agent not in stackable:
            stackable[job.agent] = hasattr(load_agent_module(job.agent), "fit_stacked")
        if job.online or not stackable[job.agent]:
            order.append([job])
            continue
        ident = job.identity()
        ident.pop("seed")
        ident.pop("label_seed")
        key = json.dumps(ident, sort_keys=True, default=str)
        chunks = groups.setdefault(key, [])
        if chunks and len(chunks[-1]) < k:
            chunks[-1].append(job)
        else:
            chunks.append([job])
            order.append(chunks[-1])
    return order


def default_stack_seeds(device: str, seeds: int) -> int:
    """``--stack-seeds``' default: every seed of a job in one process on CUDA, 1 on CPU."""
    return max(1, seeds) if resolve_device(device.split(",")[0]).startswith("cuda") else 1


def default_eval_workers(device: str, workers: int, cpus: int | None = None) -> int:
    """``--eval-workers``' default: on CUDA, the cores left to each run process beside its
    own (``cpus // workers - 1``; 0 when that is under 2); 0 on CPU, where the runs already
    take the cores."""
    if not resolve_device(device.split(",")[0]).startswith("cuda"):
        return 0
    spare = (cpus or os.cpu_count() or 1) // max(1, workers) - 1
    return spare if spare >= 2 else 0


# --------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run_id -> last lines of its log
    # Runs another process (a concurrent sweep on the same folder) finished meanwhile.
    elsewhere: list[str] = field(default_factory=list)


Assigned = tuple[list[Job], list[Path], str]


def run_sweep(
    jobs: list[Job],
    out: Path,
    *,
    workers: int = 1,
    device: str = "cpu",
    backend: str = "local",
    ray_address: str | None = None,
    progress: Any = None,
    stack_seeds: int = 1,
    eval_workers: int = 0,
) -> SweepResult:
    """Run every unfinished job; returns what finished, was skipped and failed.

    With ``stack_seeds`` K > 1, up to K seeds of one job run as one process training them
    stacked (:func:`stack_groups`); each still gets its own run folder. ``eval_workers``
    processes step each run's evaluation envs. Safe beside other
    sweeps on the same ``out``: runs they hold are waited for (see the module docstring)."""
    devices = check_sweep_options(workers=workers, backend=backend, device=device)
    if isinstance(stack_seeds, bool) or not isinstance(stack_seeds, int) or stack_seeds < 1:
        raise PbrlError(f"--stack-seeds: a whole number of at least 1, got {stack_seeds!r}")
    check_eval_workers(eval_workers)
    out.mkdir(parents=True, exist_ok=True)
    clean_partial(out)
    result = SweepResult()
    todo = []
    for job in jobs:
        if is_finished(out, job):
            result.skipped.append(job.run_id)
        else:
            todo.append(job)
    jobdir = out / ".jobs"
    jobdir.mkdir(exist_ok=True)
    assigned: list[Assigned] = []
    for i, group in enumerate(stack_groups(todo, stack_seeds)):
        files = []
        for job in group:
            jf = jobdir / f"{job.run_id}.json"
            write_json_atomic(jf, asdict(job))
            files.append(jf)
        assigned.append((group, files, devices[i % len(devices)]))
    if progress is not None:
        progress.start(total=len(jobs), skipped=len(result.skipped), workers=workers)
    if backend == "local":
        _run_local(assigned, out, workers, result, progress, eval_workers)
    else:
        _run_ray(assigned, out, workers, ray_address, result, progress, eval_workers)
    if progress is not None:
        progress.stop()
    return result


def _split_claimed(item: Assigned, out: Path, waiting: _Waiting) -> Assigned | None:
    """The runs of ``item`` no other process holds (the held ones go to ``waiting``)."""
    group, files, dev = item
    keep_jobs, keep_files = [], []
    for job, jf in zip(group, files, strict=True):
        if is_claimed(out, job.run_id):
            waiting.add(([job], [jf], dev))
        else:
            keep_jobs.append(job)
            keep_files.append(jf)
    return (keep_jobs, keep_files, dev) if keep_jobs else None


def _record(
    out: Path, job: Job, rc: int, log_text: str, result: SweepResult, progress: Any
) -> None:
    failed_dir = out / ".failed"
    if rc == 0 and is_finished(out, job):
        result.finished.append(job.run_id)
        (failed_dir / f"{job.run_id}.log").unlink(missing_ok=True)
        if progress is not None:
            progress.done(job, ok=True)
        return
    tail = "\n".join(log_text.strip().splitlines()[-15:])
    reason = f"exit code {rc}" + (" (killed by a signal)" if rc < 0 else "")
    result.failed[job.run_id] = f"{reason}\n{tail}"
    failed_dir.mkdir(exist_ok=True)
    with atomic_path(failed_dir / f"{job.run_id}.log") as tmp:
        tmp.write_text(f"{job.label} on {job.dataset} seed {job.seed}: {reason}\n{log_text}")
    if progress is not None:
        progress.done(job, ok=False)


class _Waiting:
    """Runs another process holds: re-probed about once a second until their lock frees."""

    def __init__(self, out: Path, result: SweepResult, progress: Any) -> None:
        self.out, self.result, self.progress = out, result, progress
        self.items: list[Assigned] = []
        self.last = 0.0

    def add(self, item: Assigned) -> None:
        self.items.append(item)
        if self.progress is not None:
            for job in item[0]:
                self.progress.waiting(job)

    def take_ready(self) -> list[Assigned]:
        """Runs whose holder let go and that are still unfinished (to run here); runs it
        finished are recorded as finished elsewhere."""
        if not self.items or time.time() - self.last < 1.0:
            return []
        self.last = time.time()
        ready, still = [], []
        for item in self.items:
            job = item[0][0]
            if is_claimed(self.out, job.run_id):
                still.append(item)
            elif is_finished(self.out, job):
                self.result.elsewhere.append(job.run_id)
                if self.progress is not None:
                    self.progress.done(job, ok=True, elsewhere=True)
            else:
                ready.append(item)  # the other process failed or died: train it here
        self.items = still
        return ready


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    # One run per core: keep torch and BLAS from oversubscribing the machine.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    return env


def _run_local(
    assigned: list[Assigned],
    out: Path,
    workers: int,
    result: SweepResult,
    progress: Any,
    eval_workers: int = 0,
) -> None:
    pending = deque(assigned)
    waiting = _Waiting(out, result, progress)
    running: list[tuple[Assigned, subprocess.Popen[bytes], Path]] = []
    logdir = out / ".logs"
    logdir.mkdir(exist_ok=True)
    try:
        while pending or running or waiting.items:
            pending.extend(waiting.take_ready())
            while pending and len(running) < workers:
                item = _split_claimed(pending.popleft(), out, waiting)
                if item is None:
                    continue
                group, files, dev = item
                # One log per process and sweep: two sweeps never share a file.
                lf = logdir / f"{group[0].run_id}.{os.getpid()}.log"
                with open(lf, "wb") as fh:
                    proc = subprocess.Popen(
                        worker_command(files, out, dev, eval_workers),
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        env=_child_env(),
                    )
                running.append((item, proc, lf))
                if progress is not None:
                    for job in group:
                        progress.started(job)
            time.sleep(0.2)
            still = []
            for item, proc, lf in running:
                rc = proc.poll()
                if rc is None:
                    still.append((item, proc, lf))
                    continue
                text = lf.read_text(errors="replace")
                lf.unlink(missing_ok=True)
                if rc == EXIT_BUSY:  # claimed by another sweep between the probe and the claim
                    for job, jf in zip(item[0], item[1], strict=True):
                        if progress is not None:
                            progress.stopped(job)
                        waiting.add(([job], [jf], item[2]))
                    continue
                for job in item[0]:
                    _record(out, job, rc, text, result, progress)
            running = still
    except BaseException:
        for _, proc, _ in running:
            proc.kill()
        raise


def _run_ray(
    assigned: list[Assigned],
    out: Path,
    workers: int,
    address: str | None,
    result: SweepResult,
    progress: Any,
    eval_workers: int = 0,
) -> None:
    try:
        import ray
    except ImportError as e:
        raise PbrlError("--backend ray needs Ray: pip install 'pbrl[ray]'") from e

    started_here = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        started_here = True

    @ray.remote(num_cpus=1)
    def _remote(cmd: list[str], env: dict[str, str]) -> tuple[int, str]:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        return proc.returncode, proc.stdout + proc.stderr

    waiting = _Waiting(out, result, progress)
    refs: dict[Any, Assigned] = {}

    def submit(item: Assigned) -> None:
        kept = _split_claimed(item, out, waiting)
        if kept is None:
            return
        group, files, dev = kept
        opts: dict[str, Any] = {}
        if dev.startswith("cuda"):
            opts["num_gpus"] = 1.0 / max(1, workers)
        refs[
            _remote.options(**opts).remote(
                worker_command(files, out, dev, eval_workers), _child_env()
            )
        ] = kept
        if progress is not None:
            for job in group:
                progress.started(job)

    try:
        for item in assigned:
            submit(item)
        while refs or waiting.items:
            for item in waiting.take_ready():
                submit(item)
            if not refs:
                time.sleep(0.2)
                continue
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for r in ready:
                item = refs.pop(r)
                try:
                    rc, text = ray.get(r)
                except Exception as e:  # noqa: BLE001 - a lost worker is one failed run
                    rc, text = 1, repr(e)
                if rc == EXIT_BUSY:
                    for job, jf in zip(item[0], item[1], strict=True):
                        if progress is not None:
                            progress.stopped(job)
                        waiting.add(([job], [jf], item[2]))
                    continue
                for job in item[0]:
                    _record(out, job, rc, text, result, progress)
    finally:
        if started_here:
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
