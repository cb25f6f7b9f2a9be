"""SAC-generated offline datasets for MuJoCo locomotion and DeepMind Control tasks.

A stable-baselines3 SAC agent is trained on the task's true reward in a *resumable run
directory* (``$PBRL_HOME/sac/<domain>/<task>/seed<S>[-<config hash>]/``, default
``~/.cache/pbrl/sac/...``). Every ``eval_every`` steps the run evaluates the current policy on
a separately seeded env (deterministic actions, a fixed set of reset seeds), keeps the
policy's weights as an evaluated snapshot and writes a full checkpoint (model, optimizers,
entropy coefficient, replay buffer, RNG states, step counter). A killed run restarts from its
last checkpoint. While SAC collects, a wrapper logs every training episode with its reset
seed and the physics state (qpos, qvel) of every step, which is what ``medium-replay`` is
made of.

Dataset kinds (D4RL's recipe, on Gymnasium ``*-v5`` / shimmy DMC envs):

- ``expert``: rollouts of the best evaluated checkpoint (stochastic SAC actions);
- ``medium``: rollouts of the checkpoint whose evaluation return is closest to a third of
  the expert's (among checkpoints up to the expert's step);
- ``random``: uniform random actions;
- ``medium-replay``: every training episode that ended by the medium checkpoint's step, as
  SAC collected it (episode boundaries kept);
- ``medium-expert``: medium and expert rollouts, half the transitions each.

The expert's critic and actor are saved beside each dataset (``expert_critic.pt``) so the
regret teacher can compute ``V(s)`` and ``Q(s, a)``: see :mod:`pbrl.datasets.critic`.
The file format and the recipe are documented in ``docs/sb3-data.md``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.datasets.base import EpisodeData
from pbrl.datasets.critic import (
    CRITIC_FILE,
    CRITIC_FORMAT,
    build_sac_policy,
    load_expert_value_fn,  # noqa: F401  (re-exported: the loader of the critic build writes)
    save_expert_critic,
)
from pbrl.datasets.minari_io import check_new_dataset, package_versions, write_minari_dataset
from pbrl.datasets.progress import RateLog
from pbrl.datasets.registry import generated_dataset_id
from pbrl.envs.base import get_task, physics_state
from pbrl.errors import DataError, PbrlError, UnknownIdError
from pbrl.utils import atomic_path, check_seed, resolve_device, write_json_atomic

log = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("random", "medium", "expert", "medium-replay", "medium-expert")
DOMAINS: tuple[str, ...] = ("mujoco", "dmc")
DEFAULT_STEPS = 1_000_000
DEFAULT_DATASET_STEPS = 1_000_000  # D4RL's size: 1M transitions per rollout dataset
DEFAULT_REF_EPISODES = 20
DEFAULT_EVAL_EPISODES = 10
_MAX_LOCKSTEP_ENVS = 16

# Seed streams: every seed in a run or a dataset is SeedSequence([seed, stream, index]).
_STREAM_TRAIN = 0
_STREAM_EVAL = 1
_STREAM_ROLLOUT = {"random": 10, "medium": 11, "expert": 12}
_STREAM_REF = {"random": 20, "expert": 21}


# ---- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SacConfig:
    """SAC hyper-parameters of a run (SB3 defaults unless noted; D4RL-style training)."""

    net_arch: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the actor and of each of the two critics."""
    learning_rate: float = 3e-4
    """Adam learning rate of actor, critics and entropy coefficient."""
    batch_size: int = 256
    """Minibatch size of each gradient step."""
    buffer_size: int = 1_000_000
    """Replay buffer capacity (transitions)."""
    gamma: float = 0.99
    """Discount factor; the saved critic's values are discounted with it."""
    tau: float = 0.005
    """Polyak coefficient of the target critics."""
    learning_starts: int = 10_000
    """Uniform-random steps before learning (RL Zoo's MuJoCo value). Capped at a tenth of the
    requested steps so that small budgets still learn; not part of the run identity because
    it only affects the beginning of a run."""
    horizon: int | None = None
    """Episode length limit overriding the task's (None: the task's horizon). Tests use a
    short horizon; it is part of the run identity."""
    reward_scale: float = 1.0
    """SAC learns from the env reward times this (CPL's MetaWorld oracle: 0.1). Recorded
    episodes and evaluation returns keep the env's own reward."""
    ent_coef_init: float | None = None
    """Initial value of the auto-tuned entropy coefficient (None: SB3's 1.0; CPL: 0.1)."""
    target_update_interval: int = 1
    """Gradient steps between target-critic updates (SB3's 1; CPL: 2)."""

    def identity(self) -> dict[str, Any]:
        """Fields that define a run: a different value means a different run directory.

        Fields added after the first runs were stored are left out at their defaults, so
        existing run directories keep their names.
        """
        out = asdict(self)
        out.pop("learning_starts")
        out["net_arch"] = list(self.net_arch)
        for name, default in _LATER_FIELDS.items():
            if out[name] == default:
                out.pop(name)
        return out


# Fields of SacConfig added after runs existed, with the defaults an old run had.
_LATER_FIELDS: dict[str, Any] = {
    "reward_scale": 1.0,
    "ent_coef_init": None,
    "target_update_interval": 1,
}


@dataclass(frozen=True)
class EvalRecord:
    """One evaluated checkpoint of a run."""

    step: int
    mean_return: float
    std_return: float
    returns: tuple[float, ...]
    ent_coef: float
    successes: tuple[bool, ...] | None = None
    """Per evaluation episode: ``info["success"]`` at any step (None: the task has none)."""

    @property
    def success_rate(self) -> float | None:
        """Percent of evaluation episodes that succeeded (None without success signals)."""
        if not self.successes:
            return None
        return 100.0 * sum(self.successes) / len(self.successes)

    def to_json(self) -> dict[str, Any]:
        out = {**asdict(self), "returns": list(self.returns)}
        if self.successes is None:
            out.pop("successes")
        else:
            out["successes"] = list(self.successes)
            out["success_rate"] = self.success_rate
        return out

    @staticmethod
    def from_json(d: dict[str, Any]) -> EvalRecord:
        succ = d.get("successes")
        return EvalRecord(
            step=int(d["step"]),
            mean_return=float(d["mean_return"]),
            std_return=float(d["std_return"]),
            returns=tuple(float(r) for r in d["returns"]),
            ent_coef=float(d["ent_coef"]),
            successes=None if succ is None else tuple(bool(x) for x in succ),
        )


