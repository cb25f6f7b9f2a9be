"""Stacked seeds (pbrl/learn/stack.py): K IQL members trained as one equal K single IQL
learners given the same initialisations and minibatches, update by update."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import replace
from unittest import mock

import numpy as np
import pytest
import torch

from pbrl.datasets.base import OfflineDataset
from pbrl.errors import DataError, PbrlError
from pbrl.learn.data import TransitionTensors
from pbrl.learn.iql import IQLConfig, IQLLearner
from pbrl.learn.kit import ActorLr, cosine_lr, uniform_minibatches
from pbrl.learn.stack import StackedIQL

OBS, ACT, B = 5, 2, 16


def _member(seed: int, cfg: IQLConfig) -> IQLLearner:
    torch.manual_seed(seed)
    return IQLLearner(OBS, ACT, cfg, max_steps=20)


def _batch(gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        "obs": torch.randn(B, OBS, generator=gen),
        "act": torch.rand(B, ACT, generator=gen) * 2 - 1,
        "reward": torch.randn(B, generator=gen),
        "next_obs": torch.randn(B, OBS, generator=gen),
        "done": (torch.rand(B, generator=gen) < 0.1).float(),
    }


@pytest.mark.parametrize("targets", ["pre", "post"])
def test_stacked_members_equal_single_learners(targets):
    cfg = IQLConfig(hidden=(16, 16), value_for_targets=targets)
    seeds = [0, 1, 2]
    singles = [_member(s, cfg) for s in seeds]
    stacked = StackedIQL([_member(s, cfg) for s in seeds])
    rng = np.random.default_rng(0)
    stats = rng.normal(size=(50, OBS))
    for m in singles:
        m.set_obs_stats(stats)
    stacked.obs_mean[:] = singles[0].obs_mean
    stacked.obs_std[:] = singles[0].obs_std
    gens = [torch.Generator().manual_seed(100 + s) for s in seeds]
    for _ in range(12):
        batches = [_batch(g) for g in gens]
        out = stacked.update({k: torch.stack([b[k] for b in batches]) for k in batches[0]})
        metrics = stacked.metrics(out)  # what a log step reports, from the step's tensors
        for i, (m, b) in enumerate(zip(singles, batches, strict=True)):
            single = m.metrics(m.update(b))
            assert set(metrics) == set(single)
            for key, value in single.items():
                assert metrics[key][i].item() == pytest.approx(float(value), rel=1e-4, abs=1e-6)
    for i, m in enumerate(singles):
        state = stacked.member_state(i)
        for part in ("v", "q", "q_target", "actor"):
            mine = getattr(m, part).state_dict()
            for key, t in state[part].items():
                torch.testing.assert_close(t, mine[key], rtol=1e-4, atol=1e-5, msg=f"{part}.{key}")
    # the members really differ (their own seeds and batches)
    a, b = stacked.member_state(0)["v"], stacked.member_state(1)["v"]
    assert any(not torch.equal(a[k], b[k]) for k in a)


def _distinct_members(build, k: int, gen: torch.Generator) -> list[torch.nn.Module]:
    """K modules from ``build``, each from its own seed and its parameters moved apart (distinct
    norms and log-stds, not the constructors' constants), in evaluation mode."""
    mods = []
    for seed in range(k):
        torch.manual_seed(seed)
        m = build()
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
        mods.append(m.eval())
    return mods


def _members_case(name: str) -> tuple[list[torch.nn.Module], tuple, dict]:
    """Three members of one module kind, inputs with a leading member axis, and the call."""
    from pbrl.learn import nn as pnn

    gen = torch.Generator().manual_seed(7)
    obs = torch.randn(3, B, OBS, generator=gen)
    act = torch.rand(3, B, ACT, generator=gen) * 2 - 1
    builders = {
        "mlp": (lambda: pnn.MLP(OBS, 3, (8, 8), "relu", "tanh", layer_norm=True), (obs,), {}),
        "mlp_dropout_eval": (
            lambda: pnn.MLP(OBS, 3, (8, 8), "leaky_relu", dropout=0.3, dropout_before_act=True),
            (obs,),
            {},
        ),
        "value": (lambda: pnn.ValueNet(OBS, (8, 8)), (obs,), {}),
        "tanh_actor_segments": (
            lambda: pnn.TanhDeterministicActor(OBS, ACT, (8, 8), 0.25),
            (torch.randn(3, 4, 5, OBS, generator=gen),),
            {},
        ),
        "twin_q": (lambda: pnn.TwinQ(OBS, ACT, (8, 8)), (obs, act), {}),
        "twin_q_layer_norm": (lambda: pnn.TwinQ(OBS, ACT, (8, 8), layer_norm=True), (obs, act), {}),
        "ensemble_per_member": (
            lambda: pnn.EnsembleMLP(2, OBS, 1, (8,), layer_norm=True),
            (torch.randn(3, 2, B, OBS, generator=gen),),
            {"shared": False},
        ),
        "gaussian_log_prob": (lambda: pnn.GaussianActor(OBS, ACT, (8, 8)), (obs, act), {}),
    }
    build, args, kw = builders[name]
    return _distinct_members(build, 3, gen), args, kw


@pytest.mark.parametrize(
    "name",
    [
        "mlp",
        "mlp_dropout_eval",
        "value",
        "tanh_actor_segments",
        "twin_q",
        "twin_q_layer_norm",
        "ensemble_per_member",
        "gaussian_log_prob",
    ],
)
def test_member_forwards_are_each_members_own_forward(name):
    """``forward_members`` (one batched product per layer, no ``vmap``) gives every member
    what its own module gives on its own batch, and gradients flow to each member's slice."""
    from pbrl.learn.stack import StackedModules

    mods, args, kw = _members_case(name)
    stack = StackedModules(mods)
    log_prob = name == "gaussian_log_prob"

    def own(i: int) -> torch.Tensor:
        member_args = [a[i] for a in args]
        return mods[i].log_prob(*member_args) if log_prob else mods[i](*member_args, **kw)

    out = stack.members(*args, method="log_prob_members" if log_prob else "forward_members", **kw)
    for i in range(len(mods)):
        torch.testing.assert_close(out[i], own(i), rtol=1e-5, atol=1e-6)
    out[1].sum().backward()  # member 1's gradient lands in its slice only
    own(1).sum().backward()
    for (pname, stacked), p in zip(stack.params.items(), mods[1].parameters(), strict=True):
        torch.testing.assert_close(stacked.grad[1], p.grad, rtol=1e-4, atol=1e-6, msg=pname)
        assert not stacked.grad[0].any() and not stacked.grad[2].any()


@pytest.mark.parametrize(
    ("causal", "pos", "masked", "query"),
    [
        (True, True, False, False),
        (True, False, True, False),
        (False, False, True, False),
        (True, False, True, True),
    ],
)
def test_transformer_member_forward_is_each_members_own_forward(causal, pos, masked, query):
    """``CausalTransformer.forward_members`` (:class:`pbrl.learn.nn.Layers`: one batched
    product per Linear, the attention over every member's rows at once) gives each member
    its own forward's hidden states and attention maps, and its gradient lands in that
    member's slice only."""
    from pbrl.learn.nn import CausalTransformer
    from pbrl.learn.stack import StackedModules

    gen = torch.Generator().manual_seed(3)
    mods = _distinct_members(
        lambda: CausalTransformer(8, 2, 2, max_len=7, pos_embedding=pos, causal=causal), 3, gen
    )
    x = torch.randn(3, 4, 7, 8, generator=gen)
    mask = (torch.arange(7) < torch.tensor([7, 3, 5, 1]).view(4, 1)).float()
    key_mask = torch.stack([mask, mask.flip(0), mask]) if masked else None
    at = torch.tensor([[6, 2, 4, 0], [0, 1, 2, 3], [5, 5, 5, 5]]) if query else None
    stack = StackedModules(mods)
    hid, att = stack.members(x, key_mask, at)

    def own(i: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        km = None if key_mask is None else key_mask[i]
        return mods[i](x[i], km, None if at is None else at[i])

    for i in range(3):
        h_i, a_i = own(i)
        torch.testing.assert_close(hid[i], h_i, rtol=1e-5, atol=1e-5)
        for a, b in zip(att, a_i, strict=True):
            torch.testing.assert_close(a[i], b, rtol=1e-5, atol=1e-6)
    (hid[1].sum() + att[-1][1].pow(2).sum()).backward()
    h_1, a_1 = own(1)
    (h_1.sum() + a_1[-1].pow(2).sum()).backward()
    for (name, stacked), p in zip(stack.params.items(), mods[1].parameters(), strict=True):
        torch.testing.assert_close(stacked.grad[1], p.grad, rtol=1e-4, atol=1e-5, msg=name)
        assert not stacked.grad[0].any() and not stacked.grad[2].any()


def _flat(x):
    """A model's outputs (a tensor, or tuples and lists of them) as one list of tensors."""
    if isinstance(x, (tuple, list)):
        return [t for part in x for t in _flat(part)]
    return [x]


def _model_case(name: str):
    """A learner's sequence model, its member-batched method and (K, ...) inputs."""
    from pbrl.agents import dppo, hprior, oppo, pt

    gen = torch.Generator().manual_seed(11)
    k, b, h, zd = 3, 4, 6, 3
    obs = torch.randn(k, b, h, OBS, generator=gen)
    act = torch.rand(k, b, h, ACT, generator=gen) * 2 - 1
    mask = (torch.arange(h) < torch.tensor([6, 2, 4, 1]).view(b, 1)).float().expand(k, b, h)
    seq = (obs, act, mask)
    cases = {
        "pt": (lambda: pt.PTRewardModel(OBS, ACT, 8, 1, 2, h, pref_attn_dim=4), "forward", seq),
        "pt_no_pref_attn": (
            lambda: pt.PTRewardModel(OBS, ACT, 8, 2, 2, h, preference_attention=False),
            "forward",
            seq,
        ),
        "pt_reward_at": (
            lambda: pt.PTRewardModel(OBS, ACT, 8, 2, 2, h, pref_attn_dim=4),
            "reward_at",
            (*seq, torch.tensor([[5, 1, 3, 0], [0, 0, 0, 0], [2, 1, 2, 0]])),
        ),
        "hprior_world_model": (lambda: hprior.WorldModel(OBS, ACT, 8, 2, 2, h), "forward", seq),
        "dppo_predictor": (lambda: dppo.ScoreModel(OBS, ACT, 8, 1, 2, h, 0.1), "forward", seq),
        "oppo_encoder": (lambda: oppo.HIMEncoder(OBS, ACT, zd, 8, 2, 2, h), "forward", seq),
        "oppo_policy": (
            lambda: oppo.ContextualPolicy(OBS, ACT, zd, 8, 2, 1, h),
            "forward",
            (torch.randn(k, b, h, zd, generator=gen), *seq),
        ),
    }
    build, method, args = cases[name]
    return _distinct_members(build, k, gen), method, args


@pytest.mark.parametrize(
    "name",
    [
        "pt",
        "pt_no_pref_attn",
        "pt_reward_at",
        "hprior_world_model",
        "dppo_predictor",
        "oppo_encoder",
        "oppo_policy",
    ],
)
def test_sequence_models_member_forwards_are_each_members_own(name):
    """The learners' transformer models run K stacked members through one member forward
    (:class:`pbrl.learn.nn.Layers`): each member gets its own model's outputs, and its
    gradient lands in its own slice."""
    from pbrl.learn.stack import StackedModules

    mods, method, args = _model_case(name)
    stack = StackedModules(mods)
    out = _flat(stack.members(*args, method=f"{method}_members"))

    def own(i: int) -> list[torch.Tensor]:
        return _flat(getattr(mods[i], method)(*(a[i] for a in args)))

    for i in range(len(mods)):
        for got, want in zip(out, own(i), strict=True):
            torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-5)
    sum(t[1].pow(2).sum() for t in out).backward()
    sum(t.pow(2).sum() for t in own(1)).backward()
    for (pname, stacked), p in zip(stack.params.items(), mods[1].parameters(), strict=True):
        want = torch.zeros_like(p) if p.grad is None else p.grad
        got = torch.zeros_like(stacked[1]) if stacked.grad is None else stacked.grad[1]
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=pname)
        if stacked.grad is not None:
            assert not stacked.grad[0].any() and not stacked.grad[2].any()


