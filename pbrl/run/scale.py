"""The one place that sets the reward scale learners see (issue 10, item 3).

Datasets keep their raw rewards. Learners that consume a reward (true-reward IQL, the
diagnose command, relabelled rewards where a learner asks for it) multiply by
:func:`reward_scale`. The values and the measurement behind them are in
docs/reward-scale.md.
"""

from __future__ import annotations

# domain -> multiplier. MetaWorld pays up to 10 per step (returns in the thousands), which
# saturates IQL's exp(beta * A) weights; CPL divides MetaWorld rewards by 10 for the same reason.
DOMAIN_REWARD_SCALE: dict[str, float] = {
    "metaworld": 0.1,
    "mujoco": 1.0,
    "dmc": 1.0,
    "minari": 1.0,
}


def reward_scale(task_id: str | None) -> float:
    """Multiplier applied to raw dataset rewards for the task's domain (1.0 when unknown)."""
    if not task_id:
        return 1.0
    return DOMAIN_REWARD_SCALE.get(task_id.split("/", 1)[0], 1.0)
