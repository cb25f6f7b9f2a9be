"""pebble: online preference-based RL on stable-baselines3's SAC (PEBBLE, QPA, REED, RUNE, SURF).

Papers: K. Lee, L. Smith, P. Abbeel, "PEBBLE: Feedback-Efficient Interactive Reinforcement
Learning via Relabeling Experience and Unsupervised Pre-training" (ICML 2021) and "B-Pref"
(NeurIPS 2021 Datasets and Benchmarks), official code rll-research/BPref; X. Hu, J. Li,
X. Zhan, Q.-S. Jia, Y.-Q. Zhang, "Query-Policy Misalignment in Preference-Based
Reinforcement Learning" (QPA, ICLR 2024), official code huxiao09/QPA.

Summary. The agent acts in the task's environment with stable-baselines3's SAC (one
gradient step per env step). The first ``seed_steps`` steps are uniform random actions;
the next ``unsup_steps`` train SAC on PEBBLE's intrinsic reward, the distance of a state to
its k-th nearest neighbour among all stored states divided by a running std. Then a
feedback session every ``session_every`` steps, until the query budget is spent: segment
pairs are drawn from the ``max_episodes`` most recent finished episodes (the first session
uniformly, later ones with the run's selector), the teacher labels them from the true
rewards, the reward model is trained on every label so far, and the whole replay buffer is
relabelled with it in place. After the first session the critic is re-initialised and
``reset_update`` gradient steps are taken (B-Pref). The reward model is a pbrl learner's
(``reward_model``: ``mr``, B-Pref's ensemble, or ``regret``'s A-hat), trained through its
``train_reward`` method.

Methods (``method``):

- ``pebble``: the above.
- ``qpa``: PEBBLE with QPA's three changes: queries drawn uniformly from the ``max_episodes``
  (QPA: 10) most recent episodes only (policy-aligned), hybrid experience replay (while the
  budget lasts, ``her_ratio`` of each SAC batch comes from the last ``max_episodes``
  episodes' transitions), a single reward network and temporal-crop augmentation (each
  labelled pair repeated ``aug_ratio`` times with a crop ``crop_min``..``crop_max`` steps
  shorter, its start drawn independently in each segment).
- ``reed``: PEBBLE with REED's reward model (Metcalf et al., CoRL 2023; apple/ml-reed),
  whose encoders and trunk also learn a self-future-consistency objective on the replay
  buffer before each reward update.
- ``sac``: SAC on the true reward (no teacher, no intrinsic phase): the reference.

Options on top of PEBBLE/QPA: RUNE's exploration bonus (``rune_beta``; Liang et al., ICLR
2022) and SURF's semi-supervised reward learning (``surf_unlabeled``; Park et al., ICLR
2022). docs/online.md has every default and where pbrl departs from the official code.

The seam into stable-baselines3 is its replay buffer class (``replay_buffer_class``):
:class:`PreferenceReplayBuffer` keeps the true reward of every transition beside SB3's
``rewards`` array, writes the current learned reward into ``rewards`` when a transition is
added, rewrites ``rewards[:pos]`` in place after each session (:meth:`relabel`), draws
batches with its own numpy Generator (QPA's hybrid replay), and serves the intrinsic reward
during the unsupervised phase by replacing the rewards of a sampled batch. The actions it
stores are SB3's, scaled to [-1, 1]; the reward model reads those.

Intrinsic reward (B-Pref ``compute_state_entropy``): r_int(s) = || s - s_(k) ||_2, s_(k) the
(k+1)-th nearest stored observation (the state itself is the first), divided by the running
std of r_int over the batches seen so far (not mean-centred; pbrl's running std is the
textbook parallel update, without B-Pref's mean-update slip, docs/online.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pbrl.datasets.base import EpisodeData, OfflineDataset
from pbrl.envs import get_task
from pbrl.envs.base import physics_state
from pbrl.envs.metaworld import get_rand_vec
from pbrl.errors import PbrlError
from pbrl.learn.api import AgentSpec, FitContext, load_agent_module, make_config
from pbrl.learn.kit import (
    bt_pair_losses,
    epochs_until_accurate,
    fused_adam,
    host_metrics,
    segment_sum,
    shuffled_epoch,
)
from pbrl.prefs import check_selector, make_preference_data, select_queries
from pbrl.teachers import SegmentPairs

ONLINE = True
METHODS = ("pebble", "qpa", "reed", "sac")
REWARD_MODELS = ("mr", "regret", "hprior")
# pbrl's names of the reward model's ensemble size, hidden widths, learning rate and batch,
# per reward learner (each keeps its own field names).
REWARD_FIELDS: dict[str, dict[str, str]] = {
    "mr": {"ensemble": "n_members", "hidden": "reward_hidden", "lr": "reward_lr",
           "batch": "reward_batch", "stop": "early_stop_acc"},
    "regret": {"ensemble": "ensemble", "hidden": "adv_hidden", "lr": "adv_lr",
               "batch": "adv_batch", "stop": "early_stop_acc"},
    "hprior": {"ensemble": "ensemble", "hidden": "rm_hidden", "lr": "rm_lr",
               "batch": "rm_batch", "stop": "early_stop_acc"},
}  # fmt: skip


# ---- pure pieces ---------------------------------------------------------------------------
def knn_distance(obs: torch.Tensor, pool: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    """(B,) Euclidean distance from each row of ``obs`` to its (k+1)-th nearest row of
    ``pool`` (which holds ``obs`` itself, at distance 0: so the k-th other neighbour)."""
    if pool.shape[0] < k + 1:
        raise PbrlError(f"k-NN reward: {pool.shape[0]} stored states, need at least {k + 1}")
    dists = torch.cat(
        [torch.cdist(obs, pool[lo : lo + chunk]) for lo in range(0, pool.shape[0], chunk)], dim=1
    )
    return torch.kthvalue(dists, k + 1, dim=1).values


class RunningStd:
    """Running variance of a stream of batches (Chan et al.'s parallel update); ``std`` uses
    the initial variance 1 with weight ``1e-4`` as B-Pref's ``TorchRunningMeanStd`` does."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).ravel()
        n = x.size
        if n == 0:
            return
        b_mean = float(x.mean())
        b_var = float(x.var(ddof=1)) if n > 1 else 0.0
        delta = b_mean - self.mean
        tot = self.count + n
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / tot
        self.mean += delta * n / tot
        self.var = m2 / tot
        self.count = tot

    @property
    def std(self) -> float:
        return math.sqrt(max(self.var, 1e-12))


def temporal_crop(
    mask: torch.Tensor, n_rep: int, shorter: tuple[int, int], generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """SURF/QPA temporal crop as masks: every pair is repeated ``n_rep`` times; each copy keeps
    a window of ``L - d`` steps, d uniform in ``shorter`` (inclusive), one length per pair
    copy, its start drawn independently for the two segments. ``mask`` is the (B, L) mask
    of full segments (all ones). Returns ``(rows (B * n_rep,), masks (2, B * n_rep, L))``:
    the index of the source pair of each copy, and the crop masks of segments a and b."""
    b, length = mask.shape
    lo, hi = shorter
    if not 0 <= lo <= hi < length:
        raise PbrlError(f"crop of {lo}..{hi} steps does not fit segments of {length}")
    dev = generator.device
    rows = torch.arange(b, device=dev).repeat(n_rep)
    keep = length - torch.randint(lo, hi + 1, (b * n_rep,), generator=generator, device=dev)
    t = torch.arange(length, device=dev)
    masks = []
    for _ in range(2):
        start = (
            torch.rand(b * n_rep, generator=generator, device=dev) * (length - keep + 1)
        ).long()
        masks.append(((t >= start[:, None]) & (t < (start + keep)[:, None])).float())
    return rows.to(mask.device), torch.stack(masks).to(mask.device)


def surf_pseudo_labels(
    score_a: torch.Tensor, score_b: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """SURF's pseudo-labels of unlabelled pairs from the model's own segment scores:
    ``(label, keep)``, label 1.0 where P(b > a) = sigmoid(S_b - S_a) > 0.5 (a tie goes to a,
    as SURF's argmax), keep 1.0 where max(P, 1 - P) >= ``threshold``."""
    p_b = torch.sigmoid(score_b - score_a)
    label = (p_b > 0.5).to(score_a.dtype)
    keep = (torch.maximum(p_b, 1.0 - p_b) >= threshold).to(score_a.dtype)
    return label, keep


@torch.no_grad()
def strict_accuracy_of(
    score_a: torch.Tensor, score_b: torch.Tensor, prefer_b: torch.Tensor
) -> float:
    """Share of non-tie pairs (over every member's rows) whose higher score is the preferred
    segment; nan when every pair is a tie."""
    keep = prefer_b != 0.5
    hit = ((score_b > score_a) == (prefer_b > 0.5))[keep]
    return float(hit.float().mean()) if hit.numel() else float("nan")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation (nan when either side is constant)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


# ---- REED's reward model -------------------------------------------------------------------
def simsiam_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """REED's self-future-consistency loss: minus the mean cosine similarity between the
    predicted next-state projection and the (stop-gradient) projection of the true next state."""
    return -F.cosine_similarity(pred, target.detach(), dim=-1).mean()


class FusionNet(nn.Module):
    """One member of REED's reward model: state and action encoders, a trunk, a tanh reward
    head; and the self-future-consistency heads that share the encoders and the trunk."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: Config) -> None:
        super().__init__()
        se, ae, h = cfg.reed_state_embed, cfg.reed_action_embed, cfg.reward_hidden
        self.state_enc = nn.Sequential(nn.Linear(obs_dim, se), nn.LeakyReLU(0.01))
        self.action_enc = nn.Sequential(nn.Linear(act_dim, ae), nn.LeakyReLU(0.01))
        layers: list[nn.Module] = []
        d = se + ae
        for w in h:
            layers += [nn.Linear(d, w), nn.LeakyReLU(0.01)]
            d = w
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(d, 1)
        c = cfg.reed_projection
        self.next_pred = nn.Linear(d, se)
        self.projector = nn.Linear(se, c)
        mid = c // 8 if c > 16 else c
        self.predictor = nn.Sequential(
            nn.Linear(c, mid, bias=False), nn.BatchNorm1d(mid), nn.ReLU(), nn.Linear(mid, c)
        )

    def features(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.trunk(torch.cat([self.state_enc(obs), self.action_enc(act)], -1))

    def reward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(self.features(obs, act))).squeeze(-1)

    def consistency(
        self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor
    ) -> torch.Tensor:
        pred = self.predictor(self.projector(self.next_pred(self.features(obs, act))))
        with torch.no_grad():
            target = self.projector(self.state_enc(next_obs))
        return simsiam_loss(pred, target)


class ReedRewardModel:
    """REED (Metcalf et al., CoRL 2023; apple/ml-reed): an ensemble of :class:`FusionNet`;
    before each reward update, one epoch of the self-future-consistency objective over the
    replay buffer (SGD), then B-Pref's Bradley-Terry training of the same networks."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: Config, device: str) -> None:
        self.cfg = cfg
        self.device = device
        self.nets = nn.ModuleList(
            [FusionNet(obs_dim, act_dim, cfg) for _ in range(cfg.ensemble)]
        ).to(device)
        self.optimizer = fused_adam(self.nets.parameters(), lr=cfg.reward_lr)

    def member_rewards(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return torch.stack([n.reward(obs, act) for n in self.nets])

    @torch.no_grad()
    def reward(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        self.nets.eval()
        o = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)
        a = torch.as_tensor(np.asarray(act, np.float32), device=self.device)
        return self.member_rewards(o, a).mean(0).cpu().numpy()

    @torch.no_grad()
    def predict_segments(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        self.nets.eval()
        o = torch.as_tensor(np.asarray(obs, np.float32), device=self.device)
        a = torch.as_tensor(np.asarray(act, np.float32), device=self.device)
        return self.member_rewards(o, a).sum(-1).cpu().numpy()

    def train_dynamics(
        self,
        obs: np.ndarray,
        act: np.ndarray,
        next_obs: np.ndarray,
        generator: torch.Generator,
    ) -> dict[str, float]:
        """One epoch of the consistency loss over ``split`` of the transitions (REED: 80%,
        batches of 128, SGD at the reward learning rate); the held-out rest is scored."""
        cfg = self.cfg
        n = obs.shape[0]
        perm = torch.randperm(n, generator=generator, device=generator.device).cpu().numpy()
        n_train = max(1, int(cfg.reed_split * n))
        tensors = [torch.as_tensor(np.asarray(x, np.float32)) for x in (obs, act, next_obs)]
        opt = torch.optim.SGD(self.nets.parameters(), lr=cfg.reward_lr)
        self.nets.train()
        losses = []
        for lo in range(0, n_train, cfg.reed_batch):
            idx = perm[lo : min(lo + cfg.reed_batch, n_train)]
            if len(idx) < 2:  # batch norm needs two rows
                continue
            o, a, o2 = (t[idx].to(self.device) for t in tensors)
            loss = sum(net.consistency(o, a, o2) for net in self.nets)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            losses.append(float(loss.detach()) / len(self.nets))  # type: ignore[union-attr]
        out = {"sfc_loss": float(np.mean(losses)) if losses else float("nan")}
        held = perm[n_train:]
        if len(held) >= 2:
            self.nets.eval()
            with torch.no_grad():
                o, a, o2 = (t[held[:4096]].to(self.device) for t in tensors)
                out["sfc_heldout_loss"] = float(
                    np.mean([float(net.consistency(o, a, o2)) for net in self.nets])
                )
        return out

    def train_reward(
        self,
        prefs: Any,
        generator: torch.Generator,
        *,
        epochs: int | None = None,
        max_updates: int | None = None,
    ) -> Iterator[dict[str, float]]:
        """B-Pref's reward training (soft-label cross-entropy summed over members, each its
        own permutation; stop after an epoch above ``early_stop_acc``) on the fusion nets."""
        cfg = self.cfg
        self.nets.train()

        def step(idx: torch.Tensor) -> dict[str, float]:
            sa = torch.stack([segment_sum(n.reward(prefs.obs_a[i], prefs.act_a[i]), prefs.mask_a[i])
                              for n, i in zip(self.nets, idx, strict=True)])  # fmt: skip
            sb = torch.stack([segment_sum(n.reward(prefs.obs_b[i], prefs.act_b[i]), prefs.mask_b[i])
                              for n, i in zip(self.nets, idx, strict=True)])  # fmt: skip
            y = torch.stack([prefs.prefer_b[i] for i in idx])
            loss = bt_pair_losses(sa, sb, y, "softmax").mean(-1).sum()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            return {
                "reward_loss": float(loss.detach()),
                "reward_acc": strict_accuracy_of(sa, sb, y),
            }

        yield from epochs_until_accurate(
            prefs.size,
            cfg.reward_batch,
            generator,
            self.device,
            step,
            epochs=1 if epochs is None else epochs,
            stop_acc=cfg.early_stop_acc,
            max_updates=max_updates,
            members=len(self.nets),
        )

    def state_dict(self) -> dict[str, Any]:
        return {"nets": self.nets.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])


# ---- the replay buffer seam ----------------------------------------------------------------
def physics_state_wrapper() -> type:
    """:class:`PhysicsStateInfo`, defined on first use (gymnasium's Wrapper)."""
    import gymnasium as gym

    class PhysicsStateInfo(gym.Wrapper):  # type: ignore[misc, valid-type]
        """Puts the physics state before and after each step, and the episode's render
        information (MetaWorld's task vector), into the step's info for the replay buffer:
        ``info["pbrl_state"] = (qpos, qvel, next_qpos, next_qvel)``,
        ``info["pbrl_episode"]`` a dict. Only a run whose teacher renders segments (people
        in the labeling UI) wraps its environment so."""

        def __init__(self, env: Any, task_id: str) -> None:
            super().__init__(env)
            self.rand_vec_key = get_task(task_id).extra.get("rand_vec_key")
            self.state: tuple[np.ndarray, np.ndarray] | None = None
            self.episode: dict[str, Any] = {}

        def reset(self, **kwargs: Any) -> Any:
            obs, info = self.env.reset(**kwargs)
            self.state = physics_state(self.env)
            self.episode = {}
            if self.rand_vec_key is not None:
                rv = get_rand_vec(self.env)
                self.episode = {str(self.rand_vec_key): [float(x) for x in rv]}
            return obs, info

        def step(self, action: Any) -> Any:
            obs, reward, term, trunc, info = self.env.step(action)
            before = self.state if self.state is not None else physics_state(self.env)
            self.state = physics_state(self.env)
            info = {**info, "pbrl_state": (*before, *self.state), "pbrl_episode": self.episode}
            return obs, reward, term, trunc, info

    return PhysicsStateInfo


def _replay_buffer_class() -> type:
    """:class:`PreferenceReplayBuffer`, defined on first use (stable-baselines3 is imported
    only when an online agent is built)."""
    from stable_baselines3.common.buffers import ReplayBuffer

    class PreferenceReplayBuffer(ReplayBuffer):  # type: ignore[misc, valid-type]
        """SB3's replay buffer with the true rewards kept aside, learned rewards written in,
        episode boundaries tracked, and batches drawn by its own Generator."""

        def __init__(self, *args: Any, seed: int = 0, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if self.n_envs != 1:
                raise PbrlError("the online agent runs one environment")
            self.true_rewards = np.zeros(self.buffer_size, dtype=np.float32)
            self.reward_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
            self.use_true_reward = False
            # RUNE: the reward model's disagreement per transition, added to the batch's
            # rewards with weight bonus_init * (1 - bonus_decay) ** (env steps so far)
            self.bonus = np.zeros(self.buffer_size, dtype=np.float32)
            self.bonus_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
            self.bonus_init = 0.0
            self.bonus_decay = 0.0
            self.intrinsic_k = 0  # > 0: serve the k-NN intrinsic reward in sample()
            self.ent_stats = RunningStd()
            self.recent_ratio = 0.0  # QPA's hybrid replay: share of a batch from recent steps
            self.recent_steps = 0
            self.rng = np.random.default_rng(seed)
            self.episodes: list[tuple[int, int]] = []  # (start, length) of finished episodes
            self._ep_start = 0
            # physics state per transition (before, after) and each finished episode's render
            # information, kept when the environment reports them (PhysicsStateInfo)
            self.qpos: np.ndarray | None = None
            self.qvel: np.ndarray | None = None
            self.next_qpos: np.ndarray | None = None
            self.next_qvel: np.ndarray | None = None
            self.episode_infos: list[dict[str, Any]] = []

        def add(self, obs, next_obs, action, reward, done, infos) -> None:  # type: ignore[override]
            if self.full or self.pos + 1 >= self.buffer_size:
                raise PbrlError("the online replay buffer is full (it holds the whole run)")
            pos = self.pos
            self.true_rewards[pos] = float(np.asarray(reward).reshape(-1)[0])
            if self.use_true_reward:
                stored = np.asarray(reward, np.float32)
            elif self.reward_fn is not None:
                o = np.asarray(obs, np.float32).reshape(1, -1)
                a = np.asarray(action, np.float32).reshape(1, -1)
                stored = np.asarray(self.reward_fn(o, a), np.float32).reshape(1)
            else:
                stored = np.zeros(1, np.float32)
            if self.bonus_fn is not None:
                o = np.asarray(obs, np.float32).reshape(1, -1)
                a = np.asarray(action, np.float32).reshape(1, -1)
                self.bonus[pos] = float(np.asarray(self.bonus_fn(o, a)).reshape(-1)[0])
            info = infos[0] if infos else {}
            state = info.get("pbrl_state")
            if state is not None:
                if self.qpos is None:
                    n = self.buffer_size
                    self.qpos, self.qvel, self.next_qpos, self.next_qvel = (
                        np.zeros((n, np.asarray(x).shape[0]), np.float64) for x in state
                    )
                for store, x in zip(
                    (self.qpos, self.qvel, self.next_qpos, self.next_qvel), state, strict=True
                ):
                    store[pos] = x
            super().add(obs, next_obs, action, stored, done, infos)
            if bool(np.asarray(done).reshape(-1)[0]):
                self.episodes.append((self._ep_start, pos + 1 - self._ep_start))
                self.episode_infos.append(dict(info.get("pbrl_episode") or {}))
                self._ep_start = pos + 1

        def sample(self, batch_size: int, env: Any = None) -> Any:
            n = self.pos
            if self.recent_ratio > 0 and self.recent_steps > 0:
                n_recent = int(round(self.recent_ratio * batch_size))
                lo = max(0, n - self.recent_steps)
                inds = np.concatenate(
                    [
                        self.rng.integers(0, n, batch_size - n_recent),
                        self.rng.integers(lo, n, n_recent),
                    ]
                )
            else:
                inds = self.rng.integers(0, n, batch_size)
            samples = self._get_samples(inds, env)
            if self.bonus_init > 0 and self.bonus_fn is not None and self.intrinsic_k == 0:
                beta = self.bonus_init * (1.0 - self.bonus_decay) ** n
                extra = torch.as_tensor(beta * self.bonus[inds], dtype=samples.rewards.dtype)
                samples = samples._replace(
                    rewards=samples.rewards + extra.reshape(-1, 1).to(samples.rewards.device)
                )
            if self.intrinsic_k > 0:
                pool = torch.as_tensor(self.observations[:n, 0], dtype=torch.float32)
                pool = pool.to(samples.observations.device)
                r = knn_distance(samples.observations.float(), pool, self.intrinsic_k)
                self.ent_stats.update(r.cpu().numpy())
                r = (r / self.ent_stats.std).reshape(-1, 1).to(samples.rewards.dtype)
                samples = samples._replace(rewards=r)
            return samples

        def relabel(
            self,
            fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
            chunk: int = 8192,
            *,
            bonus: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        ) -> None:
            """Rewrite every stored reward (rows ``[0, pos)``) with ``fn(obs, act)``, and the
            RUNE bonus with ``bonus(obs, act)`` when given; nothing else."""
            for lo in range(0, self.pos, chunk):
                hi = min(self.pos, lo + chunk)
                o = self.observations[lo:hi, 0].astype(np.float32)
                a = self.actions[lo:hi, 0].astype(np.float32)
                self.rewards[lo:hi, 0] = np.asarray(fn(o, a), np.float32).reshape(-1)
                if bonus is not None:
                    self.bonus[lo:hi] = np.asarray(bonus(o, a), np.float32).reshape(-1)

        def episode_records(self, max_episodes: int) -> list[EpisodeData]:
            """The episodes of :meth:`episode_view` as records of T + 1 observations (and
            physics states, when the environment reported them: PhysicsStateInfo)."""
            out = []
            first = len(self.episodes) - len(self.episodes[-max_episodes:])
            for e, (s, n) in enumerate(self.episodes[-max_episodes:], start=first):
                rows = np.arange(s, s + n)
                done = self.dones[rows, 0] > 0
                timeout = done & (self.timeouts[rows, 0] > 0)
                states: list[np.ndarray | None] = [None, None]
                if self.qpos is not None:
                    states = [
                        np.concatenate([now[rows], after[rows[-1:]]])
                        for now, after in ((self.qpos, self.next_qpos),
                                           (self.qvel, self.next_qvel))
                    ]  # fmt: skip
                out.append(
                    EpisodeData(
                        observations=np.concatenate(
                            [self.observations[rows, 0], self.next_observations[rows[-1:], 0]]
                        ).astype(np.float32),
                        actions=self.actions[rows, 0].astype(np.float32),
                        rewards=self.true_rewards[rows].copy(),
                        terminations=done & ~timeout,
                        truncations=timeout,
                        qpos=states[0],
                        qvel=states[1],
                        info={**self.episode_infos[e], "buffer_start": int(s)},
                    )
                )
            return out

        def episode_view(self, max_episodes: int, task_id: str | None) -> OfflineDataset:
            """The ``max_episodes`` most recent finished episodes, with their true rewards
            (and physics states and render information when they were kept)."""
            eps = self.episodes[-max_episodes:]
            if not eps:
                raise PbrlError("no finished episode to ask about yet")
            rows = np.concatenate([np.arange(s, s + n) for s, n in eps])
            lengths = np.array([n for _, n in eps], np.int64)
            done = self.dones[rows, 0] > 0
            timeout = done & (self.timeouts[rows, 0] > 0)
            kept = self.qpos is not None
            return OfflineDataset(
                id="online-buffer",
                task_id=task_id,
                observations=self.observations[rows, 0].astype(np.float32),
                actions=self.actions[rows, 0].astype(np.float32),
                rewards=self.true_rewards[rows].copy(),
                next_observations=self.next_observations[rows, 0].astype(np.float32),
                terminals=done & ~timeout,
                timeouts=timeout,
                starts=np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64),
                lengths=lengths,
                qpos=self.qpos[rows] if kept else None,  # type: ignore[index]
                qvel=self.qvel[rows] if kept else None,  # type: ignore[index]
                episode_info=tuple(self.episode_infos[-len(eps) :]) if kept else (),
            )

    return PreferenceReplayBuffer


# ---- agent ---------------------------------------------------------------------------------
@dataclass
class Config:
    """Online PbRL options: the method, the feedback schedule, the reward model, SAC."""

    method: str = "pebble"
    """pebble | qpa | sac (SAC on the true reward, the reference)."""
    reward_model: str = "mr"
    """The learner whose reward model is trained online: mr (B-Pref's ensemble) | regret."""
    selector: str = ""
    """Query selector after the first session ('' = the run's; QPA's preset: uniform)."""
    queries: int = 50
    """Queries per feedback session (B-Pref's reward_batch; the last one shrinks to the budget)."""
    sessions: int = 0
    """When > 0: queries per session = budget / sessions instead of ``queries`` (B-Pref's
    scripts ask budget / 10 per session on DMC and budget / 200 on MetaWorld)."""
    session_every: int = 5000
    """Env steps between feedback sessions (B-Pref's num_interact)."""
    max_unanswered: int = 0
    """A teacher who answers later (people in the labeling UI): the most posted queries left
    unanswered at once; a session posts only what fits under it (0: one session's queries)."""
    seed_steps: int = 1000
    """Uniform random actions before any SAC update."""
    unsup_steps: int = 9000
    """Steps of SAC on the k-NN intrinsic reward before the first session (0: none)."""
    knn_k: int = 5
    """k of the k-NN intrinsic reward."""
    max_episodes: int = 100
    """Recent finished episodes the queries are drawn from (B-Pref 100; QPA 10)."""
    pool_factor: int = 10
    """Candidate pool of the ensemble / k-center selectors, as a multiple of the queries."""
    reward_epochs: int = 50
    """Epochs over all labels per session (B-Pref's reward_update: 50 DMC, 10 MetaWorld)."""
    reward_batch: int = 128
    """Labelled pairs per reward minibatch (B-Pref: 128)."""
    reward_lr: float = 3e-4
    """Adam learning rate of the reward model."""
    ensemble: int = 3
    """Reward-model ensemble size (B-Pref 3; QPA 1)."""
    reward_hidden: tuple[int, ...] = (256, 256, 256)
    """Reward-model hidden widths."""
    early_stop_acc: float = 0.97
    """Stop a session's reward training after an epoch above this training accuracy."""
    aug_ratio: int = 0
    """QPA/SURF temporal-crop copies of each labelled pair (0: no augmentation; QPA DMC 20)."""
    crop_min: int = 5
    """A crop is crop_min..crop_max steps shorter than the segment (QPA: H-15..H-5)."""
    crop_max: int = 15
    """See crop_min."""
    her_ratio: float = 0.0
    """QPA's hybrid replay: share of each SAC batch from the last max_episodes episodes while
    the budget lasts (QPA 0.5)."""
    surf_unlabeled: int = 0
    """SURF: unlabelled pairs drawn per session, as a multiple of its queries (0: off; SURF
    10). Needs reward_model mr and no aug_ratio."""
    surf_threshold: float = 0.95
    """SURF: confidence a pseudo-label needs (max of P(b > a), P(a > b))."""
    surf_lambda: float = 1.0
    """SURF: weight of the pseudo-label loss."""
    surf_mu: int = 1
    """SURF: unlabelled pairs per labelled pair in a minibatch."""
    surf_window: int = 5
    """SURF: steps stored on each side of a segment for its temporal crops (SURF's
    dataaug_window); crops are segment +- surf_crop steps long."""
    surf_crop: int = 5
    """SURF: crop_range (see surf_window)."""
    rune_beta: float = 0.0
    """RUNE's exploration bonus: SAC's reward is the model's mean plus rune_beta * (1 -
    rune_decay) ** env_step times the ensemble's std (0: off; RUNE 0.05, decay 1e-5)."""
    rune_decay: float = 1e-5
    """See rune_beta."""
    reset_update: int = 100
    """SAC gradient steps right after the first session's critic reset (B-Pref)."""
    wm_first_updates: int = 1000
    """hprior: world-model updates on replay-buffer windows before the first session."""
    wm_updates: int = 200
    """hprior: world-model updates before every later session (docs/online.md)."""
    reed_state_embed: int = 20
    """REED: state embedding width (its reward model's state encoder)."""
    reed_action_embed: int = 10
    """REED: action embedding width."""
    reed_projection: int = 256
    """REED: width of the projected next-state embedding the consistency loss compares."""
    reed_batch: int = 128
    """REED: transitions per consistency minibatch."""
    reed_split: float = 0.8
    """REED: share of the replay buffer the consistency epoch trains on (the rest is scored)."""
    sac_hidden: tuple[int, ...] = (256, 256, 256)
    """SAC actor and critic hidden widths (B-Pref MetaWorld 3 x 256; DMC 2 x 1024)."""
    sac_batch: int = 512
    """SAC minibatch (B-Pref MetaWorld 512; DMC 1024)."""
    sac_lr: float = 3e-4
    """Learning rate of SB3's actor, critic and temperature (SB3 has one)."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak rate of the target critic."""
    target_every: int = 2
    """Gradient steps between target-critic updates (B-Pref: 2)."""
    init_alpha: float = 0.1
    """Initial SAC temperature (learned; B-Pref 0.1)."""


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "qpa": {
        "method": "qpa",
        "selector": "uniform",
        "max_episodes": 10,
        "her_ratio": 0.5,
        "ensemble": 1,
        "aug_ratio": 20,
    },
    "reed": {"method": "reed", "reward_batch": 100},
    "rune": {"rune_beta": 0.05, "rune_decay": 1e-5},
    "surf": {"surf_unlabeled": 10},
    "sac": {"method": "sac"},
    # CPU scale (docs/online.md): smaller networks and a shorter intrinsic phase.
    "quick": {
        "sac_hidden": (64, 64),
        "sac_batch": 128,
        "reward_hidden": (64, 64),
        "unsup_steps": 2000,
        "reward_epochs": 20,
    },
}

TEST_OVERRIDES: dict[str, Any] = {
    "sac_hidden": (16, 16),
    "sac_batch": 16,
    "reward_hidden": (16, 16),
    "reward_batch": 8,
    "reward_epochs": 2,
    "seed_steps": 20,
    "unsup_steps": 20,
    "session_every": 40,
    "queries": 4,
    "reset_update": 2,
    "reed_projection": 16,
    "wm_first_updates": 3,
    "wm_updates": 2,
}


def check_config(cfg: Config) -> None:
    """Every choice and count of ``cfg``, before anything is built."""
    if cfg.method not in METHODS:
        raise PbrlError(f"--agent.method: unknown method '{cfg.method}' ({' | '.join(METHODS)})")
    if cfg.reward_model not in REWARD_MODELS:
        raise PbrlError(
            f"--agent.reward_model: unknown reward model '{cfg.reward_model}' "
            f"({' | '.join(REWARD_MODELS)})"
        )
    if cfg.method == "reed" and cfg.reward_model != "mr":
        raise PbrlError(
            f"--agent.reward_model {cfg.reward_model}: method 'reed' trains its own reward "
            "model (REED's); leave reward_model at its default"
        )
    if not 0.0 < cfg.reed_split <= 1.0:
        raise PbrlError(f"--agent.reed_split: must be in (0, 1], got {cfg.reed_split}")
    if cfg.selector:
        check_selector(cfg.selector, has_ensemble=True)
    for name in ("queries", "session_every", "max_episodes", "pool_factor", "reward_epochs",
                 "reward_batch", "ensemble", "sac_batch", "knn_k", "target_every"):  # fmt: skip
        if getattr(cfg, name) < 1:
            raise PbrlError(f"--agent.{name}: must be at least 1, got {getattr(cfg, name)}")
    for name in ("seed_steps", "unsup_steps", "aug_ratio", "reset_update", "sessions",
                 "wm_first_updates", "wm_updates", "max_unanswered"):  # fmt: skip
        if getattr(cfg, name) < 0:
            raise PbrlError(f"--agent.{name}: must be 0 or more, got {getattr(cfg, name)}")
    if cfg.surf_unlabeled < 0 or cfg.surf_mu < 1 or cfg.surf_window < 0 or cfg.surf_crop < 0:
        raise PbrlError("--agent.surf_*: counts must be >= 0 (surf_mu >= 1)")
    if cfg.surf_unlabeled > 0 and (cfg.method not in ("pebble", "qpa") or cfg.reward_model != "mr"):
        raise PbrlError(
            "--agent.surf_unlabeled: SURF trains B-Pref's ensemble (reward_model mr) under "
            f"PEBBLE or QPA, not method '{cfg.method}' with reward_model '{cfg.reward_model}'"
        )
    if cfg.surf_unlabeled > 0 and cfg.aug_ratio > 0:
        raise PbrlError("--agent.surf_unlabeled: SURF crops its own segments; set aug_ratio 0")
    if cfg.surf_crop > 2 * cfg.surf_window:
        raise PbrlError(
            f"--agent.surf_crop {cfg.surf_crop}: at most 2 x surf_window ({2 * cfg.surf_window})"
        )
    if cfg.rune_beta < 0 or not 0.0 <= cfg.rune_decay < 1.0:
        raise PbrlError(
            f"--agent.rune_beta / rune_decay: need beta >= 0 and 0 <= decay < 1, got "
            f"{cfg.rune_beta}, {cfg.rune_decay}"
        )
    if not 0.0 <= cfg.her_ratio < 1.0:
        raise PbrlError(f"--agent.her_ratio: must be in [0, 1), got {cfg.her_ratio}")
    if not 0 <= cfg.crop_min <= cfg.crop_max:
        raise PbrlError(f"--agent.crop_min/crop_max: need 0 <= min <= max, got {cfg.crop_min}, "
                        f"{cfg.crop_max}")  # fmt: skip


def session_queries(cfg: Config, budget: int) -> int:
    """Queries per feedback session: ``queries``, or ``budget // sessions`` when set."""
    return budget // cfg.sessions if cfg.sessions > 0 else cfg.queries


def check_run(cfg: Config, ctx: FitContext) -> None:
    """The run's schedule against ``cfg``: a budget of at least one session, a selector that
    exists, segments that fit the crop; raised before anything trains."""
    if ctx.task_id is None:
        raise PbrlError("the online agent needs a task (--task)")
    if cfg.method == "sac":
        return
    if ctx.teacher is None and ctx.queue is None:
        raise PbrlError(f"method '{cfg.method}' asks a teacher: pass --teacher")
    if ctx.queue is not None and cfg.surf_unlabeled > 0:
        raise PbrlError(
            "--agent.surf_unlabeled: SURF draws its unlabelled pairs beside each session's "
            "labelled ones; it does not run with a teacher who answers later (--teacher ui:...)"
        )
    per = session_queries(cfg, ctx.budget)
    if per < 1 or ctx.budget < per:
        raise PbrlError(
            f"--budget {ctx.budget}: below one feedback session of "
            f"{cfg.queries if not cfg.sessions else f'budget / {cfg.sessions}'} queries "
            f"(--agent.{'sessions' if cfg.sessions else 'queries'})"
        )
    check_selector(cfg.selector or ctx.selector, has_ensemble=True)
    if cfg.aug_ratio > 0 and cfg.crop_max >= ctx.segment:
        raise PbrlError(f"--agent.crop_max {cfg.crop_max}: must be shorter than the segment "
                        f"({ctx.segment})")  # fmt: skip
    first = cfg.seed_steps + cfg.unsup_steps
    if first >= ctx.steps:
        raise PbrlError(
            f"--steps {ctx.steps}: the first feedback session comes after {first} steps "
            "(seed_steps + unsup_steps); give more steps"
        )


def _cat_batches(a: Any, b: Any) -> Any:
    """Two PreferenceBatches as one (``a`` may be None)."""
    if a is None:
        return b
    return type(b)(**{k: torch.cat([getattr(a, k), v]) for k, v in b.__dict__.items()})


class Agent:
    """SB3 SAC acting online, with a reward model trained from a teacher's answers."""

    requires_true_reward = False
    requires_preferences = False

    def __init__(self, cfg: Config, spec: AgentSpec) -> None:
        check_config(cfg)
        self.cfg = cfg
        # Whether runs of this agent ask a teacher (the runner plans teacher x budget rows).
        self.asks_teacher = cfg.method != "sac"
        self.spec = spec
        self.device = spec.device
        self.reward_model: Any
        if cfg.method == "reed":
            self.reward_model = ReedRewardModel(spec.obs_dim, spec.act_dim, cfg, spec.device)
        else:
            self.reward_model = self._pbrl_reward_model(cfg, spec)
        self.model: Any = None
        self.labels: Any = None  # PreferenceBatch of every answered query so far
        self.unlabeled: Any = None  # SURF's unlabelled pairs (prefer_b unused)
        self.queries_used = 0
        self.sessions = 0
        # a teacher who answers later: posted pairs not answered yet, with the view they index
        self.pending: list[dict[str, Any]] = []
        self.reward_trainings = 0

    @staticmethod
    def _pbrl_reward_model(cfg: Config, spec: AgentSpec) -> Any:
        """The reward model of a pbrl learner (``reward_model``), built through the plug-in
        API with this agent's ensemble size, widths, learning rate, batch and stop rule."""
        mod = load_agent_module(cfg.reward_model)
        names = REWARD_FIELDS[cfg.reward_model]
        ensemble = cfg.ensemble
        rm_cfg = make_config(
            mod,
            None,
            {
                names["ensemble"]: ensemble,
                names["hidden"]: tuple(cfg.reward_hidden),
                names["lr"]: cfg.reward_lr,
                names["batch"]: cfg.reward_batch,
                names["stop"]: cfg.early_stop_acc,
            },
        )
        return mod.Agent(rm_cfg, spec)

    # -- SB3 -------------------------------------------------------------------------------
    def _build(self, buffer_size: int, seed: int, record_state: bool = False) -> None:
        from stable_baselines3 import SAC

        cfg = self.cfg
        if self.spec.task_id is None:
            raise PbrlError("the online agent needs a task (--task)")
        env = get_task(self.spec.task_id).make(seed=seed)
        if record_state:
            env = physics_state_wrapper()(env, self.spec.task_id)
        self.model = SAC(
            "MlpPolicy",
            env,
            learning_rate=cfg.sac_lr,
            buffer_size=buffer_size,
            learning_starts=cfg.seed_steps,
            batch_size=cfg.sac_batch,
            tau=cfg.tau,
            gamma=cfg.gamma,
            train_freq=1,
            gradient_steps=1,
            ent_coef=f"auto_{cfg.init_alpha}",
            target_update_interval=cfg.target_every,
            replay_buffer_class=_replay_buffer_class(),
            replay_buffer_kwargs={"seed": seed},
            policy_kwargs={"net_arch": list(cfg.sac_hidden)},
            seed=seed,
            device=self.device,
            verbose=0,
        )

    @property
    def buffer(self) -> Any:
        return self.model.replay_buffer

    def reset_critic(self) -> None:
        """New critic weights (PyTorch default init), its target copied, a fresh optimizer;
        the actor and the temperature are kept (B-Pref's ``reset_critic``)."""
        policy = self.model.policy
        for m in policy.critic.modules():
            if isinstance(m, torch.nn.Linear):
                m.reset_parameters()
        policy.critic_target.load_state_dict(policy.critic.state_dict())
        policy.critic.optimizer = policy.optimizer_class(
            policy.critic.parameters(), lr=self.model.lr_schedule(1), **policy.optimizer_kwargs
        )

    # -- the reward model ------------------------------------------------------------------
    def reward(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """The reward model's learned reward of (obs, SB3-scaled action) rows."""
        return np.asarray(self.reward_model.reward(obs, act), np.float32)

    def predict_segments(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        return self.reward_model.predict_segments(obs, act)

    def reward_std(self, obs: np.ndarray, act: np.ndarray) -> np.ndarray:
        """Population std over the reward model's members of each (obs, act) row's reward
        (RUNE's bonus; 0 for a single-member model)."""
        per_member = self.predict_segments(np.asarray(obs)[:, None], np.asarray(act)[:, None])
        return np.asarray(per_member, np.float64).std(axis=0).astype(np.float32)

    def _augment(self, batch: Any, generator: torch.Generator) -> Any:
        cfg = self.cfg
        if cfg.aug_ratio <= 0:
            return batch
        rows, masks = temporal_crop(
            batch.mask_a, cfg.aug_ratio, (cfg.crop_min, cfg.crop_max), generator
        )
        return dataclasses.replace(
            batch.index(rows),
            mask_a=batch.mask_a[rows] * masks[0],
            mask_b=batch.mask_b[rows] * masks[1],
        )

    @staticmethod
    def _central(batch: Any, w: int) -> Any:
        """``batch`` with its masks cut to the central window (SURF's stored margins off)."""
        if w == 0:
            return batch
        keep = torch.zeros_like(batch.mask_a)
        keep[:, w:-w] = 1.0
        return dataclasses.replace(batch, mask_a=batch.mask_a * keep, mask_b=batch.mask_b * keep)

    def _surf_train(self, ctx: FitContext, segment: int) -> Iterator[dict[str, float]]:
        """SURF (Park et al., ICLR 2022; alinlab/SURF) on B-Pref's ensemble: every minibatch,
        per member, the soft-label cross-entropy of temporally cropped labelled pairs plus
        ``surf_lambda`` times the cross-entropy of cropped unlabelled pairs against the
        member's own confident pseudo-labels (from the uncropped central windows); crops are
        segment +- ``surf_crop`` steps, one length per pair, starts drawn independently.
        Epochs over the labels as PEBBLE's loop, stopping above ``early_stop_acc``."""
        cfg = self.cfg
        rm = self.reward_model
        lab, unl = self.labels, self.unlabeled
        m = cfg.ensemble
        w = cfg.surf_window
        gen = ctx.generator
        if rm.optimizer is None:
            rm.optimizer = fused_adam(rm.reward_net.parameters(), lr=cfg.reward_lr)
        opt = rm.optimizer
        full = int(lab.mask_a.shape[1])
        crop = (2 * w - cfg.surf_crop, 2 * w + cfg.surf_crop)
        u_stream: list[torch.Tensor] = []

        def crops(b: int) -> torch.Tensor:
            _, masks = temporal_crop(torch.ones(m * b, full, device=ctx.device), 1, crop, gen)
            return masks.reshape(2, m, b, full)

        def unlabelled_rows(b: int) -> torch.Tensor:
            while sum(x.shape[1] for x in u_stream) < b:
                u_stream.extend(shuffled_epoch(unl.size, unl.size, gen, ctx.device, members=m))
            rows = torch.cat(u_stream, dim=1)
            u_stream[:] = [rows[:, b:]] if rows.shape[1] > b else []
            return rows[:, :b]

        central = torch.zeros(full, device=ctx.device)
        central[w : full - w] = 1.0

        def step(idx: torch.Tensor) -> dict[str, float]:
            b = idx.shape[1]
            ca = crops(b)
            ra = rm.member_rewards(lab.obs_a[idx], lab.act_a[idx], True)
            rb = rm.member_rewards(lab.obs_b[idx], lab.act_b[idx], True)
            sa = (ra * lab.mask_a[idx] * ca[0]).sum(-1)
            sb = (rb * lab.mask_b[idx] * ca[1]).sum(-1)
            y = lab.prefer_b[idx]
            loss_l = bt_pair_losses(sa, sb, y, "softmax").mean(-1)
            uidx = unlabelled_rows(b * cfg.surf_mu)
            cu = crops(uidx.shape[1])
            ua = rm.member_rewards(unl.obs_a[uidx], unl.act_a[uidx], True)
            ub = rm.member_rewards(unl.obs_b[uidx], unl.act_b[uidx], True)
            with torch.no_grad():
                pseudo, keep = surf_pseudo_labels(
                    (ua * unl.mask_a[uidx] * central).sum(-1),
                    (ub * unl.mask_b[uidx] * central).sum(-1),
                    cfg.surf_threshold,
                )
            su_a = (ua * unl.mask_a[uidx] * cu[0]).sum(-1)
            su_b = (ub * unl.mask_b[uidx] * cu[1]).sum(-1)
            loss_u = (bt_pair_losses(su_a, su_b, pseudo, "softmax") * keep).mean(-1)
            loss = (loss_l + cfg.surf_lambda * loss_u).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {
                "reward_loss": float(loss_l.detach().mean()),
                "reward_acc": strict_accuracy_of(sa, sb, y),
                "surf_loss_u": float(loss_u.detach().mean()),
                "surf_pseudo_frac": float(keep.mean()),
            }

        yield from epochs_until_accurate(
            lab.size,
            cfg.reward_batch,
            gen,
            ctx.device,
            step,
            epochs=cfg.reward_epochs,
            stop_acc=cfg.early_stop_acc,
            members=m,
        )

    def heldout_accuracy(self, batch: Any) -> float:
        """Accuracy of the current reward model (ensemble mean) on ``batch``, ties excluded."""
        keep = (batch.prefer_b != 0.5).cpu().numpy()
        if not keep.any():
            return float("nan")
        obs = torch.cat([batch.obs_a, batch.obs_b]).cpu().numpy()
        act = torch.cat([batch.act_a, batch.act_b]).cpu().numpy()
        ret = self.predict_segments(obs, act).mean(0)
        n = batch.size
        pred_b = ret[n:] > ret[:n]
        truth_b = batch.prefer_b.cpu().numpy() > 0.5
        return float(np.mean((pred_b == truth_b)[keep]))

    def _select(
        self, ctx: FitContext, rng: np.random.Generator, n: int, w: int
    ) -> tuple[OfflineDataset, np.ndarray, np.ndarray]:
        """This session's ``n`` pairs from the recent episodes' view: uniform in the first
        session, the run's selector after it; ``w`` extra steps on each side (SURF)."""
        view = self.buffer.episode_view(self.cfg.max_episodes, ctx.task_id)
        selector = "uniform" if self.sessions == 0 else (self.cfg.selector or ctx.selector)
        refs_a, refs_b = select_queries(
            view,
            n,
            ctx.segment + 2 * w,
            rng,
            selector=selector,
            ensemble=self if selector != "uniform" else None,
            pool_factor=self.cfg.pool_factor,
        )
        return view, refs_a, refs_b

    def _add_labels(self, new: Any, w: int, out: dict[str, float]) -> None:
        """Append a batch of answered pairs to the labels, measuring the current model's
        accuracy on them first (held out: it has not trained on them)."""
        if self.labels is not None:
            out["reward_acc_heldout"] = self.heldout_accuracy(self._central(new, w))
        self.labels = _cat_batches(self.labels, new)

    def queue_session(self, ctx: FitContext, rng: np.random.Generator) -> dict[str, float]:
        """A session with a teacher who answers later (``ctx.queue``): read the answers that
        arrived since the last session, post new pairs while the budget and the cap on
        unanswered pairs allow, and train and relabel when there are new labels. The agent
        never waits: it goes back to acting right after."""
        cfg, queue = self.cfg, ctx.queue
        out: dict[str, float] = {}
        arrived = 0
        for item in self.pending:
            got = queue.answers(list(item["ids"]))
            done = [i for i, qid in enumerate(item["ids"]) if qid in got]
            if not done:
                continue
            pb = np.array([np.nan if got[item["ids"][i]] is None else got[item["ids"][i]]
                           for i in done], np.float32)  # fmt: skip
            data = make_preference_data(
                item["view"].id,
                item["refs_a"][done],
                item["refs_b"][done],
                np.nan_to_num(pb, nan=0.5),
                np.isnan(pb),
                labeler=f"teacher:{queue.spec()}",
            )
            arrived += len(done)
            if len(data.answered().prefer_b):
                self._add_labels(data.answered().to_batch(item["view"], ctx.device), 0, out)
            keep = np.setdiff1d(np.arange(len(item["ids"])), done)
            item.update(
                ids=[item["ids"][i] for i in keep],
                refs_a=item["refs_a"][keep],
                refs_b=item["refs_b"][keep],
            )
        self.pending = [item for item in self.pending if item["ids"]]
        waiting = sum(len(item["ids"]) for item in self.pending)
        cap = cfg.max_unanswered or session_queries(cfg, ctx.budget)
        n = min(session_queries(cfg, ctx.budget), ctx.budget - self.queries_used, cap - waiting)
        if n > 0:
            view, refs_a, refs_b = self._select(ctx, rng, n, 0)
            episodes = self.buffer.episode_records(cfg.max_episodes)
            ids = [int(i) for i in queue.post(episodes, refs_a, refs_b)]
            if len(ids) != n:
                raise PbrlError(f"{queue.spec()}: posted {n} pairs, got {len(ids)} ids back")
            self.pending.append({"view": view, "refs_a": refs_a, "refs_b": refs_b, "ids": ids})
            self.queries_used += n
            self.sessions += 1
            waiting += n
        out.update(session_answered=float(arrived), queries_unanswered=float(waiting))
        if arrived:
            out.update(self._learn(ctx, rng))
        return out

    def session(self, ctx: FitContext, rng: np.random.Generator) -> dict[str, float]:
        """One feedback session: select, ask, train the reward model, relabel the buffer."""
        if ctx.queue is not None:
            return self.queue_session(ctx, rng)
        cfg = self.cfg
        n = min(session_queries(cfg, ctx.budget), ctx.budget - self.queries_used)
        surf = cfg.surf_unlabeled > 0
        w = cfg.surf_window if surf else 0
        # SURF stores w more steps on each side of a segment (its crops' room); the teacher
        # and the selectors see the segment itself, the central window
        view, refs_a, refs_b = self._select(ctx, rng, n, w)
        central = np.array([0, w, -2 * w], dtype=np.int64)
        oracle = ctx.teacher.prepare(view, ctx.segment)
        prefer_b, answered = oracle.label(
            SegmentPairs.from_dataset(view, refs_a + central, refs_b + central), rng
        )
        self.queries_used += n
        self.sessions += 1
        data = make_preference_data(
            view.id,
            refs_a,
            refs_b,
            np.asarray(prefer_b, np.float32),
            ~np.asarray(answered, bool),
            labeler=f"teacher:{oracle.spec()}",
        )
        out: dict[str, float] = {"session_answered": float(np.sum(answered))}
        if surf:
            ua, ub = select_queries(view, n * cfg.surf_unlabeled, ctx.segment + 2 * w, rng)
            blank = np.zeros(len(ua), np.float32)
            u = make_preference_data(view.id, ua, ub, blank, None, labeler="unlabelled")
            self.unlabeled = _cat_batches(self.unlabeled, u.to_batch(view, ctx.device))
        if len(data.answered().prefer_b):
            self._add_labels(data.to_batch(view, ctx.device), w, out)
        out.update(self._learn(ctx, rng))
        return out

    def _learn(self, ctx: FitContext, rng: np.random.Generator) -> dict[str, float]:
        """Train the reward model on every label so far and relabel the replay buffer with
        it (Hindsight PRIOR's world model and REED's consistency epoch first)."""
        cfg = self.cfg
        surf = cfg.surf_unlabeled > 0
        out: dict[str, float] = {}
        train_wm = getattr(self.reward_model, "train_world_model", None)
        if self.labels is not None and callable(train_wm):
            # Hindsight PRIOR: its world model learns on windows of every finished episode
            full = self.buffer.episode_view(len(self.buffer.episodes), ctx.task_id)
            first = self.reward_trainings == 0
            n_wm = cfg.wm_first_updates if first else cfg.wm_updates
            wm_last: dict[str, float | torch.Tensor] = {}
            for m in train_wm(full, ctx.segment, n_wm, rng, set_stats=first):
                wm_last = m
            out.update(host_metrics(wm_last))
        if self.labels is not None and isinstance(self.reward_model, ReedRewardModel):
            pos = self.buffer.pos
            out.update(
                self.reward_model.train_dynamics(
                    self.buffer.observations[:pos, 0],
                    self.buffer.actions[:pos, 0],
                    self.buffer.next_observations[:pos, 0],
                    ctx.generator,
                )
            )
        if self.labels is not None:
            last: dict[str, float | torch.Tensor] = {}
            train_on = self._augment(self.labels, ctx.generator)
            n_updates = 0
            trainer = (
                self._surf_train(ctx, ctx.segment)
                if surf
                else self.reward_model.train_reward(
                    train_on, ctx.generator, epochs=cfg.reward_epochs
                )
            )
            for m in trainer:
                last = m
                n_updates += 1
            out.update({k: float(v) for k, v in last.items() if k.startswith("surf_")})
            out.update(
                reward_loss=float(last.get("reward_loss", float("nan"))),
                reward_acc=float(last.get("reward_acc", float("nan"))),
                reward_updates=float(n_updates),
            )
            rune = self.cfg.rune_beta > 0
            self.buffer.relabel(self.reward, bonus=self.reward_std if rune else None)
            self.buffer.reward_fn = self.reward
            if rune:
                self.buffer.bonus_fn = self.reward_std
                self.buffer.bonus_init = self.cfg.rune_beta
                self.buffer.bonus_decay = self.cfg.rune_decay
            pos = self.buffer.pos
            out["reward_corr"] = pearson(
                self.buffer.rewards[:pos, 0], self.buffer.true_rewards[:pos]
            )
            self.reward_trainings += 1
        return out

    # -- training ----------------------------------------------------------------------------
    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        cfg = self.cfg
        check_run(cfg, ctx)
        if ctx.queue is not None and cfg.method != "sac":
            ctx.queue.start()
        record = ctx.queue is not None and bool(getattr(ctx.queue, "needs_state", False))
        self._build(ctx.steps + 1, ctx.seed, record_state=record)
        buf = self.buffer
        online = cfg.method != "sac"
        if not online:
            buf.use_true_reward = True
        elif cfg.her_ratio > 0:
            buf.recent_ratio = cfg.her_ratio
            # QPA: the last max_episodes x max_episode_len transitions
            buf.recent_steps = cfg.max_episodes * int(get_task(ctx.task_id).horizon)
        rng = np.random.default_rng([ctx.seed, 0x0B])
        first = cfg.seed_steps + cfg.unsup_steps
        next_session = first if online else None
        metrics: dict[str, float] = {}
        returns: deque[float] = deque(maxlen=10)
        n_eps = 0
        step = 0
        while step < ctx.steps:
            intrinsic = online and cfg.unsup_steps > 0 and cfg.seed_steps <= step < first
            buf.intrinsic_k = cfg.knn_k if intrinsic else 0
            nxt = ctx.steps
            nxt = min(nxt, (step // ctx.log_interval + 1) * ctx.log_interval)
            if intrinsic:
                nxt = min(nxt, first)
            if next_session is not None:
                nxt = min(nxt, next_session)
            self.model.learn(nxt - step, reset_num_timesteps=False, progress_bar=False)
            step = int(self.model.num_timesteps)
            for s, n in buf.episodes[n_eps:]:
                returns.append(float(buf.true_rewards[s : s + n].sum()))
            n_eps = len(buf.episodes)
            if next_session is not None and step >= next_session:
                trained = self.reward_trainings
                metrics.update(self.session(ctx, rng))
                # B-Pref resets the critic after the first session; with a teacher who
                # answers later, after the first reward training (the first answers)
                if ctx.queue is None:
                    reset_now = self.sessions == 1
                else:
                    reset_now = trained == 0 and self.reward_trainings > 0
                if reset_now:
                    self.reset_critic()
                    if cfg.reset_update > 0:
                        self.model.train(gradient_steps=cfg.reset_update, batch_size=cfg.sac_batch)
                if self.queries_used >= ctx.budget and not self.pending:
                    next_session = None
                    buf.recent_ratio = 0.0  # QPA: plain replay once the budget is spent
                else:
                    next_session = step + cfg.session_every
            if step % ctx.log_interval == 0 or step == ctx.steps:
                phase = 0.0 if step < cfg.seed_steps else (1.0 if step < first and online else 2.0)
                logged = self.model.logger.name_to_value
                yield {
                    "step": step,
                    "phase": phase,
                    "queries": float(self.queries_used),
                    "sessions": float(self.sessions),
                    "train_return": float(np.mean(returns)) if returns else float("nan"),
                    "critic_loss": float(logged.get("train/critic_loss", float("nan"))),
                    "ent_coef": float(logged.get("train/ent_coef", float("nan"))),
                    **metrics,
                }

    # -- acting and state ------------------------------------------------------------------
    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.model is None:
            self._build(2, 0)
        action, _ = self.model.predict(np.asarray(obs, np.float32), deterministic=True)
        return np.clip(action, self.spec.act_low, self.spec.act_high)

    def state_dict(self) -> dict[str, Any]:
        if self.model is None:
            self._build(2, 0)
        return {
            "policy": self.model.policy.state_dict(),
            "reward": self.reward_model.state_dict(),
            "queries_used": self.queries_used,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.model is None:
            self._build(2, 0)
        self.model.policy.load_state_dict(state["policy"])
        self.reward_model.load_state_dict(state["reward"])
        self.queries_used = int(state.get("queries_used", 0))