def test_transformer_member_dropout_masks_are_each_members_own():
    """In training, each member draws its own dropout masks (one elementwise draw)."""
    from pbrl.learn.nn import CausalTransformer
    from pbrl.learn.stack import StackedModules

    torch.manual_seed(0)
    m = CausalTransformer(8, 1, 2, max_len=5, dropout=0.5)
    stack = StackedModules([m, copy.deepcopy(m)])
    stack.train(True)
    hid, _ = stack.members(torch.ones(2, 3, 5, 8))
    assert not torch.equal(hid[0], hid[1])  # the same weights and inputs, other masks
    stack.train(False)
    hid, _ = stack.members(torch.ones(2, 3, 5, 8))
    torch.testing.assert_close(hid[0], hid[1])


def test_stacking_refuses_what_it_does_not_support():
    cfg = IQLConfig(hidden=(8,), actor="deterministic")
    with pytest.raises(PbrlError, match="Gaussian actor"):
        StackedIQL([_member(0, cfg)])
    with pytest.raises(PbrlError, match="no member"):
        StackedIQL([])


# ---- the stacked path of every learner that has one, through the conformance check ----------


def _variant(mod, **overrides):
    """The learner module ``mod`` with extra TEST_OVERRIDES (a config the check trains)."""
    import types

    out = types.ModuleType(f"{mod.__name__}_variant")
    out.__dict__.update(mod.__dict__)
    out.TEST_OVERRIDES = {**mod.TEST_OVERRIDES, **overrides}
    return out


