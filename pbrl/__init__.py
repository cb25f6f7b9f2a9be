"""pbrl: a preference-based reinforcement learning benchmark for control and robotics."""

from __future__ import annotations

__version__ = "0.1.0"
