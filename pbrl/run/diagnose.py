"""Does a dataset rank preference learners? Four short trainings answer it (issue 10).

:func:`diagnose` trains, for each of ``seeds`` seeds, through the project's own learners and
evaluation (:func:`pbrl.run.train.train_agent`):

- ``bc-all``: behaviour cloning on every transition (``agents/bc``, ``data=all``);
- ``bc-top10``: behaviour cloning on the best 10% of episodes by true return
  (:func:`top_episodes`);
- ``iql-true``: IQL on the true reward times the benchmark's reward scale (``agents/iql``);
- ``iql-zero``: IQL with every reward zero (the control: it reduces to behaviour cloning).

and reports each learner's success rate (where the task has one) and normalized return
(100 x (R - ref_min) / (ref_max - ref_min), the dataset's reference scores) as the mean over
seeds with a 95% percentile-bootstrap confidence interval of that mean.

A dataset that can rank preference learners has (issue 10's criteria): bc-all at most half
the expert's success, bc-top10 at least 80% of it, and iql-true above bc-all with
non-overlapping intervals. :func:`criteria` checks them.

:func:`run_and_record` writes the table into the dataset card (``pbrl_card.diagnose`` in the
Minari ``metadata.json``; atomic replace).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.datasets.base import OfflineDataset
from pbrl.datasets.minari_io import CARD_KEY, data_folder, minari_data_path
from pbrl.datasets.registry import load_dataset
from pbrl.errors import DataError, PbrlError
from pbrl.run.report import mean, stratified_bootstrap_ci
from pbrl.run.train import TrainSpec, train_agent
from pbrl.utils import check_output_dir, format_duration, write_json_atomic

log = logging.getLogger(__name__)

TOP_FRACTION = 0.1
BOOTSTRAP_RESAMPLES = 2000

# name -> (agent module, config overrides, which data)
LEARNERS: dict[str, tuple[str, dict[str, Any], str]] = {
    "bc-all": ("bc", {"data": "all"}, "all"),
    "bc-top10": ("bc", {"data": "all"}, "top"),
    "iql-true": ("iql", {"reward": "true"}, "all"),
    "iql-zero": ("iql", {"reward": "zero"}, "all"),
}


def top_episodes(ds: OfflineDataset, fraction: float = TOP_FRACTION) -> OfflineDataset:
    """A dataset holding only the best ``fraction`` of ``ds``'s episodes by true return.

    At least one episode is kept; ties are broken by episode order (a stable sort), so the
    subset is deterministic. Per-episode info, qpos/qvel and successes follow their rows.
    """
    if not 0.0 < fraction <= 1.0:
        raise PbrlError(f"top fraction must lie in (0, 1], got {fraction}")
    if ds.num_episodes == 0:
        raise DataError(f"{ds.path or ds.id}: the dataset has no episodes")
    returns = ds.episode_returns()
    k = max(1, int(round(fraction * ds.num_episodes)))
    keep = np.sort(np.argsort(-returns, kind="stable")[:k])
    rows = np.concatenate([np.arange(ds.starts[e], ds.starts[e] + ds.lengths[e]) for e in keep])
    lengths = ds.lengths[keep].astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

    def take(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[rows]

    info = tuple(ds.episode_info[e] for e in keep) if ds.episode_info else ()
    return dataclasses.replace(
        ds,
        id=f"{ds.id}#top{int(round(100 * fraction))}",
        observations=ds.observations[rows],
        actions=ds.actions[rows],
        rewards=take(ds.rewards),
        next_observations=ds.next_observations[rows],
        terminals=ds.terminals[rows],
        timeouts=ds.timeouts[rows],
        starts=starts,
        lengths=lengths,
        qpos=take(ds.qpos),
        qvel=take(ds.qvel),
        successes=take(ds.successes),
        episode_info=info,
    )


def mean_ci(values: Any, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval of the mean over seeds (the report's
    bootstrap with one task; ``None`` values left out, one value gives a point)."""
    x = np.asarray([v for v in values if v is not None], dtype=np.float64)
    return stratified_bootstrap_ci(
        [x], mean, reps=BOOTSTRAP_RESAMPLES, rng=np.random.default_rng(seed)
    )


