"""IPL: Inverse Preference Learning, preferences fitted through IQL's own Q and V (no reward model).

Paper: Hejna and Sadigh, "Inverse Preference Learning: Preference-based RL without a Reward
Function", NeurIPS 2023 (arXiv 2305.15363); official code
jhejna/inverse-preference-learning ``research/algs/ipl_iql.py`` (``IPL_IQL``).

Summary: the inverse soft-Bellman operator turns any (Q, V) pair into the reward it
implies, r(s, a) = Q(s, a) - gamma V(s'). IPL therefore drops the reward network: the
critic is trained so that the implied rewards, summed over a segment, explain the
preferences (one Bradley-Terry BCE per critic member, no minimum), with a chi^2
regulariser c * E[r^2] that keeps implied rewards small, while V is IQL's expectile
regression on the target critics and the policy is IQL's AWR. V(s') in the implied reward
is the online value net *already updated in the same step*. With replay transitions
(D4RL configs) every term is a 50/50 mix of feedback rows and replay rows, the chi^2 term
included.

Per step, rows = segment-a transitions, segment-b transitions, [replay rows]; d = discount:

    L_V   = E_w[ |tau - 1(u < 0)| u^2 ],  u = min_k Qbar_k(s, a) - V(s)          (V stepped)
    r_k   = Q_k(s, a) - d * V(s')        (V after its step, no gradient)
    L_Q   = mean_k BCE( sum_t r_k(b) - sum_t r_k(a), y ) + c * mean_k E_w[ r_k^2 ]
    L_pi  = E_w[ min(exp(beta (min_k Qbar_k - V(s))), 100) * (-log pi(a | s)) ]
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from pbrl.errors import PbrlError
from pbrl.learn.api import AgentSpec, FitContext
from pbrl.learn.data import ACTION_CLIP, TransitionTensors
from pbrl.learn.iql import IQLConfig, IQLLearner, iql_config_from
from pbrl.learn.kit import bt_pair_losses, epoch_minibatches, segment_sum
from pbrl.learn.stack import CannotStack, StackedIQL, member_pairs, stacked_metrics
from pbrl.types import PAIR_FIELDS

# ---- pure losses -------------------------------------------------------------------------


def implicit_reward(q: torch.Tensor, next_v: torch.Tensor, discount: torch.Tensor) -> torch.Tensor:
    """r_k = Q_k(s, a) - d * V(s'): q (..., K, N), next_v (..., N), discount (..., N) ->
    (..., K, N) (a leading member axis, stacked seeds, is kept)."""
    return q - (discount * next_v).unsqueeze(-2)


def ipl_preference_loss(
    r_a: torch.Tensor,
    r_b: torch.Tensor,
    mask_a: torch.Tensor,
    mask_b: torch.Tensor,
    prefer_b: torch.Tensor,
) -> torch.Tensor:
    """Mean over members and pairs of BCE(sum_t r_k(b) - sum_t r_k(a), y).

    r_a, r_b: (K, B, T) implied rewards; masks (B, T); prefer_b (B,) soft labels. The
    ``bce`` form of :func:`pbrl.learn.kit.bt_pair_losses`, as the official code computes it.
    A leading seed axis S on all five, (S, K, B, T) and (S, B, ...), gives one loss per seed.
    """
    score_a = segment_sum(r_a, mask_a.unsqueeze(-3))
    score_b = segment_sum(r_b, mask_b.unsqueeze(-3))
    return bt_pair_losses(score_a, score_b, prefer_b.unsqueeze(-2), "bce").mean((-2, -1))


def chi2_regularizer(r: torch.Tensor, weights: torch.Tensor, coeff: float) -> torch.Tensor:
    """coeff * mean over members of the ``weights``-weighted mean of r^2 (weights sum to 1):
    r (..., K, N) and weights (..., N) -> (...)."""
    return coeff * (r.pow(2) * weights.unsqueeze(-2)).sum(-1).mean(-1)


def segment_rewards(r: torch.Tensor, mask_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The implied rewards of one update's rows, (..., K, N) with the B segments a and then
    the B segments b first, as (..., K, B, T) for the a and b segments (``mask_a`` (..., B,
    T) gives B and T)."""
    bsz, t = mask_a.shape[-2:]
    n_seg = bsz * t
    return (
        r[..., :n_seg].unflatten(-1, (bsz, t)),
        r[..., n_seg : 2 * n_seg].unflatten(-1, (bsz, t)),
    )


CRITIC_TENSORS = ("r", "mask_a", "mask_b", "prefer_b")
"""The keys of :meth:`Agent.critic_terms`' tensors that :func:`critic_metrics` reduces."""


def critic_metrics(out: dict[str, Any]) -> dict[str, Any]:
    """IPL's critic metrics at a log step from a step's tensors (:meth:`Agent.critic_terms`:
    the implied rewards ``r`` and the segments' masks and labels): ``reward_mean``, and
    ``pref_acc``, the share of pairs whose label the critic ensemble's mean segment score
    ranks right. Every other key is kept; a leading seed axis gives one of each per seed."""
    metrics = {k: v for k, v in out.items() if k not in CRITIC_TENSORS}
    r, y = out["r"], out["prefer_b"]
    r_a, r_b = segment_rewards(r, out["mask_a"])
    score_a = segment_sum(r_a, out["mask_a"].unsqueeze(-3))
    score_b = segment_sum(r_b, out["mask_b"].unsqueeze(-3))
    logits = (score_b - score_a).mean(-2)  # the critic ensemble's mean
    metrics["reward_mean"] = r.mean((-2, -1))
    metrics["pref_acc"] = ((logits > 0).float() == torch.round(y)).float().mean(-1)
    return metrics


def row_weights(
    n_a: torch.Tensor, n_b: torch.Tensor, n_replay: int, replay_weight: float
) -> torch.Tensor:
    """Per-row weights of IPL's replay balancing; masks ``n_a``, ``n_b`` are 0/1 rows along
    the last dim (leading dims, stacked seeds, are kept).

    Without replay rows: a plain mean over real feedback rows. With them:
    (1 - w) (mean_a + mean_b) / 2 + w mean_replay.
    """
    sum_a, sum_b = n_a.sum(-1, keepdim=True), n_b.sum(-1, keepdim=True)
    if n_replay == 0:
        return torch.cat([n_a, n_b], -1) / (sum_a + sum_b).clamp(min=1.0)
    wa = (1.0 - replay_weight) * 0.5 * n_a / sum_a.clamp(min=1.0)
    wb = (1.0 - replay_weight) * 0.5 * n_b / sum_b.clamp(min=1.0)
    wr = torch.full((*n_a.shape[:-1], n_replay), replay_weight / n_replay, device=n_a.device)
    return torch.cat([wa, wb, wr], -1)


def window_start(length: int, window: int, gen: torch.Generator) -> torch.Tensor | None:
    """The batch's one random window start, a (1,) tensor on the generator's device drawn as
    the official sampler draws it (upper bound exclusive), or None when ``window`` is 0 or
    covers the segment."""
    if 0 < window < length:
        hi = max(1, length - window)
        return torch.randint(0, hi, (1,), generator=gen, device=gen.device)
    return None


def take_window(x: torch.Tensor, start: torch.Tensor, window: int, lead: int) -> torch.Tensor:
    """Steps ``start .. start + window - 1`` of segments ``x`` (``lead`` leading dims, then
    pairs B, steps L, features): ``start`` (1,) for one run, (K, 1) for K stacked members,
    each member's window its own."""
    pos = start + torch.arange(window, device=start.device)  # (*lead, window)
    feat = x.shape[lead + 2 :]
    idx = pos.reshape(*pos.shape[:-1], 1, window, *([1] * len(feat)))
    idx = idx.expand(*x.shape[:lead], x.shape[lead], window, *feat)
    return torch.take_along_dim(x, idx, dim=lead + 1)


# ---- agent ---------------------------------------------------------------------------------


@dataclass
class Config(IQLConfig):
    """IPL options; defaults are the MetaWorld ``ipl_iql.yaml``."""

    hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden widths of the actor, critics and value net."""
    expectile: float = 0.75
    """Expectile tau of the value loss (MetaWorld 0.75; D4RL 0.7)."""
    beta: float = 3.0
    """AWR inverse temperature (the official beta = 0.3333 divides the advantage: the ``paper``
    preset sets 1 / 0.3333)."""
    actor_schedule: str = "constant"
    """Actor learning-rate schedule: IPL uses none ('constant')."""
    log_std_min: float = -5.0
    """Lower clamp of the Gaussian policy's log-std."""
    init: str = "orthogonal"
    """Layer init: orthogonal, gain 1, zero biases (research-lightning)."""
    obs_norm: bool = False
    """IPL does not standardise observations."""
    chi2_coeff: float = 3.0
    """chi^2 regulariser weight c (MetaWorld 3; D4RL 0.5; Robomimic 4)."""
    batch_size: int = 16
    """Comparisons per feedback batch."""
    window: int = 0
    """Window of each segment used per batch (one random start shared by the batch); 0 = all."""
    replay_batch: int = 0
    """Dataset transitions per update mixed into every term (D4RL configs: 256; 0 = none)."""
    value_replay_weight: float = 0.5
    """Share of replay rows in the value loss."""
    chi2_replay_weight: float = 0.5
    """Share of replay rows in the chi^2 term."""
    policy_replay_weight: float = 0.5
    """Share of replay rows in the actor loss."""
    target_clipping: bool = False
    """Clamp V(s') to +-1/(c (1 - d)) in the implied reward (D4RL configs: on)."""


PRESETS: dict[str, dict[str, Any]] = {
    # The defaults are the MetaWorld config, with its beta: the official weight is
    # exp(A / 0.3333), i.e. beta = 1 / 0.3333 = 3.0003 here, not 3.0.
    "paper": {"beta": 1.0 / 0.3333},
    # configs/gym_locomotion/ipl_iql.yaml (PT human labels, D4RL replay rows; beta 0.333333).
    "d4rl": {
        "beta": 1.0 / 0.333333,
        "hidden": (256, 256),
        "expectile": 0.7,
        "chi2_coeff": 0.5,
        "batch_size": 8,
        "window": 64,
        "replay_batch": 256,
        "target_clipping": True,
    },
    # CPU scale: widths and constants kept; half the comparisons per step.
    "quick": {"batch_size": 8},
}

TEST_OVERRIDES: dict[str, Any] = {"hidden": (16, 16), "batch_size": 4, "replay_batch": 8}

Replay = Iterator[dict[str, torch.Tensor]] | None
"""The replay rows' minibatches (:meth:`TransitionTensors.minibatches`), or None without."""


class Agent:
    """IPL on the IQL core."""

    requires_true_reward = False
    requires_preferences = True

    def __init__(self, cfg: Config, spec: AgentSpec) -> None:
        if cfg.chi2_coeff < 0:
            raise PbrlError(f"--agent.chi2_coeff must be >= 0, got {cfg.chi2_coeff}")
        if cfg.cuda_graph:
            raise PbrlError(
                "--agent.cuda_graph: not for ipl (its update calls the IQL steps itself, "
                "with a critic loss of its own; docs/performance.md)"
            )
        self.cfg = cfg
        self.spec = spec
        self.device = spec.device
        self.learner = IQLLearner(
            spec.obs_dim, spec.act_dim, iql_config_from(cfg), max_steps=1, device=self.device
        )

    def replay(self, ctx: FitContext) -> Replay:
        """This run's replay minibatches (``replay_batch`` dataset transitions per update,
        drawn with the run's generator), or None when ``replay_batch`` is 0."""
        if self.cfg.replay_batch <= 0:
            return None
        data = TransitionTensors.from_dataset(ctx.dataset, ctx.device, None)
        return data.minibatches(self.cfg.replay_batch, ctx.generator)

    def rows(self, ctx: FitContext, idx: torch.Tensor, replay: Replay) -> dict[str, torch.Tensor]:
        """One update's rows from pairs ``idx`` of this run's labels (then the next minibatch
        of ``replay`` rows): :meth:`rows_from` of the pairs, the window start drawn with the
        run's generator."""
        b = ctx.prefs.rows(idx, PAIR_FIELDS)
        start = window_start(int(b["obs_a"].shape[1]), self.cfg.window, ctx.generator)
        return self.rows_from(b, start, None if replay is None else next(replay))

    def rows_from(
        self,
        b: dict[str, torch.Tensor],
        start: torch.Tensor | None,
        replay_rows: dict[str, torch.Tensor] | None,
    ) -> dict[str, torch.Tensor]:
        """One update's rows: the transitions (s_t, a_t, s_{t+1}), t = 0..T-2, of both
        segments of the pairs ``b`` (their :data:`~pbrl.types.PAIR_FIELDS`; the window from
        ``start`` when given), then the
        ``replay_rows``; raw observations, their discounts, the segments' masks and labels,
        and the value / chi^2 / policy row weights. Fields may carry a leading member axis
        (stacked seeds: ``b``'s fields ``(K, B, L, ...)``, ``start`` (K, 1), replay rows
        ``(K, R, ...)``): every output then has it too."""
        cfg = self.cfg
        lead = b["prefer_b"].dim() - 1
        lead_shape = tuple(b["prefer_b"].shape[:lead])
        seg = {}
        for side in ("a", "b"):
            obs = b[f"obs_{side}"]
            act = b[f"act_{side}"].clamp(-ACTION_CLIP, ACTION_CLIP)
            mask = b[f"mask_{side}"]
            if start is not None:
                obs, act, mask = (take_window(x, start, cfg.window, lead) for x in (obs, act, mask))
            steps = mask[..., :-1] * mask[..., 1:]  # both ends of the transition real
            seg[side] = (obs[..., :-1, :], act[..., :-1, :], obs[..., 1:, :], steps)
        bsz, t = seg["a"][0].shape[lead : lead + 2]

        def rows(x: torch.Tensor) -> torch.Tensor:  # (..., B, T, f) -> (..., B * T, f)
            return x.reshape(*lead_shape, bsz * t, x.shape[-1])

        obs_l = [rows(seg["a"][0]), rows(seg["b"][0])]
        act_l = [rows(seg["a"][1]), rows(seg["b"][1])]
        nxt_l = [rows(seg["a"][2]), rows(seg["b"][2])]
        disc = [torch.full((*lead_shape, 2 * bsz * t), cfg.gamma, device=self.device)]
        n_rep = 0
        if replay_rows is not None:  # None exactly when replay_batch is 0 (Agent.replay)
            obs_l.append(replay_rows["obs"])
            act_l.append(replay_rows["act"])
            nxt_l.append(replay_rows["next_obs"])
            disc.append(cfg.gamma * (1.0 - replay_rows["done"]))
            n_rep = cfg.replay_batch
        ma = seg["a"][3].reshape(*lead_shape, bsz * t)
        mb = seg["b"][3].reshape(*lead_shape, bsz * t)
        return {
            "obs": torch.cat(obs_l, -2),
            "act": torch.cat(act_l, -2),
            "next_obs": torch.cat(nxt_l, -2),
            "discount": torch.cat(disc, -1),
            "mask_a": seg["a"][3],
            "mask_b": seg["b"][3],
            "prefer_b": b["prefer_b"],
            "w_v": row_weights(ma, mb, n_rep, cfg.value_replay_weight),
            "w_c": row_weights(ma, mb, n_rep, cfg.chi2_replay_weight),
            "w_p": row_weights(ma, mb, n_rep, cfg.policy_replay_weight),
        }

    def clip_next_v(self, next_v: torch.Tensor, discount: torch.Tensor) -> torch.Tensor:
        """V(s') clamped to +-1/(c (1 - d)) when ``target_clipping`` is on (D4RL configs)."""
        cfg = self.cfg
        if cfg.target_clipping and cfg.chi2_coeff > 0:
            bound = 1.0 / (cfg.chi2_coeff * (1.0 - discount))
            next_v = torch.maximum(torch.minimum(next_v, bound), -bound)
        return next_v

    def critic_terms(
        self, q: torch.Tensor, next_v: torch.Tensor, rows: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """IPL's critic loss (preference BCE + chi^2) of one update from the critic's values
        ``q`` (K, N) on ``rows`` and V(s') (N,); returns (loss, the step's tensors: the two
        losses, and the implied rewards with the segments' masks and labels, which
        :func:`critic_metrics` reduces at a log step only). With a leading seed axis on
        everything (stacked seeds: ``q`` (S, K, N)), one of each per seed."""
        r = implicit_reward(q, next_v, rows["discount"])
        r_a, r_b = segment_rewards(r, rows["mask_a"])
        pref = ipl_preference_loss(r_a, r_b, rows["mask_a"], rows["mask_b"], rows["prefer_b"])
        chi2 = chi2_regularizer(r, rows["w_c"], self.cfg.chi2_coeff)
        return pref + chi2, {
            "pref_loss": pref.detach(),
            "chi2": chi2.detach(),
            "r": r.detach(),
            **{k: rows[k] for k in CRITIC_TENSORS[1:]},
        }

    def update(self, ctx: FitContext, idx: torch.Tensor, replay: Replay) -> dict[str, torch.Tensor]:
        """One IPL step; returns its tensors, which :meth:`metrics` turns into the log
        metrics at a log step."""
        L = self.learner
        rows = self.rows(ctx, idx, replay)
        obs_n, next_n, act = L.norm(rows["obs"]), L.norm(rows["next_obs"]), rows["act"]
        # 1. value (expectile on the target critics)
        target_q, _, metrics = L.value_step(obs_n, act, rows["w_v"])
        # 2. critic: implied rewards with the freshly updated V
        with torch.no_grad():
            next_v = self.clip_next_v(L.v(next_n), rows["discount"])
        loss, terms = self.critic_terms(L.q(obs_n, act), next_v, rows)
        L.q_opt.zero_grad(set_to_none=True)
        loss.backward()
        L.q_opt.step()
        L.polyak()
        # 3. actor: AWR with the advantage from this step's target Q and updated V
        with torch.no_grad():
            adv = target_q - L.v(obs_n)
        metrics.update(L.actor_step(obs_n, act, adv, rows["w_p"]))
        metrics.update(terms)
        return metrics

    def metrics(self, out: dict[str, Any]) -> dict[str, Any]:
        """The log metrics of the tensors an :meth:`update` returned: IQL's
        (:meth:`IQLLearner.metrics`) and the critic's (:func:`critic_metrics`)."""
        return self.learner.metrics(critic_metrics(out))

    def fit(self, ctx: FitContext) -> Iterator[dict[str, float]]:
        cfg = self.cfg
        p = ctx.prefs
        replay = self.replay(ctx)
        self.learner.set_obs_stats(ctx.dataset.observations)
        self.learner.set_max_steps(ctx.steps)
        batches = epoch_minibatches(p.size, cfg.batch_size, ctx.generator, self.device)
        for step in range(1, ctx.steps + 1):
            m = self.update(ctx, next(batches), replay)
            if step % ctx.log_interval == 0 or step == ctx.steps:
                yield {"step": step, **self.metrics(m)}

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.clip(self.learner.act(obs), self.spec.act_low, self.spec.act_high)

    def state_dict(self) -> dict[str, Any]:
        return {"learner": self.learner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_state_dict(state["learner"])


def fit_stacked(agents: list[Agent], ctxs: list[FitContext]) -> Iterator[list[dict[str, float]]]:
    """K seeds of one config trained as one (``pbrl bench --stack-seeds K``): the members'
    IQL cores stacked (:class:`pbrl.learn.stack.StackedIQL`), each member's pairs, window
    and replay rows drawn with its own generator as its single run draws them, gathered for
    all members at once (its labels from one table of the members' labels, its replay rows
    from one table of their transitions), the same three steps as :meth:`Agent.update`."""
    first, ctx0 = agents[0], ctxs[0]
    cfg = first.cfg
    if len({c.prefs.size for c in ctxs}) > 1:
        raise CannotStack("ipl: stacked seeds need labels of one size")
    pairs = member_pairs(
        [c.prefs for c in ctxs], [c.generator for c in ctxs], cfg.batch_size, first.device
    )
    replay = None
    if cfg.replay_batch > 0:
        table = TransitionTensors.stacked(
            [c.dataset for c in ctxs], ctx0.device, [None] * len(ctxs)
        )
        replay = table.member_minibatches(cfg.replay_batch, [c.generator for c in ctxs])
    length = int(ctx0.prefs.obs_a.shape[1])
    for a, c in zip(agents, ctxs, strict=True):
        a.learner.set_obs_stats(c.dataset.observations)
        a.learner.set_max_steps(c.steps)
    stack = StackedIQL([a.learner for a in agents])
    for step in range(1, ctx0.steps + 1):
        # each member draws its pairs, then its window, then its replay rows, as alone
        b = next(pairs)
        starts = [window_start(length, cfg.window, c.generator) for c in ctxs]
        start = None if starts[0] is None else torch.stack(starts)
        rows = first.rows_from(b, start, None if replay is None else next(replay))
        obs_n, next_n, act = stack.norm(rows["obs"]), stack.norm(rows["next_obs"]), rows["act"]
        target_q, v_old, v_losses = stack.value_step(obs_n, act, rows["w_v"])
        next_v = first.clip_next_v(stack.values(next_n), rows["discount"])
        # IPL's critic loss of every member at once (its terms keep the member axis)
        _, terms = stack.critic_step(first.critic_terms, obs_n, act, next_v, rows)
        adv = target_q - stack.values(obs_n)
        a_losses = stack.actor_step(obs_n, act, adv, rows["w_p"])
        if step % ctx0.log_interval == 0 or step == ctx0.steps:
            stack.write_back()
            yield stacked_metrics(
                step,
                stack.metrics(
                    critic_metrics(
                        {"v_loss": v_losses, "v": v_old, "actor_loss": a_losses, "adv": adv} | terms
                    )
                ),
            )
