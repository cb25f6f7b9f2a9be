"""The preset table and the teacher mini-language.

:data:`TEACHER_PRESETS` names every built-in teacher: its family (``kind``, a key of
:data:`pbrl.teachers.registry.TEACHER_KINDS`), the knobs it sets and a one-line description
(what ``pbrl oracles list`` prints). Adding a preset is one line here.

The mini-language: ``"myopic+mistake"`` merges presets left to right, ``"oracle(gamma=0.9)"``
sets knobs (:func:`parse_teacher_name`, :func:`coerce_knob`); :func:`teacher_spec` prints a
teacher back in that language. This module knows no teacher class (the families import it
for their ``spec``); :func:`pbrl.teachers.registry.make_teacher` builds teachers from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pbrl.errors import PbrlError, UnknownIdError
from pbrl.utils import parse_field


@dataclass(frozen=True)
class TeacherPreset:
    """A named teacher: its class (``kind``), the knobs it sets and a one-line description."""

    kind: str
    knobs: Mapping[str, Any]
    doc: str


TEACHER_PRESETS: dict[str, TeacherPreset] = {
    "oracle": TeacherPreset("bpref", {}, "perfectly rational: argmax of the segment return"),
    "stoc": TeacherPreset(
        "bpref",
        {"beta": 5.0, "beta_units": "std"},
        "Bradley-Terry noise, beta = 5 per std of the dataset's return gaps",
    ),
    "mistake": TeacherPreset("bpref", {"eps_mistake": 0.1}, "flips 10% of the labels"),
    "skip": TeacherPreset(
        "bpref", {"eps_skip": 0.1}, "skips pairs whose better return is below 0.1 x chunk return"
    ),
    "equal": TeacherPreset(
        "bpref", {"eps_equal": 0.1}, "ties when the returns differ by < 0.1 x chunk return"
    ),
    "myopic": TeacherPreset("bpref", {"gamma": 0.9}, "weights step t by 0.9^(L-1-t)"),
    "random": TeacherPreset(
        "bpref",
        {"eps_mistake": 0.5},
        "coin-flip labels (each rational label flipped with probability 0.5): a control",
    ),
    "unirlhf": TeacherPreset(
        "bpref",
        {"thresholds": "absolute", "eps_equal": 10.0, "equal_inclusive": True},
        "Uni-RLHF scripted teacher: tie when |R_a - R_b| <= 10, else argmax",
    ),
    "lire": TeacherPreset("lire", {}, "LiRE scripted teacher: tie when |R_a - R_b| <= 0.5 x L"),
    "regret": TeacherPreset(
        "regret", {}, "argmax of sum_t gamma^t r_t + gamma^L V(s_L) - V(s_0), expert V"
    ),
    "regret_cpl": TeacherPreset(
        "regret",
        {"undiscounted": True, "ties": "half", "bootstrap": "last"},
        "CPL's labels: argmax of rl_sum = sum_{t<L-1} r_t + V(s_{L-1}) - V(s_0), in the "
        "critic's reward units; an exact tie is 0.5",
    ),
}


def list_teachers() -> list[str]:
    """Names of the built-in presets (sorted)."""
    return sorted(TEACHER_PRESETS)


def knob_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """The knobs of a teacher class: its dataclass fields except ``name``."""
    return {f.name: f for f in dataclasses.fields(cls) if f.name != "name"}


def coerce_knob(cls: type, key: str, value: Any) -> Any:
    """Parse a knob given as text (CLI, spec strings) into the field's type
    (:func:`pbrl.utils.parse_field`, strict: a knob that text cannot set is an error)."""
    return parse_field(cls, key, value, f"teacher knob {key}", strict=True)


def parse_teacher_name(text: str) -> tuple[list[str], dict[str, str]]:
    """``"myopic+mistake(eps_mistake=0.2,gamma=0.8)"`` -> (["myopic", "mistake"], {...})."""
    text = text.strip()
    args: dict[str, str] = {}
    if "(" in text:
        if not text.endswith(")"):
            raise UnknownIdError(f"teacher '{text}': knobs go in one trailing '(key=value,...)'")
        text, inner = text[:-1].split("(", 1)
        for item in filter(None, (s.strip() for s in inner.split(","))):
            if "=" not in item:
                raise PbrlError(f"teacher knob '{item}': expected key=value")
            k, v = item.split("=", 1)
            args[k.strip()] = v.strip()
    parts = [p.strip() for p in text.split("+")]
    return parts, args


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def teacher_spec(teacher: Any) -> str:
    """``name(knob=value,...)`` listing knobs that differ from the class defaults or that the
    named presets set: ``make_teacher(spec)`` rebuilds the same teacher."""
    cls = type(teacher)
    preset_keys: set[str] = set()
    for p in str(teacher.name).split("+"):
        if p in TEACHER_PRESETS:
            preset_keys |= set(TEACHER_PRESETS[p].knobs)
    items = []
    for k, f in knob_fields(cls).items():
        if k == "value_fn":
            continue
        v = getattr(teacher, k)
        if k in preset_keys or v != f.default:
            items.append(f"{k}={_fmt(v)}")
    return f"{teacher.name}({','.join(items)})" if items else str(teacher.name)


def teacher_knobs(teacher: Any) -> dict[str, Any]:
    """All knobs of a teacher as JSON-able values (``value_fn`` excluded)."""
    return {k: getattr(teacher, k) for k in knob_fields(type(teacher)) if k != "value_fn"}
