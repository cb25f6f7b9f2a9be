"""The diagnose command: the table lands in the card; bad input gives a clear error."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pbrl.cli.app import app
from pbrl.datasets import metaworld_gen as g
from pbrl.errors import DataError, UnknownIdError
from pbrl.run import diagnose as dg

TASK = "metaworld/button-press-topdown-v3"


@pytest.fixture()
def tiny_dataset(minari_home, monkeypatch):
    monkeypatch.setattr(g, "other_task_pool", lambda *a, **k: ["reach-v3"])
    did = g.build(TASK, "medium-replay", episodes=10, seed=0, workers=1, horizon=20)
    return did, minari_home


def _card(minari_home, did):
    meta = json.loads((minari_home / did / "data" / "metadata.json").read_text())
    return meta["pbrl_card"]


def test_top_episodes_keeps_the_best_by_return(tiny_dataset):
    from pbrl.datasets.registry import load_dataset

    did, _ = tiny_dataset
    ds = load_dataset(did)
    top = dg.top_episodes(ds, 0.2)
    assert top.num_episodes == 2
    best = np.sort(ds.episode_returns())[-2:]
    np.testing.assert_allclose(np.sort(top.episode_returns()), best, rtol=1e-6)
    assert top.num_steps == int(top.lengths.sum()) and top.qpos.shape[0] == top.num_steps
    assert len(top.episode_info) == 2


def test_mean_ci_and_criteria():
    m, lo, hi = dg.mean_ci([10.0, 20.0, 30.0])
    assert m == 20.0 and 10.0 <= lo < m < hi <= 30.0
    assert dg.mean_ci([5.0]) == (5.0, 5.0, 5.0)

    def row(name, mean, lo, hi):
        v = {"mean": mean, "ci95": [lo, hi]}
        return {"learner": name, "success": v, "normalized_return": v}

    table = {
        "expert_success": 100.0,
        "rows": [
            row("bc-all", 30, 20, 40),
            row("bc-top10", 90, 85, 95),
            row("iql-true", 70, 50, 90),
        ],
    }
    c = dg.criteria(table)
    assert c["metric"] == "success" and c["all_met"]
    table["rows"][0] = row("bc-all", 60, 40, 70)  # above half the expert, CIs overlap
    c = dg.criteria(table)
    assert not c["bc_all_at_most_half_expert"] and not c["iql_true_above_bc_all_ci_disjoint"]
    assert not c["all_met"]


@pytest.mark.slow
def test_diagnose_command_writes_its_table_into_the_card(tiny_dataset):
    did, home = tiny_dataset
    res = CliRunner().invoke(
        app, ["datasets", "diagnose", did, "--steps", "2", "--seeds", "1", "--eval-episodes", "1"]
    )
    assert res.exit_code == 0, res.output
    assert "bc-top10" in res.output and "iql-zero" in res.output
    table = _card(home, did)["diagnose"]
    assert [r["learner"] for r in table["rows"]] == ["bc-all", "bc-top10", "iql-true", "iql-zero"]
    assert table["steps"] == 2 and table["seeds"] == 1 and table["top_episodes"] == 1
    for r in table["rows"]:
        assert 0.0 <= r["success"]["mean"] <= 100.0
        assert np.isfinite(r["normalized_return"]["mean"])
    # The rest of the card is untouched.
    assert _card(home, did)["kind"] == "medium-replay"


def test_unknown_dataset_is_a_clear_error(minari_home):
    with pytest.raises(UnknownIdError, match="no-such"):
        dg.diagnose("pbrl/metaworld/no-such-task-v3/expert-v0", steps=1, seeds=1)
    res = CliRunner().invoke(app, ["datasets", "diagnose", "pbrl/metaworld/nope/expert-v0"])
    assert res.exit_code != 0 and "Traceback" not in res.output


def test_dataset_without_rewards_is_a_clear_error(tiny_dataset):
    from pbrl.datasets.registry import load_dataset

    did, _ = tiny_dataset
    stripped = load_dataset(did).without_rewards()
    with pytest.raises(DataError, match="no rewards"):
        dg.diagnose(did, steps=1, seeds=1, dataset=stripped)


@pytest.mark.slow
def test_parallel_workers_give_the_same_table(tiny_dataset, caplog):
    import logging

    did, _ = tiny_dataset
    kw = dict(steps=3, seeds=2, eval_episodes=1, learners=("bc-top10", "iql-true"))
    caplog.set_level(logging.INFO, logger="pbrl.run.diagnose")
    one = dg.diagnose(did, workers=1, **kw)
    # Each training is logged as it starts and as it finishes (with the ETA of the rest).
    lines = [r.getMessage() for r in caplog.records if r.name == "pbrl.run.diagnose"]
    assert "diagnose: bc-top10 seed 0 started (1/4)" in lines
    done = [m for m in lines if " finished in " in m]
    assert len(done) == 4 and done[-1].endswith("4/4 done, ETA 0s")
    caplog.clear()
    two = dg.diagnose(did, workers=2, **kw)
    done = [r.getMessage() for r in caplog.records if " finished in " in r.getMessage()]
    assert len(done) == 4
    for r1, r2 in zip(one["rows"], two["rows"], strict=True):
        assert r1["learner"] == r2["learner"]
        assert [s["return"] for s in r1["seeds"]] == [s["return"] for s in r2["seeds"]]
        assert [s["seed"] for s in r2["seeds"]] == [0, 1]


@pytest.mark.slow
def test_build_runs_its_brief_diagnosis_into_the_card(minari_home, monkeypatch):
    # A suite's build (the runner) and `pbrl datasets build` run the generator, then the
    # brief diagnosis with the generator's BUILD_DIAGNOSE options.
    from pbrl.run.runner import build_dataset

    monkeypatch.setattr(g, "other_task_pool", lambda *a, **k: ["reach-v3"])
    monkeypatch.setattr(g, "BUILD_DIAGNOSE", {"steps": 2, "seeds": 1, "eval_episodes": 1})
    did = build_dataset(
        TASK, "medium-replay", {"episodes": 10, "seed": 1, "workers": 2, "horizon": 20}
    )
    table = _card(minari_home, did)["diagnose"]
    assert table["steps"] == 2 and table["seeds"] == 1
    assert [r["learner"] for r in table["rows"]] == ["bc-all", "bc-top10", "iql-true", "iql-zero"]
