"""The learner plug-in API: the contract a learner module fulfils, and how one is loaded.

A learner is one Python module (``agents/<name>.py`` in the tree, installed as
``pbrl.agents.<name>``; or, for an out-of-tree plug-in, any importable dotted path, or a
bare module name importable from the working folder when no shipped learner has that
name) that defines:

- ``Config``: a dataclass with a docstring under every field (the docstrings become the
  help of the CLI's ``--agent.FIELD`` options);
- ``Agent(cfg: Config, spec: AgentSpec)`` with

  - ``fit(ctx: FitContext) -> Iterator[dict[str, float]]``: a generator that owns its
    training loop and yields metric dicts. Every yielded dict has ``"step"``: the number
    of updates done so far over all phases (ending at ``ctx.steps``). It yields at least
    whenever ``step % ctx.log_interval == 0`` and after its last update; the runner
    evaluates, logs and checkpoints between yields.
  - ``act(obs: np.ndarray) -> np.ndarray``: deterministic action(s) for a (obs_dim,) or
    (B, obs_dim) observation, inside the action space;
  - ``state_dict()`` / ``load_state_dict(state)``;
  - optional ``reward(obs, act) -> np.ndarray`` (learned reward, for relabelling and for
    the online track);
  - optional ``train_reward(prefs, generator, *, epochs=None, max_updates=None)`` and
    ``predict_segments(obs (N, L, D), act (N, L, A)) -> (M, N)``: a learner whose reward
    model can be trained again as labels arrive serves the online track as its reward
    model (``mr``, ``regret``, ``hprior``; see ``agents/pebble.py``);
  - optional attributes ``requires_true_reward`` (default False: the runner strips the
    ground-truth reward from the dataset before ``fit`` sees it) and
    ``requires_preferences`` (default True).

- optional ``ONLINE = True``: the learner collects its own experience (the online track):
  ``fit`` gets no dataset and no labels, but the task, a teacher and a query budget
  (:class:`FitContext`), and its steps are environment steps;
- optional ``PRESETS: dict[str, dict[str, Any]]``: named config overrides (``paper`` is
  the official semantics; ``quick`` the CPU scale).
- optional ``fit_stacked(agents: list[Agent], ctxs: list[FitContext]) -> Iterator[list[dict]]``:
  K agents of one config (each built from its own seed) trained as one, their parameters
  stacked (:mod:`pbrl.learn.stack`); it yields one metric dict per agent at the steps
  ``fit`` would, and leaves each agent holding its own trained parameters (written back
  before every yield, so the runner evaluates and saves each as a single run).
  ``pbrl bench --stack-seeds K`` uses it; ``STACK_CHECK_OVERRIDES`` (a config dict, e.g.
  no dropout) is what the conformance check compares stacked seeds with single runs under.

The module's key in the registry is its module name (``cpl``), or the path given.
:mod:`pbrl.learn.check` checks a module against this contract (``pbrl agents check``); the
pieces learners share are in :mod:`pbrl.learn.kit`, :mod:`pbrl.learn.nn`,
:mod:`pbrl.learn.data` and :mod:`pbrl.learn.iql`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pbrl.errors import PbrlError, UnknownIdError
from pbrl.utils import parse_field


@dataclass(frozen=True)
class AgentSpec:
    """What a learner is built for: dimensions, action bounds, device."""

    obs_dim: int
    act_dim: int
    act_low: np.ndarray  # (act_dim,)
    act_high: np.ndarray  # (act_dim,)
    device: str = "cpu"
    task_id: str | None = None
    """The task the agent acts in (online learners build their environment from it)."""


@dataclass
class FitContext:
    """What ``Agent.fit`` receives.

    ``dataset.rewards`` is None unless the agent declares ``requires_true_reward``.
    ``prefs`` holds every *answered* labelled pair (skips removed) as one
    :class:`~pbrl.types.PreferenceBatch` on ``device``; index it to sample minibatches.
    ``reward_scale`` is the one place where the benchmark's reward scale is set
    (docs/reward-scale.md): learners that consume true rewards multiply by it.
    """

    dataset: Any  # pbrl.datasets.base.OfflineDataset
    prefs: Any | None  # pbrl.types.PreferenceBatch | None
    steps: int
    seed: int
    device: str
    rng: np.random.Generator
    generator: Any  # torch.Generator on ``device``
    log_interval: int = 1000
    reward_scale: float = 1.0
    pref_data: Any | None = None  # pbrl.prefs.PreferenceData (refs, feedback) when present
    # The online track (learners whose module sets ``ONLINE = True``): no dataset and no
    # labels up front; the learner acts in ``task_id``'s environment for ``steps`` env steps
    # and asks ``teacher`` (an unprepared :class:`~pbrl.teachers.Oracle`) at most ``budget``
    # queries of ``segment``-step pairs, chosen by ``selector``.
    task_id: str | None = None
    teacher: Any | None = None
    budget: int = 0
    segment: int = 50
    selector: str = "uniform"
    # A teacher that answers later (people in the labeling UI): a :class:`QueryQueue`,
    # used instead of ``teacher``; the learner posts pairs and keeps acting while it waits.
    queue: Any | None = None


@runtime_checkable
class QueryQueue(Protocol):
    """Where an online learner posts pairs for a teacher who answers later, and reads the
    answers that have arrived (``pbrl.ui.queue.UiQueue``: people in the labeling UI).

    ``post(episodes, refs_a, refs_b)`` takes the finished episodes the pairs come from
    (``pbrl.datasets.base.EpisodeData``, with physics state when ``needs_state``) and the
    pairs as ``(n, 3)`` (episode, start, length) refs into them; it returns one id per pair.
    ``answers(ids)`` returns ``{id: prefer_b}`` for the ids answered so far (0, 0.5 or 1;
    None for a pair the teacher skipped); ids not answered yet are absent."""

    needs_state: bool

    def start(self) -> None:
        """Called once by the learner after its own checks, before it acts (connect, check)."""
        ...

    def post(self, episodes: list[Any], refs_a: np.ndarray, refs_b: np.ndarray) -> list[int]: ...

    def answers(self, ids: list[int]) -> dict[int, float | None]: ...

    def spec(self) -> str: ...


@runtime_checkable
class Agent(Protocol):
    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]: ...

    def act(self, obs: np.ndarray) -> np.ndarray: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


_BUILTIN_PACKAGE = "pbrl.agents"


def list_agents() -> list[str]:
    """Names of the learners shipped in ``pbrl/agents`` (module names not starting with _)."""
    pkg = importlib.import_module(_BUILTIN_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def load_agent_module(name: str) -> types.ModuleType:
    """A learner module by registry key (``cpl``), dotted path (``mypkg.algos.foo``) or bare
    module name (``my_algo``, for ``my_algo.py`` importable from the working folder).

    A shipped learner wins over a module of the same bare name.
    """
    if "." not in name:
        if name in list_agents():
            modname = f"{_BUILTIN_PACKAGE}.{name}"
        elif name.isidentifier() and importlib.util.find_spec(name) is not None:
            modname = name
        else:
            raise UnknownIdError(f"unknown agent '{name}' (known: {', '.join(list_agents())})")
    else:
        if not all(part.isidentifier() for part in name.split(".")):
            raise UnknownIdError(
                f"agent '{name}': not a registered agent nor a dotted module path "
                f"(like mypkg.my_agent; known agents: {', '.join(list_agents())})"
            )
        modname = name
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        raise UnknownIdError(f"agent '{name}': cannot import module '{modname}' ({e})") from e
    except SyntaxError as e:
        raise PbrlError(
            f"agent '{name}': {e.filename}, line {e.lineno}: syntax error ({e.msg})"
        ) from e
    except Exception as e:  # noqa: BLE001 - a plug-in's import-time failure, shown in one line
        raise PbrlError(
            f"agent '{name}': importing module '{modname}' failed "
            f"({type(e).__name__}: {' '.join(str(e).split())}; "
            "PBRL_DEBUG=1 shows the traceback)"
        ) from e
    for attr in ("Config", "Agent"):
        if not hasattr(mod, attr):
            raise PbrlError(f"agent module '{modname}' defines no '{attr}'")
    if not dataclasses.is_dataclass(mod.Config):
        raise PbrlError(f"agent module '{modname}': Config must be a dataclass")
    return mod


def summary_line(mod: types.ModuleType) -> str:
    """First line of a learner module's docstring."""
    doc = (mod.__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


def field_docs(config_cls: type) -> dict[str, str]:
    """The docstring under each dataclass field (attribute docstrings), from the source."""
    import ast
    import inspect
    import textwrap

    try:
        src = textwrap.dedent(inspect.getsource(config_cls))
    except (OSError, TypeError):
        return {}
    tree = ast.parse(src)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef))
    docs: dict[str, str] = {}
    body = cls.body
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if i + 1 < len(body):
                nxt = body[i + 1]
                if (
                    isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)
                ):
                    docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def config_field_docs(config_cls: type) -> dict[str, str]:
    """Field docstrings of a Config dataclass, inherited fields included (base classes first)."""
    docs: dict[str, str] = {}
    for klass in reversed(config_cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(field_docs(klass))
    return docs


def make_config(mod: types.ModuleType, preset: str | None, overrides: dict[str, str]) -> Any:
    """Build ``mod.Config`` from an optional preset plus ``--agent.FIELD VALUE`` strings."""
    cfg_cls = mod.Config
    values: dict[str, Any] = {}
    presets: dict[str, dict[str, Any]] = getattr(mod, "PRESETS", {})
    if preset:
        if preset not in presets:
            raise UnknownIdError(
                f"agent {mod.__name__}: unknown preset '{preset}' (known: {', '.join(presets) or 'none'})"
            )
        values.update(presets[preset])
    fields = {f.name: f for f in dataclasses.fields(cfg_cls)}
    for key, raw in overrides.items():
        if key not in fields:
            raise PbrlError(
                f"--agent.{key}: {mod.__name__}.Config has no field '{key}' "
                f"(fields: {', '.join(fields)})"
            )
        values[key] = parse_field_value(cfg_cls, fields[key], raw)
    return cfg_cls(**values)


def parse_field_value(cfg_cls: type, f: dataclasses.Field[Any], raw: Any) -> Any:
    """Convert a CLI/suite string to the field's type (:func:`pbrl.utils.parse_field`)."""
    return parse_field(cfg_cls, f.name, raw, f"--agent.{f.name}")
