"""Train one learner on one dataset (+ preference file): the body of ``pbrl train``.

:func:`train` resolves the device, loads the dataset and preferences, builds the agent
from its module, strips the ground-truth reward unless the agent declares
``requires_true_reward``, runs ``agent.fit(ctx)`` and, between its yields, logs metrics,
evaluates on a separately seeded env (:mod:`pbrl.run.evaluate`) and checkpoints.

Files written into ``out`` (each atomically):

- ``config.json``: the resolved spec, the agent's config, versions, device, scale;
- ``metrics.jsonl``: one JSON object per yielded metric dict (plus ``wall_s``);
- ``eval.csv``: step, score, return_mean, return_std, success_rate, episodes, wall_s;
- ``checkpoint.pt``: ``{"agent": agent.state_dict(), "step": ..., "config": ...}``;
- ``summary.json``: written LAST; its presence means the run finished.

The run is trained in a hidden staging folder beside ``out`` (``.tmp-<name>-<pid>``, see
:func:`staging_dir`) and renamed to ``out`` only when every file is written, so ``out``
never holds a half-written run: an error (or a kill) leaves ``out`` as it was. An existing
finished run at ``out`` is refused unless ``overwrite`` is set (then it is replaced at the
end, not at the start). Every field of the spec and the output path are checked before
anything is loaded or written (:func:`check_spec`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pbrl
from pbrl.datasets import registry
from pbrl.envs import find_task, get_task
from pbrl.envs.pool import EnvPool, check_eval_workers
from pbrl.errors import DataError, PbrlError
from pbrl.learn.api import AgentSpec, FitContext, load_agent_module, make_config
from pbrl.learn.stack import fit_stacked_or_in_turn
from pbrl.prefs import check_prefs_dataset, check_selector, load_preferences
from pbrl.run.evaluate import evaluate_many
from pbrl.teachers import make_teacher
from pbrl.utils import (
    atomic_path,
    check_output_dir,
    check_seed,
    format_duration,
    jsonable,
    keep_freed_memory,
    make_output_dir,
    resolve_device,
    seed_everything,
    write_json_atomic,
)

logger = logging.getLogger(__name__)

EVAL_COLUMNS = (
    "step",
    "score",
    "return_mean",
    "return_std",
    "success_rate",
    "episodes",
    "wall_s",
)


@dataclass
class TrainSpec:
    """One training run. ``overrides`` are ``--agent.FIELD VALUE`` strings (or values)."""

    agent: str
    dataset: str
    prefs: str | None
    seed: int
    steps: int
    device: str = "auto"
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    eval_every: int = 5000
    eval_episodes: int = 10
    log_interval: int = 500
    out: str | None = None
    task: str | None = None
    overwrite: bool = False
    """Replace a finished run already at ``out`` (at the end, once this one is complete)."""
    allow_dataset_mismatch: bool = False
    """Train on labels made on another dataset, or on its content before a rebuild (a
    warning says so; :func:`pbrl.prefs.check_prefs_dataset`)."""
    teacher: str | None = None
    """Online learners: the teacher they ask (a preset, composition or preset file)."""
    budget: int = 0
    """Online learners: the most queries they may ask."""
    segment: int = 50
    """Online learners: steps per queried segment."""
    selector: str = "uniform"
    """Online learners: the query selector after their first session."""
    eval_workers: int = 0
    """Processes that step the evaluation envs (0: this one); the results do not depend on
    it (:class:`pbrl.envs.pool.EnvPool`)."""


STAGING_PREFIX = ".tmp-"


def staging_dir(final: Path) -> Path:
    """The hidden folder beside ``final`` that this process trains into before publishing."""
    return final.parent / f"{STAGING_PREFIX}{final.name}-{os.getpid()}"


def check_run_folder(out: Path, overwrite: bool, what: str = "--out") -> None:
    """``out`` must be creatable and hold no run unless ``overwrite``: checked before work."""
    check_output_dir(out, what)
    if not out.is_dir():
        return
    if (out / "summary.json").exists() and not overwrite:
        raise PbrlError(
            f"{what} {out}: already holds a finished run (summary.json); "
            "pass --overwrite to replace it, or choose another folder"
        )
    if not overwrite and any(out.iterdir()):
        raise PbrlError(
            f"{what} {out}: the folder is not empty (and holds no finished run); "
            "pass --overwrite to replace it, or choose another folder"
        )


def check_spec(spec: TrainSpec) -> str:
    """Check every field of ``spec`` before anything is loaded or written; returns the device."""
    for name in ("steps", "seed", "eval_every", "eval_episodes", "log_interval", "eval_workers"):
        v = getattr(spec, name)
        if isinstance(v, bool) or not isinstance(v, int):
            raise PbrlError(f"--{name.replace('_', '-')}: must be an integer, got {v!r}")
    if spec.steps <= 0:
        raise PbrlError(f"--steps must be positive, got {spec.steps}")
    check_seed(spec.seed)
    if spec.eval_every < 0:
        raise PbrlError(
            f"--eval-every must be 0 (only at the end) or positive, got {spec.eval_every}"
        )
    if spec.eval_episodes < 0:
        raise PbrlError(
            f"--eval-episodes must be 0 (no evaluation) or positive, got {spec.eval_episodes}"
        )
    if spec.log_interval <= 0:
        raise PbrlError(f"--log-interval must be positive, got {spec.log_interval}")
    check_eval_workers(spec.eval_workers)
    device = resolve_device(spec.device)
    if spec.out:
        check_run_folder(Path(spec.out), spec.overwrite)
    return device


def _versions() -> dict[str, str]:

    return {
        "pbrl": getattr(pbrl, "__version__", "unknown"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def action_bounds(task_id: str | None, act_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """The task's action box, or [-1, 1] when the dataset names no task."""
    if task_id:
        _, space = get_task(task_id).spaces()
        return np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)
    return -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32)


