"""The diagnosis' BC rows at another learning rate (is a BC failure just undertraining?).

    python bench/diagnose_bc_lr.py DATASET_ID --lr 3e-4 [--learners bc-all,bc-top10]
        [--steps 5000] [--seeds 3] [--workers 1]

Prints success % per seed; writes nothing into the dataset card. Measurements in
docs/metaworld-data.md ("Tables under the current code").
"""

from __future__ import annotations

import argparse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--learners", default="bc-all,bc-top10")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    from pbrl.datasets import diagnose as dg

    for name in ("bc-all", "bc-top10"):
        agent, overrides, which = dg.LEARNERS[name]
        dg.LEARNERS[name] = (agent, {**overrides, "lr": a.lr}, which)
    names = tuple(a.learners.split(","))
    t = dg.diagnose(a.dataset, steps=a.steps, seeds=a.seeds, learners=names, workers=a.workers)
    for r in t["rows"]:
        print(f"{a.dataset} lr {a.lr} {r['learner']}: {[s['success'] for s in r['seeds']]}")


if __name__ == "__main__":
    main()
