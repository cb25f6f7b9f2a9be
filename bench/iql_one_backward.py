"""IQL's three losses in one backward pass against pbrl's three steps, same seed, in turns.

    python bench/iql_one_backward.py [--steps 200] [--rounds 4] [--merged]

In CORL's order (``value_for_targets = "pre"``) V, the twin critic and the actor share no
parameter and every target is computed before any step, so summing the three losses and
stepping the three optimizers once is the same update as pbrl's ``IQLLearner.update``
(value, critic, actor steps, each with its own backward). This builds two learners from
one seed at IQL's paper size (39 observations, 4 actions, 256 x 256, batch 256), checks
that three updates on the same batches leave the same parameters, then times ``--steps``
updates of each in turns, ``--rounds`` times, one torch thread. ``--merged`` times a third
way as well: one backward pass and one fused Adam over the three networks (two parameter
groups: value and critic at ``lr``, the actor at ``actor_lr``, its schedule not followed,
which 200-update rounds cannot tell), the least optimizer and autograd overhead an eager
update can have. Freed memory is kept for reuse as in a CPU training run. Figures:
docs/performance.md ("What the core's matrix products allow").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import torch

from pbrl.learn.iql import IQLConfig, IQLLearner, awr_weights, expectile_loss, iql_q_loss
from pbrl.utils import keep_freed_memory

OBS, ACT, BATCH, N = 39, 4, 256, 10_000


def batches(gen: torch.Generator) -> Iterator[dict[str, torch.Tensor]]:
    data = {
        "obs": torch.randn(N, OBS, generator=gen),
        "act": torch.rand(N, ACT, generator=gen) * 2 - 1,
        "reward": torch.randn(N, generator=gen),
        "next_obs": torch.randn(N, OBS, generator=gen),
        "done": torch.zeros(N),
    }
    while True:
        idx = torch.randint(0, N, (BATCH,), generator=gen)
        yield {k: v[idx] for k, v in data.items()}


def one_backward(
    learner: IQLLearner,
    batch: dict[str, torch.Tensor],
    opts: tuple[torch.optim.Optimizer, ...] | None = None,
) -> None:
    """The three losses of one IQL update, one backward, then the steps of ``opts`` (the
    learner's three optimizers unless given)."""
    cfg = learner.cfg
    obs_n, next_obs_n, act = (
        learner.norm(batch["obs"]),
        learner.norm(batch["next_obs"]),
        batch["act"],
    )
    with torch.no_grad():
        next_v = learner.v(next_obs_n)
        target_q = learner.q_target(obs_n, act).min(0).values
        target = batch["reward"] + cfg.gamma * (1.0 - batch["done"]) * next_v
    v = learner.v(obs_n)
    v_loss = expectile_loss(target_q - v, cfg.expectile).mean()
    q_loss = iql_q_loss(learner.q(obs_n, act), target, cfg.critic_reduction)
    w = awr_weights(target_q - v.detach(), cfg.beta, cfg.max_weight)
    a_loss = (w * learner.policy_nll(obs_n, act)).mean()
    if opts is None:
        opts = (learner.v_opt, learner.q_opt, learner.actor_opt)
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    (v_loss + q_loss + a_loss).backward()
    for opt in opts:
        opt.step()
    learner.polyak()
    if learner.actor_opt in opts:  # the actor's own Adam: its schedule too
        learner.actor_lr.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--merged", action="store_true", help="also one backward and one Adam")
    args = ap.parse_args()
    torch.set_num_threads(1)
    keep_freed_memory()
    data = batches(torch.Generator().manual_seed(0))

    def make() -> IQLLearner:
        torch.manual_seed(0)
        return IQLLearner(OBS, ACT, IQLConfig(), max_steps=10**6)

    three, one, merged = make(), make(), make()
    cfg = merged.cfg
    groups = [
        {"params": [*merged.v.parameters(), *merged.q.parameters()]},
        {"params": list(merged.actor.parameters()), "lr": cfg.actor_lr},
    ]
    one_adam = (torch.optim.Adam(groups, lr=cfg.lr, fused=True),)
    for _ in range(3):
        batch = next(data)
        three.update(batch)
        one_backward(one, batch)
        one_backward(merged, batch, one_adam)
    for name, other in (("one backward pass", one), ("one backward, one Adam", merged)):
        diff = max(float((a - b).abs().max()) for a, b in zip(three.state_dict().values(), other.state_dict().values(), strict=True))  # fmt: skip
        print(f"{name}: largest parameter difference after 3 updates: {diff}")
    ways = [("three backward passes", three.update), ("one backward pass", lambda b: one_backward(one, b))]  # fmt: skip
    if args.merged:
        ways.append(("one backward, one Adam", lambda b: one_backward(merged, b, one_adam)))
    for r in range(args.rounds):
        rates = []
        for name, step in ways:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step(next(data))
            rates.append(args.steps / (time.perf_counter() - t0))
            print(f"round {r + 1}: {name}: {rates[-1]:.1f} updates/s")
        print(
            f"round {r + 1}: against three: " + ", ".join(f"{x / rates[0]:.3f}" for x in rates[1:])
        )


if __name__ == "__main__":
    main()
