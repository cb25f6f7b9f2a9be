"""The learner contract as a library call: the conformance checks of a learner module.

:func:`check_agent` runs the checks of :mod:`pbrl.learn.api`'s contract against any learner
module (a shipped one, a dotted path, a bare module name) with tiny networks (the module's
``TEST_OVERRIDES``) for a few updates on a small synthetic dataset, and returns one
:class:`CheckResult` per check. ``pbrl agents check MODULE`` prints them; the conformance
test (tests/test_agents_conformance.py) asserts them for every registered agent and for
examples/my_agent.py.

Checked: the module loads (``Config`` dataclass, ``Agent``), has a docstring, documents
every ``Config`` field, defines ``TEST_OVERRIDES``, its presets build (shipped learners need
``paper`` and ``quick``); the agent builds; ``fit`` yields finite metrics with increasing
``step`` at every multiple of ``log_interval``, never past the budget, ending at it; ``act``
returns finite actions of the right shape inside the action box, batched and single; a
fresh agent loading ``state_dict`` (directly and through ``torch.save``) acts the same;
every network sits on the run's device; an optional ``reward`` returns one finite value
per row. The learner sees the dataset's rewards only if it declares
``requires_true_reward``, as under the runner. An online learner (``ONLINE = True``) is
checked the same way, but ``fit`` acts in ``ONLINE_CHECK_TASK``'s environment for
``ONLINE_CHECK_STEPS`` env steps with the ``oracle`` teacher and a small query budget, and
must never ask more queries than the budget (its ``queries_used``).
"""

from __future__ import annotations

import dataclasses
import io
import math
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pbrl.datasets.base import OfflineDataset
from pbrl.envs import get_task
from pbrl.errors import PbrlError
from pbrl.learn.api import (
    AgentSpec,
    FitContext,
    config_field_docs,
    list_agents,
    load_agent_module,
    make_config,
)
from pbrl.prefs import label_dataset
from pbrl.teachers import make_teacher
from pbrl.utils import seed_everything

CHECK_STEPS = 12
CHECK_LOG_INTERVAL = 4
# Online learners (``ONLINE = True``) are checked in a real environment, asking the
# ``oracle`` teacher: env steps, log interval, query budget and segment length.
ONLINE_CHECK_TASK = "mujoco/hopper"
ONLINE_CHECK_STEPS = 200
ONLINE_CHECK_LOG_INTERVAL = 40
ONLINE_CHECK_BUDGET = 12
ONLINE_CHECK_SEGMENT = 10


@dataclass(frozen=True)
class CheckResult:
    """One check: its name, whether it passed, and what was found."""

    name: str
    ok: bool
    detail: str = ""


