"""The teacher preset file: a JSON object ``{"format": "pbrl-teacher", "version": 1, "kind",
"name", "knobs", "fit"?}`` written by ``pbrl oracles fit`` and read by ``--teacher FILE.json``.

This module reads and writes the file; :func:`pbrl.teachers.registry.save_teacher` and
:func:`pbrl.teachers.registry.load_teacher` turn it into a teacher and back.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pbrl.errors import DataError, UnknownIdError
from pbrl.utils import write_json_atomic

PRESET_FORMAT = "pbrl-teacher"


def write_preset_file(
    path: str | os.PathLike[str],
    kind: str,
    name: str,
    knobs: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Write a preset file (atomic); an infinite float knob is written as ``"inf"``."""
    out = {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in knobs.items()}
    obj = {
        "format": PRESET_FORMAT,
        "version": 1,
        "kind": kind,
        "name": name,
        "knobs": out,
    }
    if extra:
        obj["fit"] = dict(extra)
    write_json_atomic(path, obj)


def read_preset_file(path: str | os.PathLike[str], kinds: Collection[str]) -> dict[str, Any]:
    """The parsed preset file, checked up to its knobs: ``format``, ``kind`` (one of
    ``kinds``) and ``knobs`` (an object). UnknownIdError when missing, DataError naming the
    file otherwise."""
    p = Path(path)
    if not p.exists():
        raise UnknownIdError(f"{p}: no such teacher preset file")
    try:
        obj = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: not a readable JSON teacher preset ({e})") from e
    if not isinstance(obj, dict) or obj.get("format") != PRESET_FORMAT:
        raise DataError(f"{p}: field 'format' must be '{PRESET_FORMAT}'")
    kind = obj.get("kind")
    if kind not in kinds:
        raise DataError(f"{p}: field 'kind' must be one of {', '.join(kinds)}, got {kind!r}")
    if not isinstance(obj.get("knobs"), dict):
        raise DataError(f"{p}: field 'knobs' must be an object")
    return obj


def knob_from_file(value: Any) -> Any:
    """A knob value as written by :func:`write_preset_file` (``"inf"`` back to a float)."""
    return float(value) if value == "inf" else value
