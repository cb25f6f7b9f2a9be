"""Losses and building blocks of the core learners against values worked out by hand."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from pbrl.agents.bc import bc_mse
from pbrl.agents.cpl import (
    bc_loss,
    biased_bce_with_logits,
    biased_bce_with_scores,
    comparison_accuracy,
    score_accuracy,
    segment_advantage,
    segment_scores,
    softplus_neg,
    warmup_factor,
)
from pbrl.agents.ipl import chi2_regularizer, implicit_reward, ipl_preference_loss, row_weights
from pbrl.agents.mr import bt_accuracy, bt_ensemble_loss
from pbrl.learn.iql import (
    IQLConfig,
    IQLLearner,
    awr_policy_loss,
    awr_weights,
    expectile_loss,
    iql_q_loss,
    iql_value_loss,
    reward_normalize,
)
from pbrl.learn.kit import deterministic_logp as neg_sq_logp
from pbrl.learn.kit import fused_adam
from pbrl.learn.kit import segment_sum as mr_segment_scores
from pbrl.learn.nn import MLP, CausalTransformer, Dropout, EnsembleMLP, soft_update

T = torch.tensor


def sp(x: float) -> float:
    """softplus(-x) = log(1 + e^-x), by hand."""
    return math.log1p(math.exp(-x))


# ---- IQL ---------------------------------------------------------------------------------------


def test_expectile_and_value_loss():
    # diff 2 -> 0.7 * 4 = 2.8 ; diff -1 -> 0.3 * 1 = 0.3
    np.testing.assert_allclose(expectile_loss(T([2.0, -1.0]), 0.7).numpy(), [2.8, 0.3], rtol=1e-6)
    assert iql_value_loss(T([3.0, 0.0]), T([1.0, 1.0]), 0.7).item() == pytest.approx(1.55)


def test_q_loss_mean_and_sum():
    qs = T([[1.0, 2.0], [3.0, 4.0]])  # member MSEs vs target 1: 0.5 and 6.5
    assert iql_q_loss(qs, T([1.0, 1.0]), "mean").item() == pytest.approx(3.5)
    assert iql_q_loss(qs, T([1.0, 1.0]), "sum").item() == pytest.approx(7.0)


def test_awr_weight_clipped_from_above_only():
    w = awr_weights(T([0.0, 1.0, 10.0, -100.0]), beta=1.0)
    np.testing.assert_allclose(w[:3].numpy(), [1.0, math.e, 100.0], rtol=1e-6)
    assert 0.0 < w[3].item() < 1e-40 or w[3].item() == pytest.approx(math.exp(-100), abs=1e-44)
    # (1 * 1 + 2 * 2 + 100 * 3) / 3
    loss = awr_policy_loss(T([1.0, 2.0, 3.0]), T([0.0, math.log(2.0), 10.0]), beta=1.0)
    assert loss.item() == pytest.approx(305.0 / 3.0, rel=1e-6)


def test_reward_normalisations():
    # The family comes from the registered task's TaskSpec.family (envs/), not from the id.
    r = np.array([1.0, 1.0, 3.0, 3.0])  # episode returns 2 and 6: span 4 -> x 250
    starts, lengths = np.array([0, 2]), np.array([2, 2])
    hop = "mujoco/hopper"
    np.testing.assert_allclose(reward_normalize(r, starts, lengths, "none", hop), r)
    np.testing.assert_allclose(
        reward_normalize(r, starts, lengths, "corl", hop), [250, 250, 750, 750]
    )
    np.testing.assert_allclose(
        reward_normalize(r, starts, lengths, "pt_learned", hop), [250.5, 250.5, 750.5, 750.5]
    )
    np.testing.assert_allclose(
        reward_normalize(r, starts, lengths, "corl", "minari/AntMaze_UMaze-v4"), r - 1
    )
    np.testing.assert_allclose(
        reward_normalize(r, starts, lengths, "pt_true", "minari/AdroitHandPen-v1"), r
    )
    # antmaze, learned: minus min_ret / len = 1 per step -> [0, 0, 2, 2], returns 0 and 4,
    # x 1000 / 4 -> [0, 0, 500, 500], then - 1
    np.testing.assert_allclose(
        reward_normalize(r, starts, lengths, "pt_learned", "minari/AntMaze_UMaze-v4"),
        [-1, -1, 499, 499],
    )


def _batch(seed: int = 0, n: int = 8, d: int = 3, a: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(n, d, generator=g),
        "act": torch.rand(n, a, generator=g) * 2 - 1,
        "reward": torch.randn(n, generator=g),
        "next_obs": torch.randn(n, d, generator=g),
        "done": (torch.rand(n, generator=g) < 0.3).float(),
    }


@pytest.mark.parametrize("semantics", ["pre", "post"])
def test_iql_update_uses_the_documented_value(semantics):
    """CORL ('pre'): V before its step in the Q target and advantage; JAX ('post'): after."""
    torch.manual_seed(0)
    cfg = IQLConfig(hidden=(8,), value_for_targets=semantics, obs_norm=False)
    learner = IQLLearner(3, 2, cfg, max_steps=10)
    b = _batch()
    q_before = copy.deepcopy(learner.q)
    v_before = copy.deepcopy(learner.v)
    with torch.no_grad():
        target_q = learner.q_target(b["obs"], b["act"]).min(0).values
    m = learner.metrics(learner.update(b))
    v_used = v_before if semantics == "pre" else learner.v  # V is not touched after its step
    with torch.no_grad():
        y = b["reward"] + 0.99 * (1 - b["done"]) * v_used(b["next_obs"])
        expect_q = iql_q_loss(q_before(b["obs"], b["act"]), y, "mean").item()
        adv = target_q - v_used(b["obs"])
        expect_adv = adv.mean().item()
        expect_w = torch.exp(cfg.beta * adv).clamp(max=cfg.max_weight).mean().item()
        expect_v = v_before(b["obs"]).mean().item()
        expect_qs = q_before(b["obs"], b["act"]).mean().item()
        other = learner.v if semantics == "pre" else v_before
        y_other = b["reward"] + 0.99 * (1 - b["done"]) * other(b["next_obs"])
        wrong_q = iql_q_loss(q_before(b["obs"], b["act"]), y_other, "mean").item()
    assert float(m["q_loss"]) == pytest.approx(expect_q, rel=1e-5)
    assert m["adv_mean"] == pytest.approx(expect_adv, rel=1e-5, abs=1e-7)
    # the log metrics, reduced from the step's tensors (IQLLearner.metrics)
    assert list(m) == [
        "v_loss", "v_mean", "q_loss", "q_mean", "actor_loss", "adv_mean", "awr_weight_mean"
    ]  # fmt: skip
    assert float(m["v_mean"]) == pytest.approx(expect_v, rel=1e-5, abs=1e-7)
    assert float(m["q_mean"]) == pytest.approx(expect_qs, rel=1e-5, abs=1e-7)
    assert float(m["awr_weight_mean"]) == pytest.approx(expect_w, rel=1e-5)
    assert abs(wrong_q - expect_q) > 1e-6  # the test can tell the two semantics apart


def test_polyak_and_ensemble_blocks():
    tgt, src = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    torch.nn.init.zeros_(tgt.weight)
    torch.nn.init.ones_(src.weight)
    soft_update(tgt, src, 0.005)
    np.testing.assert_allclose(tgt.weight.detach().numpy(), np.full((2, 2), 0.005), rtol=1e-6)

    torch.manual_seed(0)
    ens = EnsembleMLP(3, 4, 2, hidden=(5,))
    x = torch.randn(6, 4)
    out = ens(x)
    assert out.shape == (3, 6, 2)
    for m in range(3):  # member m = its own weights applied by hand
        w0, b0 = ens.linears[0].weight[m], ens.linears[0].bias[m]
        w1, b1 = ens.linears[1].weight[m], ens.linears[1].bias[m]
        manual = torch.relu(x @ w0 + b0) @ w1 + b1
        torch.testing.assert_close(out[m], manual)
    per = ens(torch.randn(3, 6, 4))
    assert per.shape == (3, 6, 2)


@pytest.mark.parametrize("decoupled", [False, True])
def test_fused_adam_steps_as_torchs_adam_or_adamw(decoupled):
    """kit.fused_adam is torch's Adam (``decoupled``: AdamW) with the given weight decay, in
    its fused kernel, to float32 rounding of torch's per-parameter loop."""
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(5, 3, generator=gen)
    grads = [torch.randn(5, 3, generator=gen) for _ in range(4)]
    ref_w, adam_w, adamw_w = (w0.clone().requires_grad_(True) for _ in range(3))
    ours = fused_adam([ref_w], lr=1e-2, weight_decay=0.5, decoupled=decoupled)
    adam = torch.optim.Adam([adam_w], lr=1e-2, weight_decay=0.5, foreach=False)
    adamw = torch.optim.AdamW([adamw_w], lr=1e-2, weight_decay=0.5, foreach=False)
    for g in grads:
        for w, opt in ((ref_w, ours), (adam_w, adam), (adamw_w, adamw)):
            w.grad = g.clone()
            opt.step()
    assert ours.defaults["fused"]
    want, other = (adamw_w, adam_w) if decoupled else (adam_w, adamw_w)
    torch.testing.assert_close(ref_w, want, rtol=1e-6, atol=1e-7)
    assert (ref_w - other).abs().max() > 1e-4  # the test tells L2 from decoupled decay


