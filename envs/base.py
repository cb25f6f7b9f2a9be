"""Task specs and the task registry.

A task is an environment (``mujoco/hopper``, ``metaworld/button-press-topdown-v3``,
``dmc/walker-walk``). Each domain file in this package registers its tasks by calling
:func:`register` at import; :func:`get_task` and :func:`list_tasks` import the domain
files lazily so that ``import pbrl`` stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pbrl.errors import UnknownIdError

DOMAINS: dict[str, str] = {
    "mujoco": "pbrl.envs.mujoco",
    "metaworld": "pbrl.envs.metaworld",
    "dmc": "pbrl.envs.dmc",
    "minari": "pbrl.envs.minari_tasks",
}


@dataclass(frozen=True)
class TaskSpec:
    """Everything the benchmark needs to know about one task.

    - ``make(seed, render_mode=None, **kw)`` builds a seeded gymnasium env whose
      observations are flat float vectors (DMC's Dict is flattened).
    - ``score(returns, successes)`` turns per-episode returns (and success flags, where the
      domain has them) into the domain's normalized score (D4RL: 100 * (R - min) /
      (max - min); MetaWorld: success rate in percent; DMC: return / 10).
    - ``render(qpos, qvel, episode_info, width, height, camera)`` turns stored physics
      states (T, nq), (T, nv) into RGB frames (T, H, W, 3) uint8.
    """

    id: str
    domain: str
    horizon: int
    make: Callable[..., Any]
    score: Callable[[np.ndarray, np.ndarray | None], float]
    render: Callable[..., np.ndarray] | None = None
    datasets: tuple[str, ...] = ()
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def spaces(self) -> tuple[Any, Any]:
        """(observation_space, action_space), from a freshly made env."""
        env = self.make(seed=0)
        try:
            return env.observation_space, env.action_space
        finally:
            env.close()


_REGISTRY: dict[str, TaskSpec] = {}
_LOADED: set[str] = set()


def register(spec: TaskSpec) -> TaskSpec:
    _REGISTRY[spec.id] = spec
    return spec


def _load_domain(domain: str) -> None:
    if domain in _LOADED:
        return
    importlib.import_module(DOMAINS[domain])
    _LOADED.add(domain)


def list_tasks(domain: str | None = None) -> list[TaskSpec]:
    if domain is not None and domain not in DOMAINS:
        raise UnknownIdError(f"unknown domain '{domain}' (known: {', '.join(DOMAINS)})")
    for d in [domain] if domain else list(DOMAINS):
        _load_domain(d)
    return sorted(
        (t for t in _REGISTRY.values() if domain is None or t.domain == domain), key=lambda t: t.id
    )


def get_task(task_id: str) -> TaskSpec:
    domain = task_id.split("/", 1)[0]
    if domain in DOMAINS:
        _load_domain(domain)
    if task_id not in _REGISTRY:
        raise UnknownIdError(
            f"unknown task id '{task_id}' (see `pbrl tasks list`; ids look like "
            "'mujoco/hopper', 'metaworld/button-press-topdown-v3', 'dmc/walker-walk')"
        )
    return _REGISTRY[task_id]
