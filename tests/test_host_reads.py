"""No learner reads a tensor on the host after every update (issue 22: on a GPU each read
makes the host wait for the device). Each offline learner, alone and stacked, trains the
same small problem for 40 and for 80 updates with one log at the end; every host read of a
tensor made by pbrl's code (``bool``, ``float``, ``int``, ``.item()``, ``.tolist()``,
``.numpy()``) is counted, and the count must not grow with the number of updates. Allowed
to grow: ``epochs_until_accurate``'s one read per epoch of labels (B-Pref's early stop), and
``mr``'s ``stacked_reward_phase``'s, the same read for all members at once."""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from test_learnability import point_dataset, point_prefs

import pbrl
import pbrl.agents
from pbrl.learn.api import AgentSpec, FitContext, list_agents, load_agent_module, make_config

READS = ("__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy")
# pbrl's code, wherever it is installed (the learners are the package pbrl.agents), and this file
ROOTS = tuple(
    str(Path(m.__file__).resolve().parent) for m in (pbrl, pbrl.agents, sys.modules[__name__])
)
# once per epoch, not per update: B-Pref's early stop, alone and for stacked members (mr)
ALLOWED = {"epochs_until_accurate", "stacked_reward_phase"}


@contextmanager
def counting_reads() -> Iterator[collections.Counter]:
    """Count host reads of tensors whose caller is pbrl's code (not torch's or numpy's)."""
    counts: collections.Counter = collections.Counter()

    def wrap(name: str, orig):
        def read(self, *args, **kwargs):
            frame = sys._getframe(1)
            where = frame.f_code.co_filename
            if where.startswith(ROOTS) and frame.f_code.co_name not in ALLOWED:
                counts[f"{name} at {Path(where).name}:{frame.f_lineno}"] += 1
            return orig(self, *args, **kwargs)

        return read

    patches = [mock.patch.object(torch.Tensor, n, wrap(n, getattr(torch.Tensor, n))) for n in READS]
    for p in patches:
        p.start()
    try:
        yield counts
    finally:
        for p in patches:
            p.stop()


@pytest.fixture(scope="module")
def data():
    ds = point_dataset(episodes=20)
    return ds, point_prefs(ds, 60, 10)


def _reads(name: str, data, steps: int, k: int) -> collections.Counter:
    ds, prefs = data
    mod = load_agent_module(name)
    cfg = make_config(mod, None, dict(getattr(mod, "TEST_OVERRIDES", {})))
    one = np.ones(2, np.float32)
    agents, ctxs = [], []
    for seed in range(k):
        torch.manual_seed(seed)
        agent = mod.Agent(cfg, AgentSpec(2, 2, -one, one, "cpu"))
        fit_ds = ds if getattr(agent, "requires_true_reward", False) else ds.without_rewards()
        answered = prefs.answered()
        ctx = FitContext(
            dataset=fit_ds,
            prefs=answered.to_batch(fit_ds, "cpu"),
            steps=steps,
            seed=seed,
            device="cpu",
            rng=np.random.default_rng(seed),
            generator=torch.Generator().manual_seed(seed),
            log_interval=steps,
            reward_scale=1.0,
            pref_data=answered,
        )
        agents.append(agent)
        ctxs.append(ctx)
    with counting_reads() as counts:
        for _ in agents[0].fit(ctxs[0]) if k == 1 else mod.fit_stacked(agents, ctxs):
            pass
    return counts


OFFLINE = [a for a in list_agents() if not getattr(load_agent_module(a), "ONLINE", False)]


@pytest.mark.parametrize("name", OFFLINE)
def test_no_host_read_per_update(name, data):
    for k in (1, 2) if hasattr(load_agent_module(name), "fit_stacked") else (1,):
        short, long = _reads(name, data, 40, k), _reads(name, data, 80, k)
        grew = {w: long[w] - short[w] for w in long if long[w] > short[w]}
        assert not grew, f"{name} ({k} seed(s)): host reads that grow with updates: {grew}"


def test_the_count_sees_a_read_per_update():
    """The check fails for a loop that reads its loss after every update."""
    w = torch.zeros(3, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)

    def train(steps: int) -> collections.Counter:
        with counting_reads() as counts:
            for _ in range(steps):
                loss = (w - 1.0).pow(2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                float(loss.detach())
        return counts

    assert sum(train(8).values()) > sum(train(4).values())
