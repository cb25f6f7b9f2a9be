"""Updates per second of every offline learner, on one process and one torch thread.

    python bench/throughput.py [--agents cpl,iql,...] [--preset quick] [--steps 300]
        [--repeats 3] [--device cpu] [--stack K] [--tf32] [--set FIELD=VALUE ...]
        [--json out.json]

Each learner trains ``--steps`` updates (all its phases, in the proportions its preset gives
them) on the same synthetic data: 100 episodes of 100 steps with MetaWorld's dimensions (39
observations, 4 actions), Gaussian observations and uniform actions, and 2,500 ``oracle``
labels of 64-step segments on a random reward. After one short untimed run (the process's
one-time costs), the learners are timed in turns, ``--repeats``
rounds over the list, so that a busy machine slows every learner alike within a round; the
table shows each learner's median rate and, as the comparison that survives a shared
machine, its rate relative to IQL's in the same round (the median of the per-round ratios).
With ``--stack K``, every learner with a stacked path (``fit_stacked``) is also timed with K
seeds stacked in one process, right after its single run in each round; the table gives the
total seed-updates per second and its ratio to K sequential runs (K runs one after the other
do the single run's rate). ``--tf32`` lets CUDA matrix products use TensorFloat-32 (10-bit
mantissas; pbrl itself leaves torch's default, full float32). ``--set FIELD=VALUE`` (any
number of times) sets a config field of every learner whose config has it, as
``--agent.FIELD VALUE`` does (``--set cuda_graph=true``: the stacked IQL update as one CUDA
graph).
On a CPU the process keeps freed memory blocks for reuse as a CPU training run does
(:func:`pbrl.utils.keep_freed_memory`); ``--system-malloc`` leaves glibc's defaults instead.
Nothing is written unless ``--json`` is given. Figures and the machine they were measured on
are in docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pbrl.datasets.base import OfflineDataset
from pbrl.learn.api import AgentSpec, FitContext, list_agents, load_agent_module, make_config
from pbrl.prefs import label_dataset
from pbrl.utils import keep_freed_memory

OBS, ACT, EPISODES, HORIZON = 39, 4, 100, 100


def synthetic_dataset(seed: int = 0) -> OfflineDataset:
    rng = np.random.default_rng(seed)
    n = EPISODES * HORIZON
    obs = rng.standard_normal((n, OBS)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[HORIZON - 1 :: HORIZON] = True
    return OfflineDataset(
        id="bench/synthetic",
        task_id=None,
        observations=obs,
        actions=rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
        rewards=rng.standard_normal(n).astype(np.float32),
        next_observations=np.roll(obs, -1, axis=0),
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
        starts=np.arange(EPISODES, dtype=np.int64) * HORIZON,
        lengths=np.full(EPISODES, HORIZON, dtype=np.int64),
    )


def offline_agents() -> list[str]:
    return [a for a in list_agents() if not getattr(load_agent_module(a), "ONLINE", False)]


def build_runs(
    name: str,
    preset: str,
    ds: OfflineDataset,
    prefs: Any,
    steps: int,
    device: str,
    k: int = 1,
    overrides: dict[str, str] | None = None,
) -> tuple[Any, list[Any], list[FitContext]]:
    """``k`` seeds of ``name`` ready to train ``steps`` updates on ``ds`` and ``prefs``: its
    module, agents and fit contexts, with the ``overrides`` its config has."""
    mod = load_agent_module(name)
    has = {f.name for f in dataclasses.fields(mod.Config)}
    own = {key: v for key, v in (overrides or {}).items() if key in has}
    cfg = make_config(mod, preset if preset in getattr(mod, "PRESETS", {}) else None, own)
    one = np.ones(ACT, np.float32)
    agents, ctxs = [], []
    for seed in range(k):
        torch.manual_seed(seed)
        agent = mod.Agent(cfg, AgentSpec(OBS, ACT, -one, one, device))
        needs_truth = bool(getattr(agent, "requires_true_reward", False))
        fit_ds = ds if needs_truth else ds.without_rewards()
        needs_prefs = bool(getattr(agent, "requires_preferences", True))
        batch = prefs.answered().to_batch(fit_ds, device) if needs_prefs else None
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        agents.append(agent)
        ctxs.append(
            FitContext(
                dataset=fit_ds,
                prefs=batch,
                steps=steps,
                seed=seed,
                device=device,
                rng=np.random.default_rng(seed),
                generator=gen,
                log_interval=steps,
                reward_scale=1.0,
                pref_data=prefs.answered(),
            )
        )
    return mod, agents, ctxs


def fit_runs(mod: Any, agents: list[Any], ctxs: list[FitContext]) -> None:
    """Train the runs of :func:`build_runs` to the end: one run's ``fit``, or more stacked
    (the learner's ``fit_stacked``)."""
    for _ in agents[0].fit(ctxs[0]) if len(agents) == 1 else mod.fit_stacked(agents, ctxs):
        pass


def time_agent(
    name: str,
    preset: str,
    ds: OfflineDataset,
    prefs: Any,
    steps: int,
    device: str,
    k: int = 1,
    overrides: dict[str, str] | None = None,
) -> float:
    """Seed-updates per second of ``k`` seeds of ``name``: one run (k = 1) or k seeds stacked
    in one process (the learner's ``fit_stacked``), with the ``overrides`` its config has."""
    mod, agents, ctxs = build_runs(name, preset, ds, prefs, steps, device, k, overrides)
    t0 = time.perf_counter()
    fit_runs(mod, agents, ctxs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return k * steps / (time.perf_counter() - t0)


def add_set_option(ap: argparse.ArgumentParser) -> None:
    """``--set FIELD=VALUE`` (any number of times): a config field of every learner whose
    config has it, as ``--agent.FIELD VALUE`` sets it (:func:`parsed_sets`)."""
    ap.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE", help="a config field"
    )


def parsed_sets(ap: argparse.ArgumentParser, values: list[str]) -> dict[str, str]:
    """The ``--set`` values as a dict; one without ``=`` is a usage error (exit 2)."""
    bad = [kv for kv in values if "=" not in kv]
    if bad:
        ap.error(f"--set {bad[0]}: FIELD=VALUE")
    return dict(kv.split("=", 1) for kv in values)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", default="", help="comma-separated (default: every offline one)")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default="")
    ap.add_argument(
        "--stack", type=int, default=0, help="also K seeds stacked, for learners with fit_stacked"
    )
    ap.add_argument("--tf32", action="store_true", help="TensorFloat-32 matrix products on CUDA")
    ap.add_argument(
        "--system-malloc",
        action="store_true",
        help="leave glibc's malloc thresholds as they are (a CPU run keeps freed blocks)",
    )
    add_set_option(ap)
    args = ap.parse_args(argv)
    sets = parsed_sets(ap, args.set)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.set_num_threads(int(os.environ.get("PBRL_TORCH_THREADS", "1")))
    kept = args.device == "cpu" and not args.system_malloc and keep_freed_memory()
    names = [a for a in args.agents.split(",") if a] or offline_agents()
    if "iql" not in names:
        names = ["iql", *names]
    ds = synthetic_dataset()
    prefs = label_dataset(ds, "oracle", 2500, 64, 0)
    rates: dict[str, list[float]] = {n: [] for n in names}
    stackable = [n for n in names if hasattr(load_agent_module(n), "fit_stacked")]
    stacked: dict[str, list[float]] = {n: [] for n in stackable} if args.stack > 1 else {}
    # One short untimed run first: the process's one-time costs (thread pools, kernel
    # selection, CUDA context) would otherwise land on the first learner of round 1.
    time_agent(names[0], args.preset, ds, prefs, min(args.steps, 20), args.device, 1, sets)
    for r in range(args.repeats):
        for n in names:
            rates[n].append(time_agent(n, args.preset, ds, prefs, args.steps, args.device, 1, sets))
            print(f"round {r + 1}: {n:8s} {rates[n][-1]:8.1f} updates/s", file=sys.stderr)
            if n in stacked:
                k = args.stack
                stacked[n].append(
                    time_agent(n, args.preset, ds, prefs, args.steps, args.device, k, sets)
                )
                print(f"round {r + 1}: {n:8s} {stacked[n][-1]:8.1f} seed-updates/s, {k} stacked",
                      file=sys.stderr)  # fmt: skip
    rel = {n: float(np.median([a / b for a, b in zip(rates[n], rates["iql"], strict=True)]))
           for n in names}  # fmt: skip
    load = os.getloadavg()
    dev = args.device + (", TF32" if args.tf32 else "") + "".join(f", {kv}" for kv in args.set)
    if args.device == "cpu":
        dev += ", freed blocks kept" if kept else ", glibc's malloc defaults"
    print(f"\n{args.steps} updates per run, preset {args.preset}, device {dev}, "
          f"{args.repeats} rounds, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")  # fmt: skip
    print("| learner | updates/s (median) | rounds | relative to iql (median ratio) |")
    print("|---|---|---|---|")
    for n in names:
        rs = ", ".join(f"{x:.1f}" for x in rates[n])
        print(f"| {n} | {np.median(rates[n]):.1f} | {rs} | {rel[n]:.3f} |")
    gain: dict[str, float] = {}
    if stacked:
        k = args.stack
        print(f"\n{k} seeds stacked in one process against {k} sequential runs (a sequential "
              "run's rate is the single run's, measured in the same round just before)")  # fmt: skip
        print(f"| learner | 1 seed, updates/s | {k} stacked, seed-updates/s (rounds) "
              "| stacked / sequential (median ratio) |")  # fmt: skip
        print("|---|---|---|---|")
        for n, xs in stacked.items():
            gain[n] = float(np.median([a / b for a, b in zip(xs, rates[n], strict=True)]))
            rs = ", ".join(f"{x:.1f}" for x in xs)
            print(
                f"| {n} | {np.median(rates[n]):.1f} | {np.median(xs):.1f} ({rs}) | {gain[n]:.2f} |"
            )
    if args.json:
        out = {
            "machine": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "preset": args.preset,
            "steps": args.steps,
            "device": args.device,
            "tf32": args.tf32,
            "freed_blocks_kept": kept,
            "set": sets,
            "load_average": load,
            "rates": rates,
            "relative_to_iql": rel,
            "stack": args.stack,
            "stacked_rates": stacked,
            "stacked_over_sequential": gain,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
