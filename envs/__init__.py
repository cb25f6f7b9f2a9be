"""Task registry: one module per domain (mujoco, metaworld, dmc, minari_tasks)."""

from pbrl.envs.base import TaskSpec, find_task, get_task, list_tasks, register

__all__ = ["TaskSpec", "find_task", "get_task", "list_tasks", "register"]