def _load_inputs(spec: TrainSpec, dataset: Any, prefs: Any) -> tuple[Any, Any]:
    if prefs is None and spec.prefs:
        prefs = load_preferences(spec.prefs)
    if dataset is None:
        inline = getattr(prefs, "inline", None)
        if inline is not None and spec.dataset in ("", prefs.dataset_id):
            # Imported CPL / imitation labels carry their own segments (docs/preferences.md).
            dataset = inline
        elif not spec.dataset:
            raise PbrlError(f"--dataset: agent '{spec.agent}' trains on a dataset; pass --dataset")
        else:
            dataset = registry.load_dataset(spec.dataset)
    if prefs is not None:
        # Another dataset id, task, or content (rebuilt since labelling) is refused here.
        check_prefs_dataset(
            prefs,
            dataset,
            where=str(spec.prefs or "preferences"),
            allow_mismatch=spec.allow_dataset_mismatch,
        )
    return dataset, prefs


def train(
    spec: TrainSpec,
    *,
    dataset: Any = None,
    prefs: Any = None,
    extra_files: dict[str, Any] | None = None,
    queue: Any = None,
) -> dict[str, Any]:
    """Run ``spec`` and return the summary (also written to ``out/summary.json``).

    ``dataset`` (an OfflineDataset) and ``prefs`` (a PreferenceData) may be passed in
    memory instead of being loaded from ``spec.dataset`` / ``spec.prefs`` (tests, notebooks).
    ``extra_files`` ({name: JSON value}) are written into the run folder before it is
    published (the runner's ``job.json``). ``queue`` (a :class:`pbrl.learn.api.QueryQueue`,
    e.g. people in the labeling UI) is an online learner's teacher instead of
    ``spec.teacher``.
    """
    return train_agent(spec, dataset=dataset, prefs=prefs, extra_files=extra_files, queue=queue)[0]


