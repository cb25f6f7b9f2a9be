"""CPL's score-mode loss and accuracy: pbrl against the official function, executed.

    python bench/cpl_official_score.py PATH/TO/jhejna/cpl/research/algs/cpl.py [--batches 200]

Parses the official ``cpl.py`` and executes only its ``biased_bce_with_scores`` (plain torch),
then compares, on seeded random batches of 32 segments (advantages of scale 1, and of scale
21 on every fourth batch so that some loss terms are exact float32 zeros) for lambda 0.5,
0.75 and 1: the loss with :func:`pbrl.agents.cpl.biased_bce_with_scores`, the accuracy with
:func:`pbrl.agents.cpl.score_accuracy`, and counts the batches where the mean over all
in-batch pairs (pbrl's accuracy before issue 20) differs from the official accuracy.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import torch

from pbrl.agents.cpl import biased_bce_with_scores, score_accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cpl_py", type=Path, help="the official research/algs/cpl.py")
    ap.add_argument("--batches", type=int, default=200)
    args = ap.parse_args()
    tree = ast.parse(args.cpl_py.read_text())
    keep = [
        n
        for n in tree.body
        if isinstance(n, ast.FunctionDef) and n.name == "biased_bce_with_scores"
    ]
    if not keep:
        raise SystemExit(f"{args.cpl_py}: no biased_bce_with_scores definition")
    names: dict = {"torch": torch}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(args.cpl_py), "exec"), names)  # noqa: S102
    official = names["biased_bce_with_scores"]
    worst_loss = worst_acc = 0.0
    old_differs = cases = 0
    for seed in range(args.batches):
        g = torch.Generator().manual_seed(seed)
        adv = torch.randn(32, generator=g) * (21.0 if seed % 4 == 0 else 1.0)
        score = torch.randn(32, generator=g)
        order = torch.argsort(score)
        a = adv[order]
        i, j = torch.triu_indices(32, 32, offset=1)
        old = float((a[j] > a[i]).float().mean())
        for bias in (0.5, 0.75, 1.0):
            loss_o, acc_o = official(adv, score, bias)
            worst_loss = max(
                worst_loss, abs(float(loss_o - biased_bce_with_scores(adv, score, bias)))
            )
            worst_acc = max(worst_acc, abs(float(acc_o - score_accuracy(adv, score, bias))))
            old_differs += abs(old - float(acc_o)) > 1e-6
            cases += 1
    print(f"{cases} cases (batch, lambda)")
    print(f"max |loss difference|     {worst_loss:.3g}")
    print(f"max |accuracy difference| {worst_acc:.3g}")
    print(f"all-pairs accuracy differs from the official one in {old_differs} of {cases}")


if __name__ == "__main__":
    main()
