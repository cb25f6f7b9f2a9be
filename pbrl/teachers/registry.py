"""The teacher families by kind, and building a teacher from a name.

:data:`TEACHER_KINDS` maps a family's kind (the ``kind`` of a preset in
:data:`pbrl.teachers.presets.TEACHER_PRESETS` and of a preset file) to its class. Adding a
teacher family is its own file (a frozen dataclass implementing
:class:`pbrl.teachers.base.Oracle`) plus one line here; its presets are lines in
``presets.py``. :func:`make_teacher` builds a teacher from a preset name, a composition, a
spec string or a saved preset file; :func:`save_teacher` / :func:`load_teacher` write and read
preset files (format in ``io.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pbrl.errors import DataError, PbrlError, UnknownIdError
from pbrl.teachers.base import Oracle
from pbrl.teachers.bpref import BPrefTeacher
from pbrl.teachers.io import knob_from_file, read_preset_file, write_preset_file
from pbrl.teachers.lire import LiReTeacher
from pbrl.teachers.presets import (
    TEACHER_PRESETS,
    coerce_knob,
    knob_fields,
    list_teachers,
    parse_teacher_name,
    teacher_knobs,
)
from pbrl.teachers.regret import RegretTeacher

TEACHER_KINDS: dict[str, type] = {
    "bpref": BPrefTeacher,
    "lire": LiReTeacher,
    "regret": RegretTeacher,
}


def kind_of(teacher: Any) -> str | None:
    """The kind of a teacher instance (a key of :data:`TEACHER_KINDS`), None if unregistered."""
    return next((k for k, c in TEACHER_KINDS.items() if isinstance(teacher, c)), None)


def _apply(cls: type, knobs: dict[str, Any], key: str, value: Any, source: str) -> None:
    fields = knob_fields(cls)
    if key not in fields:
        kind = next(k for k, c in TEACHER_KINDS.items() if c is cls)
        raise PbrlError(
            f"teacher knob '{key}' (from {source}) does not apply to {kind} teachers; "
            f"their knobs: {', '.join(fields)}"
        )
    knobs[key] = coerce_knob(cls, key, value)


def make_teacher(name: str, **overrides: Any) -> Oracle:
    """A teacher from a preset name, a composition, a spec string or a saved preset file.

    - ``"mistake"``: a preset (:data:`TEACHER_PRESETS`);
    - ``"myopic+mistake"``: presets merged left to right (later knobs win); B-Pref knob presets
      (stoc, mistake, ...) also apply to the regret teacher where it has the knob;
    - ``"oracle(gamma=0.9,eps_mistake=0.1)"``: knobs in parentheses (what :meth:`spec` prints);
    - ``"path/to/preset.json"``: a preset saved by :func:`save_teacher` / ``pbrl oracles fit``;
    - ``**overrides`` set knobs last (``value_fn=...`` gives the regret teacher its V).

    Unknown names raise :class:`UnknownIdError` listing the presets.
    """
    text = str(name).strip()
    if text.endswith(".json") or (os.sep in text and Path(text).exists()):
        teacher: Any = load_teacher(text)
        knobs: dict[str, Any] = {}
        for k, v in overrides.items():
            if k == "value_fn" and isinstance(teacher, RegretTeacher):
                knobs[k] = v
            else:
                _apply(type(teacher), knobs, k, v, "overrides")
        return replace(teacher, **knobs) if knobs else teacher
    parts, args = parse_teacher_name(text)
    unknown = [p for p in parts if p not in TEACHER_PRESETS]
    if unknown or not parts:
        raise UnknownIdError(
            f"unknown teacher '{unknown[0] if unknown else text}'; presets: "
            f"{', '.join(list_teachers())} (combine with '+', set knobs with "
            f"name(key=value,...), or give a saved preset .json)"
        )
    kinds = {TEACHER_PRESETS[p].kind for p in parts} - {"bpref"}
    if len(kinds) > 1:
        raise PbrlError(f"teacher '{text}': cannot combine {' and '.join(sorted(kinds))} teachers")
    cls = TEACHER_KINDS[kinds.pop() if kinds else "bpref"]
    knobs: dict[str, Any] = {}
    for p in parts:
        for k, v in TEACHER_PRESETS[p].knobs.items():
            _apply(cls, knobs, k, v, f"preset '{p}'")
    for k, v in args.items():
        _apply(cls, knobs, k, v, f"'{text}'")
    for k, v in overrides.items():
        if k == "value_fn" and cls is RegretTeacher:
            knobs[k] = v
            continue
        _apply(cls, knobs, k, v, "overrides")
    return cls(name="+".join(parts), **knobs)


def save_teacher(
    teacher: Any, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None
) -> None:
    """Write a teacher preset JSON (atomic) that :func:`make_teacher` loads back."""
    kind = kind_of(teacher)
    if kind is None:
        raise PbrlError(f"cannot save a teacher of type {type(teacher).__name__}")
    write_preset_file(path, kind, teacher.name, teacher_knobs(teacher), extra)


def load_teacher(path: str | os.PathLike[str]) -> Oracle:
    """Read a preset JSON written by :func:`save_teacher`; DataError naming the file."""
    p = Path(path)
    obj = read_preset_file(p, TEACHER_KINDS)
    kind = obj["kind"]
    cls = TEACHER_KINDS[kind]
    knobs: dict[str, Any] = {}
    for k, v in obj["knobs"].items():
        if k not in knob_fields(cls):
            raise DataError(f"{p}: unknown knob '{k}' for a {kind} teacher")
        knobs[k] = knob_from_file(v)
    try:
        return cls(name=str(obj.get("name", p.stem)), **knobs)
    except PbrlError as e:
        raise DataError(f"{p}: {e}") from e