def train_agent(
    spec: TrainSpec,
    *,
    dataset: Any = None,
    prefs: Any = None,
    extra_files: dict[str, Any] | None = None,
    queue: Any = None,
) -> tuple[dict[str, Any], Any]:
    """As :func:`train`, returning ``(summary, trained agent)``."""
    run = prepare(spec, dataset=dataset, prefs=prefs, queue=queue)
    return _run(run, extra_files)


@dataclass
class Prepared:
    """A run built and ready to fit: its spec, module, agent, context and config."""

    spec: TrainSpec
    mod: Any
    agent: Any
    ctx: FitContext
    config: dict[str, Any]
    t0: float
    log_every: int
    task_id: str | None
    ds: Any


def prepare(
    spec: TrainSpec, *, dataset: Any = None, prefs: Any = None, queue: Any = None
) -> Prepared:
    """Check ``spec``, load its inputs and build its agent (seeded with ``spec.seed``) and
    fit context; nothing is written."""
    t0 = time.time()
    device = check_spec(spec)
    if device == "cpu":
        # The networks are small: one torch thread per run is fastest, and several runs share
        # the cores (measured 15x slower with 2 threads on a busy 2-core machine;
        # docs/agents.md). PBRL_TORCH_THREADS overrides.
        torch.set_num_threads(int(os.environ.get("PBRL_TORCH_THREADS", "1")))
        keep_freed_memory()  # large activations reused, not page-faulted in every step
    mod = load_agent_module(spec.agent)
    if getattr(mod, "ONLINE", False):
        return _prepare_online(spec, mod, device, t0, queue)
    if queue is not None:
        raise PbrlError(f"agent '{spec.agent}' learns offline: a query queue teaches online agents")
    ds, pref_data = _load_inputs(spec, dataset, prefs)
    cfg = make_config(mod, spec.preset, {k: v for k, v in spec.overrides.items()})
    task_id = spec.task or ds.task_id
    low, high = action_bounds(task_id, ds.act_dim)
    rng = seed_everything(spec.seed)
    agent = mod.Agent(cfg, AgentSpec(ds.obs_dim, ds.act_dim, low, high, device))
    needs_truth = bool(getattr(agent, "requires_true_reward", False))
    needs_prefs = bool(getattr(agent, "requires_preferences", True))
    if needs_truth and ds.rewards is None:
        raise DataError(f"{ds.path or ds.id}: agent '{spec.agent}' needs rewards; dataset has none")
    # Provenance: a learner that does not ask for the ground truth never gets it.
    fit_ds = ds if needs_truth else ds.without_rewards()
    batch = None
    answered = None
    if needs_prefs:
        if pref_data is None:
            raise PbrlError(f"agent '{spec.agent}' learns from preferences: pass --prefs FILE")
        answered = pref_data.answered()
        if len(answered.prefer_b) == 0:
            raise DataError(f"{spec.prefs or 'preferences'}: no answered queries")
        batch = answered.to_batch(fit_ds, device)
    ctx, log_every = fit_context(
        spec,
        device,
        rng,
        dataset=fit_ds,
        prefs=batch,
        reward_scale=task.reward_scale if (task := find_task(task_id)) is not None else 1.0,
        pref_data=answered,
    )
    config = {
        "spec": jsonable(spec),
        "agent_module": mod.__name__,
        "agent_config": jsonable(cfg),
        "preset": spec.preset,
        "task": task_id,
        "dataset_id": ds.id,
        "device": device,
        "reward_scale": ctx.reward_scale,
        "requires_true_reward": needs_truth,
        "requires_preferences": needs_prefs,
        "n_prefs": 0 if answered is None else len(answered.prefer_b),
        "eval_horizon": eval_horizon(ds, task_id),
        "prefs_meta": jsonable(getattr(answered, "meta", {})) if answered is not None else None,
        "versions": _versions(),
    }
    return Prepared(spec, mod, agent, ctx, config, t0, log_every, task_id, ds)


