"""Losses of oppo, regret, hprior and pt against values worked out by hand, and every stacked
loss with a leading member axis against its single form."""

from __future__ import annotations

import math

import pytest
import torch

from pbrl.agents import hprior, oppo, pt, regret

D = torch.float64


def t(x):
    return torch.tensor(x, dtype=D)


# ---- regret --------------------------------------------------------------------------------


def test_regret_segment_sum_counts_real_steps_only():
    vals = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = t([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    assert regret.segment_sum(vals, mask).tolist() == [3.0, 15.0]
    # a leading ensemble axis gives one score per member
    two = torch.stack([vals, 2 * vals])
    assert regret.segment_sum(two, mask).tolist() == [[3.0, 15.0], [6.0, 30.0]]


def test_regret_logistic_loss_hand_values():
    # pair 1: equal scores, tie label -> log 2; pair 2: S_a - S_b = 1 but b preferred
    # -> -log sigma(-1) = log(1 + e).
    loss = regret.logistic_pref_loss(t([0.0, 1.0]), t([0.0, 0.0]), t([0.5, 1.0]))
    expected = (math.log(2.0) + math.log(1.0 + math.e)) / 2.0
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    # one loss per ensemble member
    per_member = regret.logistic_pref_loss(
        t([[0.0, 1.0], [0.0, 0.0]]), t([[0.0, 0.0], [0.0, 0.0]]), t([0.5, 1.0])
    )
    assert per_member[1].item() == pytest.approx(math.log(2.0), abs=1e-12)


def test_regret_anchor_and_centred_weights():
    a = t([[1.0, 2.0], [3.0, 4.0]])
    m = t([[1.0, 0.0], [1.0, 1.0]])
    assert regret.advantage_anchor(a, m).item() == pytest.approx(26.0 / 3.0)
    w = regret.centred_awr_weights(t([0.0, 1.0, 2.0]), beta=1.0, clip=2.0)
    assert w.tolist() == pytest.approx([math.exp(-1.0), 1.0, 2.0])
    # a constant shift of A cannot change the weights
    w2 = regret.centred_awr_weights(t([5.0, 6.0, 7.0]), beta=1.0, clip=2.0)
    assert torch.allclose(w, w2)


# ---- hprior --------------------------------------------------------------------------------


def test_hprior_importance_uses_last_real_token_mean_heads_and_layers():
    junk = 9.0
    # layer 1: (B=2, heads=2, 4 tokens, 4 tokens), every row junk except the query rows
    l1 = torch.full((2, 2, 4, 4), junk, dtype=D)
    l1[0, 0, 3] = t([0.1, 0.2, 0.3, 0.4])
    l1[0, 1, 3] = t([0.2, 0.2, 0.2, 0.4])  # head mean [0.15, 0.2, 0.25, 0.4] -> [0.35, 0.65]
    l1[1, 0, 1] = t([0.6, 0.4, 0.0, 0.0])  # segment 2 has one real step: query row 1
    l1[1, 1, 1] = t([1.0, 0.0, 0.0, 0.0])
    # layer 2 given without a head axis
    l2 = torch.full((2, 4, 4), junk, dtype=D)
    l2[0, 3] = t([0.5, 0.0, 0.25, 0.25])  # -> [0.5, 0.5]
    l2[1, 1] = t([0.3, 0.7, 0.0, 0.0])  # -> [1, 0]
    alpha = hprior.attention_importance([l1, l2], torch.tensor([2, 1]))
    assert alpha[0].tolist() == pytest.approx([0.425, 0.575])
    assert alpha[1].tolist() == pytest.approx([1.0, 0.0])


def test_hprior_prior_loss_value_and_gradients():
    alpha = t([[0.25, 0.75]])
    mask = t([[1.0, 1.0]])
    # R = 3, targets [0.75, 2.25], residuals d = [0.25, -0.25]
    r = t([[1.0, 2.0]]).requires_grad_(True)
    loss = hprior.prior_loss(r, alpha, mask)
    assert loss.item() == pytest.approx(0.0625)
    loss.backward()
    # not detached: dL/dr_t = 2 (d_t - sum_k alpha_k d_k) / n with sum_k alpha_k d_k = -0.125
    assert r.grad[0].tolist() == pytest.approx([0.375, -0.125])
    r2 = t([[1.0, 2.0]]).requires_grad_(True)
    hprior.prior_loss(r2, alpha, mask, detach_target=True).backward()
    assert r2.grad[0].tolist() == pytest.approx([0.25, -0.25])  # 2 d_t / n
    # a consistent redistribution costs nothing; padding is ignored
    zero = hprior.prior_loss(t([[1.0, 3.0, 7.0]]), t([[0.25, 0.75, 0.0]]), t([[1.0, 1.0, 0.0]]))
    assert zero.item() == pytest.approx(0.0)


def test_hprior_world_model_loss_masks_padding():
    pred = t([[[1.0, 2.0], [0.0, 0.0]]])
    target = t([[[0.0, 0.0], [5.0, 5.0]]])
    assert hprior.world_model_loss(pred, target, t([[1.0, 0.0]])).item() == pytest.approx(2.5)


# ---- pt ------------------------------------------------------------------------------------


def test_pt_preference_attention_unscaled_softmax():
    # D = 4: q_1 . k_2 = ln 3 gives weights [1/4, 3/4] only without a 1/sqrt(D) scale.
    q = t([[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]])
    k = t([[[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0, 0.0]]])
    r = t([[1.0, 5.0]])
    z = pt.preference_attention(q, k, r, t([[1.0, 1.0]]))
    assert z[0].tolist() == pytest.approx([4.0, 3.0])
    assert pt.masked_mean(z, t([[1.0, 1.0]])).item() == pytest.approx(3.5)
    # a padded key gets no weight
    zm = pt.preference_attention(q, k, r, t([[1.0, 0.0]]))
    assert zm[0].tolist() == pytest.approx([1.0, 1.0])
    assert pt.masked_mean(zm, t([[1.0, 0.0]])).item() == pytest.approx(1.0)


def test_pt_cross_entropy_keeps_ties():
    loss = pt.pt_cross_entropy(t([0.0, 1.0]), t([0.0, 0.0]), t([0.5, 1.0]))
    assert loss.item() == pytest.approx((math.log(2.0) + math.log(1.0 + math.e)) / 2.0)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, generator=g, dtype=D), torch.randn(5, generator=g, dtype=D)
    y = t([0.0, 1.0, 0.5, 1.0, 0.0])
    assert pt.pt_cross_entropy(a, b, y).item() == pytest.approx(
        regret.logistic_pref_loss(a, b, y).item()
    )


@pytest.mark.parametrize("attention", [True, False])
def test_pt_relabel_reads_r_at_the_last_step_of_each_window(attention):
    """Each transition t's label is r at the last step of the model run on the window of
    its episode's last (up to) ``relabel_len`` steps ending at t, timesteps from 1: the
    relabelling (padded batches, the transformer's last layer at one token per window) is
    that, computed window by window with the full forward."""
    import numpy as np

    from pbrl.learn.api import AgentSpec, make_config
    from pbrl.learn.check import check_dataset

    ds = check_dataset()
    cfg = make_config(
        pt, None, {**pt.TEST_OVERRIDES, "relabel_len": 4, "preference_attention": attention}
    )
    torch.manual_seed(0)
    agent = pt.Agent(cfg, AgentSpec(ds.obs_dim, ds.act_dim, -np.ones(2), np.ones(2)))
    agent.model.eval()
    got = agent.relabel(ds, batch_size=7)
    want = np.empty(ds.num_steps, np.float32)
    for start, n in zip(ds.starts, ds.lengths, strict=True):
        for i in range(n):
            lo, hi = start + max(0, i - 3), start + i + 1
            obs = torch.as_tensor(ds.observations[lo:hi][None])
            act = torch.as_tensor(ds.actions[lo:hi][None])
            with torch.no_grad():
                _, r = agent.model(obs, act, torch.ones(1, hi - lo))
            want[start + i] = float(r[0, -1])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ---- oppo ----------------------------------------------------------------------------------


def test_oppo_triplet_distance_eps_convention():
    d = oppo.triplet_distance(t([0.0, 0.0]), t([3.0, 4.0]))
    # || (-3 + 1e-6, -4 + 1e-6) || = 5 - 1.4e-6 to first order
    assert d.item() == pytest.approx(5.0 - 1.4e-6, abs=1e-10)


def test_oppo_triplet_loss_scripted_and_human():
    anchor = t([0.0, 0.0])
    # d_a = [2.5, 1.5, 3.0], d_b = [2.0, 1.0, 1.0]
    z_a = t([[2.5, 0.0], [0.0, 1.5], [3.0, 0.0]])
    z_b = t([[0.0, 2.0], [1.0, 0.0], [0.0, 1.0]])
    y = t([0.0, 1.0, 0.5])
    # pair 1 (a preferred): max(2.5 - 2 + 1, 0) = 1.5; pair 2 (b preferred): max(1 - 1.5 + 1, 0) = 0.5
    scripted = oppo.oppo_triplet_loss(anchor, z_a, z_b, y, mode="scripted")
    assert scripted.item() == pytest.approx(1.0, abs=1e-5)  # mean over the 2 strict pairs
    # human: (1.5 + 0.5 + tie max(3 - 1, 0)) / B=3
    human = oppo.oppo_triplet_loss(anchor, z_a, z_b, y, mode="human")
    assert human.item() == pytest.approx(4.0 / 3.0, abs=1e-5)
    # the human tie term is asymmetric: a tie whose first segment is closer costs nothing
    z_a2 = z_a.clone()
    z_a2[2] = t([0.5, 0.0])
    assert oppo.oppo_triplet_loss(anchor, z_a2, z_b, y, mode="human").item() == pytest.approx(
        2.0 / 3.0, abs=1e-5
    )
    # no strict pair: 0, not NaN
    none = oppo.oppo_triplet_loss(anchor, z_a[2:], z_b[2:], y[2:], mode="scripted")
    assert none.item() == 0.0


def test_oppo_norm_him_and_pooling():
    z = t([[3.0, 4.0], [0.0, 0.5]])
    assert oppo.oppo_norm_loss(z, "square").item() == pytest.approx((16.0 + 0.25) / 2.0)
    assert oppo.oppo_norm_loss(z, "relu").item() == pytest.approx(2.0)
    pred = t([[[1.0, 1.0], [0.0, 0.0]]])
    target = t([[[0.0, 1.0], [9.0, 9.0]]])
    assert oppo.him_action_loss(pred, target, t([[1.0, 0.0]])).item() == pytest.approx(0.5)
    h = t([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
    m = t([[1.0, 1.0, 0.0]])
    assert oppo.pool_tokens(h, m).tolist() == [[4.0, 6.0]]
    assert oppo.pool_tokens(h, m, over_padding=True).tolist() == [[9.0, 12.0]]


def test_oppo_policy_is_causal_and_reads_its_context():
    """pi(a_t | z, s_<=t, a_<t): a_t and later tokens never reach position t; z always does."""
    torch.manual_seed(0)
    k = 6
    net = oppo.ContextualPolicy(3, 2, 4, embed_dim=16, n_layers=2, n_heads=1, max_len=k)
    net.eval()
    z = torch.randn(2, k, 4)
    s = torch.randn(2, k, 3)
    a = torch.randn(2, k, 2)
    m = torch.ones(2, k)
    base, _ = net(z, s, a, m)
    t = 3
    a2 = a.clone()
    a2[:, t] += 1.0
    out, _ = net(z, s, a2, m)
    assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-6)  # a_t not seen at <= t
    assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])  # but seen afterwards
    s2 = s.clone()
    s2[:, t] += 1.0
    out, _ = net(z, s2, a, m)
    assert torch.allclose(out[:, :t], base[:, :t], atol=1e-6)
    assert not torch.allclose(out[:, t], base[:, t])  # s_t is seen at t
    out, _ = net(z + 1.0, s, a, m)
    assert (out - base).abs().amax(-1).min() > 1e-4  # every position reads the context