def check_dataset(episodes: int = 8, horizon: int = 20, seed: int = 1) -> Any:
    """A small synthetic dataset: a 2-D point moving by 0.1 * action towards a goal.

    2-D observations and actions in [-1, 1]; the reward is the negative distance to the
    goal; one episode in four ends by termination (the others time out).
    """
    rng = np.random.default_rng(seed)
    goal = np.array([0.6, 0.6], dtype=np.float32)
    obs, act, rew, nxt = [], [], [], []
    for _ in range(episodes):
        x = rng.uniform(-1.0, 1.0, 2).astype(np.float32)
        for _ in range(horizon):
            a = rng.uniform(-1.0, 1.0, 2).astype(np.float32)
            x2 = np.clip(x + 0.1 * a, -1.0, 1.0).astype(np.float32)
            obs.append(x)
            act.append(a)
            nxt.append(x2)
            rew.append(-float(np.linalg.norm(x2 - goal)))
            x = x2
    n = episodes * horizon
    ends = np.zeros(n, bool)
    ends[horizon - 1 :: horizon] = True
    terminals = ends & (np.arange(n) // horizon % 4 == 3)
    return OfflineDataset(
        id="check/point",
        task_id="check/point",
        observations=np.asarray(obs, np.float32),
        actions=np.asarray(act, np.float32),
        rewards=np.asarray(rew, np.float32),
        next_observations=np.asarray(nxt, np.float32),
        terminals=terminals,
        timeouts=ends & ~terminals,
        starts=np.arange(episodes, dtype=np.int64) * horizon,
        lengths=np.full(episodes, horizon, dtype=np.int64),
    )


def check_prefs(ds: Any, n_queries: int = 12, segment: int = 6, seed: int = 2) -> Any:
    """``n_queries`` uniform segment pairs of ``ds`` labelled by the ``oracle`` teacher."""
    return label_dataset(ds, "oracle", n_queries, segment, seed)


def torch_modules(obj: Any, depth: int = 2) -> list[torch.nn.Module]:
    """The torch modules an agent holds, directly or inside helper objects (an IQL core)."""
    found: list[torch.nn.Module] = []
    for v in vars(obj).values():
        if isinstance(v, torch.nn.Module):
            found.append(v)
        elif depth > 0 and hasattr(v, "__dict__") and not isinstance(v, type):
            found.extend(torch_modules(v, depth - 1))
    return found


def _error(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def check_agent(
    agent: str | types.ModuleType,
    *,
    dataset: Any = None,
    prefs: Any = None,
    device: str = "cpu",
    steps: int = CHECK_STEPS,
    log_interval: int = CHECK_LOG_INTERVAL,
    seed: int = 0,
    stack: int = 2,
) -> list[CheckResult]:
    """Run the conformance checks on a learner module; one result per check, in order.

    ``agent`` is a registry key, a dotted path, a bare module name or the module itself.
    ``dataset`` / ``prefs`` (an OfflineDataset and its PreferenceData) default to
    :func:`check_dataset` and :func:`check_prefs`. A check whose prerequisite failed is
    not run (its absence is the message). ``stack``: how many seeds (``seed``,
    ``seed + 1``, ...) the stacked-seeds check trains together. Never raises for a faulty
    module.
    """
    results: list[CheckResult] = []

    def add(name: str, ok: bool, detail: str = "") -> bool:
        results.append(CheckResult(name, ok, detail))
        return ok

    def attempt(name: str, fn: Callable[[], str | None]) -> bool:
        """Run one check: a string return or a PbrlError/AssertionError is its detail."""
        try:
            detail = fn()
        except _Failed as e:
            return add(name, False, str(e))
        except Exception as e:  # noqa: BLE001 - a plug-in's failure is the check's finding
            return add(name, False, _error(e))
        return add(name, True, detail or "")

    # -- the module --------------------------------------------------------------------------
    if isinstance(agent, types.ModuleType):
        mod = agent
        label = mod.__name__
        builtin = False
    else:
        label = agent
        try:
            mod = load_agent_module(agent)
        except Exception as e:  # noqa: BLE001
            add("loads", False, str(e) if isinstance(e, PbrlError) else _error(e))
            return results
        builtin = "." not in agent and agent in list_agents()
    add("loads", True, f"{label} -> {mod.__name__}")

    def docstring() -> str:
        doc = (mod.__doc__ or "").strip()
        _require(doc, "the module needs a docstring (paper, summary, loss)")
        return doc.splitlines()[0]

    attempt("docstring", docstring)

    def documented() -> str:
        docs = config_field_docs(mod.Config)
        fields = dataclasses.fields(mod.Config)
        missing = [f.name for f in fields if not docs.get(f.name)]
        _require(not missing, f"Config fields without a docstring: {', '.join(missing)}")
        return f"{len(fields)} fields"

    attempt("config documented", documented)

    overrides: dict[str, Any] = {}

    def test_overrides() -> str:
        ov = getattr(mod, "TEST_OVERRIDES", None)
        _require(
            isinstance(ov, dict),
            "define TEST_OVERRIDES: a dict of Config values for tiny networks and batches",
        )
        overrides.update(ov)
        return ", ".join(f"{k}={v!r}" for k, v in ov.items()) or "(empty)"

    attempt("TEST_OVERRIDES", test_overrides)

    def presets() -> str:
        table = getattr(mod, "PRESETS", {})
        if builtin:
            _require({"paper", "quick"} <= set(table), "needs 'paper' and 'quick' presets")
        for name in table:
            make_config(mod, name, {})
        return ", ".join(table) or "(none)"

    attempt("presets", presets)

    # -- building and training --------------------------------------------------------------
    online = bool(getattr(mod, "ONLINE", False))
    if online:
        task = get_task(ONLINE_CHECK_TASK)
        obs_space, act_space = task.spaces()
        obs_dim, act_dim = int(np.prod(obs_space.shape)), int(np.prod(act_space.shape))
        low = np.asarray(act_space.low, np.float32)
        high = np.asarray(act_space.high, np.float32)
        aspec = AgentSpec(obs_dim, act_dim, low, high, device, task_id=ONLINE_CHECK_TASK)
        obs = np.random.default_rng(seed).standard_normal((7, obs_dim)).astype(np.float32)
        acts = np.zeros((7, act_dim), np.float32)
        steps, log_interval = ONLINE_CHECK_STEPS, ONLINE_CHECK_LOG_INTERVAL
    else:
        if dataset is None:
            dataset = check_dataset()
            if prefs is None:
                prefs = check_prefs(dataset)
        act_dim = dataset.act_dim
        low, high = -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32)
        aspec = AgentSpec(dataset.obs_dim, act_dim, low, high, device)
        obs = np.asarray(dataset.observations[:7])
        acts = np.asarray(dataset.actions[:7])
    ds = dataset
    state: dict[str, Any] = {}

    def build() -> str:
        cfg = make_config(mod, None, overrides)
        state["cfg"] = cfg
        state["agent"] = mod.Agent(cfg, aspec)
        return f"{type(state['agent']).__name__} on {device}"

    if not attempt("builds", build):
        return results
    agent_obj = state["agent"]

    def make_ctx(agent_i: Any, seed_i: int) -> FitContext:
        gen = torch.Generator(device=device)
        gen.manual_seed(seed_i)
        common: dict[str, Any] = {
            "steps": steps,
            "seed": seed_i,
            "device": device,
            "rng": seed_everything(seed_i),
            "generator": gen,
            "log_interval": log_interval,
        }
        if online:
            return FitContext(
                dataset=None,
                prefs=None,
                task_id=ONLINE_CHECK_TASK,
                teacher=make_teacher("oracle"),
                budget=ONLINE_CHECK_BUDGET,
                segment=ONLINE_CHECK_SEGMENT,
                selector="disagreement",
                **common,
            )
        needs_truth = bool(getattr(agent_i, "requires_true_reward", False))
        needs_prefs = bool(getattr(agent_i, "requires_preferences", True))
        fit_ds = ds if needs_truth else ds.without_rewards()
        batch = answered = None
        if needs_prefs:
            _require(prefs is not None, "the agent learns from preferences; none were given")
            answered = prefs.answered()
            batch = answered.to_batch(fit_ds, device)
        return FitContext(
            dataset=fit_ds, prefs=batch, reward_scale=1.0, pref_data=answered, **common
        )

    def fit() -> str:
        ctx = make_ctx(agent_obj, seed)
        seen: list[int] = []
        for m in agent_obj.fit(ctx):
            _require(
                isinstance(m, dict) and "step" in m, f"fit yielded {m!r}, not a dict with 'step'"
            )
            step = int(m["step"])
            _require(step <= steps, f"step {step} is past the budget of {steps} updates")
            if seen and step <= seen[-1]:
                raise _Failed(f"step {step} after step {seen[-1]}")
            for k, v in m.items():
                try:
                    fv = float(v)
                except (TypeError, ValueError):
                    raise _Failed(f"metric '{k}' = {v!r} at step {step} is not a number") from None
                _require(math.isfinite(fv), f"metric '{k}' = {fv} at step {step}")
            seen.append(step)
        _require(
            seen and seen[-1] == steps, f"stopped at step {seen[-1] if seen else 0} of {steps}"
        )
        due = [s for s in range(log_interval, steps + 1, log_interval)]
        missing = [s for s in due if s not in seen]
        _require(not missing, f"no metrics yielded at step(s) {missing} (every {log_interval})")
        if online:
            used = int(getattr(agent_obj, "queries_used", -1))
            _require(
                0 <= used <= ONLINE_CHECK_BUDGET,
                f"queries_used is {used}: the budget is {ONLINE_CHECK_BUDGET} queries",
            )
            return f"{steps} env steps, {used} queries, {len(seen)} metric rows, all finite"
        return f"{steps} updates, {len(seen)} metric rows, all finite"

    attempt("fit", fit)  # act and state are checked even after a failed fit

    if hasattr(mod, "fit_stacked") and not online:

        def stacked() -> str:
            extra = getattr(mod, "STACK_CHECK_OVERRIDES", {})
            cfg = make_config(mod, None, {**overrides, **extra})
            seeds = tuple(range(seed, seed + max(2, stack)))
            singles, members = [], []
            for s_i in seeds:
                seed_everything(s_i)
                singles.append(mod.Agent(cfg, aspec))
                seed_everything(s_i)
                members.append(mod.Agent(cfg, aspec))
            single_keys: set[str] = set()
            for s_i, single in zip(seeds, singles, strict=True):
                for m in single.fit(make_ctx(single, s_i)):
                    single_keys |= set(m)
            ctxs = [make_ctx(m, s_i) for m, s_i in zip(members, seeds, strict=True)]
            last = [0] * len(seeds)
            stacked_keys: set[str] = set()
            for rows in mod.fit_stacked(members, ctxs):
                _require(
                    isinstance(rows, list) and len(rows) == len(seeds),
                    f"fit_stacked yielded {type(rows).__name__}, not one entry per member",
                )
                live = [(i, r) for i, r in enumerate(rows) if r is not None]
                _require(live, "fit_stacked yielded nothing for every member")
                steps_seen = {int(r["step"]) for _, r in live}
                _require(len(steps_seen) == 1, f"members at different steps {steps_seen}")
                step = steps_seen.pop()
                for i, r in live:
                    _require(step > last[i], f"member {i}: step {step} after step {last[i]}")
                    last[i] = step
                    bad = [k for k, v in r.items() if not math.isfinite(float(v))]
                    _require(not bad, f"non-finite metric(s) {bad} at step {step}")
                    stacked_keys |= set(r)
            _require(
                all(x == steps for x in last), f"fit_stacked stopped at steps {last} of {steps}"
            )
            _require(
                stacked_keys == single_keys,
                f"fit_stacked's metrics differ from fit's: {sorted(stacked_keys ^ single_keys)}",
            )
            for s_i, single, member in zip(seeds, singles, members, strict=True):
                want, got = np.asarray(single.act(obs)), np.asarray(member.act(obs))
                _require(
                    np.allclose(got, want, rtol=1e-4, atol=1e-5),
                    f"stacked member of seed {s_i} acts differently from its single run "
                    f"(max difference {np.max(np.abs(got - want)):.3g})",
                )
            _require(
                not np.allclose(members[0].act(obs), members[1].act(obs)),
                "the stacked members act the same: they are not separate seeds",
            )
            shown = ", ".join(f"{k}={v!r}" for k, v in extra.items())
            return f"{len(seeds)} seeds stacked act as their single runs" + (
                f" (with {shown})" if shown else ""
            )

        attempt("stacked seeds", stacked)

    def act() -> str:
        a = np.asarray(agent_obj.act(obs))
        _require(
            a.shape == (7, act_dim),
            f"act of 7 observations: shape {a.shape}, expected (7, {act_dim})",
        )
        _require(bool(np.all(np.isfinite(a))), "act returned non-finite actions")
        _require(
            bool(np.all(a >= low - 1e-6) and np.all(a <= high + 1e-6)),
            f"actions outside the action space [{low.min()}, {high.max()}]: "
            f"min {a.min():.4g}, max {a.max():.4g}",
        )
        one = np.asarray(agent_obj.act(obs[0]))
        _require(
            one.shape == (act_dim,),
            f"act of one observation: shape {one.shape}, expected ({act_dim},)",
        )
        return "batched and single, inside the box"

    acts_ok = attempt("act", act)

    def round_trip() -> str:
        expected = np.asarray(agent_obj.act(obs))
        fresh = mod.Agent(state["cfg"], aspec)
        fresh.load_state_dict(agent_obj.state_dict())
        _close(np.asarray(fresh.act(obs)), expected, "after load_state_dict(state_dict())")
        buf = io.BytesIO()
        torch.save({"agent": agent_obj.state_dict()}, buf)
        buf.seek(0)
        again = mod.Agent(state["cfg"], aspec)
        again.load_state_dict(torch.load(buf, weights_only=False)["agent"])
        _close(np.asarray(again.act(obs)), expected, "after torch.save / torch.load")
        return "state_dict and torch.save round trips act the same"

    if acts_ok:
        attempt("state round trip", round_trip)

    def on_device() -> str:
        nets = torch_modules(agent_obj)
        _require(nets, "no torch module found on the agent (or on an object it holds)")
        want = torch.device(device).type
        for net in nets:
            for name, p in net.named_parameters():
                _require(
                    p.device.type == want,
                    f"{type(net).__name__}.{name} is on {p.device}, the run's device is {device}",
                )
        return f"{len(nets)} modules on {device}"

    attempt("networks on the device", on_device)

    if hasattr(agent_obj, "reward"):

        def reward() -> str:
            r = np.asarray(agent_obj.reward(obs[:5], acts[:5]))
            _require(r.shape == (5,), f"reward of 5 rows: shape {r.shape}, expected (5,)")
            _require(bool(np.all(np.isfinite(r))), "reward returned non-finite values")
            return "one finite value per row"

        attempt("reward", reward)
    return results


class _Failed(Exception):
    """A check's finding (the message says what is wrong)."""


def _require(cond: Any, message: str) -> None:
    if not cond:
        raise _Failed(message)


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-6):
        diff = np.max(np.abs(got - want)) if got.shape == want.shape else "shape"
        raise _Failed(f"a fresh agent acts differently {what} (max difference {diff})")


def failures(results: list[CheckResult]) -> list[CheckResult]:
    """The failed checks of :func:`check_agent`'s results."""
    return [r for r in results if not r.ok]
