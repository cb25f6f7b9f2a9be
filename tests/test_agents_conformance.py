"""Conformance of every registered learner (and the example plug-in) to the agent API.

Parametrised over ``pbrl.learn.api.list_agents()`` plus ``examples.my_agent``: a new file in
``agents/`` is covered with no edit here. The learner contract's checks are the library
call :func:`pbrl.learn.check.check_agent` (what ``pbrl agents check MODULE`` prints), run
here for every agent on a small ``test/point`` dataset with a few oracle preferences, using
the module-level ``TEST_OVERRIDES`` (tiny networks and batches) that every agent file
provides. Each agent also runs a few steps through the real runner
(:func:`pbrl.run.train.train_agent`): its files, finite metrics ending at the step budget,
actions inside the action space, the checkpoint round trip, and PROVENANCE: the
ground-truth reward never reaches a learner that did not ask for it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_learnability import point_dataset, point_prefs, register_point_task

import pbrl.run.train as train_mod
from pbrl.errors import UnknownIdError
from pbrl.learn.api import AgentSpec, list_agents, load_agent_module, make_config
from pbrl.learn.check import check_agent, failures, torch_modules
from pbrl.run.train import TrainSpec, train_agent

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "examples.my_agent"
AGENTS = [*list_agents(), PLUGIN]
# Learners trained from a dataset and a label file; the online ones (ONLINE = True) act in
# an environment instead and have their own run-layer tests (tests/test_online.py).
OFFLINE_AGENTS = [
    a for a in list_agents() if not getattr(load_agent_module(a), "ONLINE", False)
] + [PLUGIN]
STEPS = 12


@pytest.fixture(scope="module")
def small_data():
    ds = point_dataset(episodes=8, horizon=20, seed=1, ds_id="test/point-small")
    prefs = point_prefs(ds, n_queries=12, segment=6, seed=2)
    return ds, prefs


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch):
    # The plug-in is imported by dotted path from the repository root.
    monkeypatch.syspath_prepend(str(REPO))
    register_point_task()


def _module(name: str):
    if name == PLUGIN and str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return load_agent_module(name)


def _overrides(mod) -> dict:
    return dict(getattr(mod, "TEST_OVERRIDES", {}))


@pytest.mark.parametrize("name", AGENTS)
def test_module_contract(name: str, small_data) -> None:
    """The learner contract's checks (pbrl agents check) pass for every agent."""
    ds, prefs = small_data
    _module(name)
    results = check_agent(name, dataset=ds, prefs=prefs)
    failed = failures(results)
    assert not failed, f"{name}: " + "; ".join(f"{r.name}: {r.detail}" for r in failed)
    names = {r.name for r in results}
    assert {"loads", "fit", "act", "state round trip", "networks on the device"} <= names


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", AGENTS)
def test_module_contract_on_cuda(name: str, small_data) -> None:
    """The same checks on the GPU, the stacked-seeds check (2 stacked against 2 single runs,
    same actions) included for every learner with a stacked path. Skipped without a GPU (CI);
    docs/performance.md says which commit last passed it on one."""
    ds, prefs = small_data
    _module(name)
    results = check_agent(name, dataset=ds, prefs=prefs, device="cuda")
    failed = failures(results)
    assert not failed, f"{name}: " + "; ".join(f"{r.name}: {r.detail}" for r in failed)
    if hasattr(_module(name), "fit_stacked"):
        assert "stacked seeds" in {r.name for r in results}


def test_check_names_what_is_wrong_in_a_broken_plugin(small_data) -> None:
    """A plug-in whose fit yields NaN and whose act has the wrong shape fails both checks."""
    ds, prefs = small_data
    results = check_agent("tests.plugins.broken_agent", dataset=ds, prefs=prefs)
    failed = {r.name: r.detail for r in failures(results)}
    assert set(failed) == {"fit", "act"}, failed
    assert "'loss' = nan" in failed["fit"]
    assert "shape (7, 1), expected (7, 2)" in failed["act"]


