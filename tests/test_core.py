"""Core types, atomic writes, the agent config machinery and the CLI's error path."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from pbrl.datasets.base import OfflineDataset
from pbrl.errors import DataError
from pbrl.learn.api import field_docs, parse_field_value
from pbrl.types import Feedback, SegmentRef
from pbrl.utils import atomic_path


def _tiny_dataset(lengths=(5, 3)) -> OfflineDataset:
    n = sum(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    obs = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    return OfflineDataset(
        id="test/tiny-v0",
        task_id=None,
        observations=obs,
        actions=np.zeros((n, 1), np.float32),
        rewards=np.arange(n, dtype=np.float32),
        next_observations=obs + 1,
        terminals=np.zeros(n, bool),
        timeouts=np.zeros(n, bool),
        starts=starts,
        lengths=np.asarray(lengths, np.int64),
    )


def test_feedback_round_trip_and_validation():
    fb = Feedback("q1", SegmentRef("d", 0, 1, 4), SegmentRef("d", 1, 0, 4), 0.5, False, "human:ann")
    assert Feedback.from_dict(fb.to_dict()) == fb
    with pytest.raises(ValueError, match="prefer_b"):
        Feedback("q", fb.a, fb.b, 1.5, False, "x")
    with pytest.raises(ValueError, match="skipped"):
        Feedback("q", fb.a, fb.b, 1.0, True, "x")
    skipped = Feedback("q", fb.a, fb.b, None, True, "teacher:skip")
    assert Feedback.from_dict(skipped.to_dict()).prefer_b is None


def test_dataset_segments_respect_episode_ends():
    ds = _tiny_dataset()
    seg = ds.segment(SegmentRef(ds.id, 1, 0, 3))
    np.testing.assert_array_equal(seg.reward, [5, 6, 7])
    np.testing.assert_allclose(ds.episode_returns(), [0 + 1 + 2 + 3 + 4, 5 + 6 + 7])
    with pytest.raises(DataError, match="crosses the end of episode 0"):
        ds.segment_rows(SegmentRef(ds.id, 0, 3, 3))
    with pytest.raises(DataError, match="out of range"):
        ds.segment_rows(SegmentRef(ds.id, 2, 0, 1))
    stripped = ds.without_rewards()
    assert stripped.rewards is None
    with pytest.raises(DataError, match="no rewards"):
        stripped.episode_returns()


def test_dataset_rejects_mismatched_lengths():
    ds = _tiny_dataset()
    with pytest.raises(DataError, match="'actions' has 7 rows"):
        dataclasses.replace(ds, actions=ds.actions[:-1])


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"


@dataclasses.dataclass
class _Cfg:
    lr: float = 3e-4
    """Learning rate."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths."""
    bc: bool = False
    """Use the BC regularizer."""


def test_config_field_docs_and_parsing():
    docs = field_docs(_Cfg)
    assert docs == {
        "lr": "Learning rate.",
        "hidden": "Hidden layer widths.",
        "bc": "Use the BC regularizer.",
    }
    f = {x.name: x for x in dataclasses.fields(_Cfg)}
    assert parse_field_value(_Cfg, f["lr"], "1e-3") == pytest.approx(1e-3)
    assert parse_field_value(_Cfg, f["hidden"], "64,64") == (64, 64)
    assert parse_field_value(_Cfg, f["bc"], "true") is True


@dataclasses.dataclass
class _Knobs:
    gamma: float = 1.0
    eps: float | None = None
    on: bool = False
    fn: object = None


def test_one_field_parser_for_agents_and_teachers():
    """pbrl.utils.parse_field serves --agent.FIELD, suites and teacher knobs (issue 18)."""
    from pbrl.errors import PbrlError
    from pbrl.teachers.presets import coerce_knob
    from pbrl.utils import parse_field

    assert parse_field(_Knobs, "eps", "none", "x") is None
    assert parse_field(_Knobs, "eps", " 0.25 ", "x") == 0.25
    assert parse_field(_Knobs, "on", "off", "x") is False
    assert parse_field(_Knobs, "fn", "text", "x") == "text"
    with pytest.raises(PbrlError, match="^k: cannot be set from text$"):
        parse_field(_Knobs, "fn", "text", "k", strict=True)
    with pytest.raises(PbrlError, match=r"^g: cannot read 'abc' as float \(expected a number\)$"):
        parse_field(_Knobs, "gamma", "abc", "g")
    assert coerce_knob(_Knobs, "on", "yes") is True
    with pytest.raises(PbrlError, match="teacher knob on: cannot read 'maybe' as bool"):
        coerce_knob(_Knobs, "on", "maybe")


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "pbrl", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "bench" in out.stdout


@pytest.mark.parametrize("name", ["..x", ".cpl", "cpl.", "a..b", "a-b.c", "1x.y"])
def test_agent_names_that_are_no_module_path_are_refused(name):
    from pbrl.errors import UnknownIdError
    from pbrl.learn.api import load_agent_module

    with pytest.raises(UnknownIdError, match="dotted module path"):
        load_agent_module(name)


def test_a_plugin_that_fails_to_import_is_one_line(tmp_path, monkeypatch):
    from pbrl.errors import PbrlError
    from pbrl.learn.api import load_agent_module

    pkg = tmp_path / "pbrl_test_plugins"
    pkg.mkdir()
    (pkg / "broken_syntax.py").write_text("x = 1\nclass Config(:\n")
    (pkg / "raises.py").write_text("raise ValueError('bad\\nconstant')\n")
    (pkg / "no_config.py").write_text("class Agent: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    with pytest.raises(PbrlError, match=r"broken_syntax\.py, line 2: syntax error") as e:
        load_agent_module("pbrl_test_plugins.broken_syntax")
    with pytest.raises(PbrlError, match="ValueError: bad constant") as e:
        load_agent_module("pbrl_test_plugins.raises")
    assert "\n" not in str(e.value)
    with pytest.raises(PbrlError, match="defines no 'Config'"):
        load_agent_module("pbrl_test_plugins.no_config")


def test_keep_freed_memory_sets_glibcs_thresholds_unless_turned_off(monkeypatch):
    """A CPU training process keeps freed blocks for reuse (mallopt on glibc); the
    environment can turn it off, and a system without glibc's mallopt is left alone."""
    import ctypes
    import sys

    from pbrl import utils

    monkeypatch.setenv("PBRL_KEEP_FREED_MEMORY", "0")
    assert utils.keep_freed_memory() is False
    monkeypatch.delenv("PBRL_KEEP_FREED_MEMORY")
    calls = []

    class Libc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc())
    assert utils.keep_freed_memory() is True
    assert sorted(calls) == [(-3, utils.KEPT_BLOCK_BYTES), (-1, utils.KEPT_BLOCK_BYTES)]

    def missing(name):
        raise OSError(name)

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert utils.keep_freed_memory() is False
    monkeypatch.setattr(sys, "platform", "darwin")
    assert utils.keep_freed_memory() is False
