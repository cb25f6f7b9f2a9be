"""Runs the official DPPO policy loss on fixed batches and prints its values.

    python bench/dppo_official_loss.py PATH/TO/snu-mllab/DPPO/learner.py

Needs ``jax`` (``pip install jax``, CPU is enough); nothing of pbrl is used. The official
``learner.py`` is parsed and only its ``safe_norm`` and ``update_actor`` definitions are
executed, with a stand-in actor whose ``apply`` returns fixed policy actions and whose
``apply_gradient`` evaluates the loss function once. The batches come from
:func:`fixed_batches` (numpy only, seeded), which ``tests/test_dppo.py`` imports to compute
pbrl's loss on the same inputs and compare it with the values printed here (recorded there as
``OFFICIAL_LOSSES``, with the commit of the official code they came from).
"""

from __future__ import annotations

import argparse
import ast
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SETTINGS = ((1.0, 0.1), (0.5, 0.1), (0.8, 1.0), (1.0, 0.05))
"""(lambda, temperature) pairs, each run on every batch."""


def fixed_batches() -> Iterator[dict[str, np.ndarray | float]]:
    """24 cases: 6 seeded batches of 16 windows x 5 steps x 3 action dims, times SETTINGS.

    Windows have random real lengths (mask), scores rounded to one decimal (so ties occur);
    batch 4 puts half the windows at near-zero distance, batch 5 also puts the other half at
    distance about 1.7, so that at T = 0.05 some pairs' float32 probability is exactly 1 and
    the official mean drops them.
    """
    n, w, a = 16, 5, 3
    for seed in range(6):
        rng = np.random.default_rng(seed)
        pred = rng.uniform(-1, 1, (n, w, a)).astype(np.float32)
        act = rng.uniform(-1, 1, (n, w, a)).astype(np.float32)
        if seed >= 4:
            act[:8] = pred[:8] + 0.001
        if seed == 5:
            pred[8:] = 0.99 * np.sign(pred[8:])
            act[8:] = -pred[8:]
        lens = rng.integers(1, w + 1, n)
        mask = (np.arange(w)[None] < lens[:, None]).astype(np.float32)
        score = np.round(rng.normal(size=n), 1).astype(np.float32)
        for lambd, temp in SETTINGS:
            yield {
                "pred": pred,
                "act": act,
                "mask": mask,
                "score": score,
                "lambd": lambd,
                "temp": temp,
            }


def official_losses(learner_py: Path) -> list[float]:
    """The official ``update_actor`` loss on every batch of :func:`fixed_batches`."""
    import jax
    import jax.numpy as jnp

    tree = ast.parse(learner_py.read_text())
    keep = [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name in ("safe_norm", "update_actor")
    ]
    if len(keep) != 2:
        raise SystemExit(f"{learner_py}: no safe_norm / update_actor definitions found")
    names = {"jnp": jnp, "jax": jax, "Tuple": tuple, "InfoDict": dict, "PRNGKey": object}
    names.update({"Model": object, "Batch": object, "Params": object})
    names.update({"ACTION_MIN": -1, "ACTION_MAX": 1})
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(learner_py), "exec"), names)  # noqa: S102
    batch_type = namedtuple("Batch", "observations actions scores masks")

    class FixedActor:
        def __init__(self, pred: np.ndarray) -> None:
            self.pred = jnp.asarray(pred)

        def apply(self, params, obs, training, rngs):  # noqa: ANN001, ANN201
            return self.pred

        def apply_gradient(self, loss_fn):  # noqa: ANN001, ANN201
            return self, loss_fn(None)[1]

    out = []
    for case in fixed_batches():
        n = case["pred"].shape[0]
        batch = batch_type(
            jnp.zeros((n, 1)),
            jnp.asarray(case["act"]),
            jnp.asarray(case["score"]).reshape(-1, 1),  # the official scores are (N, 1)
            jnp.asarray(case["mask"]),
        )
        _, info = names["update_actor"](
            None, FixedActor(case["pred"]), batch, case["lambd"], case["temp"]
        )
        out.append(float(info["actor_loss"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("learner_py", type=Path, help="the official DPPO learner.py")
    args = ap.parse_args()
    print("OFFICIAL_LOSSES = [")
    for v in official_losses(args.learner_py):
        print(f"    {v!r},")
    print("]")


if __name__ == "__main__":
    main()