def _normalized(ret: float | None, ds: OfflineDataset) -> float | None:
    lo, hi = ds.ref_min_score, ds.ref_max_score
    if ret is None or lo is None or hi is None or hi == lo:
        return None
    return 100.0 * (float(ret) - float(lo)) / (float(hi) - float(lo))


def _load(dataset_id: str) -> OfflineDataset:

    return load_dataset(dataset_id)


def diagnose(
    dataset_id: str,
    *,
    steps: int = 5000,
    seeds: int = 3,
    device: str = "cpu",
    eval_episodes: int = 10,
    learners: tuple[str, ...] = tuple(LEARNERS),
    preset: str | None = "quick",
    dataset: OfflineDataset | None = None,
    workdir: str | None = None,
    workers: int | None = 1,
) -> dict[str, Any]:
    """Train the four diagnostic learners briefly and return the table (a JSON-able dict).

    ``workers`` > 1 runs the trainings on that many processes (one torch thread each); the
    table is the same as with one worker, since every training is seeded on its own.

    ``dataset`` may be passed in memory (its ``id`` is then used); otherwise ``dataset_id``
    is loaded through :func:`pbrl.datasets.registry.load_dataset`. Each training's run
    folder (config, metrics, eval.csv) goes under ``workdir`` when given, else a temporary
    folder removed afterwards.
    """

    if steps < 1:
        raise PbrlError(f"--steps: must be >= 1, got {steps}")
    if seeds < 1:
        raise PbrlError(f"--seeds: must be >= 1, got {seeds}")
    unknown = [n for n in learners if n not in LEARNERS]
    if unknown:
        raise PbrlError(f"unknown diagnostic learner(s) {unknown} (known: {', '.join(LEARNERS)})")
    ds = dataset if dataset is not None else _load(dataset_id)
    where = ds.path or ds.id
    if ds.rewards is None:
        raise DataError(
            f"{where}: the dataset has no rewards; diagnose ranks episodes and trains IQL on "
            "the true reward"
        )
    if ds.task_id is None:
        raise DataError(f"{where}: no task resolved for this dataset; cannot evaluate policies")
    top = top_episodes(ds) if any(LEARNERS[n][2] == "top" for n in learners) else None
    n_workers = max(1, int(workers)) if workers is not None else 1
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = workdir or stack.enter_context(tempfile.TemporaryDirectory(prefix="pbrl-diagnose-"))
        jobs: list[tuple[str, int, Any, Any]] = []
        for name in learners:
            agent, overrides, which = LEARNERS[name]
            for seed in range(seeds):
                spec = TrainSpec(
                    agent=agent,
                    dataset=ds.id,
                    prefs=None,
                    seed=seed,
                    steps=steps,
                    device=device,
                    preset=preset,
                    overrides=dict(overrides),
                    eval_every=steps,
                    eval_episodes=eval_episodes,
                    log_interval=max(1, steps),
                    out=f"{tmp}/{name}-s{seed}",
                    overwrite=True,  # a reused workdir is scratch: re-diagnosing replaces it
                )
                jobs.append((name, seed, spec, "top" if which == "top" else "all"))
        summaries = _run_trainings(jobs, {"all": ds, "top": top}, n_workers)
        for name in learners:
            agent, overrides, _ = LEARNERS[name]
            per_seed = []
            for (jname, seed, _, _), summary in zip(jobs, summaries, strict=True):
                if jname != name:
                    continue
                success = summary.get("final_success_rate")
                per_seed.append(
                    {
                        "seed": seed,
                        "success": None if success is None else 100.0 * float(success),
                        "score": summary.get("final_score"),
                        "return": summary.get("final_return"),
                        "normalized_return": _normalized(summary.get("final_return"), ds),
                        "wall_s": summary.get("wall_time_s"),
                    }
                )
                log.info("diagnose %s %s seed %d: %s", ds.id, name, seed, per_seed[-1])
            row: dict[str, Any] = {"learner": name, "agent": agent, "overrides": overrides}
            for key in ("success", "normalized_return", "score"):
                m, lo, hi = mean_ci([p[key] for p in per_seed])
                row[key] = {"mean": m, "ci95": [lo, hi]}
            row["seeds"] = per_seed
            rows.append(row)
    table = {
        "dataset_id": ds.id,
        "task_id": ds.task_id,
        "steps": steps,
        "seeds": seeds,
        "eval_episodes": eval_episodes,
        "preset": preset,
        "device": device,
        "top_fraction": TOP_FRACTION,
        "top_episodes": None if top is None else top.num_episodes,
        "ci": f"95% percentile bootstrap of the mean over seeds ({BOOTSTRAP_RESAMPLES} resamples)",
        "expert_success": _expert_success(ds),
        "rows": rows,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": round(time.time() - t0, 1),
    }
    table["criteria"] = criteria(table)
    return table


