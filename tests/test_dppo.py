"""DPPO (``agents/dppo.py``): its losses against the official formulas on fixed batches, the
dataset windows, the smoothness pairs, and ``pbrl train --agent dppo`` end to end."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_learnability import point_dataset, point_prefs

import pbrl.datasets.registry as registry
from pbrl.cli import main as cli_main
from pbrl.learn.api import list_agents, load_agent_module, make_config
from pbrl.prefs import save_preferences
from pbrl.run.train import TrainSpec, train_agent

dppo = load_agent_module("dppo")
BENCH = Path(__file__).resolve().parents[1] / "bench" / "dppo_official_loss.py"


def official_policy_loss(dist: np.ndarray, score: np.ndarray, lambd: float, temp: float) -> float:
    """The official ``update_actor`` loss (learner.py), step by step, in float32 numpy:
    scores (N, 1), argsort along axis 0 then flipped, an (N, N) matrix by broadcasting, the
    upper triangle, the mean over its non-zero log terms."""
    d = dist.astype(np.float32)
    s = score.astype(np.float32).reshape(-1, 1)
    idx = np.flip(np.argsort(s, axis=0, kind="stable"))
    ds = d[idx] / np.float32(temp)  # (N, 1)
    denom = np.exp(-ds) + np.exp(-np.float32(lambd) * ds).reshape(-1)  # (N, N)
    with np.errstate(divide="ignore"):
        log_tri = np.triu(np.log(np.exp(-ds) / denom), k=1)
    return float(-(log_tri.sum() / (log_tri != 0).sum()))


def test_policy_loss_two_windows_by_hand():
    # the better-scored window (score 1) is at distance 0.1, the other at 0.2; T = 0.1:
    # l = -log(e^-1 / (e^-1 + e^-2)) = log(1 + e^-1)
    loss, kept = dppo.dppo_policy_loss(
        torch.tensor([0.2, 0.1]), torch.tensor([0.0, 1.0]), lambd=1.0, temperature=0.1
    )
    assert float(loss) == pytest.approx(math.log(1.0 + math.exp(-1.0)), rel=1e-6)
    assert int(kept) == 1
    # lambda = 0.5 weakens the push from the worse window: -log(e^-1 / (e^-1 + e^-1))
    loss, _ = dppo.dppo_policy_loss(
        torch.tensor([0.2, 0.1]), torch.tensor([0.0, 1.0]), lambd=0.5, temperature=0.1
    )
    assert float(loss) == pytest.approx(math.log(2.0), rel=1e-6)


@pytest.mark.parametrize("lambd", [1.0, 0.6])
def test_policy_loss_equals_the_official_code_on_a_fixed_batch(lambd):
    # six windows; two tied scores (the official order puts the later index first) and one
    # window so far from the policy that its pairs' float32 probability is exactly 1 and the
    # official mean drops them
    dist = np.array([0.31, 0.05, 0.22, 0.40, 2.9, 0.13], dtype=np.float32)
    score = np.array([0.7, 1.5, 0.7, -0.2, -3.0, 0.1], dtype=np.float32)
    want = official_policy_loss(dist, score, lambd, 0.1)
    got, kept = dppo.dppo_policy_loss(
        torch.tensor(dist), torch.tensor(score), lambd=lambd, temperature=0.1
    )
    assert float(got) == pytest.approx(want, rel=1e-5)
    # pairs (i, far window) with lambda * 29 - d_i / 0.1 > ~16.6 are dropped from the mean
    assert int(kept) < 15
    everything = torch.nn.functional.softplus(
        torch.tensor(
            [
                (a - lambd * b) / 0.1
                for i, a in enumerate(dist[np.argsort(-score, kind="stable")])
                for b in dist[np.argsort(-score, kind="stable")][i + 1 :]
            ]
        )
    ).mean()
    assert float(everything) != pytest.approx(want, rel=1e-3)  # the drop rule matters here


# The official loss on bench/dppo_official_loss.py's fixed batches, printed by
#   python bench/dppo_official_loss.py DPPO/learner.py     (snu-mllab/DPPO@bce1756, jax 0.10.2)
OFFICIAL_LOSSES = [
    1.182661533355713,
    3.750964641571045,
    0.7835272550582886,
    1.9539848566055298,
    1.5723679065704346,
    3.7495968341827393,
    0.7949396967887878,
    2.8098268508911133,
    0.5754992961883545,
    3.071424961090088,
    0.72996586561203,
    0.7468025088310242,
    0.8759399056434631,
    2.695348024368286,
    0.7285072207450867,
    1.4336209297180176,
    2.058471918106079,
    2.6634981632232666,
    0.7284653186798096,
    4.164102077484131,
    7.036103248596191,
    8.877161026000977,
    1.1351665258407593,
    16.017948150634766,
]


def test_policy_loss_equals_the_executed_official_code():
    spec = importlib.util.spec_from_file_location("dppo_official_loss", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cases = list(bench.fixed_batches())
    assert len(cases) == len(OFFICIAL_LOSSES)
    dropped = 0
    for case, want in zip(cases, OFFICIAL_LOSSES, strict=True):
        pred, act, mask = (torch.as_tensor(case[k]) for k in ("pred", "act", "mask"))
        dist = dppo.window_distances(pred, act, mask)
        got, kept = dppo.dppo_policy_loss(
            dist, torch.as_tensor(case["score"]), case["lambd"], case["temp"]
        )
        assert float(got) == pytest.approx(want, rel=1e-6)
        dropped += int(kept) < 120
    assert dropped >= 2  # the drop rule is exercised (batch 5 at T = 0.05)


def test_policy_loss_orders_ties_like_the_official_argsort():
    # equal scores: the official descending order is the stable ascending order flipped,
    # so window 2 ranks above window 0 (and the loss is not symmetric in them)
    order = dppo.preference_order(torch.tensor([0.5, 0.1, 0.5]))
    assert order.tolist() == [2, 0, 1]
    dist = np.array([0.1, 0.3, 0.25], dtype=np.float32)
    score = np.array([0.5, 0.1, 0.5], dtype=np.float32)
    got, _ = dppo.dppo_policy_loss(torch.tensor(dist), torch.tensor(score), 1.0, 0.1)
    assert float(got) == pytest.approx(official_policy_loss(dist, score, 1.0, 0.1), rel=1e-6)


def test_policy_loss_gradient_pulls_the_preferred_window_closer():
    d = torch.tensor([0.2, 0.3], requires_grad=True)
    loss, _ = dppo.dppo_policy_loss(d, torch.tensor([1.0, 0.0]), 1.0, 0.1)
    loss.backward()
    assert d.grad[0] > 0 > d.grad[1]  # descending the loss shrinks d_0 and grows d_1


def test_window_distances_normalise_by_the_action_range_and_mask():
    pred = torch.zeros(1, 3, 2)
    act = torch.tensor([[[0.6, 0.8], [0.0, 0.2], [1.0, 1.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    # steps: ||(0.6, 0.8) / 2|| = 0.5, ||(0, 0.2) / 2|| = 0.1; the padded step is ignored
    assert float(dppo.window_distances(pred, act, mask)[0]) == pytest.approx(0.3)


def test_predictor_loss_is_the_softmax_cross_entropy():
    s_a, s_b = torch.tensor([0.2, 1.0, -0.5]), torch.tensor([0.7, 0.0, -0.5])
    y = torch.tensor([1.0, 0.0, 0.5])
    # optax.softmax_cross_entropy of logits [S_a, S_b] against [1 - y, y]
    want = np.mean(
        [
            -math.log(math.exp(0.7) / (math.exp(0.2) + math.exp(0.7))),
            -math.log(math.exp(1.0) / (math.exp(1.0) + math.exp(0.0))),
            math.log(2.0),
        ]
    )
    assert float(dppo.predictor_loss(s_a, s_b, y)) == pytest.approx(want, rel=1e-6)
    assert float(dppo.smoothness_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 2.5]))) == (
        pytest.approx((1.0 + 0.25) / 2)
    )


def test_row_windows_end_at_each_row_and_stop_at_the_episode_start():
    lo, hi = dppo.episode_bounds(np.array([0, 3]), np.array([3, 2]))
    assert lo.tolist() == [0, 0, 0, 3, 3] and hi.tolist() == [2, 2, 2, 4, 4]
    rows, mask = dppo.row_windows(np.arange(5), lo, 2)
    assert rows.tolist() == [[0, 0], [0, 1], [1, 2], [3, 3], [3, 4]]
    assert mask.tolist() == [[1, 0], [1, 1], [1, 1], [1, 0], [1, 1]]
    rows, mask = dppo.row_windows(np.array([4, 1]), lo[[4, 1]], 3)  # any rows, any order
    assert rows.tolist() == [[3, 4, 3], [0, 1, 0]] and mask.sum(1).tolist() == [2, 2]


def test_smoothness_partners_stay_in_their_episode():
    rng = np.random.default_rng(0)
    lo, hi = dppo.episode_bounds(np.array([0, 10]), np.array([10, 5]))
    first, second = dppo.Agent._smooth_pairs(rng, 40, np.array([5, 12]), lo, hi, 3.0)
    assert first.shape == second.shape == (40,)
    assert set(first[:2].tolist()) == {5, 12}  # the labelled half: as many as exist
    assert np.all(second >= lo[first]) and np.all(second <= hi[first])
    assert np.any(second != first)


def test_score_model_pools_over_padding_only_when_asked():
    torch.manual_seed(0)
    obs, act = torch.randn(2, 4, 3), torch.randn(2, 4, 2)
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 0.0, 0.0]])
    model = dppo.ScoreModel(3, 2, 8, 1, 2, 4, 0.0).eval().requires_grad_(False)
    full = model(obs, act, mask)
    model.pool_padding = False
    real = model(obs, act, mask)
    assert float(full[0]) == pytest.approx(float(real[0]), abs=1e-6)  # no padding: same
    assert float(full[1]) != pytest.approx(float(real[1]), abs=1e-6)
    # what a padded step holds does not change the score (zeroed inputs, timestep 0)
    obs2 = obs.clone()
    obs2[1, 2:] += 5.0
    assert float(model(obs2, act, mask)[1]) == pytest.approx(float(real[1]), abs=1e-6)


def test_presets_and_listing():
    assert "dppo" in list_agents()
    paper = make_config(dppo, "paper", {})
    assert (paper.temperature, paper.lambd, paper.batch_size, paper.lr) == (0.1, 1.0, 256, 3e-4)
    assert paper.hidden == (256, 256) and paper.embed_dim == 256 and paper.rm_batch == 256
    quick = make_config(dppo, "quick", {})
    assert quick.temperature == 0.1 and quick.batch_size < paper.batch_size


def test_cli_trains_dppo(tmp_path, monkeypatch, capsys):
    ds = point_dataset(episodes=6, horizon=20, seed=4, ds_id="test/point-dppo")
    prefs = point_prefs(ds, n_queries=10, segment=5, seed=0)
    real = registry.load_dataset
    monkeypatch.setattr(
        registry, "load_dataset", lambda i, **kw: ds if str(i) == ds.id else real(i, **kw)
    )
    path = tmp_path / "prefs.npz"
    save_preferences(prefs, path)
    out = tmp_path / "run"
    code = 0
    try:
        cli_main(
            [
                "train", "--agent", "dppo", "--dataset", ds.id, "--prefs", str(path),
                "--steps", "10", "--device", "cpu", "--preset", "quick",
                "--agent.hidden", "(8,8)", "--agent.embed_dim", "8",
                "--agent.batch_size", "8", "--agent.rm_batch", "4",
                "--eval-every", "10", "--eval-episodes", "2", "--log-interval", "2",
                "--out", str(out),
            ]
        )  # fmt: skip
    except SystemExit as e:
        code = int(e.code or 0)
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 10 and math.isfinite(rows[-1]["dppo_loss"])
    assert any("rm_loss" in r for r in rows)
    assert json.loads((out / "summary.json").read_text())["steps"] == 10


@pytest.mark.slow
def test_dppo_beats_the_zero_reward_control():
    """On the learnability test's point data (60 episodes, 300 oracle pairs of 20 steps),
    DPPO's policy must beat zero-reward IQL (BC of the whole mixture). Measured once:
    DPPO -22.4, control -43.2 (true-reward IQL about -19)."""
    ds = point_dataset(episodes=60, seed=0)
    prefs = point_prefs(ds, n_queries=400, segment=20, seed=0)
    train_prefs, _ = prefs.split(0.75, np.random.default_rng(0))

    def final_score(agent: str, overrides: dict, steps: int, prefs) -> float:
        spec = TrainSpec(
            agent=agent, dataset=ds.id, prefs=None, seed=0, steps=steps, device="cpu",
            overrides=overrides, eval_every=steps, eval_episodes=20, log_interval=steps,
        )  # fmt: skip
        return float(train_agent(spec, dataset=ds, prefs=prefs)[0]["final_score"])

    control = final_score("iql", {"hidden": (64, 64), "reward": "zero"}, 1000, None)
    small = {"hidden": (64, 64), "embed_dim": 32, "n_heads": 2, "rm_batch": 32, "batch_size": 64}
    score = final_score("dppo", small, 1500, train_prefs)
    assert score > control + 5, (score, control)
