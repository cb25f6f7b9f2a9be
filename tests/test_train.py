"""The runner (``pbrl.run.train``), batched evaluation and the ``pbrl train`` / ``pbrl agents`` CLI."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
from test_learnability import (
    POINT_HORIZON,
    POINT_TASK,
    PointEnv,
    point_dataset,
    point_prefs,
    register_point_task,
)

import pbrl.datasets.registry as registry
import pbrl.run.train as train_mod
from pbrl.cli import main as cli_main
from pbrl.cli.train import parse_agent_args
from pbrl.envs.base import TaskSpec, register
from pbrl.errors import DataError, PbrlError
from pbrl.prefs import save_preferences
from pbrl.run.evaluate import EVAL_SEED_OFFSET, evaluate
from pbrl.run.train import TrainSpec, eval_horizon, train, train_agent

TINY = {"hidden": (8, 8), "batch_size": 4}


@pytest.fixture(scope="module")
def data():
    ds = point_dataset(episodes=6, horizon=20, seed=4, ds_id="test/point-train")
    return ds, point_prefs(ds, n_queries=10, segment=5, seed=0)


@pytest.fixture()
def cli_data(data, tmp_path, monkeypatch):
    """The dataset served by the registry under its id, and the prefs saved to a file."""
    ds, prefs = data
    real = registry.load_dataset
    monkeypatch.setattr(
        registry, "load_dataset", lambda i, **kw: ds if str(i) == ds.id else real(i, **kw)
    )
    path = tmp_path / "prefs.npz"
    save_preferences(prefs, path)
    return ds, path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = 0
    try:
        cli_main(args)
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_parse_agent_args():
    assert parse_agent_args(["--agent.alpha", "0.2", "--agent.mode=rank"]) == {
        "alpha": "0.2",
        "mode": "rank",
    }
    with pytest.raises(PbrlError, match="missing value"):
        parse_agent_args(["--agent.alpha"])
    with pytest.raises(PbrlError, match="unexpected argument 'stray'"):
        parse_agent_args(["stray"])
    with pytest.raises(PbrlError, match="given twice"):
        parse_agent_args(["--agent.a", "1", "--agent.a", "2"])


def test_cli_train_writes_the_run(cli_data, tmp_path, capsys):
    ds, prefs_path = cli_data
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        [
            "train",
            "--agent", "cpl",
            "--dataset", ds.id,
            "--prefs", str(prefs_path),
            "--seed", "3",
            "--steps", "6",
            "--device", "cpu",
            "--preset", "cpl_bc",
            "--agent.hidden", "(8,8)",
            "--agent.batch_size=4",
            "--eval-every", "3",
            "--eval-episodes", "2",
            "--log-interval", "2",
            "--out", str(out),
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["agent_config"]["hidden"] == [8, 8] and cfg["agent_config"]["batch_size"] == 4
    assert cfg["agent_config"]["bias"] == 1.0 and cfg["preset"] == "cpl_bc"  # the preset applied
    assert cfg["device"] == "cpu" and cfg["n_prefs"] == 10 and cfg["versions"]["torch"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4, 6]
    evals = list(csv.DictReader((out / "eval.csv").open()))
    assert [int(e["step"]) for e in evals] == [3, 6]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["final_score"] == pytest.approx(
        float(evals[-1]["score"])
    )
    assert summary["best_score"] == max(float(e["score"]) for e in evals)
    assert (out / "checkpoint.pt").exists()
    assert '"final_score"' in stdout


def test_cli_unknown_agent_field_is_a_clean_error(cli_data, tmp_path, capsys):
    ds, prefs_path = cli_data
    code, _, err = run_cli(
        ["train", "--agent", "cpl", "--dataset", ds.id, "--prefs", str(prefs_path),
         "--steps", "2", "--agent.nonexistent", "1", "--out", str(tmp_path / "r")],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert "--agent.nonexistent" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_cli_agents_list_and_show(capsys):
    code, out, _ = run_cli(["agents", "list"], capsys)
    assert code == 0
    for name in ("bc", "cpl", "ipl", "iql", "mr"):
        assert any(line.startswith(name + " ") for line in out.splitlines())
    code, out, _ = run_cli(["agents", "show", "cpl"], capsys)
    assert code == 0
    assert "--agent.bias" in out and "Conservative bias" in out and "cpl_kl" in out
    code, out, _ = run_cli(["agents", "show", "iql"], capsys)
    assert "--agent.expectile" in out and "Expectile tau" in out  # inherited IQL fields
    code, _, err = run_cli(["agents", "show", "nope"], capsys)
    assert code == 2 and "unknown agent" in err


def test_preference_learner_needs_prefs_and_matching_dataset(data):
    ds, prefs = data
    spec = TrainSpec("cpl", ds.id, None, 0, 2, "cpu", None, TINY, 0, 0, 1)
    with pytest.raises(PbrlError, match="--prefs"):
        train(spec, dataset=ds)
    other = point_dataset(episodes=6, horizon=20, seed=4, ds_id="test/other")
    with pytest.raises(DataError, match="test/point-train"):
        train(spec, dataset=other, prefs=prefs)


def _plugin(tmp_path, monkeypatch, name: str, body: str) -> str:
    """An out-of-tree plug-in module ``h7plugins.<name>``; returns its dotted path."""
    pkg = tmp_path / "h7plugins"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    for mod in ("h7plugins", f"h7plugins.{name}"):
        sys.modules.pop(mod, None)
    return f"h7plugins.{name}"


BAD_AGENT = '''
"""A learner that miscounts its steps (runner tests)."""
from dataclasses import dataclass
import numpy as np

@dataclass
class Config:
    """Options."""
    extra: int = 0
    """Steps yielded beyond the budget (negative: stop early)."""

class Agent:
    requires_preferences = False
    def __init__(self, cfg, spec):
        self.cfg, self.spec = cfg, spec
    def fit(self, ctx):
        for s in range(1, ctx.steps + self.cfg.extra + 1):
            yield {"step": s, "x": 1.0}
    def act(self, obs):
        return np.zeros(np.asarray(obs).shape[:-1] + (self.spec.act_dim,), np.float32)
    def state_dict(self):
        return {}
    def load_state_dict(self, state):
        pass
'''


@pytest.mark.parametrize("extra", [2, -2])
def test_runner_enforces_the_step_budget_and_never_half_finishes(
    data, tmp_path, monkeypatch, extra
):
    ds, _ = data
    name = _plugin(tmp_path, monkeypatch, "bad_agent", BAD_AGENT)
    out = tmp_path / "run"
    spec = TrainSpec(name, ds.id, None, 0, 5, "cpu", None, {"extra": str(extra)}, 0, 0, 1, str(out))
    with pytest.raises(PbrlError, match="budget|stopped at step"):
        train(spec, dataset=ds)
    assert not out.exists()  # the run trained in a staging folder, removed on the error
    assert list(tmp_path.glob(".tmp-*")) == []


def test_evaluate_is_batched_seeded_and_scores(monkeypatch):
    register_point_task()

    class Counting:
        calls: list[int] = []

        def act(self, obs):
            Counting.calls.append(np.asarray(obs).shape[0])
            return np.ones((np.asarray(obs).shape[0], 2), np.float32)

    res = evaluate(Counting(), POINT_TASK, episodes=3, seed=7, parallel=10)
    assert len(Counting.calls) == 40 and set(Counting.calls) == {3}  # one call per step
    assert res["successes"] is None and res["success_rate"] is None
    assert res["score"] == pytest.approx(np.mean(res["returns"]))
    again = evaluate(Counting(), POINT_TASK, episodes=3, seed=7, parallel=2)  # waves of 2
    np.testing.assert_allclose(again["returns"], res["returns"])
    # seed s resets episode i with s + EVAL_SEED_OFFSET + i
    e = PointEnv()
    o, _ = e.reset(seed=7 + EVAL_SEED_OFFSET + 1)
    ret = 0.0
    for _ in range(40):
        o, r, *_ = e.step(np.ones(2, np.float32))
        ret += r
    assert res["returns"][1] == pytest.approx(ret)


class _BlinkEnv(gym.Env):
    """Reports success only at step 3, then terminates at step 5."""

    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1, np.float32), 1.0, self.t >= 5, False, {"success": self.t == 3}


def test_evaluate_success_at_any_step_and_termination():
    register(
        TaskSpec(
            id="test/blink",
            domain="test",
            horizon=50,
            make=lambda seed=0, **kw: _BlinkEnv(),
            score=lambda returns, successes: 100.0 * float(np.mean(successes)),
        )
    )

    class Zero:
        def act(self, obs):
            return np.zeros((len(obs), 1), np.float32)

    res = evaluate(Zero(), "test/blink", episodes=2, seed=0)
    assert res["successes"] == [True, True] and res["score"] == 100.0
    assert res["lengths"] == [5, 5] and res["returns"] == [5.0, 5.0]


def test_train_agent_returns_the_trained_agent(data):
    ds, _ = data
    summary, agent = train_agent(
        TrainSpec("iql", ds.id, None, 0, 3, "cpu", None, TINY, 0, 0, 1), dataset=ds
    )
    assert summary["final_score"] is None  # no evaluation requested
    assert agent.act(ds.observations[:2]).shape == (2, 2)


@pytest.mark.parametrize("agent", ["cpl", "mr", "ipl"])
def test_same_seed_same_run(data, agent):
    ds, prefs = data
    ov = {"hidden": (8, 8), "batch_size": 4}
    if agent == "mr":
        ov.update(reward_hidden=(8,), reward_batch=4, reward_epochs=2)
    runs = [
        train_agent(
            TrainSpec(agent, ds.id, None, 5, 6, "cpu", None, ov, 0, 0, 2), dataset=ds, prefs=prefs
        )
        for _ in range(2)
    ]
    assert runs[0][0]["last_metrics"] == runs[1][0]["last_metrics"]
    np.testing.assert_array_equal(
        runs[0][1].act(ds.observations[:5]), runs[1][1].act(ds.observations[:5])
    )


def _tiny_spec(ds, out, **kw):
    base = dict(agent="iql", dataset=ds.id, prefs=None, seed=0, steps=4, device="cpu",
                overrides={**TINY, "reward": "true"}, eval_every=0, eval_episodes=0,
                log_interval=2, out=str(out))  # fmt: skip
    return TrainSpec(**{**base, **kw})


def test_out_holding_a_finished_run_is_refused_and_kept(data, tmp_path):
    """`pbrl train --out` onto a finished run: refused before any work, the run untouched;
    with overwrite the old run is replaced only once the new one is complete."""
    ds, _ = data
    out = tmp_path / "run"
    first = train(_tiny_spec(ds, out), dataset=ds)
    before = (out / "summary.json").read_text()
    with pytest.raises(PbrlError, match="already holds a finished run"):
        train(_tiny_spec(ds, out, seed=1), dataset=ds)
    assert (out / "summary.json").read_text() == before
    # An error after the start (a step budget the agent breaks) leaves the old run intact.
    with pytest.raises(PbrlError):
        train(_tiny_spec(ds, out, overwrite=True, overrides={"bogus": "1"}), dataset=ds)
    assert (out / "summary.json").read_text() == before
    second = train(_tiny_spec(ds, out, seed=1, overwrite=True), dataset=ds)
    assert json.loads((out / "summary.json").read_text())["seed"] == 1 != first["seed"]
    assert second["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging left behind


def test_out_that_is_not_a_run_folder_is_refused(data, tmp_path):
    ds, _ = data
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("x")
    for out, words in [
        (tmp_path / "full", "not empty"),
        (tmp_path / "file", "a file"),
        (tmp_path / "file" / "run", "lies under"),
    ]:
        with pytest.raises(PbrlError, match=words):
            train(_tiny_spec(ds, out), dataset=ds)
    assert (tmp_path / "full" / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("seed", -1, "--seed"),
        ("device", "bogus", "unknown device"),
        ("device", "cpu:0", "unknown device"),
        ("log_interval", 0, "--log-interval"),
        ("eval_episodes", -1, "--eval-episodes"),
        ("eval_workers", -1, "--eval-workers"),
        ("eval_workers", 1.5, "--eval-workers"),
        ("steps", 0, "--steps"),
    ],
)
def test_spec_fields_are_checked_before_anything_is_written(data, tmp_path, field, value, words):
    ds, _ = data
    out = tmp_path / "run"
    with pytest.raises(PbrlError, match=words):
        train(_tiny_spec(ds, out, **{field: value}), dataset=ds)
    assert list(tmp_path.iterdir()) == []


def test_progress_lines_name_rate_eta_and_losses(data, tmp_path, caplog):
    ds, _ = data
    with caplog.at_level("INFO", logger="pbrl.run.train"):
        train(_tiny_spec(ds, tmp_path / "run"), dataset=ds)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert [ln.split(" ", 2)[1] for ln in lines] == ["2/4", "4/4"]
    assert all("updates/s" in ln and "ETA" in ln and "v_loss" in ln for ln in lines), lines


def test_evaluation_runs_for_the_dataset_cards_shorter_horizon(data, monkeypatch):
    """CPL's rollouts are 250-step episodes of 500-step tasks and CPL evaluates at 250: the
    run layer evaluates for the card's ``horizon`` when it is shorter than the task's, and
    for the task's otherwise (a longer card horizon is not the task's to extend)."""

    ds, _ = data
    seen: list[int | None] = []
    real = train_mod.evaluate_many

    def spy(agents, task_id, episodes, seeds, horizon=None, **kw):
        seen.append(horizon)
        return real(agents, task_id, episodes, seeds, horizon, **kw)

    monkeypatch.setattr(train_mod, "evaluate_many", spy)
    short = dataclasses.replace(ds, card={**ds.card, "horizon": 7})
    summary, _ = train_agent(
        TrainSpec("iql", short.id, None, 0, 3, "cpu", None, TINY, 3, 2, 1), dataset=short
    )
    assert seen == [7] and summary["eval_horizon"] == 7
    assert eval_horizon(ds, POINT_TASK) == POINT_HORIZON
    longer = dataclasses.replace(ds, card={"horizon": POINT_HORIZON + 5})
    assert eval_horizon(longer, POINT_TASK) == POINT_HORIZON
    assert eval_horizon(ds, None) is None