@pytest.mark.parametrize("decoupled", [False, True])
def test_fused_adams_lean_steps_are_torchs_fused_steps_bit_for_bit(decoupled):
    """After its first step, kit's FusedAdam steps through the state tensors it listed once
    (not torch's ``step``): the same parameters and moments as torch's own fused Adam, bit
    for bit, over two groups, a rate changed between steps, a step where one parameter has
    no gradient (torch's own step then, which skips it) and a reloaded state."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(4, 3), (3,), (2, 5)]
    init = [torch.randn(s, generator=gen) for s in shapes]
    ours_p = [w.clone().requires_grad_(True) for w in init]
    ref_p = [w.clone().requires_grad_(True) for w in init]

    def groups(ps: list[torch.Tensor]) -> list[dict]:
        return [{"params": ps[:2]}, {"params": ps[2:], "lr": 3e-3}]

    ours = fused_adam(groups(ours_p), lr=1e-2, weight_decay=0.1, decoupled=decoupled)
    ref = torch.optim.Adam(
        groups(ref_p), lr=1e-2, weight_decay=0.1, decoupled_weight_decay=decoupled, fused=True
    )
    for step in range(6):
        grads = [torch.randn(s, generator=gen) for s in shapes]
        if step == 4:
            grads[1] = None  # a parameter without a gradient this step
        for ps, opt in ((ours_p, ours), (ref_p, ref)):
            opt.zero_grad()
            assert all(p.grad is None for p in ps)
            for p, g in zip(ps, grads, strict=True):
                p.grad = None if g is None else g.clone()
            opt.param_groups[1]["lr"] = 3e-3 / (1 + step)
            opt.step()
        if step == 1:
            assert ours.state_lists() is not None  # the lean path is the one taken
        if step == 3:
            ours.load_state_dict(ours.state_dict())
            assert ours.lists is None
        for a, b in zip(ours_p, ref_p, strict=True):
            assert torch.equal(a, b), step
    for a, b in zip(ours_p, ref_p, strict=True):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(ours.state[a][key], ref.state[b][key])


def _graph_nodes(t: torch.Tensor) -> set[str]:
    seen, names, todo = set(), set(), [t.grad_fn]
    while todo:
        fn = todo.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.add(type(fn).__name__)
        todo.extend(next_fn for next_fn, _ in fn.next_functions)
    return names


@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("dropout_before_act", [False, True])
def test_in_place_relu_never_overwrites_a_view(layer_norm, dropout_before_act):
    """The MLPs' ReLU acts in place; on a view autograd would copy the whole base back in the
    backward pass (a CopySlices node). Single and member forwards, 2-4 dim inputs, with
    LayerNorm and dropout before or after the activation: the ReLU is in the graph, in
    place, and never on a view; the values are the out-of-place ReLU's."""
    torch.manual_seed(0)
    mlp = MLP(5, 3, (8, 8), "relu", None, 0.2, layer_norm, dropout_before_act=dropout_before_act)
    ens = EnsembleMLP(2, 5, 3, (8, 8), "relu", layer_norm=layer_norm)
    params = {k: torch.stack([v, v * 0.5]) for k, v in mlp.named_parameters()}
    ens_params = {k: torch.stack([v, v * 0.5]) for k, v in ens.named_parameters()}
    cases = [
        lambda: mlp(torch.randn(4, 5)),
        lambda: mlp(torch.randn(4, 6, 5)),
        lambda: mlp.forward_members(params, torch.randn(2, 4, 5)),
        lambda: mlp.forward_members(params, torch.randn(2, 4, 6, 5)),
        lambda: ens(torch.randn(4, 5)),
        lambda: ens(torch.randn(2, 4, 5)),
        lambda: ens.forward_members(ens_params, torch.randn(2, 4, 5), shared=True),
    ]
    for make in cases:
        mlp.train()
        nodes = _graph_nodes(make())
        assert "ReluBackward0" in nodes and "CopySlices" not in nodes, nodes
    mlp.eval()
    x = torch.randn(4, 6, 5)
    for m in mlp.net:
        if isinstance(m, torch.nn.ReLU):
            assert m.inplace
    with torch.no_grad():
        want = x.reshape(-1, 5)
        for m in mlp.net:
            want = torch.relu(want) if isinstance(m, torch.nn.ReLU) else m(want)
        torch.testing.assert_close(mlp(x), want.reshape(4, 6, 3))


