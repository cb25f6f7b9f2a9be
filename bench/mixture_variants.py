"""Try candidate medium-replay mixtures on one task: build into a scratch Minari store, diagnose.

The mixtures measured while choosing medium-replay (docs/metaworld-data.md, "Choosing the
mixture"). Usage:

    python bench/mixture_variants.py VARIANT [--task button-press-topdown-v3] [--steps 5000]
        [--learners bc-all,bc-top10,iql-true,iql-zero] [--store /tmp/pbrl-variants]

It writes nothing into the real Minari store: the dataset is built under ``--store``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

from pbrl.datasets.metaworld_gen import Component as C

HOLD = {"modes": ("hold",), "sigma": 0.1}
WANDER = {"modes": ("wander",), "sigma": 0.1}
OU = {"sigma": 0.6, "theta": 0.05}
E = {"sigma": 0.1}

VARIANTS: dict[str, tuple[C, ...]] = {
    # the previous medium-replay (with the full-horizon other-task screen)
    "previous": (
        C("expert", 0.15, E),
        C("stall", 0.35, HOLD),
        C("stall", 0.15, WANDER),
        C("other-task", 0.20, E),
        C("ou-noise", 0.05, OU),
        C("random", 0.10),
    ),
    "decoy-x10": (
        C("expert", 0.15, E),
        C("stall", 0.25, HOLD),
        C("stall", 0.10, WANDER),
        C("decoy", 0.20, {"offset": [0.1, 0.0, 0.0], "jitter": 0.02, "sigma": 0.1}),
        C("other-task", 0.15, E),
        C("ou-noise", 0.05, OU),
        C("random", 0.10),
    ),
    "decoy-x15": (
        C("expert", 0.15, E),
        C("stall", 0.35, HOLD),
        C("decoy", 0.20, {"offset": [0.15, 0.0, 0.0], "jitter": 0.03, "sigma": 0.1}),
        C("other-task", 0.15, E),
        C("ou-noise", 0.05, OU),
        C("random", 0.10),
    ),
    "decoy-x25": (
        C("expert", 0.15, E),
        C("stall", 0.30, HOLD),
        C("decoy", 0.30, {"offset": [0.25, 0.0, 0.0], "jitter": 0.03, "sigma": 0.1}),
        C("other-task", 0.10, E),
        C("ou-noise", 0.05, OU),
        C("random", 0.10),
    ),
    "decoy-x25-35": (
        C("expert", 0.15, E),
        C("stall", 0.30, HOLD),
        C("decoy", 0.35, {"offset": [0.25, 0.0, 0.0], "jitter": 0.03, "sigma": 0.1}),
        C("other-task", 0.10, E),
        C("random", 0.10),
    ),
    # the adopted medium-replay
    "decoy-y20": (
        C("expert", 0.15, E),
        C("stall", 0.30, HOLD),
        C("decoy", 0.25, {"offset": [0.0, -0.2, 0.0], "jitter": 0.03, "sigma": 0.1}),
        C("other-task", 0.15, E),
        C("ou-noise", 0.05, OU),
        C("random", 0.10),
    ),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variant", choices=sorted(VARIANTS))
    ap.add_argument("--task", default="button-press-topdown-v3")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--learners", default="bc-all,bc-top10,iql-true,iql-zero")
    ap.add_argument("--store", default="/tmp/pbrl-variants")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    store = os.path.join(a.store, a.variant)
    shutil.rmtree(store, ignore_errors=True)
    os.environ["MINARI_DATASETS_PATH"] = store
    from pbrl.datasets import metaworld_gen as g
    from pbrl.datasets.diagnose import diagnose, format_table
    from pbrl.datasets.registry import load_dataset

    g.MIXTURES["medium-replay"] = VARIANTS[a.variant]
    t0 = time.time()
    did = g.build(f"metaworld/{a.task}", "medium-replay", workers=a.workers, overwrite=True)
    ds = load_dataset(did)
    print(f"{a.variant} on {a.task}: built in {time.time() - t0:.0f} s")
    for c in ds.card["mixture"]:
        print(
            f"  {c['source']:<10} {c['share']:.2f} {c['episodes']:>3} episodes, "
            f"success {c['success_rate']:.2f}, mean return {c['mean_return']:.0f}"
        )
    t = diagnose(
        did,
        steps=a.steps,
        seeds=a.seeds,
        learners=tuple(a.learners.split(",")),
        workers=a.workers,
        dataset=ds,
    )
    print(format_table(t))
    for r in t["rows"]:
        print(f"  {r['learner']}: success per seed {[s['success'] for s in r['seeds']]}")


if __name__ == "__main__":
    main()
