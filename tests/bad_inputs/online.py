"""The online track: ``pbrl train --agent pebble`` and online suites with bad methods,
selectors, budgets, teachers and mixes. Every error comes before anything trains."""

from __future__ import annotations

from bad_inputs import Case, World

TASK = "mujoco/hopper"


def _online(*extra: str, budget: str = "100") -> list[str]:
    argv = ["train", "--agent", "pebble", "--task", TASK, "--teacher", "oracle"]
    argv += ["--budget", budget, "--steps", "20000", "--device", "cpu", "--out", "run"]
    return argv + list(extra)


def _suite(w: World, body: str) -> list[str]:
    head = 'name = "o"\nseeds = [0]\nsteps = 20000\nsegment = 10\nbudgets = [100]\n'
    (w.cwd / "o.toml").write_text(head + body)
    return ["bench", "--suite", "o.toml", "--device", "cpu", "--no-plots", "--out", "sweep"]


ONLINE = f'[[datasets]]\ntask = "{TASK}"\nkind = "online"\n'
PEBBLE = '[[agents]]\nname = "pebble"\n'

CASES = [
    Case(
        "online-unknown-method",
        lambda w: _online("--agent.method", "pebbel"),
        expect=("--agent.method", "pebbel"),
    ),
    Case(
        "online-unknown-reward-model",
        lambda w: _online("--agent.reward_model", "pt"),
        expect=("--agent.reward_model", "pt"),
    ),
    Case(
        "online-unknown-selector",
        lambda w: _online("--selector", "loudest"),
        expect=("selector", "loudest"),
    ),
    Case(
        "online-budget-below-one-session",
        lambda w: _online(budget="10"),
        expect=("--budget 10", "session"),
    ),
    Case(
        "online-unknown-teacher",
        lambda w: _online("--teacher", "clairvoyant"),
        expect=("clairvoyant",),
    ),
    Case(
        "online-ui-teacher-bad-project-name",
        lambda w: _online("--teacher", "ui:../x"),
        expect=("--teacher ui:PROJECT",),
    ),
    Case(
        "online-ui-teacher-for-surf",
        lambda w: _online("--teacher", "ui:live", "--agent.surf_unlabeled", "10"),
        expect=("--agent.surf_unlabeled", "answers later"),
    ),
    Case(
        "online-no-task",
        lambda w: ["train", "--agent", "pebble", "--steps", "100", "--out", "run"],
        expect=("--task",),
    ),
    Case(
        "online-given-a-dataset",
        lambda w: _online("--dataset", w.dataset_id),
        expect=("--dataset", "online"),
    ),
    Case(
        "online-steps-before-first-session",
        lambda w: _online("--steps", "5000"),
        expect=("--steps 5000", "first feedback session"),
    ),
    Case(
        "online-suite-offline-agent-on-online-entry",
        lambda w: _suite(w, ONLINE + '[[agents]]\nname = "bc"\n'),
        expect=("o.toml", "bc", "online"),
    ),
    Case(
        "online-suite-online-agent-on-dataset",
        lambda w: _suite(w, f'[[datasets]]\nid = "{w.dataset_id}"\n' + PEBBLE),
        expect=("o.toml", "pebble", "online"),
    ),
    Case(
        "online-suite-unknown-selector",
        lambda w: _suite(w, 'selector = "loudest"\n' + ONLINE + PEBBLE),
        expect=("selector", "loudest"),
    ),
]