def test_check_cli_exit_status(monkeypatch) -> None:
    """``pbrl agents check``: 0 when every check passes, 1 when one fails (and it says which)."""
    from typer.testing import CliRunner

    from pbrl.cli.app import app

    monkeypatch.chdir(REPO)
    runner = CliRunner()
    bad = runner.invoke(app, ["agents", "check", "tests.plugins.broken_agent"])
    assert bad.exit_code == 1, bad.output
    assert "metric 'loss' = nan" in bad.output and "FAIL" in bad.output
    missing = runner.invoke(app, ["agents", "check", "no_such_agent_module"])
    assert missing.exit_code == 1 and "unknown agent" in missing.output


def test_bare_module_name_loads_like_a_dotted_path(tmp_path, monkeypatch) -> None:
    """``--agent my_algo`` with my_algo.py importable: loaded when no shipped learner has the
    name; a shipped name still wins, and an unknown name is still an unknown agent."""
    src = (REPO / "tests" / "plugins" / "broken_agent.py").read_text()
    (tmp_path / "my_algo_plugin.py").write_text(src)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = load_agent_module("my_algo_plugin")
    assert mod.__name__ == "my_algo_plugin" and hasattr(mod, "Agent")
    assert load_agent_module("cpl").__name__ == "pbrl.agents.cpl"
    with pytest.raises(UnknownIdError, match="unknown agent 'no_such_agent_module'"):
        load_agent_module("no_such_agent_module")


SEEN: list = []


@dataclasses.dataclass
class _RecordingContext(train_mod.FitContext):
    """FitContext that remembers every instance the runner builds (in SEEN)."""

    def __post_init__(self) -> None:
        SEEN.append(self)


def _conformance_spec(name: str, ds_id: str, mod, device: str, out: Path) -> TrainSpec:
    """STEPS updates at the agent's TEST_OVERRIDES, evaluated once (2 episodes) at the end."""
    return TrainSpec(
        agent=name,
        dataset=ds_id,
        prefs=None,
        seed=0,
        steps=STEPS,
        device=device,
        overrides=_overrides(mod),
        eval_every=STEPS,
        eval_episodes=2,
        log_interval=4,
        out=str(out),
    )


@pytest.mark.parametrize("name", OFFLINE_AGENTS)
def test_agent_trains_and_conforms(name, small_data, tmp_path, monkeypatch) -> None:
    ds, prefs = small_data
    mod = _module(name)
    SEEN.clear()
    monkeypatch.setattr(train_mod, "FitContext", _RecordingContext)
    torch.manual_seed(0)
    spec = _conformance_spec(name, ds.id, mod, "cpu", tmp_path / "run")
    summary, agent = train_agent(spec, dataset=ds, prefs=prefs)

    # the runner's files and the budget
    run = tmp_path / "run"
    for f in ("config.json", "metrics.jsonl", "eval.csv", "checkpoint.pt", "summary.json"):
        assert (run / f).exists(), f"{name}: {f} missing"
    assert summary["steps"] == STEPS
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["step"] == STEPS
    steps = [r["step"] for r in rows]
    assert steps == sorted(steps) and all(s in steps for s in (4, 8, 12))
    for r in rows:
        for k, v in r.items():
            assert v is None or math.isfinite(v), f"{name}: metric {k} = {v} at step {r['step']}"
    assert summary["final_score"] is not None and math.isfinite(summary["final_score"])

    # actions inside the action space, single and batched
    obs = ds.observations[:7]
    a = np.asarray(agent.act(obs))
    assert a.shape == (7, ds.act_dim) and np.all(np.isfinite(a))
    assert np.all(a >= -1.0) and np.all(a <= 1.0)
    assert np.asarray(agent.act(obs[0])).shape == (ds.act_dim,)

    # state round trip: a fresh agent loading the state acts identically
    cfg = make_config(mod, None, _overrides(mod))
    fresh = mod.Agent(cfg, AgentSpec(ds.obs_dim, ds.act_dim, -np.ones(2), np.ones(2), "cpu"))
    fresh.load_state_dict(agent.state_dict())
    np.testing.assert_allclose(fresh.act(obs), agent.act(obs), rtol=1e-5, atol=1e-6)
    # and through the checkpoint file
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    again = mod.Agent(cfg, AgentSpec(ds.obs_dim, ds.act_dim, -np.ones(2), np.ones(2), "cpu"))
    again.load_state_dict(ckpt["agent"])
    np.testing.assert_allclose(again.act(obs), agent.act(obs), rtol=1e-5, atol=1e-6)

    # every network sits on the run's device (the CUDA test below relies on finding them)
    nets = torch_modules(agent)
    assert nets or name == PLUGIN, f"{name}: no torch module found on the agent"
    assert all(p.device.type == "cpu" for n in nets for p in n.parameters())

    # provenance: the learner saw ground truth only if it declared it needs it
    assert len(SEEN) == 1
    ctx = SEEN[0]
    if getattr(agent, "requires_true_reward", False):
        assert ctx.dataset.rewards is not None
    else:
        assert ctx.dataset.rewards is None, f"{name}: the true reward reached the learner"
        assert ds.rewards is not None  # the caller's dataset is untouched
    if ctx.prefs is not None:
        assert not any("reward" in f.name for f in dataclasses.fields(ctx.prefs))
    if hasattr(agent, "reward"):
        r = np.asarray(agent.reward(ds.observations[:5], ds.actions[:5]))
        assert r.shape == (5,) and np.all(np.isfinite(r))


