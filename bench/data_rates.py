"""Oracle labels per second, and dataset generation against raw environment steps.

    python bench/data_rates.py [--labels 2500] [--task metaworld/drawer-open-v3]
        [--kind medium-replay] [--episodes 10] [--horizon 200] [--rounds 3] [--json out.json]

Labels: ``pbrl.prefs.label_dataset`` draws ``--labels`` uniform pairs of 64-step segments of
the synthetic data of ``bench/throughput.py`` (10,000 transitions) and labels them with each
teacher in ``--teachers``; the rate is labels per second, selection and segment returns
included.

Generation: ``pbrl.datasets.metaworld_gen.build`` writes ``--episodes`` episodes of
``--horizon`` steps of ``--kind`` into a scratch Minari store (one worker, the card's
diagnosis off), against the same number of raw ``env.step`` calls with uniform random
actions in the task's own environment (``pbrl.envs`` ``make``), in alternation, ``--rounds``
times. The ratio says what the generator's policy, bookkeeping and Minari writing cost over
the simulator itself. One torch thread. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pbrl.envs import get_task
from pbrl.prefs import label_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import synthetic_dataset  # noqa: E402


def label_rate(teacher: str, n: int, seed: int) -> float:
    ds = synthetic_dataset(seed)
    t0 = time.perf_counter()
    label_dataset(ds, teacher, n, 64, seed)
    return n / (time.perf_counter() - t0)


def raw_rate(task_id: str, steps: int, horizon: int, seed: int) -> float:
    env = get_task(task_id).make(seed=seed)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    t0 = time.perf_counter()
    done = 0
    while done < steps:
        env.reset(seed=seed + done)
        for _ in range(min(horizon, steps - done)):
            env.step(rng.uniform(low, high).astype(np.float32))
            done += 1
    env.close()
    return steps / (time.perf_counter() - t0)


def generation_rate(task_id: str, kind: str, episodes: int, horizon: int, seed: int) -> float:
    from pbrl.datasets.metaworld_gen import build  # noqa: PLC0415 - after the store is set

    with tempfile.TemporaryDirectory(prefix="pbrl-bench-store-") as root:
        old = os.environ.get("MINARI_DATASETS_PATH")
        os.environ["MINARI_DATASETS_PATH"] = root
        try:
            t0 = time.perf_counter()
            build(task_id, kind, episodes=episodes, seed=seed, workers=1, horizon=horizon)
            return episodes * horizon / (time.perf_counter() - t0)
        finally:
            if old is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = old


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", type=int, default=2500)
    ap.add_argument("--teachers", default="oracle,mistake,stoc")
    ap.add_argument("--task", default="metaworld/drawer-open-v3")
    ap.add_argument("--kind", default="medium-replay")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--horizon", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("PBRL_TORCH_THREADS", "1")))
    teachers = [t for t in args.teachers.split(",") if t]
    labels: dict[str, list[float]] = {t: [] for t in teachers}
    gen: list[float] = []
    raw: list[float] = []
    steps = args.episodes * args.horizon
    for r in range(args.rounds):
        for t in teachers:
            labels[t].append(label_rate(t, args.labels, r))
        gen.append(generation_rate(args.task, args.kind, args.episodes, args.horizon, r))
        raw.append(raw_rate(args.task, steps, args.horizon, r))
        print(f"round {r + 1}: " + ", ".join(f"{t} {v[-1]:.0f} labels/s" for t, v in labels.items())
              + f"; generation {gen[-1]:.0f} steps/s, raw env {raw[-1]:.0f} steps/s",
              file=sys.stderr)  # fmt: skip
    load = os.getloadavg()
    print(f"\n{args.labels} labels of 64-step pairs per timing; {args.episodes} x {args.horizon} "
          f"steps of {args.task} {args.kind}; {args.rounds} rounds; load average "
          f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")  # fmt: skip
    print("| what | rate (rounds) | median |")
    print("|---|---|---|")
    for t, xs in labels.items():
        print(f"| `{t}` labels/s | {', '.join(f'{x:.0f}' for x in xs)} | {np.median(xs):.0f} |")
    ratio = [g / w for g, w in zip(gen, raw, strict=True)]
    print(
        f"| generation, env steps/s | {', '.join(f'{x:.0f}' for x in gen)} | {np.median(gen):.0f} |"
    )
    print(
        f"| raw env.step, steps/s | {', '.join(f'{x:.0f}' for x in raw)} | {np.median(raw):.0f} |"
    )
    print(f"| generation / raw | {', '.join(f'{x:.2f}' for x in ratio)} | {np.median(ratio):.2f} |")
    if args.json:
        out = {
            "machine": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average": load,
            "args": vars(args),
            "labels_per_s": labels,
            "generation_steps_per_s": gen,
            "raw_steps_per_s": raw,
        }
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
