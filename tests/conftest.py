from __future__ import annotations

import os

# Headless rendering: dm_control reads MUJOCO_GL at import, so set it before anything loads.
os.environ.setdefault("MUJOCO_GL", "egl")

import pytest  # noqa: E402


@pytest.fixture()
def minari_home(tmp_path, monkeypatch):
    """A private MINARI_DATASETS_PATH for one test."""
    path = tmp_path / "minari"
    path.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


def pytest_configure(config):
    # These machines have 2 shared cores: keep each test process to one torch thread.
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