@pytest.mark.parametrize("shape", [(2, 4, 5), (2, 4, 6, 5)])
def test_mlp_member_forward_gives_weight_gradients_in_the_weights_layout(shape):
    """Without LayerNorm the member forward runs features first, so autograd hands every
    stacked weight a gradient in the weight's own layout, which the optimizer takes as it
    is; in rows-first form each came out transposed and was copied once more. The values
    and gradients are each member's own forward's."""
    torch.manual_seed(0)
    mlp = MLP(5, 3, (8, 8), "relu", "tanh")
    base = dict(mlp.named_parameters())
    params = {k: torch.stack([v, v * 0.5]).detach().requires_grad_() for k, v in base.items()}
    x = torch.randn(*shape)
    out = mlp.forward_members(params, x)
    grads = torch.autograd.grad(out.square().sum(), list(params.values()))
    assert all(g.is_contiguous() for g in grads), [tuple(g.stride()) for g in grads]
    for i in range(2):
        member = {k: v[i].detach().requires_grad_() for k, v in params.items()}
        want = torch.func.functional_call(mlp, member, (x[i],))
        torch.testing.assert_close(out[i], want)
        own = torch.autograd.grad(want.square().sum(), list(member.values()))
        for g, h in zip(grads, own, strict=True):
            torch.testing.assert_close(g[i], h)


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5])
def test_cpu_dropout_keeps_and_scales_as_torch_dropout(p):
    """pbrl's CPU dropout: each element kept with probability 1 - p and scaled by 1 / (1 - p)
    (the kept fraction within 5 standard errors), gradients through the kept elements only,
    the same mask from the same seed, the identity in evaluation."""
    drop = Dropout(p)
    x = torch.randn(400, 500, requires_grad=True)
    torch.manual_seed(3)
    y = drop(x)
    kept = y != 0
    n = kept.numel()
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))
    torch.manual_seed(3)
    assert torch.equal(drop(x) != 0, kept)
    assert not torch.equal(drop(x) != 0, kept)  # the generator moved on
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(Dropout(0.0)(x), x)


