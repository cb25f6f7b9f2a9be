"""Learnability of the advanced reward learners (slow; CPU-cheap).

With the ``oracle`` teacher on the 2-D point task of ``test_learnability`` (its builders
are imported, not copied), regret's A-hat, Hindsight PRIOR's reward model and the
Preference Transformer must rank held-out segment pairs correctly more than 85% of the
time. Networks are narrowed to keep the test cheap; the losses, constants and training
code are the agents' own, run through ``Agent.fit`` (reward phase, then a short IQL or
policy phase).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_learnability import point_dataset, point_prefs

from pbrl.learn.api import AgentSpec, FitContext, load_agent_module, make_config

SMALL: dict[str, dict] = {
    "regret": {
        "adv_hidden": (64, 64),
        "ensemble": 2,
        "hidden": (32, 32),
        "adv_frac": 0.9,
        "adv_batch": 32,
        "batch_size": 64,
        "adv_lr": 1e-3,
    },
    "hprior": {
        "rm_hidden": (64, 64),
        "ensemble": 2,
        "hidden": (32, 32),
        "wm_embed_dim": 32,
        "wm_layers": 1,
        "wm_heads": 2,
        "wm_batch": 16,
        "wm_lr": 1e-3,
        "wm_frac": 0.2,
        "rm_frac": 0.7,
        "rm_batch": 32,
        "rm_lr": 1e-3,
        "batch_size": 64,
    },
    "pt": {
        "embed_dim": 32,
        "n_heads": 2,
        "pref_attn_dim": 32,
        "hidden": (32, 32),
        "rm_frac": 0.9,
        "rm_batch": 32,
        "batch_size": 64,
        "relabel_len": 5,
    },
}


def segment_scores(name: str, agent, obs, act, mask) -> np.ndarray:
    """The learned score each agent's preference model assigns to segments."""
    if name == "pt":
        agent.model.eval()
        with torch.no_grad():
            return agent.model(obs, act, mask)[0].numpy()
    b, length, _ = obs.shape
    r = agent.reward(obs.reshape(b * length, -1).numpy(), act.reshape(b * length, -1).numpy())
    return (r.reshape(b, length) * mask.numpy()).sum(-1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["regret", "hprior", "pt"])
def test_reward_learner_reaches_heldout_accuracy(name: str) -> None:
    torch.manual_seed(0)
    ds = point_dataset(episodes=60, seed=0)
    prefs = point_prefs(ds, n_queries=400, segment=20, seed=1)
    train, held = prefs.answered().split(0.75, np.random.default_rng(2))
    mod = load_agent_module(name)
    cfg = dataclasses.replace(make_config(mod, None, {}), **SMALL[name])
    spec = AgentSpec(2, 2, -np.ones(2, np.float32), np.ones(2, np.float32))
    agent = mod.Agent(cfg, spec)
    ctx = FitContext(
        dataset=ds.without_rewards(),
        prefs=train.to_batch(ds),
        steps=400,
        seed=0,
        device="cpu",
        rng=np.random.default_rng(0),
        generator=torch.Generator().manual_seed(0),
        log_interval=100,
    )
    metrics = list(agent.fit(ctx))
    assert metrics[-1]["step"] == 400
    hb = held.to_batch(ds)
    s_a = segment_scores(name, agent, hb.obs_a, hb.act_a, hb.mask_a)
    s_b = segment_scores(name, agent, hb.obs_b, hb.act_b, hb.mask_b)
    y = hb.prefer_b.numpy()
    strict = y != 0.5
    acc = float(np.mean((s_b > s_a)[strict] == (y > 0.5)[strict]))
    print(f"{name}: held-out preference accuracy {acc:.3f}")
    assert acc > 0.85, f"{name}: held-out preference accuracy {acc:.3f}"


def test_oppo_keeps_one_history_per_evaluation_episode() -> None:
    """The evaluator's begin_episodes/env_ids hook gives OPPO's policy per-episode context."""
    from test_learnability import POINT_TASK, register_point_task

    from pbrl.run.evaluate import evaluate

    register_point_task()
    mod = load_agent_module("oppo")
    cfg = dataclasses.replace(make_config(mod, None, {}), **mod.TEST_OVERRIDES)
    spec = AgentSpec(2, 2, -np.ones(2, np.float32), np.ones(2, np.float32))
    torch.manual_seed(0)
    agent = mod.Agent(cfg, spec)
    obs = np.array([[0.1, 0.2], [0.3, -0.4], [-0.5, 0.6]], np.float32)
    agent.begin_episodes(3)
    first = agent.act(obs, env_ids=[0, 1, 2])
    np.testing.assert_allclose(first, agent.act(obs), atol=1e-6)  # one-step context
    for _ in range(10):
        out = agent.act(obs[[0, 2]], env_ids=[0, 2])  # episode 1 has ended
    k = cfg.context_len
    assert len(agent._hist[0][0]) == 11 and len(agent._hist[1][0]) == 1
    assert out.shape == (2, 2) and np.all(np.abs(out) <= 1.0)
    # with a longer context the action differs from the stateless one-step action
    assert not np.allclose(out, agent.act(obs[[0, 2]]), atol=1e-6)
    assert k < 11
    res = evaluate(agent, POINT_TASK, episodes=2, seed=0, horizon=12)
    assert res["lengths"] == [12, 12]
    assert len(agent._hist) == 2 and len(agent._hist[0][0]) == 12
