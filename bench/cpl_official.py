"""CPL's official update step (jhejna/cpl) against pbrl's ``agents/cpl.py``, side by side.

    python bench/cpl_official.py --cpl-repo DIR [--batch 16,96] [--steps 60] [--rounds 3]
        [--json out.json]

``DIR`` is a copy of the official repository's ``research/`` package (fetched for the
measurement only, never part of pbrl; e.g. ``git archive`` of github.com/jhejna/cpl into a
scratch folder). Its imports need ``gym`` (0.26 works) and ``h5py`` in the benchmark's own
environment; its ``research`` and ``research.processors`` package ``__init__`` files are
skipped (they import torchvision and every environment suite), the modules the update step
uses are imported as they are.

Both sides train the same sizes: MetaWorld's 39 observations and 4 actions, segments of 64
steps, the state-MetaWorld actor of ``cpl.yaml`` (2 x 512, Dropout 0.25 before ReLU, tanh
output, orthogonal init), Adam at lr 1e-4, comparison batches of ``--batch`` pairs (pbrl's
``quick`` preset uses 16, the paper 96), after BC (the contrastive loss). Three things are
timed, in turns within each round so that a busy machine slows them alike:

- ``official``: ``CPL.train_step`` on prepared batches (the official loop's data loading,
  a torch DataLoader over its FeedbackBuffer, is not included);
- ``pbrl step``: pbrl's loss (``Agent.losses``), backward and Adam step on the same
  prepared batches, the work the official step does;
- ``pbrl fit``: ``Agent.fit`` end to end, its own minibatch sampling from the labels
  included.

One torch thread (``PBRL_TORCH_THREADS``). Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pbrl.learn.api import AgentSpec, FitContext, load_agent_module, make_config
from pbrl.types import PreferenceBatch

OBS, ACT, SEG, POOL = 39, 4, 64, 8


def import_official(repo: Path) -> Any:
    """The official ``research.algs.cpl`` and ``research.networks`` modules."""
    for name in ("research", "research.processors"):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(repo / name.replace(".", "/"))]
            sys.modules[name] = pkg
    import research.algs.cpl as cpl  # noqa: PLC0415 - from the checkout given at run time
    import research.networks as networks  # noqa: PLC0415

    return cpl, networks


def batches(b: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(POOL):
        out.append(
            {
                "obs_1": torch.randn(b, SEG, OBS, generator=g),
                "obs_2": torch.randn(b, SEG, OBS, generator=g),
                "action_1": torch.rand(b, SEG, ACT, generator=g) * 2 - 1,
                "action_2": torch.rand(b, SEG, ACT, generator=g) * 2 - 1,
                "label": (torch.rand(b, generator=g) < 0.5).float(),
            }
        )
    return out


def official_algo(cpl: Any, networks: Any) -> Any:
    import gym  # noqa: PLC0415 - the official code's dependency, not pbrl's

    algo = cpl.CPL(
        gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32),
        gym.spaces.Box(-1.0, 1.0, (ACT,), np.float32),
        networks.ActorPolicy,
        None,
        network_kwargs={
            "actor_class": networks.ContinuousMLPActor,
            "actor_kwargs": {
                "dropout": 0.25,
                "output_act": torch.nn.Tanh,
                "hidden_layers": [512, 512],
                "ortho_init": True,
            },
        },
        optim_kwargs={"lr": 1e-4},
        device="cpu",
        alpha=0.1,
        contrastive_bias=0.5,
        bc_steps=0,
    )
    algo.setup_optimizers()
    algo.network.train()
    return algo


def pbrl_agent(b: int) -> Any:
    mod = load_agent_module("cpl")
    cfg = make_config(mod, None, {"batch_size": b, "bc_fraction": 0.0})
    one = np.ones(ACT, np.float32)
    agent = mod.Agent(cfg, AgentSpec(OBS, ACT, -one, one, "cpu"))
    agent.actor.train()
    return mod, agent


def as_pbrl(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ones = torch.ones(batch["obs_1"].shape[:2])
    return {
        "obs_a": batch["obs_1"],
        "act_a": batch["action_1"],
        "mask_a": ones,
        "obs_b": batch["obs_2"],
        "act_b": batch["action_2"],
        "mask_b": ones,
        "prefer_b": batch["label"],
    }


def time_official(cpl: Any, networks: Any, data: list[dict], steps: int) -> float:
    algo = official_algo(cpl, networks)
    t0 = time.perf_counter()
    for i in range(steps):
        algo.train_step(data[i % POOL], i, steps)
    return steps / (time.perf_counter() - t0)


def time_pbrl_step(b: int, data: list[dict], steps: int) -> float:
    _, agent = pbrl_agent(b)
    opt = torch.optim.Adam(agent.actor.parameters(), lr=1e-4)
    prepared = [as_pbrl(x) for x in data]
    t0 = time.perf_counter()
    for i in range(steps):
        loss = agent.losses(prepared[i % POOL])["cpl_loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - t0)


def time_pbrl_fit(b: int, data: list[dict], steps: int) -> float:
    mod, agent = pbrl_agent(b)
    n = b * POOL
    obs_a = torch.cat([x["obs_1"] for x in data])
    obs_b = torch.cat([x["obs_2"] for x in data])
    prefs = PreferenceBatch(
        obs_a=obs_a,
        act_a=torch.cat([x["action_1"] for x in data]),
        mask_a=torch.ones(n, SEG),
        obs_b=obs_b,
        act_b=torch.cat([x["action_2"] for x in data]),
        mask_b=torch.ones(n, SEG),
        prefer_b=torch.cat([x["label"] for x in data]),
        next_obs_a=obs_a,
        next_obs_b=obs_b,
        terminal_a=torch.zeros(n, SEG),
        terminal_b=torch.zeros(n, SEG),
    )
    ctx = FitContext(
        dataset=None,
        prefs=prefs,
        steps=steps,
        seed=0,
        device="cpu",
        rng=np.random.default_rng(0),
        generator=torch.Generator().manual_seed(0),
        log_interval=steps,
    )
    t0 = time.perf_counter()
    for _ in agent.fit(ctx):
        pass
    return steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpl-repo", required=True, type=Path)
    ap.add_argument("--batch", default="16,96", help="comparison pairs per batch, comma-separated")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    if not (args.cpl_repo / "research" / "algs" / "cpl.py").is_file():
        print(f"--cpl-repo {args.cpl_repo}: no research/algs/cpl.py there", file=sys.stderr)
        return 2
    torch.set_num_threads(int(os.environ.get("PBRL_TORCH_THREADS", "1")))
    sys.path.insert(0, str(args.cpl_repo))
    cpl, networks = import_official(args.cpl_repo)
    sizes = [int(x) for x in args.batch.split(",") if x]
    results: dict[str, dict[str, list[float]]] = {}
    for b in sizes:
        data = batches(b, 0)
        rates: dict[str, list[float]] = {"official": [], "pbrl step": [], "pbrl fit": []}
        for r in range(args.rounds):
            rates["official"].append(time_official(cpl, networks, data, args.steps))
            rates["pbrl step"].append(time_pbrl_step(b, data, args.steps))
            rates["pbrl fit"].append(time_pbrl_fit(b, data, args.steps))
            print(f"batch {b} round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}/s"
                  for k, v in rates.items()), file=sys.stderr)  # fmt: skip
        results[str(b)] = rates
    load = os.getloadavg()
    print(f"\n{args.steps} updates per timing, {args.rounds} rounds, one torch thread, "
          f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")  # fmt: skip
    print("| pairs per batch | official updates/s (rounds) | pbrl step | pbrl fit "
          "| pbrl step / official (median ratio) | pbrl fit / official |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for b, rates in results.items():
        off = rates["official"]

        def cell(xs: list[float]) -> str:
            return f"{np.median(xs):.2f} ({', '.join(f'{x:.2f}' for x in xs)})"

        def ratio(xs: list[float], ref: list[float] = off) -> float:
            return float(np.median([a / c for a, c in zip(xs, ref, strict=True)]))

        print(f"| {b} | {cell(off)} | {cell(rates['pbrl step'])} | {cell(rates['pbrl fit'])} "
              f"| {ratio(rates['pbrl step']):.2f} | {ratio(rates['pbrl fit']):.2f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": platform.platform(),
                    "cpu_count": os.cpu_count(),
                    "torch": torch.__version__,
                    "steps": args.steps,
                    "load_average": load,
                    "rates": results,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
