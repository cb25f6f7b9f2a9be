"""Generated MetaWorld v3 datasets: scripted behaviour sources mixed into dataset kinds.

Issue 2 asks for locally generated MetaWorld datasets; issue 10 asks that their poor
behaviour be *purposeful and wrong* rather than zero-mean noise around the expert (zero-mean
noise averages out, so behaviour cloning recovers the expert and preferences add nothing).

Behaviour sources (each episode records ``info["source"]`` and its parameters):

- ``expert``: the task's scripted expert plus small Gaussian action noise (sigma 0.1).
- ``other-task``: the scripted expert of ANOTHER task acting in this task's env (it moves
  with intent to the wrong places). The pool is screened per build: policies that solve
  this task in a short probe are left out, so the source is wrong behaviour, not an
  alternative expert.
- ``stall``: the expert for a random prefix of ``k`` steps, then either ``hold`` (zero
  motion, gripper held) or ``wander`` (move with intent to a random wrong point).
- ``decoy``: the task's own expert aiming at the wrong place: it is shown the object
  displaced by a fixed offset (the same direction in every decoy episode, plus a small
  per-episode jitter), so it reaches, grasps and pushes with intent beside the real object.
  Because the error is systematic, BC on data that mixes it with the expert is pulled
  towards the decoy instead of averaging back to the expert.
- ``ou-noise``: the expert plus temporally correlated Ornstein-Uhlenbeck noise.
- ``random``: uniform actions in [-1, 1].
- ``gaussian``: the expert plus zero-mean Gaussian noise of a given sigma (the
  ``noisy-expert`` kind: an imitation dataset that cannot rank preference learners).

Kinds are mixtures of components with fixed shares (:data:`MIXTURES`); episode counts are
allotted by largest remainder and recorded in the card. Every episode's seed comes from the
build seed through ``numpy.random.SeedSequence``; each episode is a pure function of its
job (task, source, parameters, seed, horizon), so a dataset is identical for a given seed
whatever the number of workers. Whole episodes run inside worker processes
(ENVIRONMENT.md section 3: 1.8x on 2 workers, against ~1.0x for vector envs).

Decisions and measurements: docs/metaworld-data.md.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.datasets.base import EpisodeData
from pbrl.datasets.critic import CRITIC_FILE, CRITIC_FORMAT, save_expert_critic
from pbrl.datasets.minari_io import check_new_dataset, minari_root, write_minari_dataset
from pbrl.datasets.progress import RateLog
from pbrl.datasets.registry import generated_dataset_id
from pbrl.datasets.sb3_gen import EvalRecord, SacConfig, SacRun, critic_payload
from pbrl.envs.base import get_task
from pbrl.envs.metaworld import expert_action, expert_policy, gym_env_id, make_metaworld_env
from pbrl.errors import PbrlError, UnknownIdError
from pbrl.utils import check_seed

log = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = (
    "expert",
    "other-task",
    "stall",
    "decoy",
    "ou-noise",
    "random",
    "gaussian",
)

REF_EPISODES = 20  # random and expert episodes behind ref_min_score / ref_max_score
SCREEN_EPISODES = 3  # probes per candidate policy; a policy that succeeds in any is dropped
SCREEN_SIGMA = 0.1  # probes act as the other-task source does: full horizon, the same noise
# The decoy source's displacement of the object (metres, world frame): 20 cm towards the robot
# (-y), so a decoy stops short on the expert's own line of approach and works the air (or the
# table) there. Measured against sideways offsets in docs/metaworld-data.md.
DECOY_OFFSET: tuple[float, float, float] = (0.0, -0.2, 0.0)


@dataclass(frozen=True)
class Component:
    """One mixture component of a kind: a source, its share of episodes, its parameters."""

    source: str
    share: float
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "share": self.share, "params": dict(self.params)}


# Kind -> mixture. Shares sum to 1. The purposeful-failure shares of medium-replay /
# medium-expert were chosen so that BC on all data fails while BC on the best 10% and
# true-reward IQL succeed (issue 10's criteria); the measurement is in docs/metaworld-data.md.
MIXTURES: dict[str, tuple[Component, ...]] = {
    "expert": (Component("expert", 1.0, {"sigma": 0.1}),),
    "random": (Component("random", 1.0),),
    # About half succeed: the expert stops (holds or wanders off) after a prefix of
    # U[0, 2] times its own time to success, so roughly half the prefixes reach success.
    "medium": (
        Component("stall", 1.0, {"max_fraction": 2.0, "modes": ("hold", "wander"), "sigma": 0.1}),
    ),
    "medium-replay": (
        Component("expert", 0.15, {"sigma": 0.1}),
        Component("stall", 0.30, {"modes": ("hold",), "sigma": 0.1}),
        Component("decoy", 0.25, {"offset": DECOY_OFFSET, "jitter": 0.03, "sigma": 0.1}),
        Component("other-task", 0.15, {"sigma": 0.1}),
        Component("ou-noise", 0.05, {"sigma": 0.6, "theta": 0.05}),
        Component("random", 0.10),
    ),
    "medium-expert": (
        Component("expert", 0.30, {"sigma": 0.1}),
        Component("stall", 0.30, {"modes": ("hold",), "sigma": 0.1}),
        Component("decoy", 0.25, {"offset": DECOY_OFFSET, "jitter": 0.03, "sigma": 0.1}),
        Component("other-task", 0.15, {"sigma": 0.1}),
    ),
    # Issue 10's zero-mean recipe, kept as its own kind: imitation recovers the expert.
    "noisy-expert": tuple(Component("gaussian", 0.25, {"sigma": s}) for s in (0.1, 0.3, 0.5, 1.0)),
}

# CPL's protocol (docs/cpl-protocol.md): rollouts of one suboptimal SAC policy, not a mixture.
PROTOCOL_KINDS: tuple[str, ...] = ("rollouts",)
KINDS: tuple[str, ...] = (*MIXTURES, *PROTOCOL_KINDS)

DEFAULT_EPISODES: dict[str, int] = {
    "expert": 100,
    "random": 100,
    "medium": 100,
    "medium-replay": 100,
    "medium-expert": 100,
    "noisy-expert": 100,
    "rollouts": 2500,  # CPL's --num-ep 2500 (CPL_EPISODES)
}

# Per-task exceptions to DEFAULT_EPISODES, each from a diagnosis (docs/metaworld-data.md,
# "Diagnosis"): door-open's best 10 of 100 episodes are too few to clone its grasp (BC on them
# 76.7% < 80% of the expert); its best 20 of 200 meet the criterion (90%).
TASK_EPISODES: dict[tuple[str, str], int] = {("door-open-v3", "medium-replay"): 200}


def default_episodes(env_name: str, kind: str) -> int:
    """Episodes a ``kind`` of task ``env_name`` gets when ``--episodes`` is not given."""
    return TASK_EPISODES.get((env_name, kind), DEFAULT_EPISODES[kind])


# Options of the brief diagnosis `pbrl datasets build` runs on a new dataset (pbrl/run/diagnose.py
# brief_diagnosis): it keeps a build short; the recorded criteria tables come from
# `pbrl datasets diagnose` with more steps and 3 seeds.
BUILD_DIAGNOSE: dict[str, Any] = {"steps": 1000, "seeds": 2, "eval_episodes": 5}


# ---- planning -----------------------------------------------------------------------------
@dataclass(frozen=True)
class EpisodeJob:
    """Everything that determines one episode (it is a pure function of these fields)."""

    env_name: str
    source: str
    params: dict[str, Any]
    seed: int
    horizon: int
    component: int = 0  # index of the mixture component in its kind
    other_pool: tuple[str, ...] = ()


def allot(shares: Sequence[float], total: int) -> list[int]:
    """Split ``total`` episodes by ``shares`` with the largest-remainder method.

    Ties in the remainder go to the earlier component, so the split is deterministic.
    """
    if total < 0:
        raise PbrlError(f"episodes: must be >= 0, got {total}")
    s = np.asarray(shares, dtype=np.float64)
    if s.size == 0 or np.any(s < 0) or not math.isclose(float(s.sum()), 1.0, abs_tol=1e-9):
        raise PbrlError(f"mixture shares must be >= 0 and sum to 1, got {list(shares)}")
    exact = s * total
    counts = np.floor(exact).astype(int)
    rest = total - int(counts.sum())
    order = sorted(range(len(s)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    return [int(c) for c in counts]


def episode_seeds(seed: int, n: int, stream: int = 0) -> list[int]:
    """``n`` 32-bit episode seeds derived from the build seed (stream 0: data, 1: references)."""
    ss = np.random.SeedSequence([int(seed), int(stream)])
    return [int(c.generate_state(1, dtype=np.uint32)[0]) for c in ss.spawn(n)]


def plan(
    env_name: str,
    kind: str,
    episodes: int,
    seed: int,
    horizon: int,
    other_pool: Sequence[str] = (),
) -> list[EpisodeJob]:
    """The episode jobs of one dataset, in component order."""
    if kind not in MIXTURES:
        raise UnknownIdError(f"--kind {kind}: unknown kind (known: {', '.join(MIXTURES)})")
    comps = MIXTURES[kind]
    counts = allot([c.share for c in comps], episodes)
    seeds = episode_seeds(seed, episodes)
    jobs: list[EpisodeJob] = []
    for ci, (comp, n) in enumerate(zip(comps, counts, strict=True)):
        for _ in range(n):
            jobs.append(
                EpisodeJob(
                    env_name=env_name,
                    source=comp.source,
                    params=dict(comp.params),
                    seed=seeds[len(jobs)],
                    horizon=horizon,
                    component=ci,
                    other_pool=tuple(other_pool) if comp.source == "other-task" else (),
                )
            )
    return jobs


# ---- the worker side ----------------------------------------------------------------------
_ENV_CACHE: dict[tuple[str, int], Any] = {}
_POLICY_CACHE: dict[str, Any] = {}


def _unwrapped_env(env_name: str, horizon: int) -> Any:
    """This process's env for ``env_name`` (made once through the task registry)."""
    key = (env_name, horizon)
    if key not in _ENV_CACHE:
        # make_metaworld_env sets the task, the observation space and max_path_length.
        env = make_metaworld_env(env_name, seed=0, horizon=horizon)
        _ENV_CACHE[key] = (env, env.unwrapped)
    return _ENV_CACHE[key][1]