def test_provenance_check_catches_a_runner_that_forgets_to_strip(small_data, monkeypatch):
    """Sanity of the check above: with stripping disabled, the recorded dataset has rewards."""
    from pbrl.datasets.base import OfflineDataset

    ds, prefs = small_data
    SEEN.clear()
    monkeypatch.setattr(train_mod, "FitContext", _RecordingContext)
    monkeypatch.setattr(OfflineDataset, "without_rewards", lambda self: self)
    spec = TrainSpec("cpl", ds.id, None, 0, 2, "cpu", None, _overrides(_module("cpl")), 0, 0, 1)
    train_agent(spec, dataset=ds, prefs=prefs)
    assert SEEN[0].dataset.rewards is not None


def test_zero_reward_iql_gets_no_reward(small_data, monkeypatch):
    ds, _ = small_data
    SEEN.clear()
    monkeypatch.setattr(train_mod, "FitContext", _RecordingContext)
    ov = {**_overrides(_module("iql")), "reward": "zero"}
    _, agent = train_agent(
        TrainSpec("iql", ds.id, None, 0, 3, "cpu", None, ov, 0, 0, 1), dataset=ds
    )
    assert not agent.requires_true_reward
    assert SEEN[0].dataset.rewards is None


def hopper_like_dataset(episodes: int = 6, horizon: int = 30, seed: int = 0):
    """A synthetic OfflineDataset with the real task id ``mujoco/hopper`` (11-d obs, 3-d act)."""
    from pbrl.datasets.base import OfflineDataset

    rng = np.random.default_rng(seed)
    n = episodes * horizon
    obs = rng.standard_normal((n + episodes, 11)).astype(np.float32)
    keep = np.ones(n + episodes, bool)
    keep[horizon :: horizon + 1] = False  # drop each episode's final next-obs row
    nxt_rows = np.flatnonzero(keep) + 1
    terminals = np.zeros(n, bool)
    terminals[horizon - 1 :: horizon * 2] = True  # some episodes end by termination
    return OfflineDataset(
        id="test/hopper-synthetic",
        task_id="mujoco/hopper",
        observations=obs[keep],
        actions=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        rewards=rng.standard_normal(n).astype(np.float32),
        next_observations=obs[nxt_rows],
        terminals=terminals,
        timeouts=~terminals & (np.arange(n) % horizon == horizon - 1),
        starts=np.arange(episodes, dtype=np.int64) * horizon,
        lengths=np.full(episodes, horizon, dtype=np.int64),
    )


@pytest.fixture(scope="module")
def hopper_data():
    from pbrl.prefs import make_preference_data

    ds = hopper_like_dataset()
    rng = np.random.default_rng(0)
    m = 8
    refs_a = np.stack([rng.integers(0, 6, m), rng.integers(0, 20, m), np.full(m, 8)], 1)
    refs_b = np.stack([rng.integers(0, 6, m), rng.integers(0, 20, m), np.full(m, 8)], 1)
    labels = rng.choice([0.0, 0.5, 1.0], m).astype(np.float32)
    prefs = make_preference_data(ds.id, refs_a, refs_b, labels, None, labeler="teacher:test")
    return ds, prefs


