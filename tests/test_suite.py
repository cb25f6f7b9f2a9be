"""Suite files: parsing, expansion into jobs, run ids, and malformed input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pbrl.errors import PbrlError
from pbrl.run.suite import expand, load_suite, parse_seeds, parse_suite

BASE = {
    "name": "t",
    "seeds": [0, 1],
    "budgets": [100, 200],
    "teachers": ["oracle", "mistake"],
    "datasets": [{"task": "metaworld/button-press-topdown-v3", "kind": "medium-replay"}],
    "agents": [
        {"name": "cpl"},
        {"name": "iql", "label": "iql-true", "overrides": {"reward": "true"}},
    ],
}


def test_expand_collapses_preference_free_runs():
    suite = parse_suite(BASE, where="t.toml")
    jobs = expand(suite, prefs_needed=lambda a: a.name != "iql")
    cpl = [j for j in jobs if j.agent == "cpl"]
    iql = [j for j in jobs if j.agent == "iql"]
    assert len(cpl) == 2 * 2 * 2  # teachers x budgets x seeds
    assert len(iql) == 2  # one per seed, shared by every teacher/budget row
    assert all(j.teacher is None and j.prefs_key() is None for j in iql)
    assert len({j.run_id for j in jobs}) == len(jobs)
    assert cpl[0].dataset == "pbrl/metaworld/button-press-topdown-v3/medium-replay-v0"


def test_an_agent_entry_may_name_its_own_teachers():
    raw = {**BASE, "agents": [{"name": "cpl"}, {"name": "cpl", "label": "r", "teachers": "random"}]}
    jobs = expand(parse_suite(raw, where="t.toml"))
    assert {j.teacher for j in jobs if j.label == "cpl"} == {"oracle", "mistake"}
    assert {j.teacher for j in jobs if j.label == "r"} == {"random"}
    bad = {**BASE, "agents": [{"name": "cpl", "teachers": []}]}
    with pytest.raises(PbrlError, match=r"t.toml: agents\[0\]: field 'teachers'"):
        parse_suite(bad, where="t.toml")


def test_dataset_entries_carry_their_own_budgets_steps_and_overrides():
    raw = {
        **BASE,
        "steps": 100,
        "datasets": [
            {"id": "a", "budgets": [7], "steps": 50, "overrides": {"lr": "1e-3", "bias": 2}},
            {"id": "b"},
        ],
        "agents": [
            {"name": "cpl", "overrides": {"bias": 1}},
            {"name": "bc", "steps": 30},
        ],
    }
    jobs = expand(parse_suite(raw, where="t.toml"))
    a_cpl = [j for j in jobs if j.dataset == "a" and j.agent == "cpl"]
    b_cpl = [j for j in jobs if j.dataset == "b" and j.agent == "cpl"]
    assert {j.budget for j in a_cpl} == {7} and {j.budget for j in b_cpl} == {100, 200}
    # entry steps over the suite's, an agent entry's steps over both
    assert {j.steps for j in a_cpl} == {50} and {j.steps for j in b_cpl} == {100}
    assert {j.steps for j in jobs if j.agent == "bc"} == {30}
    # entry overrides under the agent entry's own
    assert a_cpl[0].overrides == {"lr": "1e-3", "bias": 1} and b_cpl[0].overrides == {"bias": 1}


def test_run_id_is_a_hash_of_the_resolved_job():
    s1 = parse_suite(BASE, where="a")
    s2 = parse_suite({**BASE, "name": "other"}, where="b")
    ids1 = {j.run_id for j in expand(s1)}
    ids2 = {j.run_id for j in expand(s2)}
    assert ids1 == ids2  # the suite's name is not part of a run's identity
    s3 = parse_suite({**BASE, "steps": 123}, where="c")
    assert ids1.isdisjoint({j.run_id for j in expand(s3)})


def test_seeds_syntax():
    assert parse_seeds("0-4") == (0, 1, 2, 3, 4)
    assert parse_seeds("0,2,5") == (0, 2, 5)
    with pytest.raises(PbrlError, match="cannot read seeds"):
        parse_seeds("a-b")


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"steps": "many"}, "field 'steps' must be an integer"),
        ({"budgets": [10, -1]}, "budgets\\[1\\]"),
        ({"colour": 1}, "unknown field 'colour'"),
        ({"agents": [{"label": "x"}]}, "agents\\[0\\]: missing field 'name'"),
        ({"agents": [{"name": "cpl", "lr": 1}]}, "agents\\[0\\]: unknown field 'lr'"),
        ({"datasets": [{"task": "metaworld/x"}]}, "datasets\\[0\\]: needs 'id', or both"),
        ({"datasets": []}, "field 'datasets' is empty"),
        ({"agents": [{"name": "cpl"}, {"name": "cpl"}]}, "share the label 'cpl'"),
        ({"datasets": [{"id": "x", "budgets": [0]}]}, "datasets\\[0\\]: field 'budgets"),
        ({"datasets": [{"id": "x", "steps": -3}]}, "datasets\\[0\\]: field 'steps'"),
        ({"datasets": [{"id": "x", "overrides": 3}]}, "datasets\\[0\\]: field 'overrides'"),
        ({"datasets": [{"id": "x", "budget": [3]}]}, "datasets\\[0\\]: unknown field 'budget'"),
    ],
)
def test_malformed_suite_names_the_field(patch, message):
    with pytest.raises(PbrlError, match=message):
        parse_suite({**BASE, **patch}, where="bad.toml")


def test_suite_files_toml_and_yaml(tmp_path):
    t = tmp_path / "s.toml"
    t.write_text(
        'name = "mine"\nseeds = "0-2"\n[[datasets]]\nid = "d4rl/hopper-medium-replay-v2"\n'
        '[[agents]]\nname = "bc"\n'
    )
    s = load_suite(str(t))
    assert s.name == "mine" and s.seeds == (0, 1, 2)
    y = tmp_path / "s.yaml"
    y.write_text("datasets: [d4rl/hopper-medium-v2]\nagents: [{name: bc, steps: 5}]\n")
    assert load_suite(str(y)).agents[0].steps == 5
    bad = tmp_path / "bad.toml"
    bad.write_text("agents = [\n")
    with pytest.raises(PbrlError, match="bad.toml: not valid TOML"):
        load_suite(str(bad))


def test_a_folder_named_like_a_suite_leaves_the_name_a_suite(tmp_path, monkeypatch):
    """``pbrl bench --out quick`` makes a folder ``quick``; the next ``pbrl bench`` (suite
    ``quick``) in that directory still loads the shipped suite, and a folder whose name is
    no suite is named in the error."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quick").mkdir()
    (tmp_path / "mine").mkdir()
    assert load_suite("quick").name == "quick"
    with pytest.raises(PbrlError, match="unknown suite 'mine' \\('mine' is a folder\\)"):
        load_suite("mine")
    (tmp_path / "odd.toml").mkdir()
    with pytest.raises(PbrlError, match="suite file 'odd.toml' is not a file"):
        load_suite("odd.toml")
    out = subprocess.run(
        [sys.executable, "-m", "pbrl", "bench", "--list"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "quick" in out.stdout, out.stderr


def test_cli_reports_malformed_suite_without_traceback(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('steps = "x"\n[[datasets]]\nid = "d"\n[[agents]]\nname = "bc"\n')
    out = subprocess.run(
        [sys.executable, "-m", "pbrl", "bench", "--suite", str(bad), "--dry-run"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert "field 'steps'" in out.stderr and "Traceback" not in out.stderr


def test_shipped_suites_parse_and_name_real_agents_and_presets():
    from pbrl.learn.api import load_agent_module
    from pbrl.run.suite import list_suites
    from pbrl.teachers import list_teachers

    names = list_suites()
    assert {
        "quick",
        "metaworld-mixture",
        "cpl-protocol",
        "cpl-protocol-cpu",
        "mujoco",
        "d4rl",
        "teachers",
        "budgets",
        "bpref",
        "bpref-cpu",
    } <= set(names)
    for name in names:
        suite = load_suite(name)
        assert suite.description
        for agent in suite.agents:
            mod = load_agent_module(agent.name)
            if agent.preset:
                assert agent.preset in mod.PRESETS, (name, agent.name, agent.preset)
        for teacher in suite.teachers:
            assert teacher in list_teachers(), (name, teacher)


def test_extends_takes_the_base_and_replaces_top_level_fields(tmp_path):
    quick = load_suite("quick")
    f = tmp_path / "two.toml"
    f.write_text(
        'extends = "quick"\nseeds = [0, 1, 2]\n'
        '[[datasets]]\ntask = "metaworld/door-open-v3"\nkind = "medium-replay"\n'
    )
    two = load_suite(str(f))
    assert two.name == "two" and two.seeds == (0, 1, 2)
    assert two.agents == quick.agents and two.budgets == quick.budgets
    assert [d.dataset_id() for d in two.datasets] == [
        "pbrl/metaworld/door-open-v3/medium-replay-v0"
    ]
    # The same learner on the same data and seed is the same run whatever the suite.
    q_ids = {j.run_id for j in expand(quick, prefs_needed=lambda a: a.name != "iql")}
    child = tmp_path / "child.yaml"
    child.write_text(
        "extends: two.toml\nseeds: [0]\ndatasets:\n  - {id: "
        + quick.datasets[0].dataset_id()
        + "}\n"
    )
    c_ids = {
        j.run_id for j in expand(load_suite(str(child)), prefs_needed=lambda a: a.name != "iql")
    }
    assert c_ids and c_ids <= q_ids


def test_extends_errors_name_the_field(tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('extends = "b.toml"\n')
    b.write_text('extends = "a.toml"\n')
    with pytest.raises(PbrlError, match="'extends' makes a cycle"):
        load_suite(str(a))
    a.write_text("extends = 3\n")
    with pytest.raises(PbrlError, match="field 'extends'"):
        load_suite(str(a))
    a.write_text('extends = "no-such-suite"\n')
    with pytest.raises(PbrlError, match="unknown suite 'no-such-suite'"):
        load_suite(str(a))
