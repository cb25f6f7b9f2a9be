"""Does CPL's own objective prefer the policy that succeeds? Scores policies by CPL's loss.

    python bench/cpl_objective.py DATASET_ID --prefs TRAIN.npz --heldout TEST.npz
        [--cpl-run DIR ...] [--cpl-steps N] [--bc-steps N] [--seed 0] [--eval-episodes 10]
        [--agent.FIELD VALUE ...]

CPL has no critic: what it learns is whatever deterministic policy minimises its contrastive
loss on the labelled pairs. This script puts several policies of CPL's own network class side
by side and scores each one with that loss (CPL's alpha and lambda, dropout off), so one can
tell "CPL's optimiser did not find the good policy" (a succeeding policy has the lower loss)
from "CPL's objective does not ask for it on this data" (the succeeding policy has the higher
loss). Policies:

* ``bc-all``: behaviour cloning on every transition (CPL's BC phase trained to the end);
* ``bc-top10``: behaviour cloning on the best 10% of episodes by true return (the diagnose
  table's learner: it succeeds on the generated MetaWorld data);
* ``cpl``: CPL trained here for ``--cpl-steps`` (at ``--preset``, with ``--agent.*``), and one
  ``cpl:DIR`` row per ``--cpl-run`` (a ``pbrl train --agent cpl`` run folder's checkpoint);
* ``cpl, N pairs w/ SOURCE`` per ``--cpl-pairs-with SOURCE``: a probe, not a method: CPL
  trained the same way on only the labelled pairs that show a segment of that behaviour
  source (e.g. ``expert``), to see whether CPL's code learns the task when the labels it
  must explain all concern the expert.

It first prints each behaviour source's win rate over its appearances in TRAIN's answered
pairs. Columns: success rate and return of an evaluation (the run's own for ``--cpl-run``), CPL loss
and accuracy on TRAIN's and TEST's answered pairs, and the per-step squared action error
sum_d (mu_d(s) - a_d)^2 on the dataset's steps of each behaviour source (``source`` of the
generator), so one sees whose actions the policy reproduces.

Nothing is written; measurements are recorded in docs/agents.md ("cpl on the decoy data").
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch


@torch.no_grad()
def pair_losses(agent: Any, batch: Any, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair CPL comparison loss and correctness of ``agent``'s actor (eval mode).

    The loss is :func:`pbrl.agents.cpl.biased_bce_with_logits` before its mean; correctness
    is (A_b > A_a) == (y > 0.5), NaN for ties.
    """
    from pbrl.agents.cpl import segment_advantage, softplus_neg
    from pbrl.learn.data import ACTION_CLIP
    from pbrl.learn.kit import deterministic_logp as neg_sq_logp

    cfg = agent.cfg
    actor = agent.actor
    was = actor.training
    actor.eval()
    losses, correct = [], []
    for s in range(0, batch.size, chunk):
        b = batch.index(torch.arange(s, min(s + chunk, batch.size)))
        lp_a = neg_sq_logp(actor(b.obs_a), b.act_a.clamp(-ACTION_CLIP, ACTION_CLIP))
        lp_b = neg_sq_logp(actor(b.obs_b), b.act_b.clamp(-ACTION_CLIP, ACTION_CLIP))
        adv_a = segment_advantage(lp_a, b.mask_a, cfg.alpha)
        adv_b = segment_advantage(lp_b, b.mask_b, cfg.alpha)
        y = b.prefer_b
        to_b = softplus_neg(adv_b - cfg.bias * adv_a)
        to_a = softplus_neg(adv_a - cfg.bias * adv_b)
        losses.append((y * to_b + (1.0 - y) * to_a).numpy())
        ok = ((adv_b > adv_a) == (y > 0.5)).float().numpy()
        ok[(y == 0.5).numpy()] = np.nan
        correct.append(ok)
    actor.train(was)
    return np.concatenate(losses), np.concatenate(correct)