@pytest.mark.parametrize("name", OFFLINE_AGENTS)
def test_agent_runs_on_a_real_task(name, hopper_data, tmp_path) -> None:
    """The same contract with a real task id: the env's action box, D4RL-normalised score."""
    ds, prefs = hopper_data
    mod = _module(name)
    spec = TrainSpec(
        agent=name,
        dataset=ds.id,
        prefs=None,
        seed=1,
        steps=4,
        device="cpu",
        overrides=_overrides(mod),
        eval_every=4,
        eval_episodes=1,
        log_interval=2,
        out=str(tmp_path / "run"),
    )
    summary, agent = train_agent(spec, dataset=ds, prefs=prefs)
    assert summary["task"] == "mujoco/hopper" and math.isfinite(summary["final_score"])
    a = np.asarray(agent.act(ds.observations[:3]))
    assert a.shape == (3, 3) and np.all(np.abs(a) <= 1.0)


@pytest.mark.parametrize("name", ["mr", "pt", "hprior"])
def test_state_only_reward_ignores_the_action(name, small_data) -> None:
    """``--agent.reward_input obs`` trains r(s): the learned reward of a state is the same for
    every action (and 'obs_act' is not, so the check can fail)."""
    ds, prefs = small_data
    mod = _module(name)
    obs = ds.observations[:6]
    acts = [ds.actions[:6], -ds.actions[:6], np.zeros_like(ds.actions[:6])]
    for mode in ("obs", "obs_act"):
        ov = {**_overrides(mod), "reward_input": mode}
        torch.manual_seed(0)
        _, agent = train_agent(
            TrainSpec(name, ds.id, None, 0, 6, "cpu", None, ov, 0, 0, 2), dataset=ds, prefs=prefs
        )
        rs = [np.asarray(agent.reward(obs, a)) for a in acts]
        same = all(np.allclose(rs[0], r, atol=1e-6) for r in rs[1:])
        assert same == (mode == "obs"), f"{name} reward_input={mode}: action-invariant={same}"


@pytest.mark.parametrize("name", ["mr", "pt", "hprior"])
def test_unknown_reward_input_is_a_clear_error(name) -> None:
    from pbrl.errors import PbrlError

    mod = _module(name)
    cfg = make_config(mod, None, {**_overrides(mod), "reward_input": "pixels"})
    with pytest.raises(PbrlError, match="reward_input.*pixels"):
        mod.Agent(cfg, AgentSpec(2, 2, -np.ones(2), np.ones(2), "cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", OFFLINE_AGENTS)
def test_agent_trains_on_cuda(name, small_data, tmp_path) -> None:
    """The CUDA path of every agent: trains, acts, and its checkpoint loads on a CPU agent.

    Skipped where there is no GPU (CI); run ``pytest -k cuda`` on a machine with one.
    """
    ds, prefs = small_data
    mod = _module(name)
    spec = _conformance_spec(name, ds.id, mod, "cuda", tmp_path / "run")
    summary, agent = train_agent(spec, dataset=ds, prefs=prefs)
    assert summary["final_score"] is not None and math.isfinite(summary["final_score"])
    nets = torch_modules(agent)
    assert nets, f"{name}: no torch module found on the agent"
    # (the CPU conformance test checks that this helper finds every built-in agent's modules)
    for net in nets:
        for p in net.parameters():
            assert p.device.type == "cuda", f"{name}: a parameter stayed on {p.device}"
    obs = ds.observations[:7]
    a = np.asarray(agent.act(obs))
    assert a.shape == (7, ds.act_dim) and np.all(np.isfinite(a))
    if hasattr(agent, "reward"):
        assert np.all(np.isfinite(np.asarray(agent.reward(ds.observations[:5], ds.actions[:5]))))
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    cfg = make_config(mod, None, _overrides(mod))
    cpu = mod.Agent(cfg, AgentSpec(ds.obs_dim, ds.act_dim, -np.ones(2), np.ones(2), "cpu"))
    cpu.load_state_dict(ckpt["agent"])
    np.testing.assert_allclose(cpu.act(obs), a, rtol=1e-4, atol=1e-4)
