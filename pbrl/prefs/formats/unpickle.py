"""Pickles of published label files, read without running their code, and written back.

:func:`safe_load_pickle` is a restricted unpickler admitting plain data (containers, numbers,
strings, numpy arrays, dtypes and scalars); classes a format needs (imitation's dataset
classes) are mapped onto inert :class:`Record` stand-ins that hold their fields and run no code
of theirs. :func:`dump_pickle` writes a Record under its original class name, so the original
library loads the file with plain ``pickle.load``.
"""

from __future__ import annotations

import codecs
import copyreg
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray as _np_multiarray
from numpy._core import numeric as _np_numeric

from pbrl.errors import DataError

# numpy pickles arrays through these callables; the module path changed in numpy 2
# (numpy.core -> numpy._core), and old pickles (protocol 2) wrap bytes with _codecs.encode.
_PLAIN_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): _np_multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): _np_numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_numeric._frombuffer,
    ("_codecs", "encode"): codecs.encode,
}
# Protocols < 3 name these builtin constructors as globals instead of using opcodes.
for _mod in ("builtins", "__builtin__"):
    for _ctor in (set, frozenset, bytes, bytearray, complex):
        _PLAIN_GLOBALS[(_mod, _ctor.__name__)] = _ctor


class Record:
    """An inert stand-in for a class named in a pickle: it only stores the pickled fields."""

    _pickle_as: tuple[str, str] = ("", "")

    def __init__(self, fields: dict[str, Any] | None = None) -> None:
        self.fields = dict(fields or {})

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            merged: dict[str, Any] = {}
            for part in state:
                if isinstance(part, dict):
                    merged.update(part)
            self.fields = merged
        elif isinstance(state, dict):
            self.fields = dict(state)
        else:
            self.fields = {"__state__": state}

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Pickles as the named class (see _ExportPickler): NEWOBJ + BUILD with the fields.
        return (copyreg.__newobj__, (type(self),), dict(self.fields))


class _PlainUnpickler(pickle.Unpickler):
    def __init__(self, fh: Any, where: str, records: dict[str, type[Record]]) -> None:
        super().__init__(fh)
        self._where = where
        self._records = records

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[(module, name)]
        full = f"{module}.{name}"
        if full in self._records:
            return self._records[full]
        raise DataError(f"{self._where}: pickle refers to {full}, which is not plain data")

    def persistent_load(self, pid: Any) -> Any:
        raise DataError(f"{self._where}: pickle uses a persistent id, which is not plain data")


def safe_load_pickle(path: str | Path, *, records: dict[str, type[Record]] | None = None) -> Any:
    """Unpickle ``path`` admitting only plain data.

    Lists, tuples, dicts, sets, ints, floats, str, bytes, bool, None, numpy arrays, dtypes and
    scalars pass. Any other global the pickle names raises :class:`DataError` naming the file
    and the global, before anything of it is called. ``records`` maps extra dotted class names
    onto :class:`Record` stand-ins (used for imitation's dataset classes).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        return _PlainUnpickler(io.BytesIO(raw), str(path), records or {}).load()
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated/corrupt pickles raise many types
        raise DataError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from e


class _ExportPickler(pickle._Pickler):  # type: ignore[name-defined]
    """Pure-Python pickler that writes a :class:`Record` class under its ``_pickle_as`` name.

    This writes files the original library loads with plain ``pickle.load`` without that
    library being importable here.
    """

    def save_global(self, obj: Any, name: str | None = None) -> None:
        target = getattr(obj, "_pickle_as", None) if isinstance(obj, type) else None
        if target and target[0]:
            self.save(target[0])
            self.save(target[1])
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)


def dump_pickle(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    _ExportPickler(buf, protocol=4).dump(obj)
    path.write_bytes(buf.getvalue())