@torch.no_grad()
def source_errors(actor: torch.nn.Module, ds: Any) -> dict[str, float]:
    """Mean per-step sum_d (mu_d(s) - a_d)^2 over each behaviour source's steps."""
    from pbrl.learn.data import ACTION_CLIP

    was = actor.training
    actor.eval()
    mu = actor(torch.as_tensor(ds.observations)).numpy()
    actor.train(was)
    err = ((mu - np.clip(ds.actions, -ACTION_CLIP, ACTION_CLIP)) ** 2).sum(-1)
    by: dict[str, list[np.ndarray]] = defaultdict(list)
    for e, info in enumerate(ds.episode_info):
        by[str(info.get("source", "?"))].append(err[ds.episode_rows(e)])
    return {k: float(np.concatenate(v).mean()) for k, v in by.items()}


def run_result(d: Path) -> dict[str, Any]:
    """A run folder's summary, or its last evaluation while it is still training."""
    if (d / "summary.json").is_file():
        return json.loads((d / "summary.json").read_text())
    import csv

    with open(d / "eval.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    return {
        "final_success_rate": float(last["success_rate"]),
        "final_return": float(last["return_mean"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset")
    ap.add_argument("--prefs", required=True)
    ap.add_argument("--heldout", required=True)
    ap.add_argument("--cpl-run", action="append", default=[])
    ap.add_argument("--cpl-steps", type=int, default=800, help="0: train no CPL here")
    ap.add_argument(
        "--cpl-pairs-with",
        action="append",
        default=[],
        metavar="SOURCE",
        help="also train CPL on only the pairs with a segment of this behaviour source (a probe)",
    )
    ap.add_argument("--bc-steps", type=int, default=5000)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--top-pairs", type=int, default=8, help="source pairs listed")
    a, rest = ap.parse_known_args()
    from pbrl.cli.train import parse_agent_args
    from pbrl.errors import PbrlError

    try:
        overrides = parse_agent_args(rest)
    except PbrlError as e:
        ap.error(str(e))

    from pbrl.datasets.diagnose import top_episodes
    from pbrl.datasets.registry import load_dataset
    from pbrl.learn.api import AgentSpec, load_agent_module, make_config
    from pbrl.prefs import load_preferences
    from pbrl.run.train import TrainSpec, action_bounds, train_agent

    torch.set_num_threads(1)
    ds = load_dataset(a.dataset)
    plain = ds.without_rewards()
    train_p = load_preferences(a.prefs)
    answered = train_p.answered()
    train_b = answered.to_batch(plain, "cpu")
    test_b = load_preferences(a.heldout).answered().to_batch(plain, "cpu")
    cpl_mod = load_agent_module("cpl")
    low, high = action_bounds(ds.task_id, ds.act_dim)

    def cpl_shell(cfg_overrides: dict[str, Any]) -> Any:
        cfg = make_config(cpl_mod, a.preset, cfg_overrides)
        return cpl_mod.Agent(cfg, AgentSpec(ds.obs_dim, ds.act_dim, low, high, "cpu"))

    def spec(agent: str, steps: int, prefs: str | None, ov: dict[str, Any]) -> TrainSpec:
        return TrainSpec(
            agent=agent,
            dataset=a.dataset,
            prefs=prefs,
            seed=a.seed,
            steps=steps,
            device="cpu",
            preset=a.preset,
            overrides=ov,
            eval_every=0,
            eval_episodes=a.eval_episodes,
        )

    src = np.array([str(i.get("source", "?")) for i in ds.episode_info])
    sa, sb = src[answered.refs_a[:, 0]], src[answered.refs_b[:, 0]]
    rows: list[tuple[str, dict[str, Any], Any]] = []
    for name, data in (("bc-all", ds), ("bc-top10", top_episodes(ds))):
        summary, bc = train_agent(spec("bc", a.bc_steps, None, {"data": "all"}), dataset=data)
        shell = cpl_shell(overrides)
        shell.actor.load_state_dict(bc.actor.state_dict())
        rows.append((name, summary, shell))
    if a.cpl_steps > 0:
        summary, agent = train_agent(
            spec("cpl", a.cpl_steps, a.prefs, overrides),
            dataset=ds,
            prefs=train_p,
        )
        rows.append((f"cpl ({a.cpl_steps} steps)", summary, agent))
    for keep in a.cpl_pairs_with:
        # A probe, not a method: CPL trained on only the pairs that show a segment of `keep`.
        sub = answered.subset((sa == keep) | (sb == keep))
        summary, agent = train_agent(
            spec("cpl", a.cpl_steps, a.prefs, overrides), dataset=ds, prefs=sub
        )
        rows.append((f"cpl, {sub.num_queries} pairs w/ {keep}", summary, agent))
    for run in a.cpl_run:
        d = Path(run)
        cfg_json = json.loads((d / "config.json").read_text())
        summary = run_result(d)
        shell = cpl_shell(dict(cfg_json.get("agent_config", {})))
        state = torch.load(d / "checkpoint.pt", map_location="cpu", weights_only=False)
        shell.load_state_dict(state["agent"])
        rows.append((f"cpl:{d.name}", summary, shell))

    print(
        json.dumps(
            {"dataset": a.dataset, "prefs": a.prefs, "heldout": a.heldout, "overrides": overrides}
        )
    )
    sources = sorted(set(src))
    y = np.asarray(answered.prefer_b)
    win = np.where(y > 0.5, sb, sa)
    lose = np.where(y > 0.5, sa, sb)
    label = np.array(
        [
            f"{w} > {lo}" if t != 0.5 else f"{w} = {lo}"
            for w, lo, t in zip(win, lose, y, strict=True)
        ]
    )
    kinds = {k: label == k for k in np.unique(label)}
    # Each source's share of wins over its appearances in TRAIN (a tie counts half).
    wins = {
        k: (
            float(((1.0 - y) * (sa == k)).sum() + (y * (sb == k)).sum()),
            int((sa == k).sum() + (sb == k).sum()),
        )
        for k in sources
    }
    print(
        "win rate by source in TRAIN: "
        + ", ".join(f"{k} {w / max(n, 1):.2f} ({n})" for k, (w, n) in wins.items())
    )
    head = f"{'policy':<28} {'succ%':>5} {'return':>7} {'L train':>8} {'acc':>5} {'L test':>7} {'acc':>5}"
    print(head + "  " + " ".join(f"{s[:10]:>10}" for s in sources))
    shares: dict[str, dict[str, float]] = {}
    for name, summary, agent in rows:
        l_tr, c_tr = pair_losses(agent, train_b)
        l_te, c_te = pair_losses(agent, test_b)
        ltr, atr, lte, ate = l_tr.mean(), np.nanmean(c_tr), l_te.mean(), np.nanmean(c_te)
        shares[name] = {k: float(l_tr[v].sum() / l_tr.sum()) for k, v in kinds.items()}
        err = source_errors(agent.actor, ds)
        succ = summary.get("final_success_rate")
        ret = summary.get("final_return")
        print(
            f"{name:<28} {100 * (succ or 0):>5.0f} {ret or float('nan'):>7.0f} {ltr:>8.3f} "
            f"{atr:>5.2f} {lte:>7.3f} {ate:>5.2f}  " + " ".join(f"{err[s]:>10.3f}" for s in sources)
        )
    # Which labelled pairs carry each policy's training loss: (preferred > other) source pairs.
    top = sorted(kinds, key=lambda k: -max(sh[k] for sh in shares.values()))[: a.top_pairs]
    print(f"\nshare of the training CPL loss by (preferred > other) source pair ({len(y)} pairs)")
    print(f"{'pair':<26} {'count':>5} " + " ".join(f"{n[:12]:>12}" for n in shares))
    for k in top:
        print(
            f"{k:<26} {kinds[k].sum():>5} " + " ".join(f"{sh[k]:>12.2f}" for sh in shares.values())
        )


if __name__ == "__main__":
    main()