def _stacked_result(mod):
    from pbrl.learn.check import check_agent

    results = {r.name: r for r in check_agent(mod)}
    assert "stacked seeds" in results, sorted(results)
    return results["stacked seeds"]


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("iql", {}),
        ("iql", {"value_for_targets": "post", "critic_reduction": "sum", "obs_norm": False}),
        ("bc", {}),
        ("bc", {"data": "pos"}),
        ("cpl", {}),
        ("cpl", {"kl": True, "lr_multiplier": 0.1}),
        ("cpl", {"mode": "rank"}),
        ("cpl", {"mode": "score", "bc_coeff": 1.0}),
        ("ipl", {}),
        ("ipl", {"replay_batch": 0}),
        ("ipl", {"window": 4, "target_clipping": True, "chi2_coeff": 0.5, "obs_norm": True}),
        ("dppo", {}),
        ("dppo", {"smooth_w": 0.0, "lambd": 0.5, "window": 4, "pool_padding": False}),
        ("oppo", {}),
        ("oppo", {"update": "alternating", "state_noise": 0.1, "encode": "segment"}),
        ("oppo", {"pool_over_padding": True, "eval_zero_fill": True, "grad_clip": 1e-3}),
    ],
)
def test_stacked_seeds_act_as_their_single_runs(name, overrides):
    from pbrl.learn.api import load_agent_module

    res = _stacked_result(_variant(load_agent_module(name), **overrides))
    assert res.ok, res.detail


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("oppo", {"update": "alternating", "state_noise": 0.1}),
        ("dppo", {"smooth_w": 1.0, "window": 4, "score_windows": 64, "rm_frac": 0.5}),
    ],
)
def test_stacked_windows_from_one_dataset_table_or_each_members_own(
    monkeypatch, name, overrides, shared
):
    """OPPO's HIM windows and DPPO's smoothness and policy windows come, stacked, from one
    table when the members' datasets share their arrays, and from each member's own table
    when not (``shared`` False stands in for members with datasets of their own); either
    way every member trains as its single run does."""
    from pbrl.learn.api import load_agent_module
    from pbrl.learn.data import shares_arrays

    mod = load_agent_module(name)
    asked: list[bool] = []

    def shares(ds, other, extra=()):
        asked.append(True)
        return shared and shares_arrays(ds, other, extra)

    monkeypatch.setattr(mod, "shares_arrays", shares)
    res = _stacked_result(_variant(mod, **overrides))
    assert res.ok, res.detail
    assert asked  # the stacked path asked which table to read


def test_the_stacked_check_catches_a_stacked_path_that_differs():
    from pbrl.learn.api import load_agent_module

    bc = load_agent_module("bc")
    broken = _variant(bc)

    def fit_stacked(agents, ctxs):  # every member trained on member 0's batches
        yield from bc.fit_stacked(agents, [ctxs[0]] * len(ctxs))

    broken.fit_stacked = fit_stacked
    res = _stacked_result(broken)
    assert not res.ok and "acts differently" in res.detail


def test_stacking_refuses_members_with_labels_of_different_sizes():
    from pbrl.learn.api import AgentSpec, FitContext, load_agent_module, make_config
    from pbrl.learn.check import check_dataset, check_prefs

    cpl = load_agent_module("cpl")
    ds = check_dataset()
    cfg = make_config(cpl, None, cpl.TEST_OVERRIDES)
    spec = AgentSpec(2, 2, -np.ones(2, np.float32), np.ones(2, np.float32))
    ctxs = []
    for n in (6, 8):
        answered = check_prefs(ds, n_queries=n).answered()
        ctxs.append(
            FitContext(
                dataset=ds.without_rewards(),
                prefs=answered.to_batch(ds.without_rewards(), "cpu"),
                steps=4,
                seed=0,
                device="cpu",
                rng=np.random.default_rng(0),
                generator=torch.Generator().manual_seed(0),
                pref_data=answered,
            )
        )
    agents = [cpl.Agent(cfg, spec) for _ in ctxs]
    with pytest.raises(PbrlError, match="labels of one size"):
        next(cpl.fit_stacked(agents, ctxs))


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("mr", {"early_stop_acc": 2.0}),
        ("pt", {}),
        ("hprior", {}),
        ("regret", {"use": "reward"}),
        ("regret", {}),
    ],
)
def test_learners_ending_in_iql_stack_their_iql_phase(name, overrides, monkeypatch):
    """mr, pt, hprior and regret run their members' reward phases (stacked, or one after
    the other), then their last phase stacked: the stacked update really runs, and the
    members still act as their single runs."""
    from pbrl.learn import stack as stack_mod
    from pbrl.learn.api import load_agent_module

    calls = []
    real = stack_mod.StackedIQL.update

    def counting(self, batch):
        calls.append(self.k)
        return real(self, batch)

    monkeypatch.setattr(stack_mod.StackedIQL, "update", counting)
    real_actor = stack_mod.StackedIQL.actor_step

    def counting_actor(self, *args, **kw):  # regret's greedy phase steps the actors only
        if overrides.get("use", "greedy") == "greedy" and name == "regret":
            calls.append(self.k)
        return real_actor(self, *args, **kw)

    monkeypatch.setattr(stack_mod.StackedIQL, "actor_step", counting_actor)
    res = _stacked_result(_variant(load_agent_module(name), **overrides))
    assert res.ok, res.detail
    assert calls and set(calls) == {2}