def _policy(env_name: str) -> Any:
    if env_name not in _POLICY_CACHE:
        _POLICY_CACHE[env_name] = expert_policy(env_name)
    return _POLICY_CACHE[env_name]


# Calls of the env's task sampler within one reset after which a frozen task vector counts as
# rejected by the env's own validity loop (e.g. sweep-into redraws goals within 0.15 of its
# target: with a frozen vector that loop never ends).
_REJECTED_AFTER = 100


def _reset_to(u: Any, rand_vec: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reset the unwrapped env to the task given by ``rand_vec`` (deterministic).

    Returns ``(obs, task vector used)``. The episode's task is drawn from the episode seed
    instead of MT1's 50 pre-drawn goals so that an episode does not depend on which worker ran
    it or what it ran before. Some tasks reject vectors in ``reset_model`` and redraw until one
    is valid; a vector the env keeps asking to replace is replaced by fresh uniform draws
    from a generator seeded by ``seed``, so the reset ends and stays a function of its inputs
    (a valid vector is used unchanged).
    """
    frozen = np.asarray(rand_vec, dtype=np.float64)
    state = {"calls": 0, "vec": frozen, "rng": None}
    space = u._random_reset_space

    def sampler() -> np.ndarray:
        state["calls"] += 1
        if state["calls"] > _REJECTED_AFTER:
            if state["rng"] is None:
                state["rng"] = np.random.default_rng([seed, 1])
            state["vec"] = state["rng"].uniform(space.low, space.high)
        return state["vec"]

    u._last_rand_vec = frozen
    u._freeze_rand_vec = True
    u._get_state_rand_vec = sampler
    try:
        obs, _ = u.reset()
    finally:
        del u._get_state_rand_vec
    used = np.asarray(state["vec"], dtype=np.float64)
    u._last_rand_vec = used
    return np.asarray(obs, dtype=np.float64), used


def _time_to_success(u: Any, policy: Any, horizon: int) -> int:
    """Steps the noise-free expert needs to first succeed from the env's current reset state.

    It steps the env: the caller resets to the same task afterwards (a reset from a task
    vector is canonical: MuJoCo data is reset, then the task placed). Returns ``horizon``
    when the expert does not succeed.
    """
    obs = u._get_obs()
    for t in range(horizon):
        obs, _, _, _, info = u.step(expert_action(policy, obs))
        if info["success"]:
            return t + 1
    return horizon


class _Behaviour:
    """The action rule of one source for one episode (stateful: OU noise, stall switch)."""

    def __init__(self, job: EpisodeJob, u: Any, rng: np.random.Generator) -> None:
        self.job = job
        self.rng = rng
        self.src = job.source
        p = job.params
        self.sigma = float(p.get("sigma", 0.1))
        self.record: dict[str, Any] = {}
        self.probed = False  # the stall source runs the expert once to time its success
        self.expert = _policy(job.env_name)
        if self.src == "other-task":
            if not job.other_pool:
                raise PbrlError(f"{job.env_name}: no other-task policy left after screening")
            if "policy" in p:
                name = str(p["policy"])
            else:
                name = str(job.other_pool[int(rng.integers(len(job.other_pool)))])
            self.other = _policy(name)
            self.record["policy"] = name
        elif self.src == "stall":
            modes = tuple(p.get("modes", ("hold", "wander")))
            # The switch step is a fraction of the noise-free expert's time to success in
            # this very episode, so a stalled episode fails by construction (until the
            # fraction reaches 1): the prefix is purposeful, the episode still poor.
            t_succ = _time_to_success(u, self.expert, job.horizon)
            self.probed = True
            frac = float(rng.uniform(0.0, float(p.get("max_fraction", 0.9))))
            self.k = int(frac * t_succ)
            self.mode = str(modes[int(rng.integers(len(modes)))])
            self.target = rng.uniform(u.mocap_low, u.mocap_high)
            self.grip = float(rng.uniform(-1.0, 1.0))
            self.record.update(
                switch_step=self.k, fraction=frac, expert_success_step=t_succ, mode=self.mode
            )
            if self.mode == "wander":
                self.record["target"] = [float(x) for x in self.target]
            self.last_grip = 0.0
        elif self.src == "decoy":
            base = np.asarray(p.get("offset", DECOY_OFFSET), dtype=np.float64)
            if base.shape != (3,):
                raise PbrlError(f"decoy offset must have 3 entries, got {p.get('offset')}")
            jitter = float(p.get("jitter", 0.0))
            self.offset = base + np.concatenate([rng.uniform(-jitter, jitter, size=2), [0.0]])
            self.record["offset"] = [float(x) for x in self.offset]
        elif self.src == "ou-noise":
            self.theta = float(p.get("theta", 0.05))
            self.x = np.zeros(4)
            self.record.update(theta=self.theta)
        self.record["sigma"] = self.sigma if self.src not in ("random",) else None

    def _expert(self, obs: np.ndarray) -> np.ndarray:
        return expert_action(self.expert, obs).astype(np.float64)

    def act(self, t: int, obs: np.ndarray) -> np.ndarray:
        src = self.src
        if src == "random":
            return self.rng.uniform(-1.0, 1.0, size=4)
        if src in ("expert", "gaussian"):
            return self._expert(obs) + self.rng.normal(0.0, self.sigma, size=4)
        if src == "other-task":
            return expert_action(self.other, obs) + self.rng.normal(0.0, self.sigma, size=4)
        if src == "decoy":
            # Every v3 expert reads the object's position at obs[4:7] (the previous frame's
            # copy at obs[22:25] is parsed by some but steers none).
            shown = np.array(obs, dtype=np.float64)
            shown[4:7] += self.offset
            shown[22:25] += self.offset
            return self._expert(shown) + self.rng.normal(0.0, self.sigma, size=4)
        if src == "ou-noise":
            # Discrete OU with stationary std sigma and correlation time 1/theta steps.
            th = self.theta
            self.x = (1 - th) * self.x + self.sigma * math.sqrt(th * (2 - th)) * self.rng.normal(
                size=4
            )
            return self._expert(obs) + self.x
        if src == "stall":
            if t < self.k:
                a = self._expert(obs) + self.rng.normal(0.0, self.sigma, size=4)
                self.last_grip = float(np.clip(a[3], -1.0, 1.0))
                return a
            if self.mode == "hold":
                return np.array([0.0, 0.0, 0.0, self.last_grip])
            delta = np.clip(10.0 * (self.target - obs[:3]), -1.0, 1.0)
            return np.concatenate([delta, [self.grip]])
        raise PbrlError(f"unknown source '{src}' (known: {', '.join(SOURCES)})")


def run_episode(job: EpisodeJob) -> EpisodeData:
    """Run one whole episode in this process and return it (Minari T+1 convention)."""
    u = _unwrapped_env(job.env_name, job.horizon)
    rng = np.random.default_rng(job.seed)
    rand_vec = rng.uniform(u._random_reset_space.low, u._random_reset_space.high)
    obs, rand_vec = _reset_to(u, rand_vec, job.seed)
    beh = _Behaviour(job, u, rng)
    if beh.probed:
        obs, rand_vec = _reset_to(u, rand_vec, job.seed)

    def info(successes: np.ndarray, rewards: np.ndarray) -> dict[str, Any]:
        return {
            "source": job.source,
            "component": job.component,
            "seed": job.seed,
            "rand_vec": [float(x) for x in rand_vec],
            "success": bool(successes.any()),
            "return": float(rewards.sum()),
            "params": {k: v for k, v in beh.record.items() if v is not None},
        }

    # Screening probes (stop_on_success) only need to know whether the policy succeeds.
    return record_episode(
        u,
        obs,
        job.horizon,
        beh.act,
        u.step,
        info,
        stop_on_success=bool(job.params.get("stop_on_success", False)),
    )


def record_episode(
    u: Any,
    obs: np.ndarray,
    horizon: int,
    choose: Any,
    step: Any,
    info: Any,
    *,
    stop_on_success: bool = False,
) -> EpisodeData:
    """Step a MetaWorld env from ``obs`` for ``horizon`` steps (Minari's T+1 convention).

    ``choose(t, obs)`` gives the action (clipped to [-1, 1] here), ``step(a)`` is the env's
    gymnasium step, ``u`` the unwrapped env whose qpos/qvel are stored, and
    ``info(successes, rewards)`` the episode's info. The one recording loop of the scripted
    kinds and of ``rollouts``.
    """
    T = int(horizon)
    nq, nv = u.data.qpos.shape[0], u.data.qvel.shape[0]
    observations = np.empty((T + 1, obs.shape[0]), dtype=np.float64)
    actions = np.empty((T, 4), dtype=np.float32)
    rewards = np.empty(T, dtype=np.float64)
    qpos = np.empty((T + 1, nq), dtype=np.float64)
    qvel = np.empty((T + 1, nv), dtype=np.float64)
    successes = np.zeros(T + 1, dtype=bool)
    observations[0] = obs
    qpos[0], qvel[0] = u.data.qpos, u.data.qvel
    for t in range(T):
        a = np.clip(choose(t, obs), -1.0, 1.0).astype(np.float32)
        obs, r, _, _, step_info = step(a)
        actions[t] = a
        rewards[t] = float(r)
        observations[t + 1] = obs
        qpos[t + 1], qvel[t + 1] = u.data.qpos, u.data.qvel
        successes[t + 1] = bool(step_info["success"])
        if stop_on_success and successes[t + 1]:
            T = t + 1
            break
    observations, actions, rewards = observations[: T + 1], actions[:T], rewards[:T]
    qpos, qvel, successes = qpos[: T + 1], qvel[: T + 1], successes[: T + 1]
    truncations = np.zeros(T, dtype=bool)
    truncations[-1] = True
    return EpisodeData(
        observations=observations,
        actions=actions,
        rewards=rewards,
        terminations=np.zeros(T, dtype=bool),
        truncations=truncations,
        qpos=qpos,
        qvel=qvel,
        successes=successes,
        info=info(successes, rewards),
    )


def _worker_init() -> None:
    # Each worker runs one episode at a time on one core; keep BLAS/torch single-threaded.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def run_jobs(
    jobs: Sequence[EpisodeJob], workers: int | None = None, what: str | None = None
) -> list[EpisodeData]:
    """Run the jobs, in order, on ``workers`` processes (1: in this process).

    With ``what``, progress (episodes done, rate, ETA) is logged as episodes finish, at
    most every few seconds (:class:`pbrl.datasets.progress.RateLog`).
    """

    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise PbrlError(f"--workers: must be >= 1, got {workers}")
    progress = RateLog(log, what, len(jobs)) if what is not None else None
    out: list[EpisodeData] = []
    if progress is not None:
        progress.begin()
    if workers == 1 or len(jobs) <= 1:
        for j in jobs:
            out.append(run_episode(j))
            if progress is not None:
                progress.update(len(out))
        return out
    ctx = mp.get_context("forkserver")
    # Larger chunks cut IPC; a few chunks per worker keep the load balanced.
    chunk = max(1, len(jobs) // (workers * 4))
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        for ep in pool.imap(run_episode, jobs, chunksize=chunk):
            out.append(ep)
            if progress is not None:
                progress.update(len(out))
    return out


# ---- screening, references, the card ------------------------------------------------------
def other_task_pool(
    env_name: str, seed: int, workers: int | None = None, horizon: int = 500
) -> list[str]:
    """Other tasks' experts that fail this task in every probe (wrong, not alternative).

    Probes run the whole horizon with the source's own noise, stopping at the first success.
    """
    from metaworld.policies import ENV_POLICY_MAP

    names = sorted(n for n in ENV_POLICY_MAP if n != env_name)
    seeds = episode_seeds(seed, SCREEN_EPISODES, stream=2)
    jobs = [
        EpisodeJob(
            env_name,
            "other-task",
            {"policy": n, "sigma": SCREEN_SIGMA, "stop_on_success": True},
            s,
            horizon,
            0,
            (n,),
        )
        for n in names
        for s in seeds
    ]
    eps = run_jobs(jobs, workers, what=f"{env_name}: screening other tasks' experts")
    solved = {j.params["policy"] for j, e in zip(jobs, eps, strict=True) if e.info["success"]}
    return [n for n in names if n not in solved]


def reference_scores(
    env_name: str, seed: int, horizon: int, workers: int | None = None, n: int = REF_EPISODES
) -> dict[str, Any]:
    """Mean returns of uniform random actions and of the noise-free expert (n episodes each)."""
    seeds = episode_seeds(seed, 2 * n, stream=1)
    jobs = [EpisodeJob(env_name, "random", {}, s, horizon) for s in seeds[:n]]
    jobs += [EpisodeJob(env_name, "expert", {"sigma": 0.0}, s, horizon) for s in seeds[n:]]
    eps = run_jobs(jobs, workers, what=f"{env_name}: reference episodes")
    rnd, exp = eps[:n], eps[n:]
    return {
        "episodes": n,
        "ref_min_score": float(np.mean([e.info["return"] for e in rnd])),
        "ref_max_score": float(np.mean([e.info["return"] for e in exp])),
        "random_success_rate": float(np.mean([e.info["success"] for e in rnd])),
        "expert_success_rate": float(np.mean([e.info["success"] for e in exp])),
        "expert": "scripted expert, no noise",
    }


def source_stats(episodes: Sequence[EpisodeData], kind: str) -> list[dict[str, Any]]:
    """Per-component episode count, success rate and mean return."""
    comps = MIXTURES[kind]
    out = []
    for ci, comp in enumerate(comps):
        eps = [e for e in episodes if e.info["component"] == ci]
        out.append(
            {
                **comp.as_dict(),
                "episodes": len(eps),
                "success_rate": float(np.mean([e.info["success"] for e in eps])) if eps else None,
                "mean_return": float(np.mean([e.info["return"] for e in eps])) if eps else None,
            }
        )
    return out


# ---- CPL's protocol: a SAC policy on the dense reward ----------------------------------------
CPL_HORIZON = 250  # CPL's MetaWorld episodes: min(250, max_path_length)
CPL_SAC_STEPS = 1_000_000  # CPL's oracle SAC (configs/oracle/sac.yaml)
CPL_EVAL_EVERY = 10_000
CPL_EVAL_EPISODES = 20
SAC_ENV_LABEL = "mw-seeded-goals"


def cpl_sac_config(horizon: int = CPL_HORIZON) -> SacConfig:
    """CPL's oracle SAC settings in SB3 terms (``../shared/algorithms/cpl_ipl.md`` A3).

    256x3 actor and twin critics, batch 512, lr 3e-4, tau 0.005, target update every 2 steps,
    initial temperature 0.1 (auto-tuned), 25,000 random steps, reward divided by 10. SB3 clamps
    the log-std to [-20, 2] where CPL uses [-5, 2].
    """
    return SacConfig(
        net_arch=(256, 256, 256),
        learning_rate=3e-4,
        batch_size=512,
        buffer_size=1_000_000,
        gamma=0.99,
        tau=0.005,
        learning_starts=25_000,
        horizon=int(horizon),
        reward_scale=0.1,
        ent_coef_init=0.1,
        target_update_interval=2,
    )


def goal_of_seed(u: Any, seed: int) -> np.ndarray:
    """The task vector (object/goal positions) an episode of reset seed ``seed`` starts from."""
    rng = np.random.default_rng(seed)
    return rng.uniform(u._random_reset_space.low, u._random_reset_space.high)


def _make_seeded_goal_env_class() -> type:
    import gymnasium as gym

    class SeededGoalEnv(gym.Env):
        """One MetaWorld task whose ``reset(seed=s)`` places a fresh uniform goal drawn from
        ``s`` (CPL: a random goal on every reset), truncating after ``horizon`` steps.

        MetaWorld itself ignores reset seeds and cycles MT1's 50 pre-drawn goals; here every
        episode's goal is a function of its seed alone, so SAC's training, its evaluation and
        the rollouts draw from the same goal distribution and every episode can be replayed.
        ``info["rand_vec"]`` of a reset is the task vector used.
        """

        metadata: dict[str, Any] = {"render_modes": []}

        def __init__(self, env_name: str, horizon: int) -> None:
            self._env = make_metaworld_env(env_name, seed=0, horizon=horizon)
            self.u = self._env.unwrapped
            self.env_name = env_name
            self.horizon = int(horizon)
            self.observation_space = self.u.observation_space
            self.action_space = self.u.action_space
            self.t = 0
            self.rand_vec = np.zeros(0)
            self._unseeded = np.random.default_rng(0)

        @property
        def data(self) -> Any:
            return self.u.data

        def reset(
            self, *, seed: int | None = None, options: dict | None = None
        ) -> tuple[np.ndarray, dict[str, Any]]:
            if seed is None:
                seed = int(self._unseeded.integers(2**32))
            obs, self.rand_vec = _reset_to(self.u, goal_of_seed(self.u, int(seed)), int(seed))
            self.t = 0
            return obs, {"rand_vec": self.rand_vec.copy(), "seed": int(seed)}

        def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
            a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
            obs, reward, _, _, info = self.u.step(a)
            self.t += 1
            return np.asarray(obs), float(reward), False, self.t >= self.horizon, info

        def close(self) -> None:
            self._env.close()

    return SeededGoalEnv


def seeded_goal_env(env_name: str, horizon: int) -> Any:
    """A :class:`SeededGoalEnv` of ``env_name`` (see its docstring)."""
    return _make_seeded_goal_env_class()(env_name, horizon)


def sac_run(
    task_id: str,
    *,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    horizon: int = CPL_HORIZON,
    config: SacConfig | None = None,
) -> SacRun:
    """The resumable SAC run behind a task's ``rollouts`` kind (CPL's settings by default)."""
    env_name = env_name_of(task_id)
    return SacRun(
        task_id,
        seed,
        config or cpl_sac_config(horizon),
        root=root,
        device=device,
        env_factory=lambda _seed, h: seeded_goal_env(env_name, int(h or horizon)),
        env_label=SAC_ENV_LABEL,
    )


def train_sac(
    task_id: str,
    steps: int = CPL_SAC_STEPS,
    *,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    eval_every: int = CPL_EVAL_EVERY,
    eval_episodes: int = CPL_EVAL_EPISODES,
    threads: int | None = 1,
    config: SacConfig | None = None,
) -> SacRun:
    """Train (or resume) the task's SAC run up to ``steps``; returns the run.

    Checkpoints (with the replay buffer) every ``eval_every`` steps, each evaluated on
    ``eval_episodes`` episodes with its success rate; a killed run resumes from the last.
    """
    run = sac_run(task_id, seed=seed, root=root, device=device, config=config)
    run.train(steps, eval_every=eval_every, eval_episodes=eval_episodes, threads=threads)
    return run


# ---- CPL's protocol: the rollouts kind ---------------------------------------------------------
CPL_EPISODES = DEFAULT_EPISODES["rollouts"]  # CPL's scripts/create_dataset.py --num-ep 2500
ROLLOUT_NOISE = 0.3  # ... --noise 0.3: std of the Gaussian added to the mean action
# The chosen checkpoint's evaluation success is the closest to this fraction of the best
# checkpoint's (CPL's data is one suboptimal policy's; the repository does not record which
# checkpoint it rolled out): half the expert's leaves room both to fail and to succeed.
ROLLOUT_TARGET_FRACTION = 0.5
_STREAM_ROLLOUTS = 30  # episode seeds: SeedSequence([seed, 30, i])


def choose_rollout_checkpoint(
    evals: Sequence[EvalRecord], step: int | None = None, where: str = "the SAC run"
) -> tuple[EvalRecord, EvalRecord, str]:
    """(chosen, best, reason): the checkpoint a ``rollouts`` dataset is made of.

    ``best`` has the highest evaluation success rate (ties: higher return, then earlier).
    ``chosen``, among the checkpoints up to ``best``'s step that succeed at all, has the
    success rate closest to :data:`ROLLOUT_TARGET_FRACTION` of ``best``'s (ties: earlier); a
    policy that never succeeds is not the suboptimal-but-competent one CPL rolls out, so while
    a run is young this is its best checkpoint so far. ``step`` picks a checkpoint by hand
    instead. A run whose checkpoints never succeeded is refused. ``where`` (the run folder)
    starts errors.
    """
    if not evals:
        raise PbrlError(
            f"{where}: the SAC run has no evaluated checkpoint yet (train it first: "
            "docs/cpl-protocol.md)"
        )

    def rate(e: EvalRecord) -> float:
        return float(e.success_rate or 0.0)

    best = max(evals, key=lambda e: (rate(e), e.mean_return, -e.step))
    if step is not None:
        picked = [e for e in evals if e.step == step]
        if not picked:
            known = ", ".join(str(e.step) for e in evals)
            raise PbrlError(f"--checkpoint {step}: no evaluated checkpoint there (known: {known})")
        return picked[0], best, f"checkpoint step {step} given by hand"
    if rate(best) <= 0.0:
        raise PbrlError(
            f"{where}: no SAC checkpoint succeeds yet (best return {best.mean_return:.1f} at "
            f"step {best.step}); train the SAC run longer before building rollouts"
        )
    target = ROLLOUT_TARGET_FRACTION * rate(best)
    candidates = [e for e in evals if e.step <= best.step and rate(e) > 0.0]
    chosen = min(candidates, key=lambda e: (abs(rate(e) - target), e.step))
    reason = (
        f"success {rate(chosen):.0f}% is the closest to {ROLLOUT_TARGET_FRACTION:.0%} of the "
        f"best checkpoint's {rate(best):.0f}% (step {best.step}) among the checkpoints up to it "
        f"that succeed at all; the run had trained {max(e.step for e in evals)} steps"
    )
    return chosen, best, reason


def _mean_action_fn(run: SacRun, step: int) -> Any:
    """obs (D,) -> the SAC checkpoint's deterministic action tanh(mu(s)) in [-1, 1]."""
    import torch

    actor = run.policy_from_snapshot(step).actor

    def act(obs: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.as_tensor(np.asarray(obs, dtype=np.float32)[None], device=run.device)
            mean, _, _ = actor.get_action_dist_params(t)
            return np.tanh(mean.cpu().numpy()[0].astype(np.float64))

    return act


def rollout_episode(
    env: Any, act: Any, seed: int, noise: float, info: dict[str, Any]
) -> EpisodeData:
    """One episode: ``clip(mean action + N(0, noise^2), -1, 1)``, goal and noise from ``seed``."""
    rng = np.random.default_rng(seed)
    obs, reset_info = env.reset(seed=seed)

    def choose(t: int, o: np.ndarray) -> np.ndarray:
        return act(o) + noise * rng.standard_normal(4)

    def episode_info(successes: np.ndarray, rewards: np.ndarray) -> dict[str, Any]:
        return {
            **info,
            "seed": int(seed),
            "rand_vec": [float(x) for x in reset_info["rand_vec"]],
            "success": bool(successes.any()),
            "return": float(rewards.sum()),
        }

    return record_episode(env.u, obs, int(env.horizon), choose, env.step, episode_info)


def rollout_seeds(seed: int, n: int) -> list[int]:
    """Reset/noise seeds of a ``rollouts`` dataset's episodes."""
    return [
        int(np.random.SeedSequence([int(seed), _STREAM_ROLLOUTS, i]).generate_state(1)[0])
        for i in range(n)
    ]


def generate_rollouts(
    task_id: str,
    *,
    episodes: int | None = None,
    seed: int = 0,
    steps: int | None = None,
    checkpoint: int | None = None,
    root: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    horizon: int = CPL_HORIZON,
    noise: float = ROLLOUT_NOISE,
    config: SacConfig | None = None,
) -> tuple[list[EpisodeData], dict[str, Any], dict[str, Any]]:
    """CPL's data: a suboptimal SAC checkpoint's noisy rollouts; (episodes, card, critic).

    With ``steps`` the SAC run is trained (resumed) to that many steps first; without, the
    run's checkpoints so far are used (it trains in the background: docs/cpl-protocol.md).
    The critic payload is the chosen checkpoint's (its critic scores the regret labels).
    """
    env_name = env_name_of(task_id)
    n = default_episodes(env_name, "rollouts") if episodes is None else int(episodes)
    if n < 1:
        raise PbrlError(f"--episodes: must be >= 1, got {n}")
    if not noise >= 0.0:
        raise PbrlError(f"noise: must be >= 0, got {noise}")
    check_seed(seed, "--seed")
    t0 = time.perf_counter()
    run = sac_run(task_id, seed=seed, root=root, device=device, horizon=horizon, config=config)
    if steps is not None:
        run.train(steps, eval_every=CPL_EVAL_EVERY, eval_episodes=CPL_EVAL_EPISODES)
    evals = run.evals()
    chosen, best, reason = choose_rollout_checkpoint(evals, checkpoint, str(run.path))
    log.info("%s rollouts: SAC checkpoint %d (%s)", env_name, chosen.step, reason)
    act = _mean_action_fn(run, chosen.step)
    env = seeded_goal_env(env_name, run.horizon)
    progress = RateLog(log, f"{env_name} rollouts", n)
    progress.begin()
    eps: list[EpisodeData] = []
    base = {"source": "sac-rollout", "checkpoint_step": chosen.step, "noise": noise}
    try:
        for i, s in enumerate(rollout_seeds(seed, n)):
            eps.append(rollout_episode(env, act, s, noise, {**base, "episode_index": i}))
            progress.update(len(eps))
    finally:
        env.close()
    refs = reference_scores(env_name, seed, run.horizon, workers=1)
    succ = [e.info["success"] for e in eps]

    def ck(e: EvalRecord) -> dict[str, Any]:
        return {"step": e.step, "success_rate": e.success_rate, "mean_return": e.mean_return}

    card: dict[str, Any] = {
        "generator": "pbrl.datasets.metaworld_gen: CPL's protocol (SAC rollouts with noise)",
        "task_id": task_id,
        "env_name": env_name,
        "kind": "rollouts",
        "horizon": run.horizon,
        "seed": seed,
        "episodes": n,
        "paper_episodes": CPL_EPISODES,
        "steps": int(sum(e.length for e in eps)),
        "episode_seeds": "SeedSequence([seed, 30, i]).generate_state(1)[0]: the reset (goal "
        "drawn uniformly from the task's random-reset space) and the action noise",
        "policy": {
            "checkpoint": ck(chosen),
            "best_checkpoint": ck(best),
            "reason": reason,
            "rule": f"success closest to {ROLLOUT_TARGET_FRACTION:.0%} of the best checkpoint's",
            "actions": f"clip(tanh(mu(s)) + N(0, {noise}^2), -1, 1): the SAC mean action plus "
            "Gaussian noise (CPL scripts/create_dataset.py --noise)",
        },
        "success_rate": float(np.mean(succ)),
        "mean_return": float(np.mean([e.info["return"] for e in eps])),
        "sac": {
            **run.config.identity(),
            "learning_starts": run.learning_starts(),
            "run_dir": str(run.path),
            "trained_steps": run.latest_step(),
            "eval_episodes": CPL_EVAL_EPISODES,
            "evals": [ck(e) for e in evals],
            "env": "SeededGoalEnv: a uniform random goal per episode from its reset seed",
        },
        "reference": refs,
        "critic": {
            "file": CRITIC_FILE,
            "format": CRITIC_FORMAT,
            "step": chosen.step,
            "gamma": run.config.gamma,
            "reward_scale": run.config.reward_scale,
            "value_estimator": "Q = mean of the twin critics; V(s) = mean of Q(s, a') over 64 "
            "actions sampled from the same checkpoint's actor (CPL add_pref_labels.py); values "
            "are in units of reward x reward_scale (CPL: reward / 10)",
        },
        "build_seconds": round(time.perf_counter() - t0, 2),
        "reward": "raw MetaWorld v3 reward (0..10 per step); SAC learned from it x 0.1",
        "success": "per step in infos['success']; an episode succeeds if any step does",
    }
    return eps, card, critic_payload(run, chosen)


def build_rollouts(
    task_id: str,
    *,
    episodes: int | None = None,
    seed: int = 0,
    steps: int | None = None,
    checkpoint: int | None = None,
    overwrite: bool = False,
    device: str = "cpu",
    root: str | os.PathLike[str] | None = None,
    config: SacConfig | None = None,
) -> str:
    """Write ``pbrl/metaworld/<task>/rollouts-v0`` with the SAC critic beside it."""
    dataset_id = generated_dataset_id(task_id, "rollouts")
    check_new_dataset(dataset_id, overwrite)
    eps, card, critic = generate_rollouts(
        task_id,
        episodes=episodes,
        seed=seed,
        steps=steps,
        checkpoint=checkpoint,
        root=root,
        device=device,
        config=config,
    )
    with tempfile.TemporaryDirectory(prefix="pbrl-critic-") as tmpdir:
        critic_tmp = Path(tmpdir) / CRITIC_FILE
        save_expert_critic(critic_tmp, critic)
        write_minari_dataset(
            dataset_id,
            eps,
            env_id=gym_env_id(),
            env_kwargs={"env_name": card["env_name"], "seed": seed, "horizon": card["horizon"]},
            ref_min_score=card["reference"]["ref_min_score"],
            ref_max_score=card["reference"]["ref_max_score"],
            card=card,
            description=(
                f"pbrl generated MetaWorld {card['env_name']} 'rollouts' dataset (CPL's "
                f"protocol): {len(eps)} episodes of SAC step {card['policy']['checkpoint']['step']}"
                f" with Gaussian noise {ROLLOUT_NOISE}."
            ),
            algorithm_name="pbrl.metaworld_gen:rollouts",
            overwrite=overwrite,
            extra_files={CRITIC_FILE: critic_tmp},
        )
    log.info("wrote %s (%d episodes) with %s", dataset_id, len(eps), CRITIC_FILE)
    return dataset_id


# ---- the public entry point ---------------------------------------------------------------
def env_name_of(task_id: str) -> str:
    """``metaworld/<name>`` -> ``<name>``, checked against the task registry."""

    spec = get_task(task_id)
    if spec.domain != "metaworld":
        raise PbrlError(f"{task_id}: the MetaWorld generator only builds metaworld/* tasks")
    return task_id.split("/", 1)[1]


def generate(
    task_id: str,
    kind: str,
    *,
    episodes: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    horizon: int = 500,
) -> tuple[list[EpisodeData], dict[str, Any]]:
    """Generate a kind's episodes and its card, without writing anything."""
    env_name = env_name_of(task_id)
    if kind not in MIXTURES:
        raise UnknownIdError(f"--kind {kind}: unknown kind (known: {', '.join(MIXTURES)})")
    n = default_episodes(env_name, kind) if episodes is None else int(episodes)
    if n < 1:
        raise PbrlError(f"--episodes: must be >= 1, got {n}")
    if horizon < 1:
        raise PbrlError(f"--horizon: must be >= 1, got {horizon}")
    check_seed(seed, "--seed")
    t0 = time.perf_counter()
    needs_pool = any(c.source == "other-task" for c in MIXTURES[kind])
    log.info(
        "%s %s: %d episodes on %d worker(s)%s, then %d reference episodes",
        env_name,
        kind,
        n,
        default_workers() if workers is None else workers,
        " after screening other tasks' experts" if needs_pool else "",
        2 * REF_EPISODES,
    )
    pool = other_task_pool(env_name, seed, workers, horizon) if needs_pool else []
    jobs = plan(env_name, kind, n, seed, horizon, pool)
    eps = run_jobs(jobs, workers, what=f"{env_name} {kind}")
    refs = reference_scores(env_name, seed, horizon, workers)
    elapsed = time.perf_counter() - t0
    steps = sum(e.length for e in eps)
    card: dict[str, Any] = {
        "generator": "pbrl.datasets.metaworld_gen",
        "task_id": task_id,
        "env_name": env_name,
        "kind": kind,
        "horizon": horizon,
        "seed": seed,
        "episode_seeds": "numpy SeedSequence([seed, 0]).spawn(episodes), recorded per episode",
        "episodes": n,
        "steps": steps,
        "mixture": source_stats(eps, kind),
        "success_rate": float(np.mean([e.info["success"] for e in eps])),
        "mean_return": float(np.mean([e.info["return"] for e in eps])),
        "other_task_pool": pool,
        "reference": refs,
        "build_seconds": round(elapsed, 2),
        "reward": "raw MetaWorld v2 reward (0..10 per step); learners scale it (TaskSpec.reward_scale)",
        "success": "per step in infos['success']; an episode succeeds if any step does",
    }
    return eps, card


def build(
    task_id: str,
    kind: str,
    *,
    episodes: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    overwrite: bool = False,
    horizon: int = 500,
    steps: int | None = None,
    device: str = "cpu",
) -> str:
    """Generate ``pbrl/metaworld/<task>/<kind>-v0`` into the Minari store; returns its id.

    ``steps`` and ``device`` apply to the ``rollouts`` kind only (SAC training steps to reach
    first, the device it trains and rolls out on); the scripted kinds take ``workers`` and
    ``horizon``.
    """

    env_name_of(task_id)
    if kind not in KINDS:
        raise UnknownIdError(f"--kind {kind}: unknown kind (known: {', '.join(KINDS)})")
    if kind in PROTOCOL_KINDS:
        if horizon != 500:
            raise PbrlError("--horizon: the rollouts kind uses CPL's 250-step episodes")
        return build_rollouts(
            task_id, episodes=episodes, seed=seed, steps=steps, overwrite=overwrite, device=device
        )
    if steps is not None:
        raise PbrlError(f"--steps: the {kind} kind is scripted (SAC steps apply to rollouts)")
    dataset_id = generated_dataset_id(task_id, kind)
    # Before any episode is generated: an existing dataset, a bad id, an unwritable store.
    check_new_dataset(dataset_id, overwrite)
    eps, card = generate(
        task_id, kind, episodes=episodes, seed=seed, workers=workers, horizon=horizon
    )
    env_name = card["env_name"]
    mix = ", ".join(f"{c['source']} {c['share']:.0%}" for c in card["mixture"])
    write_minari_dataset(
        dataset_id,
        eps,
        env_id=gym_env_id(),
        env_kwargs={"env_name": env_name, "seed": seed, "horizon": horizon},
        ref_min_score=card["reference"]["ref_min_score"],
        ref_max_score=card["reference"]["ref_max_score"],
        card=card,
        description=f"pbrl generated MetaWorld {env_name} '{kind}' dataset ({mix}).",
        algorithm_name=f"pbrl.metaworld_gen:{kind}",
        overwrite=overwrite,
    )
    log.info(
        "wrote %s (%d episodes, %.1fs) to %s",
        dataset_id,
        card["episodes"],
        card["build_seconds"],
        minari_root() / dataset_id,
    )
    return dataset_id