def fit_context(
    spec: TrainSpec, device: str, rng: np.random.Generator, **fields: Any
) -> tuple[FitContext, int]:
    """The :class:`FitContext` of a run (``fields``: its data, labels or task, teacher and
    budget) and the metrics interval. Agents yield every ``ctx.log_interval`` steps, which
    is made to divide ``eval_every`` too so that evaluations land exactly on its multiples
    (metrics keep ``spec.log_interval``)."""
    log_every = max(1, spec.log_interval)
    yield_every = math.gcd(log_every, spec.eval_every) if spec.eval_every > 0 else log_every
    generator = torch.Generator(device=device)
    generator.manual_seed(spec.seed)
    ctx = FitContext(
        steps=spec.steps,
        seed=spec.seed,
        device=device,
        rng=rng,
        generator=generator,
        log_interval=yield_every,
        **fields,
    )
    return ctx, log_every


def check_online_spec(spec: TrainSpec) -> None:
    """The online fields of ``spec`` (task, teacher, budget, segment), before anything runs."""
    if not spec.task:
        raise PbrlError(f"agent '{spec.agent}' learns online: pass --task (it takes no dataset)")
    if spec.dataset or spec.prefs:
        flag = "--dataset" if spec.dataset else "--prefs"
        raise PbrlError(
            f"{flag}: agent '{spec.agent}' learns online from its own experience and a teacher; "
            "it takes no dataset or label file (pass --task, --teacher, --budget)"
        )
    get_task(spec.task)
    for name in ("budget", "segment"):
        v = getattr(spec, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "budget" else 2):
            raise PbrlError(f"--{name}: must be a whole number of at least "
                            f"{0 if name == 'budget' else 2}, got {v!r}")  # fmt: skip
    if spec.teacher is not None:
        make_teacher(spec.teacher)
    check_selector(spec.selector, has_ensemble=True)


def _prepare_online(
    spec: TrainSpec, mod: Any, device: str, t0: float, queue: Any = None
) -> Prepared:
    """An online learner: no dataset, its own environment, a teacher (or a query queue)
    and a query budget."""
    check_online_spec(spec)
    if queue is not None and spec.teacher is not None:
        raise PbrlError("--teacher: one teacher per run (a query queue was given too)")
    cfg = make_config(mod, spec.preset, dict(spec.overrides))
    task_id = str(spec.task)
    obs_space, act_space = get_task(task_id).spaces()
    obs_dim = int(np.prod(obs_space.shape))
    act_dim = int(np.prod(act_space.shape))
    low, high = action_bounds(task_id, act_dim)
    rng = seed_everything(spec.seed)
    agent = mod.Agent(cfg, AgentSpec(obs_dim, act_dim, low, high, device, task_id=task_id))
    teacher = make_teacher(spec.teacher) if spec.teacher is not None else None
    ctx, log_every = fit_context(
        spec,
        device,
        rng,
        dataset=None,
        prefs=None,
        reward_scale=get_task(task_id).reward_scale,
        task_id=task_id,
        teacher=teacher,
        queue=queue,
        budget=spec.budget,
        segment=spec.segment,
        selector=spec.selector,
    )
    config = {
        "spec": jsonable(spec),
        "agent_module": mod.__name__,
        "agent_config": jsonable(cfg),
        "preset": spec.preset,
        "task": task_id,
        "dataset_id": None,
        "online": True,
        "teacher": teacher.spec() if teacher is not None else (queue.spec() if queue else None),
        "budget": spec.budget,
        "device": device,
        "reward_scale": ctx.reward_scale,
        "requires_true_reward": False,
        "requires_preferences": False,
        "n_prefs": 0,
        "eval_horizon": int(get_task(task_id).horizon),
        "prefs_meta": None,
        "versions": _versions(),
    }
    return Prepared(spec, mod, agent, ctx, config, t0, log_every, task_id, None)