def test_members_whose_iql_phases_differ_run_them_one_after_the_other(monkeypatch):
    """mr stops its reward phase early at a training accuracy, so two members may reach IQL
    at different steps: their IQL phases then run one after the other, still equal to the
    single runs."""
    from pbrl.learn import stack as stack_mod
    from pbrl.learn.api import load_agent_module

    monkeypatch.setattr(stack_mod.StackedIQL, "update", None)  # must not be reached
    mr = load_agent_module("mr")
    real = mr.Agent.iql_plan

    def uneven(self, ctx, reward_steps):  # the second seed's IQL starts one update earlier
        plan = real(self, ctx, reward_steps)
        if ctx.seed % 2:
            plan.step0 -= 1
            plan.steps += 1
        return plan

    variant = _variant(mr)
    variant.Agent = type("Agent", (mr.Agent,), {"iql_plan": uneven})
    res = _stacked_result(variant)
    assert res.ok, res.detail


def test_members_with_one_iql_phase_shape_stack_it_beside_one_that_differs(monkeypatch):
    """Of three mr members, the second reaches IQL one update earlier: the first and third
    run their IQL phases stacked (one StackedIQL of 2), the second alone, and every member
    still acts as its single run."""
    from pbrl.learn import stack as stack_mod
    from pbrl.learn.api import load_agent_module
    from pbrl.learn.check import check_agent

    sizes = []
    real_init = stack_mod.StackedIQL.__init__

    def spy(self, members):
        sizes.append(len(members))
        real_init(self, members)

    monkeypatch.setattr(stack_mod.StackedIQL, "__init__", spy)
    mr = load_agent_module("mr")
    real = mr.Agent.iql_plan

    def uneven(self, ctx, reward_steps):
        plan = real(self, ctx, reward_steps)
        if ctx.seed == 1:
            plan.step0 -= 1
            plan.steps += 1
        return plan

    variant = _variant(mr)
    variant.Agent = type("Agent", (mr.Agent,), {"iql_plan": uneven})
    res = {r.name: r for r in check_agent(variant, stack=3)}["stacked seeds"]
    assert res.ok, res.detail
    assert "3 seeds stacked" in res.detail
    assert sizes == [2]


def test_mr_reward_ensembles_stacked_stop_each_at_its_own_epoch(monkeypatch):
    """mr's stacked reward phase: each member stops after the epoch its own accuracy passes
    ``early_stop_acc`` (the others train on, the stopped one is put back after each of their
    steps), and every member still acts as its single run. Over a few thresholds the members
    must stop at different updates at least once, or the freezing went untested."""
    from pbrl.learn.api import load_agent_module
    from pbrl.learn.check import check_agent

    mr = load_agent_module("mr")
    real = mr.Agent.iql_plan
    seen: list[dict[int, list]] = []

    def spy(self, ctx, reward_steps):
        net = {k: v.detach().clone() for k, v in self.reward_net.state_dict().items()}
        seen[-1].setdefault(ctx.seed, []).append((reward_steps, net))
        return real(self, ctx, reward_steps)

    monkeypatch.setattr(mr.Agent, "iql_plan", spy)
    uneven = False
    for stop in (0.45, 0.55, 0.65):
        seen.append({})
        variant = _variant(mr, reward_epochs=5, early_stop_acc=stop, reward_batch=2)
        res = {r.name: r for r in check_agent(variant, stack=3, steps=60)}["stacked seeds"]
        assert res.ok, (stop, res.detail)
        for seed, calls in seen[-1].items():  # the check's last two fits: single, stacked
            (n_single, single), (n_stacked, stacked) = calls[-2:]
            assert n_stacked == n_single, (stop, seed)
            for k in single:  # the reward model the IQL phase relabels with
                torch.testing.assert_close(stacked[k], single[k], rtol=1e-5, atol=1e-6)
        uneven |= len({calls[-1][0] for calls in seen[-1].values()}) > 1
    assert uneven, [{s: c[-1][0] for s, c in run.items()} for run in seen]


@pytest.mark.parametrize("overrides", [{}, {"smooth_w": 1.0, "window": 4}, {"score_windows": 64}])
def test_dppo_predictors_stacked_are_each_members_own(monkeypatch, overrides):
    """DPPO's stacked predictor phase trains every member's predictor as its single run does
    (pairs, smoothness windows and learning rates its own): the scores each member's
    predictor gives the dataset's windows are compared, not only the policies' actions.
    Scores are compared up to a constant and to a tolerance: the preference loss does not
    see a constant, so the parameters that only shift every score (the head's last bias)
    get no gradient but rounding, which Adam's normalised steps turn into differences of
    the learning rate's order between a batched and an unbatched run."""
    from pbrl.learn.api import load_agent_module
    from pbrl.learn.check import check_agent

    dppo = load_agent_module("dppo")
    real = dppo.Agent.score_pool
    seen: dict[int, list[torch.Tensor]] = {}

    def spy(self, ctx, setup):
        plan = real(self, ctx, setup)
        seen.setdefault(ctx.seed, []).append(plan.scores - plan.scores.mean())
        return plan

    monkeypatch.setattr(dppo.Agent, "score_pool", spy)
    variant = _variant(dppo, rm_frac=0.5, **overrides)
    res = {r.name: r for r in check_agent(variant, stack=3)}["stacked seeds"]
    assert res.ok, res.detail
    assert len(seen) == 3
    for calls in seen.values():  # the check's last two fits: single, stacked
        single, stacked = calls[-2:]
        # measured: at most 6e-4 of the largest score; member 0's windows fed to every
        # member move the others' scores by 1-2e-2 of it
        scale = float(single.abs().max())
        torch.testing.assert_close(stacked, single, rtol=0, atol=3e-3 * scale)
    assert not torch.allclose(seen[0][-1], seen[1][-1])  # separate seeds


@pytest.mark.parametrize("overrides", [{}, {"preference_attention": False}])
def test_pt_reward_models_stacked_are_each_members_own(monkeypatch, overrides):
    """PT's stacked reward phase trains each member's Preference Transformer as its single
    run does: each member's relabelled reward is compared with its single run's, up to a
    constant (the preference loss does not see one, so the last bias moves by rounding
    only; see the DPPO test above)."""
    from pbrl.learn.api import load_agent_module
    from pbrl.learn.check import check_agent

    pt = load_agent_module("pt")
    real_plan = pt.Agent.iql_plan
    seen: dict[int, list[np.ndarray]] = {}

    def spy(self, ctx, rewards, n_rm, n_iql):
        seen.setdefault(ctx.seed, []).append(rewards - rewards.mean())
        return real_plan(self, ctx, rewards, n_rm, n_iql)

    monkeypatch.setattr(pt.Agent, "iql_plan", spy)
    monkeypatch.setattr(pt, "members_in_turn", None)  # the stacked phase must run
    variant = _variant(pt, rm_frac=0.5, **overrides)
    res = {r.name: r for r in check_agent(variant, stack=3)}["stacked seeds"]
    assert res.ok, res.detail
    assert len(seen) == 3
    for calls in seen.values():  # the check's last two fits: single, stacked
        single, stacked = calls[-2:]
        # measured: at most 1e-4 of the largest reward
        scale = float(np.abs(single).max())
        np.testing.assert_allclose(stacked, single, rtol=0, atol=1e-3 * scale)
    assert not np.allclose(seen[0][-1], seen[1][-1])  # separate seeds