def test_cpu_dropout_draws_each_members_own_mask():
    """Under ``vmap(randomness="different")`` (the transformers' stacked paths) and in the
    member forwards every member gets its own mask."""
    drop = Dropout(0.5)
    x = torch.ones(4, 300)
    y = torch.func.vmap(drop, randomness="different")(x)
    masks = y != 0
    assert all(not torch.equal(masks[0], masks[i]) for i in range(1, 4))
    torch.manual_seed(0)
    mlp = MLP(3, 2, (64,), dropout=0.5, dropout_before_act=True)
    params = {k: torch.stack([v, v]) for k, v in mlp.named_parameters()}
    out = mlp.forward_members(params, torch.ones(2, 5, 3))
    assert not torch.equal(out[0], out[1])  # the same weights and inputs, two masks


def test_causal_transformer_is_causal_and_returns_attention():
    torch.manual_seed(0)
    tr = CausalTransformer(8, n_layers=2, n_heads=2, max_len=6).eval()
    x = torch.randn(1, 5, 8)
    h, att = tr(x)
    assert h.shape == (1, 5, 8) and len(att) == 2 and att[0].shape == (1, 2, 5, 5)
    upper = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    assert torch.all(att[0][..., upper] == 0)
    torch.testing.assert_close(att[1].sum(-1), torch.ones(1, 2, 5))
    y = x.clone()
    y[:, 3:] += 1.0  # changing the future leaves the past untouched
    h2, _ = tr(y)
    torch.testing.assert_close(h2[:, :3], h[:, :3])
    _, att_m = tr(x, key_mask=T([[1, 1, 1, 0, 0]]))
    assert torch.all(att_m[0][0, :, 4, 3:] == 0)


