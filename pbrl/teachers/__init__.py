"""Simulated teachers (oracles) that answer segment-pair queries from ground truth.

Every teacher is a frozen dataclass with an explicit ``numpy.random.Generator`` passed to
:meth:`~pbrl.teachers.base.Oracle.label`. ``prefer_b`` follows the project convention: 1.0
means the SECOND segment (b) is preferred, 0.0 the first, 0.5 a tie; skipped queries get
``answered = False`` and ``prefer_b = NaN``. Decisions and the order of operations are written
up in docs/oracles.md.

Where things are:

- ``pairs.py``: :class:`SegmentPairs` (what a teacher sees) and the Bradley-Terry labelling
  core (:func:`bt_label`, :func:`discount_weights`, :func:`chunk_return`, scale helpers);
- ``base.py``: the :class:`Oracle` and :class:`ValueFunction` protocols;
- one file per family: ``bpref.py`` (:class:`BPrefTeacher`, B-Pref and Uni-RLHF presets),
  ``lire.py`` (:class:`LiReTeacher`), ``regret.py`` (:class:`RegretTeacher` and its expert
  value functions; the SAC critic comes from :mod:`pbrl.datasets.critic`);
- ``presets.py``: the preset table :data:`TEACHER_PRESETS` and the name/knob mini-language;
- ``registry.py``: :data:`TEACHER_KINDS` (family classes by kind) and :func:`make_teacher`,
  :func:`save_teacher`, :func:`load_teacher`; ``io.py``: the preset file format;
- ``fit.py``: fitting a B-Pref teacher to human labels (``pbrl oracles fit``).

Adding a teacher: a preset of an existing family is one line in ``presets.py``; a new family
is its own file plus one line in ``registry.py`` (and its presets in ``presets.py``).

Composition without new classes: ``make_teacher("myopic+mistake")`` merges presets left to
right, ``make_teacher("oracle", gamma=0.9)`` or ``make_teacher("oracle(gamma=0.9)")`` sets
knobs; ``make_teacher("path/to/preset.json")`` loads a saved (e.g. human-fitted) teacher.
"""

from pbrl.teachers.base import Oracle, ValueFunction
from pbrl.teachers.bpref import BPrefTeacher
from pbrl.teachers.fit import FitRecords, fit_teacher, fit_teacher_details
from pbrl.teachers.io import PRESET_FORMAT
from pbrl.teachers.lire import LiReTeacher
from pbrl.teachers.pairs import SegmentPairs, bt_label, chunk_return, discount_weights
from pbrl.teachers.presets import TEACHER_PRESETS, TeacherPreset, list_teachers, teacher_knobs
from pbrl.teachers.registry import TEACHER_KINDS, load_teacher, make_teacher, save_teacher
from pbrl.teachers.regret import (
    FittedValueFunction,
    RegretTeacher,
    resolve_value_fn,
    resolve_value_source,
)

__all__ = [
    "PRESET_FORMAT",
    "TEACHER_KINDS",
    "TEACHER_PRESETS",
    "BPrefTeacher",
    "FitRecords",
    "FittedValueFunction",
    "LiReTeacher",
    "Oracle",
    "RegretTeacher",
    "SegmentPairs",
    "TeacherPreset",
    "ValueFunction",
    "bt_label",
    "chunk_return",
    "discount_weights",
    "fit_teacher",
    "fit_teacher_details",
    "list_teachers",
    "load_teacher",
    "make_teacher",
    "resolve_value_fn",
    "resolve_value_source",
    "save_teacher",
    "teacher_knobs",
]
