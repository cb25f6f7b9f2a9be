"""Where does OPPO's optimal context z* land, and does its policy work with a better one?

    python bench/oppo_context.py RUN_DIR --prefs TRAIN.npz [--windows 4] [--eval-episodes 10]
        [--seed 0] [--contexts expert,stall]

OPPO has no critic: its policy pi(a | s, z) imitates whatever segment the context z encodes,
and z* is fitted only to lie closer to the encodings of preferred segments than to those of
rejected ones. For a finished ``pbrl train --agent oppo`` run (its ``checkpoint.pt`` and
``config.json``) this script encodes every labelled segment of TRAIN (``--windows`` random
K-step windows each, as the encoder is trained with ``encode=window``; the whole segment for
``encode=segment``) and prints, per behaviour source of the generator (``source``):

* the mean encoding's distance to z* and the mean distance of the source's encodings to z*;
* the triplet accuracy of z* on TRAIN's strict pairs (d(z*, z+) < d(z*, z-)).

Then, teacher-forced on K-step windows of the labelled segments, the policy's action error
with z*, and per context the mean squared shift of its actions when z* is replaced (0 for a
policy that ignores its context). And it evaluates the policy with z* (the run's own result)
and with each ``--contexts``
source's mean encoding put in z*'s place: a probe, not a method (it reads the source names,
which no learner sees). If the policy succeeds with the expert's mean encoding but not with
z*, the policy has learned the task's behaviours and z*'s placement is what fails.

Nothing is written; measurements are recorded in docs/agents.md.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--prefs", required=True)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--eval-episodes", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--contexts", default="expert,stall", help="sources whose mean z to try")
    a = ap.parse_args()

    from pbrl.agents.oppo import crop_windows, take, triplet_distance
    from pbrl.datasets.registry import load_dataset
    from pbrl.learn.api import AgentSpec, load_agent_module, make_config
    from pbrl.prefs import load_preferences
    from pbrl.run.evaluate import evaluate
    from pbrl.run.train import action_bounds

    torch.set_num_threads(1)
    run = Path(a.run)
    config = json.loads((run / "config.json").read_text())
    spec_d = config["spec"]
    ds = load_dataset(spec_d["dataset"])
    prefs = load_preferences(a.prefs).answered()
    mod = load_agent_module("oppo")
    cfg = make_config(mod, None, dict(config.get("agent_config", {})))
    low, high = action_bounds(ds.task_id, ds.act_dim)
    agent = mod.Agent(cfg, AgentSpec(ds.obs_dim, ds.act_dim, low, high, "cpu"))
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    agent.load_state_dict(state["agent"])
    assert agent.enc is not None and agent.dec is not None
    agent.enc.eval()

    batch = prefs.to_batch(ds.without_rewards(), "cpu")
    g = torch.Generator().manual_seed(a.seed)

    @torch.no_grad()
    def encode(obs: torch.Tensor, act: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, windows, z_dim): encodings of random K-windows (or of the whole segment)."""
        o = agent.normalize_obs(obs)
        if cfg.encode == "segment":
            return agent.enc(o, act, mask)[:, None]
        out = []
        for _ in range(a.windows):
            idx, m = crop_windows(mask, agent.dec.max_len, g)
            out.append(agent.enc(take(o, idx), take(act, idx), m))
        return torch.stack(out, 1)

    z_a = encode(batch.obs_a, batch.act_a, batch.mask_a)
    z_b = encode(batch.obs_b, batch.act_b, batch.mask_b)
    z_star = agent.z_star.detach()
    src = np.array([str(i.get("source", "?")) for i in ds.episode_info])
    src_a, src_b = src[prefs.refs_a[:, 0]], src[prefs.refs_b[:, 0]]
    by: dict[str, list[torch.Tensor]] = defaultdict(list)
    for s, z in zip(np.concatenate([src_a, src_b]), torch.cat([z_a, z_b]), strict=True):
        by[str(s)].append(z)
    y = torch.as_tensor(prefs.prefer_b, dtype=torch.float32)
    strict = y != 0.5
    d_a = triplet_distance(z_star, z_a).mean(1)
    d_b = triplet_distance(z_star, z_b).mean(1)
    closer_to_preferred = torch.where(y > 0.5, d_b < d_a, d_a < d_b)[strict].float().mean()
    all_z = torch.cat([z_a, z_b]).reshape(-1, z_star.shape[0])
    print(
        json.dumps(
            {
                "run": str(run),
                "prefs": a.prefs,
                "z_star_norm": round(float(z_star.norm()), 3),
                "mean_encoding_norm": round(float(all_z.norm(dim=-1).mean()), 3),
                "triplet_accuracy_of_z_star": round(float(closer_to_preferred), 3),
            }
        )
    )
    means = {s: torch.stack(v).reshape(-1, z_star.shape[0]).mean(0) for s, v in by.items()}
    print(f"{'source':<12} {'segments':>8} {'|mean z - z*|':>14} {'mean |z - z*|':>14}")
    for s in sorted(by, key=lambda k: float((means[k] - z_star).norm())):
        zs = torch.stack(by[s]).reshape(-1, z_star.shape[0])
        print(
            f"{s:<12} {len(by[s]):>8} {float((means[s] - z_star).norm()):>14.3f} "
            f"{float((zs - z_star).norm(dim=-1).mean()):>14.3f}"
        )

    contexts = [("z*", z_star)] + [
        (f"mean z of {s}", means[s]) for s in a.contexts.split(",") if s and s in means
    ]
    # Teacher-forced on K-windows of the labelled segments (their own history): how far the
    # policy's actions move when z* is swapped for another context, against the action scale.
    agent.dec.eval()
    idx, m = crop_windows(batch.mask_a, agent.dec.max_len, g)
    o_w, a_w = take(agent.normalize_obs(batch.obs_a), idx), take(batch.act_a, idx)

    @torch.no_grad()
    def policy_actions(z: torch.Tensor) -> torch.Tensor:
        zs = z[None, None, :].expand(o_w.shape[0], o_w.shape[1], -1)
        return agent.dec(zs, o_w, a_w, m)[0]

    base = policy_actions(z_star)
    real = m.bool()
    err = float(((base - a_w.clamp(-1, 1)) ** 2).sum(-1)[real].mean())
    print(f"\npolicy with z*, teacher-forced on TRAIN windows: action error {err:.4f}")
    print(f"{'context':<24} {'succ%':>6} {'return':>8} {'action shift vs z*':>19}")
    for name, z in contexts:
        shift = float(((policy_actions(z) - base) ** 2).sum(-1)[real].mean())
        agent.z_star = z.clone()
        res = evaluate(agent, ds.task_id, a.eval_episodes, seed=a.seed)
        rate = res.get("success_rate")
        print(f"{name:<24} {100 * (rate or 0):>6.0f} {res['return_mean']:>8.0f} {shift:>19.5f}")


if __name__ == "__main__":
    main()
