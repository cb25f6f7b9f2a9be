"""pbrl's IQL against d3rlpy's IQL, update rate at the same sizes, in one run.

    python -m venv bench-env && bench-env/bin/pip install torch==2.13.0 "d3rlpy==2.8.1"
    bench-env/bin/pip install -e .
    bench-env/bin/python bench/iql_d3rlpy.py [--steps 300] [--rounds 3] [--json out.json]

d3rlpy is installed in the benchmark's own environment only; it is never a dependency of pbrl
(it pins gymnasium 1.0; pip warns about pbrl's newer gymnasium, and the algorithm's update,
all this script uses, runs regardless).

Both learners get the same problem: the synthetic data of ``bench/throughput.py`` (10,000
transitions, 39 observations, 4 actions), two 256x256 Q networks, a 256x256 value network and
a 256x256 Gaussian actor, batch 256, Adam at 3e-4, expectile 0.7, beta 3.0, one torch thread.
pbrl runs its ``iql`` agent with the ``paper`` preset (the agent's whole ``fit`` loop, batch
sampling included); d3rlpy runs ``IQL.update`` on batches drawn by its replay buffer's
``sample_transition_batch`` (sampling included). The two are timed in alternation,
``--rounds`` times, so that a busy machine slows both alike within a round; the figure that
survives a shared machine is the per-round ratio. Each round also times the same update's
matrix products alone (``bench/iql_ceiling.py``: what the core allows), so both learners'
rates are also given as fractions of it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling bench scripts


def d3rlpy_rate(ds, steps: int) -> float:
    import d3rlpy

    episodes = ds.lengths.size
    dataset = d3rlpy.dataset.MDPDataset(
        observations=ds.observations,
        actions=ds.actions,
        rewards=ds.rewards,
        terminals=ds.terminals.astype(np.float32),
        timeouts=ds.timeouts.astype(np.float32),
    )
    assert dataset.size() == episodes
    enc = d3rlpy.models.VectorEncoderFactory(hidden_units=[256, 256])
    algo = d3rlpy.algos.IQLConfig(
        actor_encoder_factory=enc,
        critic_encoder_factory=enc,
        value_encoder_factory=enc,
        batch_size=256,
        actor_learning_rate=3e-4,
        critic_learning_rate=3e-4,
        expectile=0.7,
        weight_temp=3.0,
        n_critics=2,
    ).create(device="cpu:0")
    algo.build_with_dataset(dataset)
    buffer = dataset  # MDPDataset is a ReplayBuffer
    algo.update(buffer.sample_transition_batch(256))  # warm-up, as pbrl's first step builds
    t0 = time.perf_counter()
    for _ in range(steps):
        algo.update(buffer.sample_transition_batch(256))
    return steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    import throughput as tp

    ds = tp.synthetic_dataset()
    from pbrl.prefs import label_dataset

    prefs = label_dataset(ds, "oracle", 2500, 64, 0)
    import iql_ceiling as ceiling

    products = ceiling.iql_products()
    rates: dict[str, list[float]] = {"pbrl": [], "d3rlpy": [], "ceiling": []}
    for r in range(args.rounds):
        rates["pbrl"].append(tp.time_agent("iql", "paper", ds, prefs, args.steps, "cpu"))
        rates["d3rlpy"].append(d3rlpy_rate(ds, args.steps))
        rates["ceiling"].append(ceiling.ceiling_rate(args.steps, products))
        print(
            f"round {r + 1}: pbrl {rates['pbrl'][-1]:.1f}, d3rlpy {rates['d3rlpy'][-1]:.1f}, "
            f"matrix products only {rates['ceiling'][-1]:.1f} updates/s",
            file=sys.stderr,
        )
    ratios = [a / b for a, b in zip(rates["pbrl"], rates["d3rlpy"], strict=True)]
    of_ceiling = {
        k: [a / b for a, b in zip(rates[k], rates["ceiling"], strict=True)]
        for k in ("pbrl", "d3rlpy")
    }
    load = os.getloadavg()
    import d3rlpy

    print(
        f"\nIQL, 256x256 networks, batch 256, 1 torch thread, {args.steps} updates per run, "
        f"{args.rounds} rounds; d3rlpy {d3rlpy.__version__}, torch {torch.__version__}; "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
    )
    print("| | updates/s per round | median |")
    print("|---|---|---|")
    for k, v in rates.items():
        print(f"| {k} | {', '.join(f'{x:.1f}' for x in v)} | {np.median(v):.1f} |")
    print(f"| pbrl / d3rlpy | {', '.join(f'{x:.2f}' for x in ratios)} | {np.median(ratios):.2f} |")
    for k, v in of_ceiling.items():
        print(f"| {k} / ceiling | {', '.join(f'{x:.2f}' for x in v)} | {np.median(v):.2f} |")
    if args.json:
        out = {
            "machine": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "d3rlpy": d3rlpy.__version__,
            "steps": args.steps,
            "load_average": load,
            "rates": rates,
            "ratio_pbrl_over_d3rlpy": ratios,
            "fraction_of_ceiling": of_ceiling,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