def _train_one(spec: Any, data: OfflineDataset) -> dict[str, Any]:

    summary, _ = train_agent(spec, dataset=data)
    return summary


def _run_trainings(
    jobs: list[tuple[str, int, Any, str]], data: dict[str, Any], workers: int
) -> list[dict[str, Any]]:
    """Train every job (in order of the list) on ``workers`` processes; summaries in order.

    Each training is logged as it starts (one process) or is queued (several), and as it
    finishes, with its wall time, score and the ETA of the rest.
    """
    n = len(jobs)
    t0 = time.monotonic()

    def finished(k: int, done: int, summary: dict[str, Any], wall: float) -> None:
        name, seed = jobs[k][0], jobs[k][1]
        left = n - done
        eta = format_duration((time.monotonic() - t0) / done * left) if left else "0s"
        log.info(
            "diagnose: %s seed %d finished in %s (score %s), %d/%d done, ETA %s",
            name,
            seed,
            format_duration(wall),
            summary.get("final_score"),
            done,
            n,
            eta,
        )

    if workers <= 1 or n <= 1:
        out = []
        for k, (name, seed, spec, which) in enumerate(jobs):
            log.info("diagnose: %s seed %d started (%d/%d)", name, seed, k + 1, n)
            t = time.monotonic()
            out.append(_train_one(spec, data[which]))
            finished(k, k + 1, out[-1], time.monotonic() - t)
        return out
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # forkserver: torch and MuJoCo state are not fork-safe once initialised in this process.
    ctx = mp.get_context("forkserver")
    n_proc = min(workers, n)
    log.info("diagnose: %d trainings on %d processes", n, n_proc)
    with ProcessPoolExecutor(max_workers=n_proc, mp_context=ctx) as pool:
        futures = [pool.submit(_train_one, spec, data[which]) for _, _, spec, which in jobs]
        index = {f: k for k, f in enumerate(futures)}
        for done, f in enumerate(as_completed(futures), start=1):
            summary = f.result()
            finished(index[f], done, summary, float(summary.get("wall_time_s") or 0.0))
        return [f.result() for f in futures]


def _expert_success(ds: OfflineDataset) -> float | None:
    """The scripted expert's success rate in percent, from the card's references."""
    ref = ds.card.get("reference") if isinstance(ds.card, dict) else None
    if isinstance(ref, dict) and ref.get("expert_success_rate") is not None:
        return 100.0 * float(ref["expert_success_rate"])
    return None


def criteria(table: dict[str, Any]) -> dict[str, Any]:
    """Issue 10's three checks on a table (None where a needed number is missing).

    The expert reference is the card's expert success when known, else 100% of the
    normalized return (the expert's reference score).
    """
    rows = {r["learner"]: r for r in table["rows"]}
    use_success = table.get("expert_success") is not None and all(
        r["success"]["mean"] == r["success"]["mean"]
        for r in rows.values()  # not NaN
    )
    key = "success" if use_success else "normalized_return"
    expert = table["expert_success"] if use_success else 100.0
    out: dict[str, Any] = {"metric": key, "expert": expert}
    if "bc-all" in rows:
        out["bc_all_at_most_half_expert"] = rows["bc-all"][key]["mean"] <= 0.5 * expert
    if "bc-top10" in rows:
        out["bc_top10_at_least_80pct_expert"] = rows["bc-top10"][key]["mean"] >= 0.8 * expert
    if "iql-true" in rows and "bc-all" in rows:
        out["iql_true_above_bc_all_ci_disjoint"] = (
            rows["iql-true"][key]["ci95"][0] > rows["bc-all"][key]["ci95"][1]
        )
    checks = [v for k, v in out.items() if k not in ("metric", "expert")]
    out["all_met"] = bool(checks) and all(checks)
    return out