def _run(run: Prepared, extra_files: dict[str, Any] | None) -> tuple[dict[str, Any], Any]:
    """Fit and evaluate, in memory (no ``spec.out``) or into a staged, then published, folder."""
    final = Path(run.spec.out) if run.spec.out else None
    out = None if final is None else staging_dir(final)
    if out is not None:
        if out.exists():
            shutil.rmtree(out)
        make_output_dir(out, "--out")
    try:
        rec = _Recorder(run, out)
        try:
            with EnvPool(run.spec.eval_workers if rec.can_eval else 0) as pool:
                for m in run.agent.fit(run.ctx):
                    if rec.on_metrics(m):
                        _evaluate_due([rec], pool)
                if rec.final_eval_due():
                    _evaluate_due([rec], pool)
        finally:
            rec.close()
        result = rec.finish()
        if out is not None:
            for name, value in (extra_files or {}).items():
                write_json_atomic(out / name, value)
            _publish(out, final)  # type: ignore[arg-type]
    except BaseException:
        if out is not None:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return result, run.agent


def train_stacked(
    specs: list[TrainSpec],
    *,
    dataset: Any = None,
    extra_files: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """K runs that differ only in their seed (and label file) trained as one with the
    learner's ``fit_stacked`` (docs/performance.md, "Stacked seeds"); each run is logged,
    evaluated, checkpointed and published into its own folder exactly as :func:`train`
    does, so the folders are those of K separate runs. Returns the K summaries.

    Every run is built (and so initialised) from its own seed before any trains. A module
    without ``fit_stacked`` is refused; so are specs that differ in anything but seed,
    labels and folder."""
    if not specs:
        raise PbrlError("stacked seeds: no run")
    same = [
        f.name
        for f in dataclasses.fields(TrainSpec)
        if f.name not in ("seed", "prefs", "out")
        and len({json.dumps(jsonable(getattr(s, f.name)), sort_keys=True) for s in specs}) > 1
    ]
    if same:
        raise PbrlError(f"stacked seeds: the runs differ in {', '.join(same)} (seeds only)")
    mod = load_agent_module(specs[0].agent)
    if not hasattr(mod, "fit_stacked"):
        raise PbrlError(f"agent '{specs[0].agent}' has no stacked path (fit_stacked)")
    runs = [prepare(specs[0], dataset=dataset)]
    runs += [prepare(s, dataset=runs[0].ds) for s in specs[1:]]  # the dataset loaded once
    for run in runs:
        run.config["stacked_seeds"] = [s.seed for s in specs]  # provenance: trained together
    finals = [Path(s.out) if s.out else None for s in specs]
    stages = [None if f is None else staging_dir(f) for f in finals]
    for stage in stages:
        if stage is not None:
            if stage.exists():
                shutil.rmtree(stage)
            make_output_dir(stage, "--out")
    try:
        recs = [_Recorder(r, o) for r, o in zip(runs, stages, strict=True)]
        try:
            with EnvPool(specs[0].eval_workers if recs[0].can_eval else 0) as pool:
                agents, ctxs = [r.agent for r in runs], [r.ctx for r in runs]
                for rows in fit_stacked_or_in_turn(mod.fit_stacked, agents, ctxs):
                    if len(rows) != len(runs):
                        raise PbrlError(
                            f"agent '{specs[0].agent}': fit_stacked yielded {len(rows)} metric "
                            f"rows for {len(runs)} runs"
                        )
                    due = [
                        rec
                        for rec, m in zip(recs, rows, strict=True)
                        if m is not None and rec.on_metrics(m)  # None: nothing to report
                    ]
                    _evaluate_due(due, pool)  # the members due now, evaluated together
                _evaluate_due([rec for rec in recs if rec.final_eval_due()], pool)
        finally:
            for rec in recs:
                rec.close()
        summaries = [rec.finish() for rec in recs]
        for i, (stage, final) in enumerate(zip(stages, finals, strict=True)):
            if stage is None:
                continue
            for name, value in ((extra_files or [{}] * len(specs))[i] or {}).items():
                write_json_atomic(stage / name, value)
            _publish(stage, final)  # type: ignore[arg-type]
    except BaseException:
        for stage in stages:
            if stage is not None:
                shutil.rmtree(stage, ignore_errors=True)
        raise
    return summaries


def _publish(stage: Path, final: Path) -> None:
    """Rename a complete staging folder onto ``final`` (replacing what is there)."""
    missing = [n for n in ("config.json", "summary.json") if not (stage / n).is_file()]
    if missing:
        raise PbrlError(f"{final}: the run is incomplete ({', '.join(missing)} missing)")
    old = stage.with_name(stage.name + "-old")
    replaced = False
    try:
        if final.exists():
            os.rename(final, old)
            replaced = True
        os.rename(stage, final)
    except OSError as e:
        if replaced and not final.exists():
            os.rename(old, final)
        raise PbrlError(f"--out {final}: cannot publish the run ({e.strerror or e})") from e
    if replaced:
        shutil.rmtree(old, ignore_errors=True)


def eval_horizon(ds: Any, task_id: str | None) -> int | None:
    """The episode length evaluations run for: the dataset card's ``horizon`` when it records
    one shorter than the task's (CPL's rollouts are 250-step episodes of 500-step MetaWorld
    tasks, and CPL evaluates on 250), else the task's own horizon (None without a task)."""

    task = find_task(task_id) if task_id else None
    if task is None:
        return None
    card_h = getattr(ds, "card", {}).get("horizon")
    if isinstance(card_h, int) and not isinstance(card_h, bool) and 0 < card_h < task.horizon:
        return card_h
    return int(task.horizon)


def _log_progress(step: int, steps: int, t_fit: float, metrics: dict[str, float]) -> None:
    """One line per log interval: updates, rate, ETA and the latest losses."""
    elapsed = max(time.time() - t_fit, 1e-9)
    rate = step / elapsed
    eta = format_duration((steps - step) / rate) if rate > 0 else "?"
    # The losses first, then the other metrics the agent yields (six at most).
    keys = sorted((k for k in metrics if k != "step"), key=lambda k: "loss" not in k)
    shown = [(k, metrics[k]) for k in keys[:6]]
    losses = ", ".join(f"{k} {v:.4g}" for k, v in shown)
    logger.info(
        "step %d/%d (%d%%), %.1f updates/s, ETA %s%s",
        step,
        steps,
        100 * step // steps,
        rate,
        eta,
        f"; {losses}" if losses else "",
    )


class _Recorder:
    """What a run writes as its learner trains: metrics lines, progress, evaluations and
    checkpoints between the learner's yields, then the summary (:meth:`finish`)."""

    def __init__(self, run: Prepared, out: Path | None) -> None:
        self.run, self.out = run, out
        self.metrics_f = None
        if out is not None:
            write_json_atomic(out / "config.json", run.config)
            self.metrics_f = open(out / "metrics.jsonl", "w")  # noqa: SIM115 - see close()
        self.evals: list[dict[str, Any]] = []
        self.can_eval = bool(run.task_id) and run.spec.eval_episodes > 0
        self.last_step = 0
        self.last_metrics: dict[str, float] = {}
        self.t_fit = time.time()

    def record_eval(self, step: int, res: dict[str, Any]) -> None:
        """Log and save the evaluation ``res`` made at ``step`` (with a checkpoint)."""
        spec, config = self.run.spec, self.run.config
        row = {
            "step": step,
            "score": res["score"],
            "return_mean": res["return_mean"],
            "return_std": res["return_std"],
            "success_rate": res["success_rate"],
            "episodes": spec.eval_episodes,
            "wall_s": round(time.time() - self.run.t0, 3),
        }
        self.evals.append(row)
        logger.info("step %d: score %.2f return %.1f", step, row["score"], row["return_mean"])
        if self.out is not None:
            _write_eval_csv(self.out / "eval.csv", self.evals)
            _save_checkpoint(self.out / "checkpoint.pt", self.run.agent, step, config)

    def on_metrics(self, m: dict[str, Any]) -> bool:
        """Record a metrics row; True when an evaluation is due at its step (the caller
        evaluates, :func:`_evaluate_due`)."""
        spec, log_every = self.run.spec, self.run.log_every
        step = int(m["step"])
        if step > spec.steps:
            raise PbrlError(
                f"agent '{spec.agent}' ran {step} steps, over its budget of {spec.steps}"
            )
        self.last_metrics = {k: float(v) for k, v in m.items()}
        if self.metrics_f is not None and (step % log_every == 0 or step == spec.steps):
            rec = jsonable(
                {**self.last_metrics, "step": step, "wall_s": round(time.time() - self.run.t0, 3)}
            )
            self.metrics_f.write(json.dumps(rec) + "\n")
            self.metrics_f.flush()
        if step % log_every == 0 or step == spec.steps:
            _log_progress(step, spec.steps, self.t_fit, self.last_metrics)
        due = (
            self.can_eval
            and spec.eval_every > 0
            and step // spec.eval_every > self.last_step // spec.eval_every
        )
        self.last_step = step
        return due

    def final_eval_due(self) -> bool:
        """True when the run ended after its last evaluation (the final one is still due)."""
        return self.can_eval and (not self.evals or self.evals[-1]["step"] != self.last_step)

    def close(self) -> None:
        if self.metrics_f is not None:
            self.metrics_f.close()
            self.metrics_f = None

    def finish(self) -> dict[str, Any]:
        """The final evaluation and checkpoint, and the summary (written last)."""
        run, spec, config = self.run, self.run.spec, self.run.config
        last_step, evals = self.last_step, self.evals
        if last_step != spec.steps:
            raise PbrlError(f"agent '{spec.agent}' stopped at step {last_step} of {spec.steps}")
        if self.final_eval_due():
            raise PbrlError(f"agent '{spec.agent}': the final evaluation was not made")
        if self.out is not None:
            _save_checkpoint(self.out / "checkpoint.pt", run.agent, last_step, config)
        scores = [e["score"] for e in evals]
        summary = {
            "agent": spec.agent,
            "dataset": run.ds.id if run.ds is not None else None,
            "task": run.task_id,
            "seed": spec.seed,
            "steps": last_step,
            "preset": spec.preset,
            "device": config["device"],
            "reward_scale": run.ctx.reward_scale,
            "n_prefs": config["n_prefs"],
            "queries_used": int(getattr(run.agent, "queries_used", config["n_prefs"])),
            "eval_horizon": config["eval_horizon"],
            "final_score": scores[-1] if scores else None,
            "best_score": max(scores) if scores else None,
            "final_return": evals[-1]["return_mean"] if evals else None,
            "final_success_rate": evals[-1]["success_rate"] if evals else None,
            "last_metrics": jsonable(self.last_metrics),
            "wall_time_s": round(time.time() - run.t0, 3),
        }
        if self.out is not None:
            write_json_atomic(self.out / "summary.json", summary)
        return summary


def _evaluate_due(recs: list[_Recorder], pool: EnvPool) -> None:
    """Evaluate the runs of ``recs`` at their last step, together (the seeds of a stacked
    run share task, episodes and horizon; each gets what it would alone), and record each."""
    if not recs:
        return
    run = recs[0].run
    results = evaluate_many(
        [r.run.agent for r in recs],
        run.task_id,
        run.spec.eval_episodes,
        [r.run.spec.seed for r in recs],
        run.config["eval_horizon"],
        pool=pool,
    )
    for rec, res in zip(recs, results, strict=True):
        rec.record_eval(rec.last_step, res)


def _write_eval_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(EVAL_COLUMNS))
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r[k] is None else r[k]) for k in EVAL_COLUMNS})
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _save_checkpoint(path: Path, agent: Any, step: int, config: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save({"agent": agent.state_dict(), "step": step, "config": config}, tmp)