# ---- a leading member axis (stacked seeds call these losses once for every member) ----------


def _member_cases():
    from pbrl.agents import cpl, dppo, ipl
    from pbrl.learn.kit import strict_accuracy

    g = torch.Generator().manual_seed(5)
    k, b, n, d = 3, 6, 5, 4

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=D)

    y = torch.tensor([[1.0, 0.0, 0.5, 1.0, 0.0, 1.0]] * k, dtype=D)
    y[1, :3] = 0.5  # one member with more ties
    mask = (torch.rand(k, b, n, generator=g) < 0.7).to(D)
    mask[:, :, 0] = 1.0
    return {
        "pt_cross_entropy": (pt.pt_cross_entropy, (r(k, b), r(k, b), y)),
        "strict_accuracy": (strict_accuracy, (r(k, b), r(k, b), y)),
        "preference_attention": (
            pt.preference_attention,
            (r(k, b, n, d), r(k, b, n, d), r(k, b, n), mask),
        ),
        "world_model_loss": (hprior.world_model_loss, (r(k, b, n, d), r(k, b, n, d), mask)),
        "triplet_scripted": (
            lambda *x: oppo.oppo_triplet_loss(*x, mode="scripted"),
            (r(k, d), r(k, b, d), r(k, b, d), y),
        ),
        "triplet_human": (
            lambda *x: oppo.oppo_triplet_loss(*x, mode="human"),
            (r(k, d), r(k, b, d), r(k, b, d), y),
        ),
        "norm_square": (lambda z: oppo.oppo_norm_loss(z, "square"), (r(k, b, d),)),
        "norm_relu": (lambda z: oppo.oppo_norm_loss(z, "relu"), (r(k, b, d),)),
        "him_action_loss": (oppo.him_action_loss, (r(k, b, n, 2), r(k, b, n, 2), mask)),
        "pool_tokens": (oppo.pool_tokens, (r(k, b, n, d), mask)),
        "dppo_policy_loss": (
            lambda dist, score: dppo.dppo_policy_loss(dist, score, 0.5, 0.1),
            (r(k, b).abs(), r(k, b)),
        ),
        "predictor_loss": (dppo.predictor_loss, (r(k, b), r(k, b), y)),
        "smoothness_loss": (dppo.smoothness_loss, (r(k, b), r(k, b))),
        "cpl_comparison": (
            lambda a, b_, y_: cpl.biased_bce_with_logits(a, b_, y_, 0.5),
            (r(k, b), r(k, b), y),
        ),
        "cpl_scores": (lambda a, s: cpl.biased_bce_with_scores(a, s, 0.5), (r(k, b), r(k, b))),
        "cpl_score_accuracy": (lambda a, s: cpl.score_accuracy(a, s, 0.5), (r(k, b), r(k, b))),
        "cpl_bc_loss": (cpl.bc_loss, (r(k, b, n), mask)),
        "cpl_comparison_accuracy": (cpl.comparison_accuracy_t, (r(k, b), r(k, b), y)),
        "ipl_implicit_reward": (ipl.implicit_reward, (r(k, 2, b), r(k, b), r(k, b))),
        "ipl_preference_loss": (
            ipl.ipl_preference_loss,
            (r(k, 2, b, n), r(k, 2, b, n), mask, mask.flip(1), y),
        ),
        "ipl_chi2": (lambda x, w: ipl.chi2_regularizer(x, w, 3.0), (r(k, 2, b), r(k, b).abs())),
        "regret_anchor": (regret.advantage_anchor, (r(k, 2, b, n), mask.unsqueeze(1))),
        "hprior_prior_loss": (
            hprior.prior_loss,
            (r(k, 2, b, n), r(k, b, n).abs().unsqueeze(1), mask.unsqueeze(1)),
        ),
    }


@pytest.mark.parametrize("name", sorted(_member_cases()))
def test_losses_with_a_member_axis_are_each_members_own(name):
    """Called on inputs with a leading member axis, each loss gives every member what it
    gives that member's inputs alone (the stacked paths call them without ``vmap``)."""
    fn, args = _member_cases()[name]
    out = fn(*args)
    outs = out if isinstance(out, tuple) else (out,)
    for i in range(args[0].shape[0]):
        own = fn(*(a[i] for a in args))
        owns = own if isinstance(own, tuple) else (own,)
        for got, want in zip(outs, owns, strict=True):
            assert got.shape[0] == args[0].shape[0]
            torch.testing.assert_close(got[i], want, msg=name)
