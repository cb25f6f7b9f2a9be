"""How good is a reward learner's learned reward on a dataset, and where does it go wrong?

    python bench/reward_quality.py AGENT DATASET_ID --prefs TRAIN.npz --heldout TEST.npz
        [--steps N] [--preset quick] [--seed 0] [--agent.FIELD VALUE ...]

Trains AGENT (a reward learner: mr, pt, hprior, regret, or a plug-in with ``reward`` /
``relabel``) as ``pbrl train`` does, evaluates its policy, then reads its learned reward on
every transition of the dataset and prints:

* held-out preference accuracy (segment score = sum of learned rewards) on TEST's answered,
  non-tie pairs, beside the training accuracy on TRAIN;
* Pearson and Spearman correlation of the learned and true per-step rewards, and of the
  learned and true episode returns;
* action sensitivity: the std of r(s, a) - r(s, a') with a' the action of a random other
  row, against the std of r (0 for a reward of the state alone);
* per behaviour source (the generator's ``source`` of each episode): mean true return, mean
  learned return, success rate and mean action, so a reward that ranks a wrong behaviour
  above the expert shows up by name.

Nothing is written; measurements are recorded in docs/agents.md ("Learners below the
zero-reward control").
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    return r


def _corr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan"), float("nan")
    return float(np.corrcoef(a, b)[0, 1]), float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def learned_rewards_markov(agent: Any, ds: Any) -> np.ndarray:
    return np.asarray(agent.reward(ds.observations, ds.actions), np.float64).reshape(-1)


def learned_rewards(agent: Any, ds: Any) -> np.ndarray:
    if hasattr(agent, "relabel"):
        return np.asarray(agent.relabel(ds), np.float64)
    return learned_rewards_markov(agent, ds)


def pref_accuracy(prefs: Any, ds: Any, r: np.ndarray) -> tuple[float, int]:

    ans = prefs.answered()
    keep = np.asarray(ans.prefer_b) != 0.5
    if not keep.any():
        return float("nan"), 0
    rows_a, mask_a = ds.segment_index(ans.refs_a)
    rows_b, mask_b = ds.segment_index(ans.refs_b)
    sa = (r[rows_a] * mask_a).sum(-1)
    sb = (r[rows_b] * mask_b).sum(-1)
    pred_b = sb > sa
    truth_b = np.asarray(ans.prefer_b) > 0.5
    return float((pred_b == truth_b)[keep].mean()), int(keep.sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("agent")
    ap.add_argument("dataset")
    ap.add_argument("--prefs", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--steps", type=int, default=3300)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-episodes", type=int, default=10)
    a, rest = ap.parse_known_args()
    from pbrl.cli.train import parse_agent_args
    from pbrl.errors import PbrlError

    try:
        overrides = parse_agent_args(rest)
    except PbrlError as e:
        ap.error(str(e))

    from pbrl.datasets.registry import load_dataset
    from pbrl.prefs import load_preferences
    from pbrl.run.train import TrainSpec, train_agent

    ds = load_dataset(a.dataset)
    train_p = load_preferences(a.prefs)
    test_p = load_preferences(a.heldout)
    spec = TrainSpec(
        agent=a.agent,
        dataset=a.dataset,
        prefs=a.prefs,
        seed=a.seed,
        steps=a.steps,
        device="cpu",
        preset=a.preset,
        overrides=overrides,
        eval_every=0,
        eval_episodes=a.eval_episodes,
    )
    summary, agent = train_agent(spec, dataset=ds, prefs=train_p)
    r = learned_rewards(agent, ds.without_rewards())
    true_r = ds.rewards.astype(np.float64)
    perm = np.random.default_rng(0).permutation(ds.num_steps)
    if hasattr(agent, "reward"):
        # r already is r(s, a) of every row unless the agent relabels through windows (pt)
        r_sa = r if not hasattr(agent, "relabel") else learned_rewards_markov(agent, ds)
        r_perm = np.asarray(agent.reward(ds.observations, ds.actions[perm]), np.float64)
        sens = float((r_sa - r_perm.reshape(-1)).std() / max(r_sa.std(), 1e-12))
    else:
        sens = float("nan")
    tr_acc, tr_n = pref_accuracy(train_p, ds, r)
    te_acc, te_n = pref_accuracy(test_p, ds, r)
    step_p, step_s = _corr(r, true_r)
    ret_l = np.add.reduceat(r, ds.starts)
    ret_t = ds.episode_returns()
    ep_p, ep_s = _corr(ret_l, ret_t)
    by: dict[str, list[int]] = defaultdict(list)
    for e, info in enumerate(ds.episode_info):
        by[str(info.get("source", "?"))].append(e)
    succ = np.array(
        [
            bool(ds.successes[ds.episode_rows(e)].any()) if ds.successes is not None else False
            for e in range(ds.num_episodes)
        ]
    )
    out = {
        "agent": a.agent,
        "dataset": a.dataset,
        "steps": a.steps,
        "seed": a.seed,
        "overrides": overrides,
        "success_rate": summary["final_success_rate"],
        "return": summary["final_return"],
        "train_acc": [round(tr_acc, 3), tr_n],
        "heldout_acc": [round(te_acc, 3), te_n],
        "step_corr_pearson_spearman": [round(step_p, 3), round(step_s, 3)],
        "episode_corr_pearson_spearman": [round(ep_p, 3), round(ep_s, 3)],
        "action_sensitivity": round(sens, 3),
    }
    print(json.dumps(out))
    print(
        f"{'source':<12} {'eps':>4} {'succ%':>6} {'true ret':>9} {'learned ret':>12}  mean action"
    )
    for src, eps in sorted(by.items(), key=lambda kv: -ret_t[kv[1]].mean()):
        idx = np.array(eps)
        print(
            f"{src:<12} {len(idx):>4} {100 * succ[idx].mean():>6.0f} {ret_t[idx].mean():>9.1f} "
            f"{ret_l[idx].mean():>12.2f}  "
            f"{np.round(ds.actions[np.r_[tuple(ds.episode_rows(e) for e in idx)]].mean(0), 2)}"
        )


if __name__ == "__main__":
    main()