@pytest.mark.parametrize(("layers", "causal"), [(1, True), (2, True), (2, False)])
def test_transformer_with_one_query_per_row_is_the_full_forward_at_that_token(layers, causal):
    """``query``: the last layer computes one token per row; its hidden state and attention
    row are the full forward's at that token, padded keys included."""
    torch.manual_seed(0)
    tr = CausalTransformer(8, n_layers=layers, n_heads=2, max_len=7, causal=causal).eval()
    x = torch.randn(4, 7, 8)
    mask = T([[1] * 7, [1, 1, 1, 0, 0, 0, 0], [1] * 5 + [0, 0], [1, 0, 0, 0, 0, 0, 0]])
    query = torch.tensor([6, 2, 3, 0])
    full, att = tr(x, mask)
    one, att_one = tr(x, mask, query)
    rows = torch.arange(4)
    assert one.shape == (4, 1, 8) and att_one[-1].shape == (4, 2, 1, 7)
    torch.testing.assert_close(one[:, 0], full[rows, query], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(att_one[-1][:, :, 0], att[-1][rows, :, query], rtol=1e-5, atol=1e-6)
    for a, b in zip(att_one[:-1], att[:-1], strict=True):  # the layers before: every token
        torch.testing.assert_close(a, b)


# ---- CPL ---------------------------------------------------------------------------------------


def test_cpl_logp_advantage_and_bc():
    assert neg_sq_logp(T([0.5, 0.0]), T([0.0, 1.0])).item() == pytest.approx(-1.25)
    adv = segment_advantage(T([[-1.0, -2.0, -3.0]]), T([[1.0, 1.0, 0.0]]), alpha=0.1)
    assert adv.item() == pytest.approx(-0.3)
    assert bc_loss(T([[-1.0, -3.0]]), T([[1.0, 0.0]])).item() == pytest.approx(1.0)


def test_cpl_comparison_loss_bias_on_the_non_preferred():
    a, b = T([1.0, 1.0, 1.0]), T([2.0, 2.0, 2.0])
    y = T([1.0, 0.0, 0.5])
    # y=1: softplus(-(2 - .5 * 1)); y=0: softplus(-(1 - .5 * 2)) = ln 2; tie: the average
    t1, t0 = sp(1.5), math.log(2.0)
    expect = (t1 + t0 + 0.5 * (t1 + t0)) / 3
    assert biased_bce_with_logits(a, b, y, 0.5).item() == pytest.approx(expect, rel=1e-6)
    # lambda = 1 is the plain Bradley-Terry loss
    assert biased_bce_with_logits(a, b, T([1.0]), 1.0).item() == pytest.approx(sp(1.0), rel=1e-6)
    # A_b > A_a everywhere; round(y) = 1, 0, 0 (the tie counts as "a") -> 1 of 3 right
    assert comparison_accuracy(a, b, y) == pytest.approx(1 / 3)


def test_cpl_score_loss_orders_by_score_and_drops_zero_terms():
    adv, score = T([1.0, 3.0, 2.0]), T([0.0, 2.0, 1.0])  # sorted advantages: 1, 2, 3
    expect = (sp(2 - 0.5) + sp(3 - 0.5) + sp(3 - 1.0)) / 3
    assert biased_bce_with_scores(adv, score, 0.5).item() == pytest.approx(expect, rel=1e-5)
    # a pair whose logit is >= ~16.6 contributes an exact float32 zero and leaves the mean
    adv2, score2 = T([0.0, 40.0, 0.5]), T([0.0, 2.0, 1.0])  # sorted: 0, 0.5, 40
    expect2 = sp(0.5)  # pairs (0, 40) and (0.5, 40) have logits ~40: exact zeros
    assert softplus_neg(T([40.0])).item() == 0.0
    assert biased_bce_with_scores(adv2, score2, 0.5).item() == pytest.approx(expect2, rel=1e-5)


def test_cpl_score_accuracy_counts_only_pairs_with_a_nonzero_loss_term():
    # sorted by score the advantages are 0, 40, 0.5 (bias 0.5):
    # (0, 40): logit 40, term exactly 0 -> not counted (it would be right);
    # (0, 0.5): logit 0.5, right; (40, 0.5): logit 0.5 - 20, wrong -> 1 of 2 (official),
    # where the mean over all three pairs would say 2 of 3
    adv, score = T([0.0, 40.0, 0.5]), T([0.0, 1.0, 2.0])
    assert score_accuracy(adv, score, 0.5).item() == pytest.approx(0.5)
    assert score_accuracy(T([1.0, 3.0, 2.0]), T([0.0, 2.0, 1.0]), 0.5).item() == 1.0
    assert score_accuracy(T([0.0, 40.0]), T([0.0, 1.0]), 1.0).item() == 0.0  # nothing counted


def test_cpl_kl_bc_term_uses_the_policys_own_log_prob():
    """CPL-KL: the advantage is alpha * sum_t (l_t - l_t^ref), the BC term -mean l_t."""
    from pbrl.agents.cpl import Agent, Config
    from pbrl.learn.api import AgentSpec

    cfg = Config(hidden=(4,), dropout=0.0, kl=True, alpha=0.2, bias=0.75, bc_coeff=1.0)
    agent = Agent(cfg, AgentSpec(2, 2, -np.ones(2), np.ones(2)))
    with torch.no_grad():
        for p in agent.actor.parameters():
            p.zero_()  # mu(s) = tanh(0) = 0
        agent.ref_actor = copy.deepcopy(agent.actor)
        agent.ref_actor.net.net[-2].bias.fill_(math.atanh(0.5))  # mu_ref(s) = 0.5
    obs = torch.randn(1, 2, 2)
    batch = {
        "obs_a": obs, "act_a": torch.full((1, 2, 2), 0.5), "mask_a": torch.ones(1, 2),
        "obs_b": obs, "act_b": torch.zeros(1, 2, 2), "mask_b": torch.ones(1, 2),
        "prefer_b": T([1.0]),
    }  # fmt: skip
    parts = agent.losses(batch)
    # own l_t: a: -(0.25 + 0.25) = -0.5 per step, b: 0; reference l_t: a: 0, b: -0.5
    assert parts["bc_loss"].item() == pytest.approx((0.5 + 0.5 + 0.0 + 0.0) / 4)
    # A_a = 0.2 * 2 * (-0.5 - 0) = -0.2, A_b = 0.2 * 2 * (0 + 0.5) = 0.2
    assert parts["adv_mean"].item() == pytest.approx(0.0, abs=1e-7)
    assert parts["cpl_loss"].item() == pytest.approx(sp(0.2 + 0.75 * 0.2), rel=1e-6)
    assert parts["accuracy"].item() == 1.0


def test_cpl_warmup_and_segment_scores():
    assert warmup_factor(0, 10, 1.0) == pytest.approx(0.1)
    assert warmup_factor(9, 10, 1.0) == pytest.approx(1.0)
    assert warmup_factor(50, 10, 0.1) == pytest.approx(0.1)
    refs_a = np.array([[0, 0, 5], [0, 0, 5]])
    refs_b = np.array([[1, 0, 5], [2, 0, 5]])
    uniq, score, ia, ib = segment_scores(refs_a, refs_b, np.array([1.0, 0.0]))
    # A loses once and wins once -> 0; B wins -> 1; C loses -> -1
    assert uniq.tolist() == [[0, 0, 5], [1, 0, 5], [2, 0, 5]]
    np.testing.assert_allclose(score, [0.0, 1.0, -1.0])
    assert ia.tolist() == [0, 0] and ib.tolist() == [1, 2]


def test_cpl_bc_phase_then_fresh_adam_with_warmup():
    """bc_fraction 0.4 of 10 steps = 4 BC steps, then lr ramps over 0.2 * 10 = 2 steps."""
    from test_learnability import point_dataset, point_prefs

    from pbrl.agents.cpl import Agent, Config
    from pbrl.learn.api import AgentSpec, FitContext

    ds = point_dataset(episodes=6, horizon=10, seed=3)
    prefs = point_prefs(ds, 8, 5, seed=1)
    cfg = Config(hidden=(8,), batch_size=4, warmup_fraction=0.2, lr=1e-3)
    agent = Agent(cfg, AgentSpec(2, 2, -np.ones(2), np.ones(2)))
    ctx = FitContext(
        dataset=ds.without_rewards(),
        prefs=prefs.to_batch(ds.without_rewards()),
        steps=10,
        seed=0,
        device="cpu",
        rng=np.random.default_rng(0),
        generator=torch.Generator().manual_seed(0),
        log_interval=1,
        pref_data=prefs,
    )
    rows = list(agent.fit(ctx))
    assert [r["phase"] for r in rows] == [0.0] * 4 + [1.0] * 6
    lrs = [r["lr"] for r in rows]
    # BC steps report the old optimizer until the switch re-creates it at base lr
    assert lrs[4] == pytest.approx(0.5e-3) and lrs[5] == pytest.approx(1e-3)
    for r in rows[:4]:
        assert r["loss"] == pytest.approx(r["bc_loss"])
    for r in rows[4:]:
        assert r["loss"] == pytest.approx(r["cpl_loss"])


def test_cpl_objective_bench_scores_with_the_training_loss():
    """bench/cpl_objective.py's per-pair losses average to the agent's own cpl_loss."""
    import importlib.util
    from pathlib import Path

    from test_learnability import point_dataset, point_prefs

    from pbrl.agents.cpl import Agent, Config
    from pbrl.learn.api import AgentSpec

    path = Path(__file__).resolve().parents[1] / "bench" / "cpl_objective.py"
    spec = importlib.util.spec_from_file_location("cpl_objective", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    ds = point_dataset(episodes=6, horizon=10, seed=3)
    batch = point_prefs(ds, 9, 5, seed=1).to_batch(ds.without_rewards())
    agent = Agent(Config(hidden=(8,), bias=0.7), AgentSpec(2, 2, -np.ones(2), np.ones(2)))
    agent.actor.eval()
    losses, correct = bench.pair_losses(agent, batch, chunk=4)  # chunks of 4, 4, 1
    parts = agent.losses(
        {
            "obs_a": batch.obs_a,
            "act_a": batch.act_a,
            "mask_a": batch.mask_a,
            "obs_b": batch.obs_b,
            "act_b": batch.act_b,
            "mask_b": batch.mask_b,
            "prefer_b": batch.prefer_b,
        }
    )
    assert losses.shape == (9,)
    assert float(losses.mean()) == pytest.approx(float(parts["cpl_loss"].detach()), rel=1e-5)
    assert bool((batch.prefer_b != 0.5).all())  # no ties here: both accuracies count every pair
    assert float(np.mean(correct)) == pytest.approx(float(parts["accuracy"]), abs=1e-6)


# ---- MR ----------------------------------------------------------------------------------------


def test_mr_bradley_terry_loss_sums_members():
    ln3 = math.log(3.0)
    # softmax(0, ln 3) = (1/4, 3/4)
    assert bt_ensemble_loss(T([0.0]), T([ln3]), T([1.0])).item() == pytest.approx(-math.log(0.75))
    assert bt_ensemble_loss(T([0.0]), T([ln3]), T([0.0])).item() == pytest.approx(math.log(4.0))
    tie = 0.5 * (math.log(4.0) - math.log(0.75))
    assert bt_ensemble_loss(T([0.0]), T([ln3]), T([0.5])).item() == pytest.approx(tie)
    two = bt_ensemble_loss(T([[0.0], [0.0]]), T([[ln3], [ln3]]), T([[1.0], [1.0]]))
    assert two.item() == pytest.approx(-2 * math.log(0.75))
    r = T([[1.0, 2.0, 4.0]])
    assert mr_segment_scores(r, T([[1.0, 1.0, 0.0]])).item() == pytest.approx(3.0)
    # ties are excluded from the accuracy
    acc = bt_accuracy(T([0.0, 1.0, 0.0]), T([1.0, 0.0, 5.0]), T([1.0, 1.0, 0.5]))
    assert float(acc) == pytest.approx(0.5)
    assert math.isnan(float(bt_accuracy(T([0.0]), T([1.0]), T([0.5]))))  # ties only: nan
    # lead=1 (stacked seeds): each seed's loss and accuracy over its own ensemble's pairs
    g = torch.Generator().manual_seed(0)
    sa, sb = torch.randn(3, 2, 6, generator=g), torch.randn(3, 2, 6, generator=g)
    y = torch.randint(0, 3, (3, 2, 6), generator=g).float() / 2  # 0, 0.5 (tie) or 1
    y[2] = 0.5  # a seed with ties only: nan accuracy
    losses, accs = bt_ensemble_loss(sa, sb, y, lead=1), bt_accuracy(sa, sb, y, lead=1)
    assert losses.shape == accs.shape == (3,)
    for k in range(3):
        torch.testing.assert_close(losses[k], bt_ensemble_loss(sa[k], sb[k], y[k]))
        torch.testing.assert_close(accs[k], bt_accuracy(sa[k], sb[k], y[k]), equal_nan=True)
    assert math.isnan(float(accs[2]))


# ---- IPL ---------------------------------------------------------------------------------------


def test_ipl_implicit_reward_preference_loss_and_chi2():
    r = implicit_reward(T([[1.0, 2.0]]), T([1.0, 2.0]), T([0.5, 0.0]))
    np.testing.assert_allclose(r.numpy(), [[0.5, 2.0]])
    ones = torch.ones(1, 2)
    r_a = T([[[1.0, 1.0]], [[1.0, 1.0]]])  # (K=2, B=1, T=2)
    r_b = T([[[2.0, 0.0]], [[2.0, 0.0]]])
    # logit = 2 - 2 = 0 -> ln 2 ; with a's second step masked: 2 - 1 = 1 -> softplus(-1)
    assert ipl_preference_loss(r_a, r_b, ones, ones, T([1.0])).item() == pytest.approx(
        math.log(2.0)
    )
    got = ipl_preference_loss(r_a, r_b, T([[1.0, 0.0]]), ones, T([1.0])).item()
    assert got == pytest.approx(sp(1.0), rel=1e-6)
    # 2 * mean over members of (weighted mean r^2): 2 * mean(2.5, 12.5) = 15
    chi = chi2_regularizer(T([[1.0, 2.0], [3.0, 4.0]]), T([0.5, 0.5]), 2.0)
    assert chi.item() == pytest.approx(15.0)


def test_ipl_paper_beta_is_the_official_one_over_0_3333():
    import pbrl.agents.ipl as ipl
    from pbrl.learn.api import make_config

    paper = make_config(ipl, "paper", {})
    # the official weight is exp(A / 0.3333), clipped at 100: A = 0.5 -> exp(1.50015)
    w = awr_weights(T([0.5, 2.0]), paper.beta, paper.max_weight)
    assert w[0].item() == pytest.approx(4.48236, rel=1e-5)  # exp(3.0 * 0.5) would be 4.48169
    assert w[1].item() == 100.0
    assert make_config(ipl, "d4rl", {}).beta == pytest.approx(3.000003, rel=1e-9)
    assert make_config(ipl, "quick", {}).beta == 3.0  # the CPU preset is unchanged


def test_ipl_row_weights_replay_balance():
    w = row_weights(T([1.0, 1.0]), T([1.0, 0.0]), 0, 0.5)
    np.testing.assert_allclose(w.numpy(), [1 / 3, 1 / 3, 1 / 3, 0.0], rtol=1e-6)
    w = row_weights(T([1.0, 1.0]), T([1.0, 0.0]), 2, 0.5)
    np.testing.assert_allclose(w.numpy(), [0.125, 0.125, 0.25, 0.0, 0.25, 0.25], rtol=1e-6)


def test_ipl_implied_reward_uses_the_value_updated_this_step():
    from test_learnability import point_dataset, point_prefs

    from pbrl.agents.ipl import Agent, Config
    from pbrl.learn.api import AgentSpec, FitContext

    torch.manual_seed(0)
    ds = point_dataset(episodes=6, horizon=10, seed=3)
    prefs = point_prefs(ds, 6, 4, seed=1)
    agent = Agent(Config(hidden=(8,), batch_size=3), AgentSpec(2, 2, -np.ones(2), np.ones(2)))
    batch = prefs.to_batch(ds.without_rewards())
    ctx = FitContext(
        ds.without_rewards(), batch, 1, 0, "cpu", np.random.default_rng(0), torch.Generator()
    )
    idx = torch.arange(3)
    q_before = copy.deepcopy(agent.learner.q)
    v_before = copy.deepcopy(agent.learner.v)
    m = agent.metrics(agent.update(ctx, idx, None))
    b = batch.index(idx)
    obs = torch.cat([b.obs_a[:, :-1], b.obs_b[:, :-1]]).reshape(-1, 2)
    act = torch.cat([b.act_a[:, :-1], b.act_b[:, :-1]]).reshape(-1, 2).clamp(-1 + 1e-5, 1 - 1e-5)
    nxt = torch.cat([b.obs_a[:, 1:], b.obs_b[:, 1:]]).reshape(-1, 2)
    with torch.no_grad():
        r = q_before(obs, act) - 0.99 * agent.learner.v(nxt)  # (2 critics, 2 * 3 * T)
        post = r.mean().item()
        pre = (q_before(obs, act) - 0.99 * v_before(nxt)).mean().item()
        # each segment's implied return, then the critics' mean: the pairs ranked right
        sums = [
            (half.reshape(2, 3, -1) * mask[:, 1:]).sum(-1)
            for half, mask in zip(r.chunk(2, -1), (b.mask_a, b.mask_b), strict=True)
        ]
        ranks_b = ((sums[1] - sums[0]).mean(0) > 0).float()
        acc = (ranks_b == b.prefer_b.round()).float().mean().item()
    assert m["reward_mean"] == pytest.approx(post, rel=1e-5, abs=1e-7)
    assert float(m["pref_acc"]) == pytest.approx(acc)
    assert list(m)[-4:] == ["pref_loss", "chi2", "reward_mean", "pref_acc"]
    assert abs(pre - post) > 1e-6


# ---- BC ----------------------------------------------------------------------------------------


def test_bc_mse():
    mu, act = T([[0.0, 0.0], [1.0, 1.0]]), T([[1.0, 0.0], [0.0, 0.0]])  # errors 1 and 2
    assert bc_mse(mu, act).item() == pytest.approx(1.5)
    assert bc_mse(mu, act, T([1.0, 0.0])).item() == pytest.approx(1.0)
    # lead=1 (stacked seeds): each member's loss of its own rows, masked or not
    g = torch.Generator().manual_seed(0)
    mus, acts = torch.randn(3, 5, 4, 2, generator=g), torch.randn(3, 5, 4, 2, generator=g)
    mask = (torch.rand(3, 5, 4, generator=g) > 0.3).float()
    mask[1] = 0.0  # a member without a real step: loss 0, not nan
    for m in (None, mask):
        per = bc_mse(mus, acts, m, lead=1)
        assert per.shape == (3,)
        for k in range(3):
            torch.testing.assert_close(per[k], bc_mse(mus[k], acts[k], None if m is None else m[k]))


@pytest.mark.parametrize(
    "overrides",
    [{"mode": "rank"}, {"mode": "score"}, {"kl": True, "alpha": 0.2, "bias": 0.75}],
    ids=["rank", "score", "kl"],
)
def test_cpl_modes_and_kl_reference(overrides):
    from test_learnability import point_dataset, point_prefs

    from pbrl.agents.cpl import Agent, Config
    from pbrl.learn.api import AgentSpec, FitContext

    ds = point_dataset(episodes=6, horizon=10, seed=3).without_rewards()
    full = point_dataset(episodes=6, horizon=10, seed=3)
    prefs = point_prefs(full, 8, 5, seed=1)
    spec = AgentSpec(2, 2, -np.ones(2), np.ones(2))
    agent = Agent(Config(hidden=(8,), batch_size=4, **overrides), spec)
    ctx = FitContext(
        ds, prefs.to_batch(ds), 6, 0, "cpu", np.random.default_rng(0), torch.Generator(),
        log_interval=1, pref_data=prefs,
    )  # fmt: skip
    rows = list(agent.fit(ctx))
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(v) for r in rows for v in r.values())
    if overrides.get("kl"):
        # the reference: a frozen eval-mode copy taken at the end of BC, kept by the state dict
        assert agent.ref_actor is not None and not agent.ref_actor.training
        fresh = Agent(Config(hidden=(8,), batch_size=4, **overrides), spec)
        fresh.load_state_dict(agent.state_dict())
        x = torch.as_tensor(ds.observations[:4])
        torch.testing.assert_close(fresh.ref_actor(x), agent.ref_actor(x))
