"""The benchmark runner: datasets -> preference files -> one process per training run.

Layout of an output folder (the report reads only these files, never folder names)::

    <out>/<run_id>/{job.json, config.json, metrics.jsonl, eval.csv, summary.json, checkpoint.pt}
    <out>/prefs/<key>.npz            preference files shared by runs with the same labels
    <out>/.failed/<run_id>.log       why a run failed (removed when it later succeeds)

Guarantees:

- a run's id is a hash of its resolved job (:class:`pbrl.suite.Job`); a folder
  ``<out>/<run_id>`` exists only for a finished run (it is trained in a hidden temporary
  folder and renamed when ``summary.json`` is written), so a killed sweep resumes where it
  stopped and nothing half-written is ever read;
- each run is its own OS process: a crash, a segfault or a CUDA out-of-memory loses that
  run only; failures are listed at the end and retried on the next invocation;
- devices are assigned round-robin; several runs share a GPU when ``--workers`` exceeds
  the number of devices;
- ``backend="ray"`` sends the same job list to a Ray cluster (a local one when no address
  is given); each Ray task runs the same worker command, so the files are identical.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pbrl.errors import PbrlError
from pbrl.suite import Job, Suite, expand
from pbrl.utils import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"


# --------------------------------------------------------------------------------------
# Job bookkeeping
# --------------------------------------------------------------------------------------
def job_from_dict(d: dict[str, Any]) -> Job:
    return Job(**d)


def resolved_agent_config(job: Job) -> dict[str, Any]:
    """The job's agent config as ``config.json`` stores it (preset + overrides resolved)."""
    from pbrl.agent import load_agent_module, make_config
    from pbrl.train import _jsonable

    mod = load_agent_module(job.agent)
    cfg = make_config(mod, job.preset, {k: str(v) for k, v in job.overrides.items()})
    return json.loads(json.dumps(_jsonable(cfg), sort_keys=True))