def format_table(table: dict[str, Any]) -> str:
    """A plain-text rendering of a diagnose table."""

    def cell(v: dict[str, Any]) -> str:
        m, (lo, hi) = v["mean"], v["ci95"]
        if m != m:  # NaN: not reported by this task
            return "-"
        return f"{m:6.1f} [{lo:6.1f}, {hi:6.1f}]"

    lines = [
        f"{table['dataset_id']}: {table['steps']} steps, {table['seeds']} seeds, "
        f"{table['eval_episodes']} eval episodes; expert success {table['expert_success']}",
        f"{'learner':<10} {'success % (95% CI)':<26} {'normalized return (95% CI)':<26}",
    ]
    for r in table["rows"]:
        lines.append(
            f"{r['learner']:<10} {cell(r['success']):<26} {cell(r['normalized_return']):<26}"
        )
    lines.append("criteria: " + json.dumps(table["criteria"]))
    return "\n".join(lines)


def record(dataset_id: str, table: dict[str, Any]) -> None:
    """Write ``table`` into the dataset card (``pbrl_card.diagnose``), atomically."""

    path = _card_path(dataset_id)
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable metadata ({e})") from None

    card = meta.get(CARD_KEY)
    card = dict(card) if isinstance(card, dict) else {}
    card["diagnose"] = table
    meta[CARD_KEY] = card
    try:
        write_json_atomic(path, meta)
    except OSError as e:
        raise PbrlError(f"{path}: cannot write the diagnosis ({e.strerror or e})") from None


def _card_path(dataset_id: str) -> Path:
    """metadata.json of a local Minari dataset (id checked), or PbrlError."""

    s = str(dataset_id)
    if minari_data_path(s) is None and (s.startswith("d4rl/") or Path(s).expanduser().is_file()):
        raise PbrlError(
            f"{s}: only Minari datasets carry a card to record the diagnosis in "
            "(use --no-record to print the table only)"
        )
    path = data_folder(s) / "metadata.json"
    if not path.is_file():
        raise PbrlError(
            f"{dataset_id}: no local Minari card to write the diagnosis into (looked for {path})"
        )
    return path


def brief_diagnosis(
    dataset_id: str, generator: types.ModuleType, workers: int | None = None
) -> dict[str, Any]:
    """The short diagnosis a build runs on the dataset it just wrote (recorded in its card).

    Options come from the generator's ``BUILD_DIAGNOSE`` (default: :func:`diagnose`'s own);
    trainings run on ``workers`` processes, else the generator's ``default_workers()``.
    Builds call generators, then this: the dataset layer never trains learners.
    """
    opts: dict[str, Any] = dict(getattr(generator, "BUILD_DIAGNOSE", {}))
    if workers is None and hasattr(generator, "default_workers"):
        workers = generator.default_workers()
    if workers is not None:
        opts["workers"] = workers
    return run_and_record(dataset_id, **opts)


def run_and_record(dataset_id: str, **kw: Any) -> dict[str, Any]:
    """:func:`diagnose` then :func:`record`; returns the table.

    Where the table will go is checked first (a local Minari card in a writable folder),
    so that a diagnosis is never trained only to be lost.
    """

    ds = kw.pop("dataset", None) or _load(dataset_id)
    path = _card_path(dataset_id)
    check_output_dir(path.parent, what=f"dataset card {path}")
    table = diagnose(dataset_id, dataset=ds, **kw)
    record(dataset_id, table)
    return table