def cache_root() -> Path:
    """Root of SAC runs: ``$PBRL_HOME/sac`` (default ``~/.cache/pbrl/sac``)."""
    home = os.environ.get("PBRL_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "pbrl"
    return base / "sac"


def episode_seed(seed: int, stream: int, index: int) -> int:
    """The reset seed (and action-RNG seed) of episode ``index`` of a seed stream."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1, np.uint32)[0])


def default_eval_every(steps: int) -> int:
    """Evaluate about 20 times per run, at most every 10k steps (100 points for 1M steps)."""
    return min(10_000, max(steps // 20, 1))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch threads (None: unchanged), restoring the setting after.

    SAC's small per-step updates gain little from a second thread, and on a shared machine
    the threads' spin-waiting makes two threads far slower than one: on this 2-core machine
    under load, 22.7 steps/s with one thread against 1.5 with two (docs/sb3-data.md).
    """
    import torch

    if n is None:
        yield
        return
    if n <= 0:
        raise PbrlError(f"threads must be positive, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---- environments ----------------------------------------------------------------------------
def _check_task(task_id: str, domains: Sequence[str] = DOMAINS) -> Any:

    spec = get_task(task_id)
    if spec.domain not in domains:
        raise PbrlError(
            f"{task_id}: the SAC generator builds mujoco/* and dmc/* tasks "
            f"(MetaWorld datasets come from the scripted generator)"
        )
    return spec


def make_env(task_id: str, seed: int, horizon: int | None = None) -> Any:
    """The task's env (flat observations), with a shorter time limit when ``horizon`` is set."""
    import gymnasium as gym

    spec = _check_task(task_id)
    env = spec.make(seed=seed)
    if horizon is not None:
        if horizon <= 0:
            raise PbrlError(f"horizon must be positive, got {horizon}")
        if horizon < spec.horizon:
            env = gym.wrappers.TimeLimit(env, max_episode_steps=horizon)
    return env


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _package_versions() -> dict[str, str | None]:

    return package_versions()


# ---- episode recording -----------------------------------------------------------------------
class _EpisodeBuilder:
    """Accumulates one episode's arrays (Minari convention: T+1 observations and states)."""

    def __init__(self, obs: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> None:
        self.obs = [np.asarray(obs)]
        self.qpos = [qpos]
        self.qvel = [qvel]
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terms: list[bool] = []
        self.truncs: list[bool] = []

    def add(
        self,
        action: np.ndarray,
        obs: np.ndarray,
        reward: float,
        term: bool,
        trunc: bool,
        qpos: np.ndarray,
        qvel: np.ndarray,
    ) -> None:
        self.actions.append(np.asarray(action, dtype=np.float32))
        self.obs.append(np.asarray(obs))
        self.rewards.append(float(reward))
        self.terms.append(bool(term))
        self.truncs.append(bool(trunc))
        self.qpos.append(qpos)
        self.qvel.append(qvel)

    @property
    def length(self) -> int:
        return len(self.actions)

    def finish(self, info: dict[str, Any], *, cut: bool = False) -> EpisodeData:
        truncs = np.array(self.truncs, dtype=bool)
        if cut and self.length:
            # The run was interrupted mid-episode: the episode ends by truncation here.
            truncs[-1] = True
        act_dim = self.actions[0].shape[0] if self.actions else 0
        return EpisodeData(
            observations=np.stack(self.obs).astype(np.float64),
            actions=np.stack(self.actions) if self.actions else np.zeros((0, act_dim), np.float32),
            rewards=np.array(self.rewards, dtype=np.float64),
            terminations=np.array(self.terms, dtype=bool),
            truncations=truncs,
            qpos=np.stack(self.qpos),
            qvel=np.stack(self.qvel),
            info=info,
        )


def _episodes_to_npz(path: Path, episodes: Sequence[EpisodeData]) -> None:
    """One file of training episodes, concatenated (written atomically)."""
    lengths = np.array([e.length for e in episodes], dtype=np.int64)
    meta = json.dumps([e.info for e in episodes])
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                lengths=lengths,
                observations=np.concatenate([e.observations for e in episodes]),
                qpos=np.concatenate([e.qpos for e in episodes]),
                qvel=np.concatenate([e.qvel for e in episodes]),
                actions=np.concatenate([e.actions for e in episodes]),
                rewards=np.concatenate([e.rewards for e in episodes]),
                terminations=np.concatenate([e.terminations for e in episodes]),
                truncations=np.concatenate([e.truncations for e in episodes]),
                meta=np.array(meta),
            )


def _episodes_from_npz(path: Path) -> list[EpisodeData]:
    try:
        with np.load(path, allow_pickle=False) as z:
            lengths = z["lengths"]
            arrays = {k: z[k] for k in z.files if k not in ("lengths", "meta")}
            meta = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: unreadable training-episode log ({e})") from e
    out: list[EpisodeData] = []
    s = s1 = 0  # step rows (T per episode) and state rows (T+1 per episode)
    for length, info in zip(lengths.tolist(), meta, strict=True):
        out.append(
            EpisodeData(
                observations=arrays["observations"][s1 : s1 + length + 1],
                actions=arrays["actions"][s : s + length],
                rewards=arrays["rewards"][s : s + length],
                terminations=arrays["terminations"][s : s + length],
                truncations=arrays["truncations"][s : s + length],
                qpos=arrays["qpos"][s1 : s1 + length + 1],
                qvel=arrays["qvel"][s1 : s1 + length + 1],
                info=info,
            )
        )
        s += length
        s1 += length + 1
    return out


def _make_recorder_class() -> type:
    import gymnasium as gym

    class EpisodeRecorder(gym.Wrapper):
        """Logs SAC's training episodes with qpos/qvel; resets with per-episode seeds.

        SB3's vectorized env resets without a seed after each episode; this wrapper
        replaces every reset seed with ``episode_seed(run_seed, TRAIN, index)`` so each
        training episode is reproducible from the seed stored with it.
        """

        def __init__(self, env: Any, run_seed: int, episode_index: int, step: int) -> None:
            super().__init__(env)
            self.run_seed = run_seed
            self.episode_index = episode_index
            self.step_count = step
            self.completed: list[EpisodeData] = []
            self.current: _EpisodeBuilder | None = None
            self._current_info: dict[str, Any] = {}

        def reset(
            self, *, seed: int | None = None, options: dict | None = None
        ) -> tuple[Any, dict[str, Any]]:
            ep_seed = episode_seed(self.run_seed, _STREAM_TRAIN, self.episode_index)
            obs, info = self.env.reset(seed=ep_seed, options=options)
            self._current_info = {
                "source": "sac-train",
                "seed": ep_seed,
                "episode_index": self.episode_index,
                "start_step": self.step_count,
            }
            self.episode_index += 1
            self.current = _EpisodeBuilder(obs, *physics_state(self.env))
            return obs, info

        def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
            obs, reward, term, trunc, info = self.env.step(action)
            self.step_count += 1
            if self.current is None:
                raise PbrlError("EpisodeRecorder: step() before reset()")
            self.current.add(action, obs, reward, term, trunc, *physics_state(self.env))
            if term or trunc:
                self.completed.append(self.current.finish(self._episode_info()))
                self.current = None
            return obs, reward, term, trunc, info

        def _episode_info(self) -> dict[str, Any]:
            return {**self._current_info, "end_step": self.step_count}

        def take_completed(self) -> list[EpisodeData]:
            out, self.completed = self.completed, []
            return out

        def partial(self) -> EpisodeData | None:
            """The episode in progress (None when empty), for the checkpoint."""
            if self.current is None or self.current.length == 0:
                return None
            return self.current.finish({**self._episode_info(), "cut_by_resume": True}, cut=True)

    return EpisodeRecorder


# ---- policies --------------------------------------------------------------------------------
class _ActorSampler:
    """Turns SB3's squashed-Gaussian actor into env actions with explicit numpy RNGs."""

    def __init__(self, actor: Any, low: np.ndarray, high: np.ndarray, device: str) -> None:
        self.actor = actor
        self.low = low.astype(np.float64)
        self.high = high.astype(np.float64)
        self.device = device

    def __call__(self, obs: np.ndarray, rngs: Sequence[np.random.Generator] | None) -> np.ndarray:
        import torch

        with torch.no_grad():
            t = torch.as_tensor(np.asarray(obs, dtype=np.float32), device=self.device)
            mean, log_std, _ = self.actor.get_action_dist_params(t)
            mean = mean.cpu().numpy().astype(np.float64)
            std = np.exp(log_std.cpu().numpy().astype(np.float64))
        if rngs is None:
            u = mean
        else:
            # One draw per row from that episode's own generator: results do not depend on
            # which episodes happen to share a batch.
            noise = np.stack([rng.standard_normal(mean.shape[1]) for rng in rngs])
            u = mean + std * noise
        squashed = np.tanh(u)
        return (self.low + 0.5 * (squashed + 1.0) * (self.high - self.low)).astype(np.float32)


class _RandomSampler:
    def __init__(self, low: np.ndarray, high: np.ndarray) -> None:
        self.low = low.astype(np.float64)
        self.high = high.astype(np.float64)

    def __call__(self, obs: np.ndarray, rngs: Sequence[np.random.Generator] | None) -> np.ndarray:
        if rngs is None:
            raise PbrlError("the random policy needs per-episode generators")
        return np.stack([rng.uniform(self.low, self.high) for rng in rngs]).astype(np.float32)


@contextlib.contextmanager
def env_pool(make: Callable[[], Any], n: int) -> Iterator[list[Any]]:
    """``n`` envs from ``make``, closed on exit."""
    envs: list[Any] = []
    try:
        for _ in range(n):
            envs.append(make())
        yield envs
    finally:
        for env in envs:
            env.close()


def run_episodes(
    envs: Sequence[Any],
    policy: Callable[[np.ndarray, Sequence[np.random.Generator] | None], np.ndarray],
    seed_of: Callable[[int], int],
    *,
    n_episodes: int | None = None,
    target_steps: int | None = None,
    stochastic: bool = True,
    record: bool = True,
    info: dict[str, Any] | None = None,
    progress: Any = None,
    successes: list[bool] | None = None,
) -> tuple[list[EpisodeData], np.ndarray]:
    """Run episodes in lockstep over ``envs``, one batched policy call per step.

    Episode ``i`` resets with ``seed_of(i)`` and draws its actions from
    ``default_rng(seed_of(i))``, so results do not depend on how many envs share a batch.
    Either exactly ``n_episodes`` episodes run, or (``target_steps``) episodes are launched
    until that many transitions are done and the shortest prefix of episodes (in index
    order) reaching it is kept. Returns (episodes if ``record`` else [], returns (E,)).
    ``progress`` (a :class:`pbrl.datasets.progress.RateLog`) is updated as episodes end:
    with episodes done, or with transitions collected when ``target_steps`` is given.
    ``successes``, when given, is extended with each kept episode's ``info["success"]`` at
    any step (False for tasks that report none).
    """
    if (n_episodes is None) == (target_steps is None):
        raise PbrlError("run_episodes: give exactly one of n_episodes and target_steps")
    results: dict[int, tuple[EpisodeData | None, float, int]] = {}
    succeeded: dict[int, bool] = {}
    collected = 0
    next_index = 0

    def more() -> bool:
        if n_episodes is not None:
            return next_index < n_episodes
        return collected < int(target_steps or 0)

    slots: list[dict[str, Any] | None] = [None] * len(envs)
    while True:
        for k, env in enumerate(envs):
            if slots[k] is None and more():
                s = seed_of(next_index)
                obs, _ = env.reset(seed=s)
                slots[k] = {
                    "index": next_index,
                    "seed": s,
                    "rng": np.random.default_rng(s),
                    "obs": obs,
                    "ret": 0.0,
                    "len": 0,
                    "success": False,
                    "builder": _EpisodeBuilder(obs, *physics_state(env)) if record else None,
                }
                next_index += 1
        active = [k for k in range(len(envs)) if slots[k] is not None]
        if not active:
            break
        batch = np.stack([np.asarray(slots[k]["obs"]) for k in active])
        rngs = [slots[k]["rng"] for k in active] if stochastic else None
        actions = policy(batch, rngs)
        for j, k in enumerate(active):
            slot = slots[k]
            obs, reward, term, trunc, step_info = envs[k].step(actions[j])
            slot["success"] = slot["success"] or bool(step_info.get("success", False))
            slot["ret"] += float(reward)
            slot["len"] += 1
            slot["obs"] = obs
            if slot["builder"] is not None:
                slot["builder"].add(actions[j], obs, reward, term, trunc, *physics_state(envs[k]))
            if term or trunc:
                ep = None
                if slot["builder"] is not None:
                    ep = slot["builder"].finish(
                        {**(info or {}), "seed": slot["seed"], "episode_index": slot["index"]}
                    )
                collected += slot["len"]
                results[slot["index"]] = (ep, slot["ret"], slot["len"])
                succeeded[slot["index"]] = slot["success"]
                slots[k] = None
                if progress is not None:
                    progress.update(
                        len(results) if n_episodes is not None else min(collected, progress.total)
                    )
    order = sorted(results)
    if target_steps is not None:
        total, keep = 0, []
        for i in order:
            keep.append(i)
            total += results[i][2]
            if total >= target_steps:
                break
        order = keep
    episodes = [results[i][0] for i in order]
    returns = np.array([results[i][1] for i in order], dtype=np.float64)
    if successes is not None:
        successes.extend(succeeded[i] for i in order)
    return [e for e in episodes if e is not None], returns


# ---- the resumable SAC run -------------------------------------------------------------------
class SacRun:
    """One SAC training run of a task and seed, stored under :func:`cache_root`.

    Layout of the run directory::

        run.json                 task, seed, config, seeds, package versions, invocations
        evals.json               evaluated checkpoints (a copy for people; the truth is in ckpt)
        latest.json              {"step": S, "dir": "ckpt_<S>"}: the last complete checkpoint
        ckpt_<S>/                model.pt (weights, optimizers, log alpha, counters, RNG states),
                                 buffer.npz (replay rows in order), state.json, partial.npz
        policies/step_<S>.pt     policy state_dict and alpha of every evaluated checkpoint
        episodes/<S>.npz         training episodes that ended in (previous checkpoint, S]
        episodes/<S>-cut.npz     the episode cut short by a resume from checkpoint S
        refs/*.json              cached reference returns
    """

    def __init__(
        self,
        task_id: str,
        seed: int = 0,
        config: SacConfig | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        device: str = "auto",
        env_factory: Callable[[int, int | None], Any] | None = None,
        env_label: str | None = None,
    ) -> None:
        """``env_factory(seed, horizon)``, when given, makes every env of the run (training,
        evaluation, rollouts) instead of the task's own ``make``, which lets another domain's
        generator (MetaWorld's seeded random goals) train with this run; ``env_label`` names
        that env and is part of the run's identity (its directory name)."""
        if (env_factory is None) != (env_label is None):
            raise PbrlError("SacRun: give env_factory and env_label together")
        self.spec = _check_task(
            task_id, DOMAINS if env_factory is None else (get_task(task_id).domain,)
        )
        self.task_id = task_id
        self.seed = int(seed)
        self.config = config or SacConfig()
        self.device = resolve_device(device)
        self.root = Path(root) if root is not None else cache_root()
        self.env_factory = env_factory
        self.env_label = env_label
        name = f"seed{self.seed}"
        if env_label is not None:
            name += f"-{env_label}"
        if self.config.identity() != SacConfig().identity():
            digest = hashlib.sha1(
                json.dumps(self.config.identity(), sort_keys=True).encode()
            ).hexdigest()[:8]
            name += f"-{digest}"
        self.path = self.root / task_id / name

    # ---- reading ---------------------------------------------------------------------------
    @property
    def horizon(self) -> int:
        h = self.config.horizon
        return min(h, self.spec.horizon) if h is not None else int(self.spec.horizon)

    def latest_step(self) -> int:
        latest = self._latest()
        return int(latest["step"]) if latest else 0

    def _latest(self) -> dict[str, Any] | None:
        p = self.path / "latest.json"
        if not p.exists():
            return None
        try:
            latest = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{p}: unreadable checkpoint pointer ({e})") from e
        if not (self.path / latest["dir"] / "state.json").exists():
            raise DataError(f"{p}: points at missing checkpoint {latest['dir']}")
        return latest

    def _state(self) -> dict[str, Any]:
        latest = self._latest()
        if latest is None:
            return {"step": 0, "n_updates": 0, "episode_index": 0, "evals": []}
        return json.loads((self.path / latest["dir"] / "state.json").read_text())

    def evals(self, upto: int | None = None) -> list[EvalRecord]:
        """Evaluated checkpoints (ascending steps), those at or before ``upto`` when given."""
        recs = [EvalRecord.from_json(d) for d in self._state()["evals"]]
        return [r for r in recs if upto is None or r.step <= upto]

    def snapshot_path(self, step: int) -> Path:
        return self.path / "policies" / f"step_{step:09d}.pt"

    def load_snapshot(self, step: int) -> dict[str, Any]:
        import torch

        p = self.snapshot_path(step)
        if not p.exists():
            raise DataError(f"{p}: the evaluated checkpoint of step {step} is missing")
        return torch.load(p, map_location="cpu", weights_only=True)

    def make_env(self) -> Any:
        """An env of this run's task and horizon (episodes are seeded at reset)."""
        if self.env_factory is not None:
            return self.env_factory(self.seed, self.config.horizon)
        return make_env(self.task_id, seed=self.seed, horizon=self.config.horizon)

    def spaces(self) -> tuple[Any, Any]:
        env = self.make_env()
        try:
            return env.observation_space, env.action_space
        finally:
            env.close()

    def policy_from_snapshot(self, step: int) -> Any:
        obs_space, act_space = self.spaces()
        policy = build_sac_policy(obs_space, act_space, self.config.net_arch, self.device)
        policy.load_state_dict(self.load_snapshot(step)["policy"])
        return policy

    def training_episodes(self, upto_step: int) -> list[EpisodeData]:
        """Training episodes as SAC collected them that ended at or before ``upto_step``."""
        latest = self.latest_step()
        out: list[EpisodeData] = []
        folder = self.path / "episodes"
        files = sorted(folder.glob("*.npz")) if folder.exists() else []
        for f in files:
            if int(f.stem.split("-")[0]) > latest:
                continue  # written by a run killed before its checkpoint completed
            out.extend(_episodes_from_npz(f))
        out = [e for e in out if int(e.info["end_step"]) <= upto_step]
        out.sort(key=lambda e: (int(e.info["end_step"]), int(e.info["episode_index"])))
        return out

    # ---- training --------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise PbrlError(
                    f"{self.path}: this SAC run is being trained by another process; "
                    "wait for it or use another --seed"
                ) from e
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def train(
        self,
        steps: int,
        *,
        eval_every: int | None = None,
        eval_episodes: int = DEFAULT_EVAL_EPISODES,
        threads: int | None = 1,
    ) -> list[EvalRecord]:
        """Train (or resume) until ``steps`` environment steps; returns the evaluations so far.

        A run already at or beyond ``steps`` is not touched. On CPU, torch runs on
        ``threads`` threads while training (None: leave torch's setting alone).
        """
        if steps <= 0:
            raise PbrlError(f"--steps must be positive, got {steps}")
        if eval_episodes <= 0:
            raise PbrlError(f"eval_episodes must be positive, got {eval_episodes}")
        eval_every = eval_every or default_eval_every(steps)
        if self.latest_step() >= steps:
            return self.evals(upto=steps)
        with self._lock(), torch_threads(threads if self.device == "cpu" else None):
            self._train_locked(steps, eval_every, eval_episodes)
        return self.evals(upto=steps)

    def _run_record(self) -> dict[str, Any]:
        p = self.path / "run.json"
        if not p.exists():
            return {}
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{p}: unreadable run record ({e})") from e

    def learning_starts(self) -> int | None:
        """The uniform-random warm-up steps of this run (None before it first trained)."""
        value = self._run_record().get("learning_starts")
        return int(value) if value is not None else None

    def _write_run_json(self, steps: int, start: int, learning_starts: int) -> None:
        record = self._run_record()
        record.update(
            {
                "learning_starts": learning_starts,
                "task_id": self.task_id,
                "seed": self.seed,
                "config": self.config.identity(),
                "horizon": self.horizon,
                "seeds": {
                    "run": self.seed,
                    "sb3_seed": self.seed,
                    "train_episode_seed": "SeedSequence([run, 0, episode_index]) (stored per "
                    "episode in episodes/*.npz)",
                    "eval_episode_seed": "SeedSequence([run, 1, i]) (listed in evals.json)",
                },
            }
        )
        record.setdefault("invocations", []).append(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "requested_steps": steps,
                "resumed_from_step": start,
                "device": self.device,
                "torch_threads": _torch_threads(),
                "package_versions": _package_versions(),
            }
        )
        write_json_atomic(self.path / "run.json", record)

    def _train_locked(self, steps: int, eval_every: int, eval_episodes: int) -> None:
        from stable_baselines3 import SAC
        from stable_baselines3.common.vec_env import DummyVecEnv

        cfg = self.config
        state = self._state()
        start = int(state["step"])
        # Fixed by the run's first invocation: a resumed run must not go back to random steps.
        learning_starts = self.learning_starts() if start > 0 else None
        if learning_starts is None:
            learning_starts = min(cfg.learning_starts, max(steps // 10, 1))
        self._write_run_json(steps, start, learning_starts)
        if start > 0:
            self._flush_partial(start)
        self._drop_files_after(start)

        recorder_cls = _make_recorder_class()
        recorder = recorder_cls(
            self.make_env(),
            self.seed,
            int(state["episode_index"]),
            start,
        )
        learner_env = recorder
        if cfg.reward_scale != 1.0:
            import gymnasium as gym

            # Above the recorder: logged episodes keep the env's reward, SAC sees it scaled.
            scale = float(cfg.reward_scale)
            learner_env = gym.wrappers.TransformReward(recorder, lambda r: scale * float(r))
        vec = DummyVecEnv([lambda: learner_env])
        ent_coef = "auto" if cfg.ent_coef_init is None else f"auto_{cfg.ent_coef_init}"
        model = SAC(
            "MlpPolicy",
            vec,
            learning_rate=cfg.learning_rate,
            buffer_size=min(cfg.buffer_size, steps),
            learning_starts=learning_starts,
            batch_size=cfg.batch_size,
            tau=cfg.tau,
            gamma=cfg.gamma,
            ent_coef=ent_coef,
            target_update_interval=cfg.target_update_interval,
            policy_kwargs={"net_arch": list(cfg.net_arch)},
            seed=self.seed,
            device=self.device,
            verbose=0,
        )
        if start > 0:
            self._restore(model, state)
        evals = [EvalRecord.from_json(d) for d in state["evals"]]
        trainer = _Trainer(self, model, recorder, evals, eval_every, eval_episodes, start)
        try:
            remaining = steps - start
            model.learn(
                total_timesteps=remaining,
                callback=trainer.callback(steps),
                reset_num_timesteps=False,
            )
        finally:
            trainer.close_envs()
            vec.close()

    def _restore(self, model: Any, state: dict[str, Any]) -> None:
        import torch

        latest = self._latest()
        assert latest is not None
        ckpt = self.path / latest["dir"]
        # Our own cache file (pickled numpy RNG state inside): not loaded from elsewhere.
        # On CPU first: RNG states must stay CPU byte tensors; set_parameters moves weights.
        blob = torch.load(ckpt / "model.pt", map_location="cpu", weights_only=False)
        model.set_parameters(blob["params"], exact_match=True, device=self.device)
        with torch.no_grad():
            model.log_ent_coef.copy_(blob["log_ent_coef"].to(self.device))
        model.num_timesteps = int(state["step"])
        model._n_updates = int(state["n_updates"])
        _load_buffer(model.replay_buffer, ckpt / "buffer.npz")
        torch.set_rng_state(blob["torch_rng"])
        if blob.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(blob["cuda_rng"])
        # SB3 draws minibatch indices from numpy's global RNG: restore its stream too.
        np.random.set_state(blob["numpy_rng"])  # noqa: NPY002
        log.info("%s: resumed from step %d", self.path, state["step"])

    def _flush_partial(self, start: int) -> None:
        """Log the episode that the interrupted run was in the middle of, as a cut episode."""
        latest = self._latest()
        assert latest is not None
        partial = self.path / latest["dir"] / "partial.npz"
        if partial.exists():
            eps = _episodes_from_npz(partial)
            if eps:
                _episodes_to_npz(self.path / "episodes" / f"{start:09d}-cut.npz", eps)

    def _drop_files_after(self, start: int) -> None:
        folder = self.path / "episodes"
        if folder.exists():
            for f in folder.glob("*.npz"):
                if int(f.stem.split("-")[0]) > start:
                    f.unlink()
        for d in self.path.glob("ckpt_*"):
            if d.is_dir() and int(d.name.split("_")[1]) > start:
                shutil.rmtree(d)
        for d in self.path.glob(".ckpt_*.tmp"):
            shutil.rmtree(d, ignore_errors=True)
        # Snapshots (and references computed from them) after the checkpoint are re-made.
        for f in self.path.glob("policies/step_*.pt"):
            if int(f.stem.split("_")[1]) > start:
                f.unlink()
        for f in self.path.glob("refs/expert*.json"):
            if int(f.name[len("expert") :].split("-")[0]) > start:
                f.unlink()

    def eval_seeds(self, n: int) -> list[int]:
        return [episode_seed(self.seed, _STREAM_EVAL, i) for i in range(n)]


class _Trainer:
    """Evaluates, snapshots and checkpoints a live SB3 model at fixed step intervals."""

    def __init__(
        self,
        run: SacRun,
        model: Any,
        recorder: Any,
        evals: list[EvalRecord],
        eval_every: int,
        eval_episodes: int,
        start: int,
    ) -> None:
        self.run = run
        self.model = model
        self.recorder = recorder
        self.evals = evals
        self.eval_every = eval_every
        self.eval_episodes = eval_episodes
        self.last_ckpt = start
        self.t0 = time.monotonic()
        self.t_step = start
        act_space = recorder.action_space
        self.low = np.asarray(act_space.low)
        self.high = np.asarray(act_space.high)
        self.eval_envs: list[Any] = []
        self.progress: Any = None

    def callback(self, steps: int) -> Any:
        from stable_baselines3.common.callbacks import BaseCallback

        trainer = self
        self.progress = RateLog(
            log, f"{self.run.task_id} SAC seed {self.run.seed}", steps, unit="steps"
        )
        self.progress.begin(self.last_ckpt)

        class _Callback(BaseCallback):
            # At rollout start (train_freq = 1 step) the previous step's transition is in
            # the buffer and its gradient step is done: a consistent point to checkpoint.
            def _on_rollout_start(self) -> None:
                step = self.model.num_timesteps
                if step > trainer.last_ckpt and step % trainer.eval_every == 0:
                    trainer.checkpoint(step)

            def _on_step(self) -> bool:
                # Throttled: a line every few seconds at most (RateLog), not per step.
                trainer.progress.update(self.model.num_timesteps)
                return True

            def _on_training_end(self) -> None:
                step = self.model.num_timesteps
                if step > trainer.last_ckpt:
                    trainer.checkpoint(step)

        return _Callback()

    def close_envs(self) -> None:
        for env in self.eval_envs:
            env.close()
        self.eval_envs = []

    def evaluate(self, step: int) -> EvalRecord:
        run = self.run
        if not self.eval_envs:
            n = min(self.eval_episodes, _MAX_LOCKSTEP_ENVS)
            self.eval_envs = [run.make_env() for _ in range(n)]
        sampler = _ActorSampler(self.model.policy.actor, self.low, self.high, run.device)
        was_training = self.model.policy.training
        self.model.policy.set_training_mode(False)
        seeds = run.eval_seeds(self.eval_episodes)
        successes: list[bool] = []
        _, returns = run_episodes(
            self.eval_envs,
            sampler,
            lambda i: seeds[i],
            n_episodes=len(seeds),
            stochastic=False,
            record=False,
            successes=successes,
        )
        self.model.policy.set_training_mode(was_training)
        ent = float(self.model.log_ent_coef.exp().item())
        return EvalRecord(
            step=step,
            mean_return=float(returns.mean()),
            std_return=float(returns.std()),
            returns=tuple(float(r) for r in returns),
            ent_coef=ent,
            successes=tuple(successes) if run.spec.domain == "metaworld" else None,
        )

    def checkpoint(self, step: int) -> None:
        import torch

        run = self.run
        rec = self.evaluate(step)
        self.evals = [e for e in self.evals if e.step < step] + [rec]
        with atomic_path(run.snapshot_path(step)) as tmp:
            torch.save(
                {
                    "policy": {k: v.cpu() for k, v in self.model.policy.state_dict().items()},
                    "ent_coef": rec.ent_coef,
                    "step": step,
                },
                tmp,
            )
        done = self.recorder.take_completed()
        if done:
            _episodes_to_npz(run.path / "episodes" / f"{step:09d}.npz", done)
        name = f"ckpt_{step:09d}"
        final = run.path / name
        with atomic_path(final, is_dir=True) as tmp:
            torch.save(
                {
                    "params": self.model.get_parameters(),
                    "log_ent_coef": self.model.log_ent_coef.detach().cpu(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all()
                    if torch.cuda.is_available()
                    else None,
                    "numpy_rng": np.random.get_state(),  # noqa: NPY002 (SB3 uses it)
                },
                tmp / "model.pt",
            )
            _save_buffer(self.model.replay_buffer, tmp / "buffer.npz")
            partial = self.recorder.partial()
            if partial is not None:
                _episodes_to_npz(tmp / "partial.npz", [partial])
            state = {
                "step": step,
                "n_updates": int(self.model._n_updates),
                "episode_index": int(self.recorder.episode_index),
                "evals": [e.to_json() for e in self.evals],
            }
            (tmp / "state.json").write_text(json.dumps(state, indent=1))
        write_json_atomic(run.path / "latest.json", {"step": step, "dir": name})
        write_json_atomic(
            run.path / "evals.json",
            {"eval_seeds": run.eval_seeds(self.eval_episodes), "evals": state["evals"]},
        )
        for d in run.path.glob("ckpt_*"):
            if d.is_dir() and d.name != name:
                shutil.rmtree(d, ignore_errors=True)
        now = time.monotonic()
        rate = (step - self.t_step) / max(now - self.t0, 1e-9)
        self.t0, self.t_step, self.last_ckpt = now, step, step
        success = "" if rec.success_rate is None else f", success {rec.success_rate:.0f}%"
        log.info(
            "%s step %d: eval return %.1f +- %.1f%s (%.1f steps/s)",
            run.task_id,
            step,
            rec.mean_return,
            rec.std_return,
            success,
            rate,
        )


def _save_buffer(buf: Any, path: Path) -> None:
    """The filled rows of an SB3 ReplayBuffer in collection order (n_envs = 1)."""
    n = buf.buffer_size if buf.full else buf.pos
    idx = np.arange(n)
    if buf.full:
        idx = np.concatenate([np.arange(buf.pos, buf.buffer_size), np.arange(0, buf.pos)])
    with open(path, "wb") as f:
        np.savez(
            f,
            observations=buf.observations[idx, 0],
            next_observations=buf.next_observations[idx, 0],
            actions=buf.actions[idx, 0],
            rewards=buf.rewards[idx, 0],
            dones=buf.dones[idx, 0],
            timeouts=buf.timeouts[idx, 0],
        )


def _load_buffer(buf: Any, path: Path) -> None:
    with np.load(path) as z:
        rows = {k: z[k] for k in z.files}
    n = rows["rewards"].shape[0]
    keep = min(n, buf.buffer_size)
    for k, arr in rows.items():
        getattr(buf, k)[:keep, 0] = arr[n - keep :]
    buf.full = keep == buf.buffer_size
    buf.pos = 0 if buf.full else keep


# ---- checkpoint selection and reference scores -------------------------------------------------
def select_checkpoints(evals: Sequence[EvalRecord]) -> tuple[EvalRecord, EvalRecord]:
    """(expert, medium): the best evaluation, and the one closest to a third of its return.

    Medium is chosen among checkpoints at or before the expert's step (an early-stopped
    policy, as in D4RL); ties go to the earlier checkpoint.
    """
    if not evals:
        raise PbrlError("the SAC run has no evaluated checkpoint yet (train with more --steps)")
    expert = max(evals, key=lambda e: (e.mean_return, -e.step))
    target = expert.mean_return / 3.0
    candidates = [e for e in evals if e.step <= expert.step]
    medium = min(candidates, key=lambda e: (abs(e.mean_return - target), e.step))
    return expert, medium


def _sampler_for(run: SacRun, step: int | None) -> tuple[Any, Any]:
    """(sampler, action space) for a snapshot step, or uniform random actions for None."""
    _, act_space = run.spaces()
    low, high = np.asarray(act_space.low), np.asarray(act_space.high)
    if step is None:
        return _RandomSampler(low, high), act_space
    policy = run.policy_from_snapshot(step)
    return _ActorSampler(policy.actor, low, high, run.device), act_space


def reference_scores(run: SacRun, expert_step: int, episodes: int) -> dict[str, Any]:
    """Random and expert mean returns over ``episodes`` episodes each (cached in the run)."""
    if episodes <= 0:
        raise PbrlError(f"ref_episodes must be positive, got {episodes}")
    cache = run.path / "refs" / f"expert{expert_step:09d}-n{episodes}-mean-action.json"
    if cache.exists():
        return json.loads(cache.read_text())
    out: dict[str, Any] = {"episodes": episodes}
    for name, step in (("random", None), ("expert", expert_step)):
        sampler, _ = _sampler_for(run, step)
        seeds = [episode_seed(run.seed, _STREAM_REF[name], i) for i in range(episodes)]
        with env_pool(run.make_env, min(episodes, _MAX_LOCKSTEP_ENVS)) as envs:
            _, returns = run_episodes(
                envs,
                sampler,
                seeds.__getitem__,
                n_episodes=episodes,
                stochastic=name == "random",
                record=False,
            )
        out[name] = {
            "mean_return": float(returns.mean()),
            "std_return": float(returns.std()),
            "seeds": seeds,
        }
    out["ref_min_score"] = out["random"]["mean_return"]
    out["ref_max_score"] = out["expert"]["mean_return"]
    out["method"] = (
        f"mean undiscounted return over {episodes} episodes each: uniform random actions "
        f"(min) and the expert checkpoint (step {expert_step}) with its deterministic (mean) "
        "action, as RL evaluations report it (max)"
    )
    if not out["ref_max_score"] > out["ref_min_score"]:
        raise PbrlError(
            f"{run.task_id}: the expert checkpoint (step {expert_step}) returns "
            f"{out['ref_max_score']:.2f}, not more than random actions "
            f"({out['ref_min_score']:.2f}); train longer with more --steps"
        )
    write_json_atomic(cache, out)
    return out


# ---- dataset generation ----------------------------------------------------------------------
@dataclass(frozen=True)
class GenerateOptions:
    """Everything besides task/kind/seed that decides a generated dataset."""

    steps: int = DEFAULT_STEPS
    """SAC environment steps of the run the checkpoints are taken from."""
    episodes: int | None = None
    """Episodes of a rollout dataset (random/medium/expert/medium-expert); None means
    ``dataset_steps`` transitions."""
    dataset_steps: int = DEFAULT_DATASET_STEPS
    """Transitions of a rollout dataset when ``episodes`` is None."""
    config: SacConfig = field(default_factory=SacConfig)
    eval_every: int | None = None
    """Evaluate and checkpoint every this many steps (None: steps / 20, at most 10k)."""
    eval_episodes: int = DEFAULT_EVAL_EPISODES
    ref_episodes: int = DEFAULT_REF_EPISODES
    """Episodes for each reference score (at least 20 unless a test asks for fewer)."""
    root: str | None = None
    """SAC cache root (None: :func:`cache_root`)."""
    device: str = "auto"
    threads: int | None = 1
    """Torch threads on CPU while training and rolling out (None: torch's default)."""


def _rollouts(
    run: SacRun, source: str, step: int | None, n_episodes: int | None, target: int | None
) -> list[EpisodeData]:
    sampler, _ = _sampler_for(run, step)
    stream = _STREAM_ROLLOUT[source]
    info: dict[str, Any] = {"source": source}
    if step is not None:
        info["checkpoint_step"] = step
    n_envs = _MAX_LOCKSTEP_ENVS if n_episodes is None else min(n_episodes, _MAX_LOCKSTEP_ENVS)

    what = f"{run.task_id} {source} rollouts"
    if n_episodes is not None:
        progress = RateLog(log, what, n_episodes)
    else:
        progress = RateLog(log, what, int(target or 0), unit="steps")
    progress.begin()
    with env_pool(run.make_env, n_envs) as envs:
        episodes, _ = run_episodes(
            envs,
            sampler,
            lambda i: episode_seed(run.seed, stream, i),
            n_episodes=n_episodes,
            target_steps=None if n_episodes is not None else target,
            info=info,
            progress=progress,
        )
    return episodes


def _summary(episodes: Sequence[EpisodeData]) -> dict[str, Any]:
    rets = np.array([float(e.rewards.sum()) for e in episodes])
    return {
        "episodes": len(episodes),
        "steps": int(sum(e.length for e in episodes)),
        "mean_return": float(rets.mean()) if len(rets) else float("nan"),
        "std_return": float(rets.std()) if len(rets) else float("nan"),
    }


def _episodes_of_kind(
    run: SacRun, kind: str, opts: GenerateOptions, expert: EvalRecord, medium: EvalRecord
) -> list[EpisodeData]:
    n, target = opts.episodes, opts.dataset_steps
    if kind == "random":
        episodes = _rollouts(run, "random", None, n, target)
    elif kind == "medium":
        episodes = _rollouts(run, "medium", medium.step, n, target)
    elif kind == "expert":
        episodes = _rollouts(run, "expert", expert.step, n, target)
    elif kind == "medium-expert":
        half_n = None if n is None else max(n // 2, 1)
        other_n = None if n is None else max(n - n // 2, 1)
        episodes = _rollouts(run, "medium", medium.step, half_n, target // 2) + _rollouts(
            run, "expert", expert.step, other_n, target - target // 2
        )
    else:
        episodes = run.training_episodes(medium.step)
    return episodes


def generate(
    task_id: str, kind: str, *, seed: int = 0, options: GenerateOptions | None = None
) -> tuple[list[EpisodeData], dict[str, Any], dict[str, Any]]:
    """Train/resume SAC and build one dataset: (episodes, card, critic payload)."""
    opts = options or GenerateOptions()
    if kind not in KINDS:
        raise UnknownIdError(f"unknown dataset kind '{kind}' (known: {', '.join(KINDS)})")
    if opts.episodes is not None and opts.episodes <= 0:
        raise PbrlError(f"--episodes must be positive, got {opts.episodes}")
    if kind == "medium-replay" and opts.episodes is not None:
        raise PbrlError(
            "--episodes does not apply to medium-replay: it holds every training episode "
            "up to the medium checkpoint (choose the size with --steps)"
        )
    t0 = time.monotonic()
    run = SacRun(task_id, seed, opts.config, root=opts.root, device=opts.device)
    run.train(
        opts.steps,
        eval_every=opts.eval_every,
        eval_episodes=opts.eval_episodes,
        threads=opts.threads,
    )
    evals = run.evals(upto=opts.steps)
    expert, medium = select_checkpoints(evals)
    with torch_threads(opts.threads if run.device == "cpu" else None):
        refs = reference_scores(run, expert.step, opts.ref_episodes)
        episodes = _episodes_of_kind(run, kind, opts, expert, medium)
    if not episodes:
        raise PbrlError(
            f"{task_id} {kind}: no episodes (medium checkpoint at step {medium.step}; "
            "train with more --steps)"
        )

    lo, hi = refs["ref_min_score"], refs["ref_max_score"]

    def quality(rec: EvalRecord) -> dict[str, Any]:
        span = hi - lo
        return {
            "step": rec.step,
            "eval_mean_return": rec.mean_return,
            "eval_std_return": rec.std_return,
            "eval_normalized": 100 * (rec.mean_return - lo) / span if span else None,
        }

    sources = sorted({str(e.info.get("source")) for e in episodes})
    card: dict[str, Any] = {
        "generator": "pbrl.datasets.sb3_gen: stable-baselines3 SAC trained on the true reward",
        "task_id": task_id,
        "kind": kind,
        "policy_quality": {
            "expert": quality(expert),
            "medium": quality(medium),
            "rule": "expert = best evaluated checkpoint; medium = checkpoint (at or before the "
            "expert's) whose eval return is closest to a third of the expert's",
            "dataset": _summary(episodes),
            "per_source": {
                s: _summary([e for e in episodes if e.info.get("source") == s]) for s in sources
            },
        },
        "sac": {
            **opts.config.identity(),
            "learning_starts": run.learning_starts(),
            "steps": opts.steps,
            "run_dir": str(run.path),
            "eval_every": opts.eval_every or default_eval_every(opts.steps),
            "eval_episodes": opts.eval_episodes,
            "evals": [e.to_json() for e in evals],
            "device": run.device,
        },
        "horizon": run.horizon,
        "seeds": {
            "build_seed": seed,
            "sac_run_seed": seed,
            "eval_episode_seeds": run.eval_seeds(opts.eval_episodes),
            "episode_seeds": "per episode in the episode metadata ('seed'): env.reset(seed=s), "
            "actions from numpy default_rng(s)",
            "derivation": "SeedSequence([seed, stream, index]).generate_state(1)[0]; streams: "
            "train 0, eval 1, rollouts random 10 / medium 11 / expert 12, references "
            "random 20 / expert 21",
        },
        "actions": "rollouts sample the SAC policy (tanh-squashed Gaussian) and evaluation "
        "uses its mean action; medium-replay keeps SAC's own training actions (uniform random "
        "during the warm-up)",
        "reference": refs,
        "critic": {
            "file": CRITIC_FILE,
            "format": CRITIC_FORMAT,
            "step": expert.step,
            "gamma": opts.config.gamma,
            "value_estimator": "Q = mean of the twin critics; V(s) = mean of Q(s, a') over "
            "actions sampled from the actor (load_expert_value_fn, n_actions=64 by default)",
        },
        "build_seconds": round(time.monotonic() - t0, 2),
    }
    return episodes, card, critic_payload(run, expert)


def critic_payload(run: SacRun, rec: EvalRecord) -> dict[str, Any]:
    """The critic file's content (:mod:`pbrl.datasets.critic`) for an evaluated checkpoint."""
    snap = run.load_snapshot(rec.step)
    obs_space, act_space = run.spaces()
    cfg = run.config
    return {
        "format": CRITIC_FORMAT,
        "task_id": run.task_id,
        "step": rec.step,
        "obs_dim": int(np.prod(obs_space.shape)),
        "act_dim": int(np.prod(act_space.shape)),
        "action_low": [float(x) for x in np.asarray(act_space.low).ravel()],
        "action_high": [float(x) for x in np.asarray(act_space.high).ravel()],
        "net_arch": list(cfg.net_arch),
        "gamma": float(cfg.gamma),
        "reward_scale": float(cfg.reward_scale),
        "ent_coef": float(snap["ent_coef"]),
        "eval_mean_return": rec.mean_return,
        "actor": {
            k[len("actor.") :]: v for k, v in snap["policy"].items() if k.startswith("actor.")
        },
        "critic": {
            k[len("critic.") :]: v for k, v in snap["policy"].items() if k.startswith("critic.")
        },
    }


def build(
    task_id: str,
    kind: str,
    *,
    steps: int | None = None,
    episodes: int | None = None,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
    options: GenerateOptions | None = None,
) -> str:
    """Generate ``pbrl/<domain>/<task>/<kind>-v0`` into the Minari store; returns its id.

    ``steps`` (SAC steps, default 1M) and ``episodes`` override ``options``. The expert's
    critic is written to ``<dataset folder>/expert_critic.pt``.
    """

    opts = options or GenerateOptions()
    opts = replace(
        opts,
        steps=steps if steps is not None else opts.steps,
        episodes=episodes if episodes is not None else opts.episodes,
        device=device if device != "auto" else opts.device,
    )
    _check_task(task_id)
    if kind not in KINDS:
        raise UnknownIdError(f"--kind {kind}: unknown kind (known: {', '.join(KINDS)})")
    check_seed(seed, "--seed")
    resolve_device(opts.device)
    dataset_id = generated_dataset_id(task_id, kind)
    # Fail before hours of training rather than at the writer: an existing dataset, a bad
    # id, an unwritable store.
    check_new_dataset(dataset_id, overwrite)
    eps, card, critic = generate(task_id, kind, seed=seed, options=opts)
    spec = _check_task(task_id)
    env_id, env_kwargs = _env_spec_of(spec, opts.config.horizon)
    with tempfile.TemporaryDirectory(prefix="pbrl-critic-") as tmpdir:
        critic_tmp = Path(tmpdir) / CRITIC_FILE
        save_expert_critic(critic_tmp, critic)
        # The writer copies the critic into the dataset folder before its atomic rename.
        write_minari_dataset(
            dataset_id,
            eps,
            env_id=env_id,
            env_kwargs=env_kwargs,
            ref_min_score=card["reference"]["ref_min_score"],
            ref_max_score=card["reference"]["ref_max_score"],
            card=card,
            description=(
                f"pbrl generated {task_id} '{kind}' dataset from a stable-baselines3 SAC run "
                f"({opts.steps} steps, seed {seed})."
            ),
            algorithm_name=f"pbrl.sb3_gen:SAC:{kind}",
            overwrite=overwrite,
            extra_files={CRITIC_FILE: critic_tmp},
        )
    log.info("wrote %s (%d episodes) with %s", dataset_id, len(eps), CRITIC_FILE)
    return dataset_id


def _env_spec_of(spec: Any, horizon: int | None) -> tuple[str | None, dict[str, Any] | None]:
    """Gymnasium id and kwargs Minari stores so ``recover_environment`` can rebuild the env."""
    env = spec.make(seed=0)
    try:
        gym_spec = env.spec
        env_id = gym_spec.id if gym_spec is not None else None
        kwargs = dict(gym_spec.kwargs) if gym_spec is not None else {}
    finally:
        env.close()
    if horizon is not None and horizon < spec.horizon:
        kwargs["max_episode_steps"] = horizon
    return env_id, kwargs or None