def stale_fields(folder: Path, job: Job) -> list[str]:
    """Agent-config fields whose stored value differs from what the job resolves to now.

    A run id hashes the job (agent, preset NAME, overrides, ...), not what the preset
    contains, so a finished run trained under an older preset keeps its id; this compares
    the stored ``config.json`` with today's resolution. Empty when current (or unreadable:
    a folder without a readable config is judged by ``summary.json`` alone).
    """
    try:
        stored = json.loads((folder / "config.json").read_text())["agent_config"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    now = resolved_agent_config(job)
    keys = sorted(set(stored) | set(now))
    return [k for k in keys if stored.get(k, "<absent>") != now.get(k, "<absent>")]


def is_finished(out: Path, job: Job) -> bool:
    """A run counts as done when its folder has ``summary.json`` and its stored agent config
    is what the job resolves to today (otherwise it is stale and trains again)."""
    folder = out / job.run_id
    if not (folder / "summary.json").is_file():
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


def clean_partial(out: Path) -> int:
    """Remove temporary run folders left by a killed sweep; returns how many."""
    n = 0
    if out.is_dir():
        for p in out.iterdir():
            if p.name.startswith(TMP_PREFIX) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
                n += 1
    return n


def prefs_path(out: Path, job: Job) -> Path | None:
    key = job.prefs_key()
    return None if key is None else out / "prefs" / f"{key}.npz"


def agent_needs_prefs(name: str, preset: str | None, overrides: dict[str, Any]) -> bool:
    """Whether a learner reads preferences, asked of the learner itself.

    The agent is built on a 1-D placeholder spec (cheap: tiny tensors) and its
    ``requires_preferences`` attribute read (default True, see pbrl/agent.py).
    """
    import numpy as np

    from pbrl.agent import AgentSpec, load_agent_module, make_config

    mod = load_agent_module(name)
    cfg = make_config(mod, preset, {k: str(v) for k, v in overrides.items()})
    spec = AgentSpec(obs_dim=3, act_dim=2, act_low=-np.ones(2), act_high=np.ones(2), device="cpu")
    agent = mod.Agent(cfg, spec)
    return bool(getattr(agent, "requires_preferences", True))


def plan(suite: Suite, seeds: tuple[int, ...] | None = None) -> list[Job]:
    return expand(
        suite,
        seeds=seeds,
        prefs_needed=lambda a: agent_needs_prefs(a.name, a.preset, a.overrides),
    )


# --------------------------------------------------------------------------------------
# Preparation: datasets and preference files (in this process, before any run starts)
# --------------------------------------------------------------------------------------
def ensure_datasets(suite: Suite, echo: Callable[[str], None]) -> None:
    """Build every generated dataset the suite names that is not in the local store."""
    for entry in suite.datasets:
        ds_id = entry.dataset_id()
        if dataset_exists(ds_id):
            continue
        if entry.task is None:
            raise PbrlError(
                f"{suite.source}: dataset '{ds_id}' is not available locally "
                "(download it first, or name a task + kind to generate)"
            )
        echo(f"building dataset {ds_id} ...")
        t0 = time.time()
        build_dataset(entry.task, entry.kind, entry.build)
        echo(f"built {ds_id} in {time.time() - t0:.0f}s")


def dataset_exists(ds_id: str) -> bool:
    from pbrl.datasets.registry import load_dataset

    try:
        load_dataset(ds_id)
    except PbrlError:
        return False
    return True


def build_dataset(task: str, kind: str, options: dict[str, Any]) -> str:
    """Generate a dataset with its domain's generator (MetaWorld scripted, or SAC)."""
    domain = task.split("/", 1)[0]
    if domain == "metaworld":
        from pbrl.datasets import metaworld_gen as gen
    elif domain in ("mujoco", "dmc"):
        from pbrl.datasets import sb3_gen as gen  # type: ignore[no-redef]
    else:
        raise PbrlError(f"dataset for task '{task}': no local generator for domain '{domain}'")
    return str(gen.build(task, kind, **options))


def ensure_prefs(jobs: list[Job], out: Path, echo: Callable[[str], None]) -> None:
    """Label each distinct (dataset, teacher, budget, segment, selector, seed) once."""
    from pbrl.datasets.registry import load_dataset
    from pbrl.prefs import label_dataset, save_preferences

    todo: dict[Path, Job] = {}
    for job in jobs:
        p = prefs_path(out, job)
        if p is not None and not p.exists():
            todo.setdefault(p, job)
    cache: dict[str, Any] = {}
    for p, job in todo.items():
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
def run_job(job: Job, out: Path, device: str) -> dict[str, Any]:
    """Train one job into a hidden temporary folder, then rename it to ``<out>/<run_id>``."""
    from pbrl.train import TrainSpec, train

    final = out / job.run_id
    if is_finished(out, job):
        return json.loads((final / "summary.json").read_text())
    p = prefs_path(out, job)
    tmp = out / f"{TMP_PREFIX}{job.run_id}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        (tmp / "job.json").write_text(json.dumps(asdict(job), indent=2, sort_keys=True))
        spec = TrainSpec(
            agent=job.agent,
            dataset=job.dataset,
            prefs=None if p is None else str(p),
            seed=job.seed,
            steps=job.steps,
            device=device,
            preset=job.preset,
            overrides={k: str(v) for k, v in job.overrides.items()},
            eval_every=job.eval_every,
            eval_episodes=job.eval_episodes,
            out=str(tmp),
        )
        summary = train(spec)
        if not (tmp / "summary.json").is_file():
            raise PbrlError(f"run {job.run_id}: training returned without writing summary.json")
        if final.exists():  # a folder without summary.json cannot be a finished run
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def worker_command(job_file: Path, out: Path, device: str) -> list[str]:
    return [sys.executable, "-m", "pbrl.runner", str(job_file), str(out), device]


def _worker_main(argv: list[str]) -> int:
    job_file, out, device = Path(argv[0]), Path(argv[1]), argv[2]
    logging.basicConfig(level=logging.WARNING)
    job = job_from_dict(json.loads(job_file.read_text()))
    run_job(job, out, device)
    return 0


# --------------------------------------------------------------------------------------
# Sweeps
# --------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run_id -> last lines of its log


def parse_devices(device: str) -> list[str]:
    """'cpu' -> ['cpu']; 'cuda' -> every visible GPU; 'cuda:0,1' -> ['cuda:0', 'cuda:1']."""
    from pbrl.utils import resolve_device

    if device.startswith("cuda:") and "," in device:
        ids = device.split(":", 1)[1].split(",")
        devs = [f"cuda:{i.strip()}" for i in ids if i.strip()]
        resolve_device(devs[0])
        return devs
    d = resolve_device(device)
    if d == "cuda":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cuda"]
    return [d]


def run_sweep(
    jobs: list[Job],
    out: Path,
    *,
    workers: int = 1,
    device: str = "cpu",
    backend: str = "local",
    ray_address: str | None = None,
    progress: Any = None,
) -> SweepResult:
    """Run every unfinished job; returns what finished, was skipped and failed."""
    out.mkdir(parents=True, exist_ok=True)
    clean_partial(out)
    result = SweepResult()
    todo = []
    for job in jobs:
        if is_finished(out, job):
            result.skipped.append(job.run_id)
        else:
            todo.append(job)
    devices = parse_devices(device)
    jobdir = out / ".jobs"
    jobdir.mkdir(exist_ok=True)
    assigned: list[tuple[Job, Path, str]] = []
    for i, job in enumerate(todo):
        jf = jobdir / f"{job.run_id}.json"
        write_json_atomic(jf, asdict(job))
        assigned.append((job, jf, devices[i % len(devices)]))
    if progress is not None:
        progress.start(total=len(jobs), skipped=len(result.skipped))
    if backend == "local":
        _run_local(assigned, out, max(1, workers), result, progress)
    elif backend == "ray":
        _run_ray(assigned, out, max(1, workers), ray_address, result, progress)
    else:
        raise PbrlError(f"--backend {backend}: unknown backend (local or ray)")
    if progress is not None:
        progress.stop()
    return result


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


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    # One run per core: keep torch and BLAS from oversubscribing the machine.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MKL_NUM_THREADS", "1")
    return env


def _run_local(
    assigned: list[tuple[Job, Path, str]],
    out: Path,
    workers: int,
    result: SweepResult,
    progress: Any,
) -> None:
    pending = list(assigned)
    running: list[tuple[Job, subprocess.Popen[bytes], Path]] = []
    logdir = out / ".logs"
    logdir.mkdir(exist_ok=True)
    try:
        while pending or running:
            while pending and len(running) < workers:
                job, jf, dev = pending.pop(0)
                lf = logdir / f"{job.run_id}.log"
                with open(lf, "wb") as fh:
                    proc = subprocess.Popen(
                        worker_command(jf, out, dev),
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        env=_child_env(),
                    )
                running.append((job, proc, lf))
                if progress is not None:
                    progress.started(job)
            time.sleep(0.2)
            still = []
            for job, proc, lf in running:
                rc = proc.poll()
                if rc is None:
                    still.append((job, proc, lf))
                    continue
                _record(out, job, rc, lf.read_text(errors="replace"), result, progress)
                lf.unlink(missing_ok=True)
            running = still
    except BaseException:
        for _, proc, _ in running:
            proc.kill()
        raise


def _run_ray(
    assigned: list[tuple[Job, Path, str]],
    out: Path,
    workers: int,
    address: str | None,
    result: SweepResult,
    progress: Any,
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

    try:
        refs = {}
        for job, jf, dev in assigned:
            opts: dict[str, Any] = {}
            if dev.startswith("cuda"):
                opts["num_gpus"] = 1.0 / max(1, workers)
            refs[_remote.options(**opts).remote(worker_command(jf, out, dev), _child_env())] = job
            if progress is not None:
                progress.started(job)
        remaining = list(refs)
        while remaining:
            ready, remaining = ray.wait(remaining, num_returns=1)
            for r in ready:
                job = refs[r]
                try:
                    rc, text = ray.get(r)
                except Exception as e:  # noqa: BLE001 - a lost worker is one failed run
                    rc, text = 1, repr(e)
                _record(out, job, rc, text, result, progress)
    finally:
        if started_here:
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