@pytest.mark.parametrize(
    "overrides", [{}, {"reward_input": "obs", "detach_target": True, "prior_coef": 10.0}]
)
def test_hprior_world_and_reward_models_stacked_are_each_members_own(monkeypatch, overrides):
    """Hindsight PRIOR's stacked phases train each member's world model (its own windows,
    its own gradient clip) and its reward ensemble (its own pairs, weighted by its own world
    model's importance) as its single run does, and relabel the dataset for all members at
    once: each member's world model and relabelled reward are compared with its single
    run's."""
    from pbrl.learn.api import load_agent_module
    from pbrl.learn.check import check_agent

    hprior = load_agent_module("hprior")
    real = hprior.Agent.iql_plan
    seen: dict[int, list] = {}

    def spy(self, ctx, rewards, step0, n_iql):
        wm = {k: v.detach().clone() for k, v in self.wm.state_dict().items()}
        seen.setdefault(ctx.seed, []).append((step0, wm, np.array(rewards)))
        return real(self, ctx, rewards, step0, n_iql)

    monkeypatch.setattr(hprior.Agent, "iql_plan", spy)
    monkeypatch.setattr(hprior, "members_in_turn", None)  # the stacked phases must run
    variant = _variant(hprior, wm_frac=0.3, rm_frac=0.4, wm_grad_clip=0.05, **overrides)
    res = {r.name: r for r in check_agent(variant, stack=3)}["stacked seeds"]
    assert res.ok, res.detail
    assert len(seen) == 3
    for calls in seen.values():  # the check's last two fits: single, stacked
        (step_single, wm_single, single), (step_stacked, wm_stacked, stacked) = calls[-2:]
        assert step_stacked == step_single
        for k in wm_single:
            torch.testing.assert_close(wm_stacked[k], wm_single[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(stacked, single, rtol=1e-5, atol=1e-6)
    assert not np.allclose(seen[0][-1][2], seen[1][-1][2])  # separate seeds


def _against_single_runs(name, overrides, sizes, fit):
    """Two members of learner ``name`` (seeds 0 and 1 with ``sizes`` labelled pairs) trained
    by ``fit(module, agents, ctxs)`` act as their single runs, and differently."""
    from pbrl.learn.api import AgentSpec, FitContext, load_agent_module, make_config
    from pbrl.learn.check import check_dataset, check_prefs
    from pbrl.utils import seed_everything

    mod = load_agent_module(name)
    ds = check_dataset()
    extra = getattr(mod, "STACK_CHECK_OVERRIDES", {})
    cfg = make_config(mod, None, {**mod.TEST_OVERRIDES, **extra, **overrides})
    spec = AgentSpec(ds.obs_dim, ds.act_dim, -np.ones(2, np.float32), np.ones(2, np.float32))
    runs = tuple(zip((0, 1), sizes, strict=True))  # (seed, labelled pairs)

    def ctx(seed: int, n: int) -> FitContext:
        answered = check_prefs(ds, n_queries=n).answered()
        fit_ds = ds.without_rewards()
        gen = torch.Generator().manual_seed(seed)
        return FitContext(
            dataset=fit_ds, prefs=answered.to_batch(fit_ds, "cpu"), steps=12, seed=seed,
            device="cpu", rng=seed_everything(seed), generator=gen, pref_data=answered,
        )  # fmt: skip

    def agent(seed: int):
        seed_everything(seed)
        return mod.Agent(cfg, spec)

    singles = []
    for seed, n in runs:
        single = agent(seed)
        for _ in single.fit(ctx(seed, n)):
            pass
        singles.append(single)
    members = [agent(seed) for seed, _ in runs]
    rows = list(fit(mod, members, [ctx(seed, n) for seed, n in runs]))
    assert rows and all(len(r) == 2 for r in rows)
    obs = ds.observations[:7]
    for single, member in zip(singles, members, strict=True):
        np.testing.assert_allclose(member.act(obs), single.act(obs), rtol=1e-4, atol=1e-5)
    assert not np.allclose(members[0].act(obs), members[1].act(obs))


@pytest.mark.parametrize("name", ["mr", "pt", "hprior", "dppo", "regret"])
def test_stacked_first_phases_run_in_turn_for_labels_of_different_sizes(name):
    """Members whose label sets differ in size cannot share one table of pairs: the learners
    whose first phase trains stacked run it one member after the other instead, and the
    members still act as their single runs."""
    _against_single_runs(name, {}, (6, 8), lambda mod, a, c: mod.fit_stacked(a, c))


@pytest.mark.parametrize(
    ("name", "overrides", "sizes"),
    [
        ("cpl", {}, (6, 8)),
        ("cpl", {"policy": "gaussian"}, (6, 6)),
        ("ipl", {}, (6, 8)),
        ("bc", {"data": "pos"}, (6, 8)),
        ("oppo", {}, (6, 8)),
    ],
)
def test_members_that_cannot_stack_train_one_after_the_other_in_a_sweep(name, overrides, sizes):
    """What the runner's stacked seeds train with (fit_stacked_or_in_turn): a learner whose
    fit_stacked cannot take these members (labels of different sizes, CPL's Gaussian policy)
    says so before training anything, and the members then train one after the other,
    each as its single run, instead of failing the sweep."""
    from pbrl.learn.stack import CannotStack, fit_stacked_or_in_turn

    with pytest.raises(CannotStack):  # the learner's own stacked path refuses them
        _against_single_runs(name, overrides, sizes, lambda m, a, c: m.fit_stacked(a, c))
    _against_single_runs(
        name, overrides, sizes, lambda m, a, c: fit_stacked_or_in_turn(m.fit_stacked, a, c)
    )


def test_member_gradient_clipping_is_each_members_own():
    """clip_member_grads_ on stacked gradients = nn.utils.clip_grad_norm_ on each member's."""
    import torch

    from pbrl.learn.stack import clip_member_grads_

    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (3,), (3, 2, 5)]
    stacked = [torch.randn(s, generator=gen).requires_grad_(True) for s in shapes]
    scales = torch.tensor([10.0, 0.01, 1.0])  # member 1 below the clip, the others above
    for t in stacked:
        t.grad = torch.randn(t.shape, generator=gen) * scales.reshape(3, *([1] * (t.dim() - 1)))
    want = []
    for i in range(3):
        member = [t[i].detach().clone().requires_grad_(True) for t in stacked]
        for m, t in zip(member, stacked, strict=True):
            m.grad = t.grad[i].clone()
        torch.nn.utils.clip_grad_norm_(member, 0.5)
        want.append([m.grad for m in member])
    norms = clip_member_grads_(stacked, 0.5)
    assert norms.shape == (3,) and norms[1] < 0.5 < norms[0]
    for i in range(3):
        for t, w in zip(stacked, want[i], strict=True):
            torch.testing.assert_close(t.grad[i], w)


# ---- minibatches for stacked members (pbrl/learn/data.py, pbrl/learn/kit.py) ---------------


def _dataset(n: int = 40):

    rng = np.random.default_rng(3)
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[n // 2 - 1 :: n // 2] = True
    return OfflineDataset(
        id="test/stack-rows",
        task_id=None,
        observations=obs,
        actions=rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
        rewards=rng.normal(size=n).astype(np.float32),
        next_observations=np.roll(obs, -1, axis=0),
        terminals=np.zeros(n, bool),
        timeouts=timeouts,
        starts=np.array([0, n // 2]),
        lengths=np.array([n // 2, n // 2]),
    )


def test_uniform_minibatches_draw_blocks_from_the_generator():

    draws = uniform_minibatches(40, 8, torch.Generator().manual_seed(5), "cpu", block=4)
    got = torch.stack([next(draws) for _ in range(8)])  # two blocks
    gen = torch.Generator().manual_seed(5)
    want = torch.cat([torch.randint(0, 40, (4, 8), generator=gen) for _ in range(2)])
    assert torch.equal(got, want)
    assert got.min() >= 0 and got.max() < 40
    with pytest.raises(PbrlError, match="no transitions"):
        next(uniform_minibatches(0, 8, torch.Generator(), "cpu"))


def test_stacked_rows_are_each_members_own_rows():
    from pbrl.learn.kit import uniform_minibatches

    ds = _dataset()
    rewards = [np.arange(40, dtype=np.float32) * s for s in (1.0, 2.0, 3.0)]
    table = TransitionTensors.stacked([ds, ds.without_rewards(), ds], "cpu", rewards)
    assert table.reward.shape == (3, 40)
    assert table.obs.shape == (40, OBS)  # the transitions once, not per member
    singles = [TransitionTensors.from_dataset(ds, "cpu", r) for r in rewards]
    streams = [s.minibatches(8, torch.Generator().manual_seed(i)) for i, s in enumerate(singles)]
    draws = [uniform_minibatches(40, 8, torch.Generator().manual_seed(i), "cpu") for i in range(3)]
    for _ in range(40):  # past a block
        stacked = table.rows(torch.stack([next(d) for d in draws]))
        for i, stream in enumerate(streams):
            one = next(stream)
            for key in ("obs", "act", "reward", "next_obs", "done"):
                assert torch.equal(stacked[key][i], one[key]), key
    same = TransitionTensors.stacked([ds, ds], "cpu", [rewards[0], rewards[0].copy()])
    assert same.reward.shape == (40,)  # equal rewards are held once
    assert TransitionTensors.stacked([ds, ds], "cpu", [None, None]).reward is None


def test_stacked_rows_refuse_members_with_other_transitions():

    from pbrl.learn.data import TransitionTensors

    ds = _dataset()
    other = replace(ds, observations=ds.observations + 1.0)
    with pytest.raises(DataError, match="member 1's transitions differ.*obs"):
        TransitionTensors.stacked([ds, other], "cpu", [None, None])
    copy = replace(ds, observations=ds.observations.copy())  # equal rows, other arrays: taken
    assert TransitionTensors.stacked([ds, copy], "cpu", [None, None]).size == 40
    with pytest.raises(DataError, match="some members have a reward"):
        TransitionTensors.stacked([ds, ds], "cpu", [None, ds.rewards])


def _host_read(*args, **kwargs):
    raise AssertionError("a tensor was read on the host inside the update")


def test_iql_updates_read_nothing_on_the_host():
    """No value leaves the device inside an IQL update, single or stacked: on a GPU each
    such read (``.item()``, ``bool``, ``float``, torch.distributions' argument checks) makes
    the host wait for the device every step (docs/performance.md, "The CUDA path")."""
    gen = torch.Generator().manual_seed(0)
    cfg = IQLConfig(hidden=(16, 16))
    single = _member(0, cfg)
    stacked = StackedIQL([_member(s, cfg) for s in (1, 2)])
    one = _batch(gen)
    two = {k: torch.stack([v, _batch(gen)[k]]) for k, v in one.items()}
    single.update(one)  # first calls (optimizer state) outside the check
    stacked.update(two)
    with (
        mock.patch.object(torch.Tensor, "__bool__", _host_read),
        mock.patch.object(torch.Tensor, "__float__", _host_read),
        mock.patch.object(torch.Tensor, "item", _host_read),
        mock.patch.object(torch, "_is_all_true", _host_read),
    ):
        for _ in range(3):
            single.update(one)
            stacked.update(two)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_iql_updates_do_not_sync_on_cuda():
    """On a GPU, torch itself says whether an update made the host wait for the device."""
    gen = torch.Generator().manual_seed(0)
    cfg = IQLConfig(hidden=(16, 16))
    single = IQLLearner(OBS, ACT, cfg, max_steps=20, device="cuda")
    stacked = StackedIQL([IQLLearner(OBS, ACT, cfg, max_steps=20, device="cuda") for _ in "ab"])
    one = {k: v.cuda() for k, v in _batch(gen).items()}
    two = {k: torch.stack([v, v]) for k, v in one.items()}
    single.update(one)
    stacked.update(two)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            single.update(one)
            stacked.update(two)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_cosine_lr_is_torchs_cosine_schedule():
    """The closed form a captured update fills its learning-rate tensor with is the
    schedule torch's ``CosineAnnealingLR`` steps the eager update through."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7)
    for step in range(1, 8):
        opt.step()
        sched.step()
        assert cosine_lr(3e-4, step, 7) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
    assert cosine_lr(3e-4, 9, 7) == 0.0  # held at the end, as the learners hold it


def test_actor_lr_follows_torchs_schedule_and_restarts():
    """The rate ActorLr writes, a float or a tensor (what a captured update reads, filled in
    closed form), moves as torch's scheduler moves a float rate, holds at 0 after its total,
    and restarts at the base."""
    params = [torch.zeros(1, requires_grad=True)]
    torchs = torch.optim.Adam(params, lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(torchs, T_max=5)
    plain = ActorLr(torch.optim.Adam(params, lr=1e-3), 1e-3, 5, cosine=True)
    tensor = ActorLr(torch.optim.Adam(params, lr=torch.tensor(1e-3)), 1e-3, 5, cosine=True)
    for step in range(7):
        torchs.step()  # no gradients: a no-op, in the order torch's scheduler wants
        if step < 5:
            sched.step()
        for schedule in (plain, tensor):
            schedule.step()
        want = torchs.param_groups[0]["lr"]
        assert isinstance(plain.opt.param_groups[0]["lr"], float)
        assert plain.opt.param_groups[0]["lr"] == pytest.approx(want, abs=1e-12)
        assert float(tensor.opt.param_groups[0]["lr"]) == pytest.approx(want, abs=1e-9)
    assert float(tensor.opt.param_groups[0]["lr"]) == pytest.approx(0.0, abs=1e-12)
    for schedule in (plain, tensor):
        schedule.restart(3)
        assert float(schedule.opt.param_groups[0]["lr"]) == pytest.approx(1e-3)
    held = ActorLr(torch.optim.Adam(params, lr=torch.tensor(1e-3)), 1e-3, 5, cosine=False)
    held.step()
    assert float(held.opt.param_groups[0]["lr"]) == pytest.approx(1e-3)


def test_cuda_graph_has_no_effect_on_a_cpu():
    cfg = IQLConfig(hidden=(16, 16), cuda_graph=True)
    stacked = StackedIQL([_member(s, cfg) for s in (0, 1)])
    assert stacked.captured is None and not stacked.actor_lr.tensor
    single, plain = _member(0, cfg), _member(0, IQLConfig(hidden=(16, 16)))
    assert single.captured is None and not single.actor_lr.tensor
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        batch = _batch(gen)
        got, want = single.update(batch), plain.update(batch)
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, rtol=0, atol=0)


class _CpuGraphs:
    """Stands in for the CUDA calls of CapturedStep on a CPU, with a graph's semantics: a
    capture records the step and runs nothing, a replay runs the recorded step on the
    captured inputs and writes its results into the same output tensors every time."""

    def __init__(self) -> None:
        self.captures = self.replays = 0

    def device(self, device):
        return contextlib.nullcontext()

    def eager(self, fn, batch):
        return fn(batch)

    def capture(self, fn, static_in):
        self.captures += 1
        out: dict = {}  # the graph's output tensors: the replays fill them
        return (fn, static_in, out), out

    def replay(self, graph):
        self.replays += 1
        fn, static_in, out = graph
        for key, value in fn(static_in).items():
            if key in out:
                out[key].copy_(value)
            else:
                out[key] = value.detach().clone()


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
@pytest.mark.parametrize("stacked", [False, True])
def test_the_captured_update_path_trains_as_the_eager_one(monkeypatch, stacked, schedule):
    """The IQL update in its CUDA-graph form (warm-up calls, a capture on a copy of the
    batch, replays on copied batches, the step count and the actor's rate outside the graph,
    capturable Adams, the rate a tensor) run on a CPU with a stand-in for the CUDA calls:
    every update's metrics and the parameters and rates after it are the eager update's."""
    from pbrl.learn import iql as iql_mod
    from pbrl.learn.kit import CapturedStep

    graphs = _CpuGraphs()
    monkeypatch.setattr(CapturedStep, "backend", graphs)
    monkeypatch.setattr(iql_mod, "captures_updates", lambda cfg, device: bool(cfg.cuda_graph))
    gen = torch.Generator().manual_seed(0)

    def build(graph: bool):
        cfg = IQLConfig(hidden=(16, 16), actor_schedule=schedule, cuda_graph=graph)
        if stacked:
            return StackedIQL([_member(s, cfg) for s in (0, 1)])
        return _member(0, cfg)

    eager, captured = build(False), build(True)
    assert eager.captured is None and captured.captured is not None
    assert isinstance(captured.actor_opt.param_groups[0]["lr"], torch.Tensor)
    for _ in range(9):  # 3 warm-up calls, the capture, 5 replays
        one = _batch(gen)
        batch = {k: torch.stack([v, _batch(gen)[k]]) for k, v in one.items()} if stacked else one
        want, got = eager.update(batch), captured.update(batch)
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6)
        lr = captured.actor_opt.param_groups[0]["lr"]
        assert float(lr) == pytest.approx(eager.actor_opt.param_groups[0]["lr"], rel=1e-6)
    assert (graphs.captures, graphs.replays) == (1, 6) and captured.steps == eager.steps == 9
    params = (lambda m: m.params) if stacked else (lambda m: dict(m.named_parameters()))
    for part, value in params(eager).items():
        torch.testing.assert_close(params(captured)[part], value, rtol=1e-5, atol=1e-6)


def test_ipl_refuses_a_cuda_graph():
    from pbrl.learn.api import AgentSpec, load_agent_module, make_config

    mod = load_agent_module("ipl")
    one = np.ones(ACT, np.float32)
    with pytest.raises(PbrlError, match="--agent.cuda_graph"):
        mod.Agent(make_config(mod, None, {"cuda_graph": "true"}), AgentSpec(OBS, ACT, -one, one))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_cuda_graph_replays_the_single_update(schedule):
    """One IQL learner with its update captured as a CUDA graph trains as the eager one."""
    gen = torch.Generator().manual_seed(0)
    cfgs = {g: IQLConfig(hidden=(16, 16), actor_schedule=schedule, cuda_graph=g) for g in (0, 1)}
    learners = {g: _cuda_member(0, cfg) for g, cfg in cfgs.items()}
    assert learners[1].captured is not None and learners[0].captured is None
    for _ in range(8):
        batch = {k: v.cuda() for k, v in _batch(gen).items()}
        out = {g: learner.update(batch) for g, learner in learners.items()}
        for key, value in out[0].items():
            torch.testing.assert_close(out[1][key], value, rtol=1e-4, atol=1e-5)
    lrs = [float(x.actor_opt.param_groups[0]["lr"]) for x in learners.values()]
    assert lrs[1] == pytest.approx(lrs[0], rel=1e-6)
    for (name, a), (_, b) in zip(
        learners[0].state_dict().items(), learners[1].state_dict().items(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_cuda_graph_replays_the_stacked_update(schedule):
    """The stacked IQL update captured as a CUDA graph (``cuda_graph``) trains every member
    as the eager stacked update does: the same metrics and parameters, update by update,
    through the warm-up calls, the capture and the replays, and the same learning rate."""
    gen = torch.Generator().manual_seed(0)
    members = {
        graph: StackedIQL(
            [
                _cuda_member(
                    s, IQLConfig(hidden=(16, 16), actor_schedule=schedule, cuda_graph=graph)
                )
                for s in (0, 1, 2)
            ]
        )
        for graph in (False, True)
    }
    assert members[True].captured is not None and members[False].captured is None
    for _ in range(8):
        batch = {
            k: torch.stack([v, *(_batch(gen)[k] for _ in "ab")]).cuda()
            for k, v in _batch(gen).items()
        }
        out = {graph: s.update(batch) for graph, s in members.items()}
        for key, value in out[False].items():
            torch.testing.assert_close(out[True][key], value, rtol=1e-4, atol=1e-5)
    lrs = [float(s.actor_opt.param_groups[0]["lr"]) for s in members.values()]
    assert lrs[1] == pytest.approx(lrs[0], rel=1e-6)
    for part in ("v", "q", "q_target", "actor"):
        for name, value in members[False].params[part].items():
            torch.testing.assert_close(
                members[True].params[part][name], value, rtol=1e-4, atol=1e-5
            )


def _cuda_member(seed: int, cfg: IQLConfig) -> IQLLearner:
    torch.manual_seed(seed)
    return IQLLearner(OBS, ACT, cfg, max_steps=10, device="cuda")


def test_take_window_is_each_members_own_slice():
    """IPL's window gather: one run's window is the slice from its start; K stacked members'
    windows are each member's own slice from its own start."""
    from pbrl.agents.ipl import take_window

    x = torch.arange(3 * 4 * 9 * 2, dtype=torch.float32).reshape(3, 4, 9, 2)  # K, B, L, f
    one = take_window(x[1], torch.tensor([5]), 3, 0)
    assert torch.equal(one, x[1][:, 5:8])
    starts = torch.tensor([[0], [5], [2]])
    out = take_window(x, starts, 3, 1)
    for k, s in enumerate((0, 5, 2)):
        assert torch.equal(out[k], x[k][:, s : s + 3])
    mask = x[..., 0]  # (K, B, L): no feature dim
    assert torch.equal(take_window(mask, starts, 3, 1)[2], mask[2][:, 2:5])


def test_member_label_rows_are_each_members_own_pairs():
    from pbrl.learn.stack import member_label_rows
    from pbrl.types import PreferenceBatch

    def labels(seed: int, pairs: int = 6, length: int = 5) -> PreferenceBatch:
        g = torch.Generator().manual_seed(seed)
        seg = lambda *s: torch.randn(pairs, length, *s, generator=g)  # noqa: E731
        return PreferenceBatch(
            obs_a=seg(OBS), act_a=seg(ACT), obs_b=seg(OBS), act_b=seg(ACT),
            prefer_b=torch.rand(pairs, generator=g), mask_a=seg(), mask_b=seg(),
            next_obs_a=seg(OBS), next_obs_b=seg(OBS), terminal_a=seg(), terminal_b=seg(),
        )  # fmt: skip

    members = [labels(0), labels(1), labels(2)]
    idx = torch.tensor([[0, 5], [3, 3], [1, 4]])
    fields = ("obs_a", "mask_b", "prefer_b")
    got = member_label_rows(members, fields)(idx)
    assert set(got) == set(fields)
    for k, p in enumerate(members):
        own = p.rows(idx[k], fields)
        for f in fields:
            assert torch.equal(got[f][k], own[f]), f
            assert torch.equal(own[f], getattr(p.index(idx[k]), f))
    same = member_label_rows([members[0]] * 3, fields)(idx)  # one table, held once
    assert torch.equal(same["obs_a"][2], members[0].obs_a[idx[2]])
    with pytest.raises(PbrlError, match="labels differ in shape"):
        member_label_rows([labels(0), labels(1, length=4)], fields)


def test_stack_vmap_bench_runs_and_refuses_bad_sizes(capsys, monkeypatch):
    """bench/stack_vmap.py times each part both ways and prints one row per part; a bad size
    is a usage error (exit 2)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "stack_vmap.py"
    monkeypatch.syspath_prepend(str(path.parent))  # as `python bench/stack_vmap.py` runs it
    spec = importlib.util.spec_from_file_location("stack_vmap", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sizes = ["--k", "2", "--batch", "2", "--length", "3", "--embed", "4"]
    assert bench.main([*sizes, "--steps", "1", "--rounds", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 7  # the header and the seven parts
    with pytest.raises(SystemExit) as err:
        bench.main(["--embed", "3"])
    assert err.value.code == 2


def test_op_counts_bench_counts_operators_and_refuses_bad_input(capsys, monkeypatch):
    """bench/op_counts.py counts the ATen operators that do work (views and allocations left
    out, nested calls once), prints a row per learner, and refuses bad input (exit 2)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "op_counts.py"
    monkeypatch.syspath_prepend(str(path.parent))  # as `python bench/op_counts.py` runs it
    spec = importlib.util.spec_from_file_location("op_counts", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    assert bench.count_ops(lambda: (a + b).relu().sum()) == 3
    assert bench.count_ops(lambda: a.view(3, 4).t().unsqueeze(0)) == 0
    assert bench.count_ops(lambda: torch.nn.functional.linear(a, torch.randn(2, 3))) == 2
    tiny = ["--set", "hidden=8,8", "--set", "batch_size=4"]
    assert bench.main(["--agents", "bc", "--steps", "2", "--stack", "2", *tiny]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| bc ")]
    one, stacked = (float(x) for x in rows[0].split("|")[2:4])
    assert 10 < one < stacked < 2 * one  # one step for both members, a few ops more
    for bad in (["--agents", "nope"], ["--stack", "1"], ["--set", "hidden"]):
        with pytest.raises(SystemExit) as err:
            bench.main(bad)
        assert err.value.code == 2
