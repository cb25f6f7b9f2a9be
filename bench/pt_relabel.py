"""PT's relabelling: the transformer's last layer at one token per window against the full
forward, timed in alternation in one process.

    python bench/pt_relabel.py [--preset quick] [--rounds 3] [--episodes 100]
        [--set FIELD=VALUE ...]

PT labels every transition t with r_t at the last step of the window of its episode's last
``relabel_len`` (25) steps ending at t. r_t reads the causal hidden state h_t alone, so the
transformer's last layer need only compute that one token of each window
(:meth:`agents.pt.PTRewardModel.reward_at`, what :meth:`agents.pt.Agent.relabel` runs); the
peer is the full forward of every window, read at the same token (what the relabelling did
before). Both run through :func:`agents.pt.relabel_windows` on bench/throughput.py's
synthetic data (``--episodes`` x 100 steps, 39 observations, 4 actions) with one model
initialised from seed 0, one torch thread. Prints seconds per relabelling for each round,
the ratio full / one-token per round, and the largest difference between the two labels.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import throughput
import torch
from throughput import ACT, OBS, synthetic_dataset

from pbrl.agents import pt
from pbrl.learn.api import AgentSpec, make_config
from pbrl.learn.kit import reward_action


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=100)
    throughput.add_set_option(ap)
    args = ap.parse_args(argv)
    overrides = throughput.parsed_sets(ap, args.set)
    torch.set_num_threads(1)
    throughput.EPISODES = args.episodes
    ds = synthetic_dataset()
    cfg = make_config(pt, args.preset, overrides)
    one = np.ones(ACT, np.float32)
    torch.manual_seed(0)
    agent = pt.Agent(cfg, AgentSpec(OBS, ACT, -one, one, "cpu"))
    model = agent.model
    assert model is not None
    model.eval().requires_grad_(False)
    inp = cfg.reward_input

    def one_token(o: torch.Tensor, a: torch.Tensor, m: torch.Tensor, last: torch.Tensor):
        return model.reward_at(o, reward_action(a, inp), m, last)

    def full(o: torch.Tensor, a: torch.Tensor, m: torch.Tensor, last: torch.Tensor):
        _, r = model(o, reward_action(a, inp), m)
        return r[torch.arange(r.shape[0]), last]

    print(
        f"pt relabelling, {ds.num_steps} transitions, relabel_len {cfg.relabel_len}, "
        f"embed_dim {cfg.embed_dim}, {cfg.n_layers} layer(s), "
        f"preference_attention {cfg.preference_attention}, torch {torch.__version__}, "
        f"{os.cpu_count()} cpus"
    )
    ratios = []
    for rnd in range(1, args.rounds + 1):
        times, labels = {}, {}
        for name, fn in (("full", full), ("one token", one_token)):
            t0 = time.perf_counter()
            labels[name] = pt.relabel_windows(ds, cfg.relabel_len, fn, "cpu")
            times[name] = time.perf_counter() - t0
        ratios.append(times["full"] / times["one token"])
        diff = float(np.max(np.abs(labels["full"] - labels["one token"])))
        print(
            f"round {rnd}: full forward {times['full']:.2f} s, one token {times['one token']:.2f}"
            f" s, full / one token {ratios[-1]:.2f}, largest label difference {diff:.2g}"
        )
    print(f"median full / one token: {float(np.median(ratios)):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
