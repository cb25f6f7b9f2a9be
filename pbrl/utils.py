"""Small helpers shared across the package: atomic writes, seeding, devices."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pbrl.errors import DataError, PbrlError


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it onto ``final`` only on success.

    Nothing half-written is ever visible at ``final``: on an exception the temporary file
    or folder is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        tmp = Path(name)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        if is_dir and final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=json_default))


def json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def jsonable(x: Any) -> Any:
    """``x`` with dataclasses as dicts, tuples as lists, numpy scalars as Python numbers and
    non-finite floats as None: what run files store."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"
_DEVICE_RE = re.compile(r"(cpu|cuda|mps)(?::(\d+))?")


def resolve_device(device: str | None, *, what: str = "--device") -> str:
    """Check a device string and resolve ``auto``; the one place devices are validated.

    ``auto``/None -> ``cuda`` when available else ``cpu``; ``cpu``, ``cuda``, ``cuda:N``
    (N below the number of visible GPUs) and ``mps`` (where available) pass through.
    Anything else, or a device this machine does not have, is a :class:`PbrlError`.
    """
    import torch

    text = "auto" if device is None else str(device).strip()
    if text in ("", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    m = _DEVICE_RE.fullmatch(text)
    if m is None or (m.group(1) != "cuda" and m.group(2) is not None):
        raise PbrlError(f"{what} {device!r}: unknown device (use {DEVICE_HELP})")
    kind, index = m.groups()
    if kind == "cpu":
        return "cpu"
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise PbrlError(f"{what} {text}: MPS is not available on this machine")
        return "mps"
    if not torch.cuda.is_available():
        raise PbrlError(f"{what} {text}: CUDA is not available on this machine")
    n = torch.cuda.device_count()
    if index is not None and int(index) >= n:
        raise PbrlError(
            f"{what} {text}: no such GPU (this machine has {n}: cuda:0 to cuda:{n - 1})"
        )
    return text


def resolve_devices(device: str | None, *, what: str = "--device") -> list[str]:
    """A sweep's devices: ``cpu`` -> [cpu]; ``cuda`` -> every visible GPU;
    ``cuda:0,1`` -> [cuda:0, cuda:1]; ``auto`` as :func:`resolve_device`. Each is checked."""

    text = "auto" if device is None else str(device).strip()
    if text.startswith("cuda:") and "," in text:
        ids = [i.strip() for i in text.split(":", 1)[1].split(",")]
        if not all(i.isdigit() for i in ids) or len(set(ids)) != len(ids):
            raise PbrlError(
                f"{what} {text}: a GPU list looks like cuda:0,1 (distinct numbers, no blanks)"
            )
        return [resolve_device(f"cuda:{i}", what=what) for i in ids]
    d = resolve_device(text, what=what)
    if d == "cuda":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cuda"]
    return [d]


# Seeds seed numpy, torch and the evaluation envs (seed + 10000 + episode): keep them well
# inside the 32-bit range every one of those accepts.
MAX_SEED = 1_000_000_000


def check_seed(seed: int, what: str = "--seed") -> int:
    """A seed must be an integer in [0, MAX_SEED]."""

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise PbrlError(f"{what}: a seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    return seed


def _probe_writable(folder: Path, p: Path, what: str) -> None:
    """Create and remove one empty probe folder in ``folder`` (restoring its modification
    time); a one-line error naming ``what`` and ``p`` when nothing can be created there."""
    try:
        st = folder.stat()
        os.rmdir(tempfile.mkdtemp(prefix=".pbrl-probe-", dir=folder))
        with contextlib.suppress(OSError):  # leave the folder's modification time as it was
            os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))
    except OSError as e:
        raise PbrlError(f"{what} {p}: cannot write in '{folder}' ({e.strerror or e})") from e


def check_output_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Check, before any work, that a folder can be created (or written) at ``path``.

    Refused: a path that is (or lies under) a regular file, and a place where no folder can
    be made (``/proc/x``, a read-only or unwritable folder). The check makes and removes one
    empty probe folder in the nearest existing ancestor (restoring that folder's
    modification time), so nothing is left behind.
    """

    p = Path(path)
    if str(path).strip() == "" or "\x00" in str(path):
        raise PbrlError(f"{what} {str(path)!r}: not a valid folder path")
    probe_in = p
    while not probe_in.exists():
        if probe_in.is_symlink():
            raise PbrlError(f"{what} {p}: '{probe_in}' is a broken symbolic link")
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if probe_in.exists() and not probe_in.is_dir():
        where = "is" if probe_in == p else f"lies under '{probe_in}', which is"
        raise PbrlError(f"{what} {p}: {where} a file, not a folder")
    _probe_writable(probe_in, p, what)
    return p


def check_output_file(path: str | os.PathLike[str], what: str = "--output") -> Path:
    """Check, before any work, that a file can be written at ``path`` (atomically, later).

    Refused: an empty path, an existing folder, a parent that does not exist or is a file,
    and a folder where no file can be created (``/proc``, read-only). The check creates and
    removes one empty probe folder next to ``path`` (restoring the folder's modification time);
    an existing file at ``path`` is untouched.
    """

    p = Path(path)
    if str(path).strip() == "" or "\x00" in str(path):
        raise PbrlError(f"{what} {str(path)!r}: not a valid file path")
    if p.is_dir():
        raise PbrlError(f"{what} {p}: is a folder; give a file name")
    parent = p.parent
    if not parent.exists():
        raise PbrlError(f"{what} {p}: folder '{parent}' does not exist")
    if not parent.is_dir():
        raise PbrlError(f"{what} {p}: '{parent}' is a file, not a folder")
    _probe_writable(parent, p, what)
    return p


def make_output_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """``mkdir -p`` with a one-line error naming ``what`` instead of an OSError traceback."""

    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PbrlError(f"{what} {p}: cannot create the folder ({e.strerror or e})") from e
    return p


KEPT_BLOCK_BYTES = 1 << 30
"""Freed blocks up to this size stay in the process's heap for reuse (:func:`keep_freed_memory`)."""


def keep_freed_memory() -> bool:
    """Have glibc's ``malloc`` keep freed blocks of up to 1 GiB in the process for reuse, as
    ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` in the environment would, set
    from inside the process with ``mallopt``. By default glibc maps every block above its
    threshold (which rises to at most 32 MB) from the system and unmaps it when freed, so a
    training step whose activations exceed that pays page faults for them on every step
    (docs/performance.md, "Freed blocks kept"); torch's CPU tensors come from ``malloc``.
    The cost: memory freed after a peak stays with the process. Returns whether it was
    applied: not off Linux or glibc, and not with ``PBRL_KEEP_FREED_MEMORY=0`` in the
    environment."""
    if not sys.platform.startswith("linux") or os.environ.get("PBRL_KEEP_FREED_MEMORY") == "0":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(
        mallopt(m_mmap_threshold, KEPT_BLOCK_BYTES) and mallopt(m_trim_threshold, KEPT_BLOCK_BYTES)
    )


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch's global generator (for nn init) and return an explicit numpy Generator."""
    import torch

    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def format_duration(seconds: float) -> str:
    """42 -> '42s', 185 -> '3m05s', 3725 -> '1h02m'."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def read_text_file(path: str | os.PathLike[str]) -> str:
    """A regular file's UTF-8 text, or a DataError naming the file and the problem.

    Devices and FIFOs are refused without being read (``/dev/zero`` never ends).
    """

    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: not a regular file" if p.exists() else f"{p}: no such file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise DataError(f"{p}: cannot read ({e.strerror or e})") from e
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text (byte {e.start})") from e


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A file holding one JSON object, or a DataError naming the file and the problem."""

    try:
        obj = json.loads(read_text_file(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def parse_field(cls: type, name: str, raw: Any, where: str, *, strict: bool = False) -> Any:
    """Text given for field ``name`` of dataclass ``cls`` (a CLI option, a suite entry, a
    teacher knob), typed.

    The one parser of text into typed dataclass fields: ``bool`` (1/true/yes/on,
    0/false/no/off), ``int`` (``1e5`` allowed), ``float``, ``str`` and ``tuple[T, ...]``
    (``"(256, 256)"``, ``"256,256"``); ``T | None`` also reads ``none`` as None. A field of
    any other type keeps the text, or with ``strict`` is an error. A value that is not text
    is returned as it is. ``where`` names the field in the error (``--agent.lr``):
    ``"{where}: cannot read '{raw}' as {type} (expected ...)"``.
    """
    import types
    import typing

    if not isinstance(raw, str):
        return raw
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - fall back to raw annotations
        hints = dict(getattr(cls, "__annotations__", {}))
    tp = hints.get(name, str)
    text = raw.strip()
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)) and text.lower() == "none":
            return None
        tp = args[0] if len(args) == 1 else tp
    expected = {bool: "true/false", int: "an integer", float: "a number"}
    try:
        if tp is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if tp is int:
            return int(float(text)) if "e" in text.lower() else int(text)
        if tp is float:
            return float(text)
        if getattr(tp, "__origin__", None) is tuple:
            inner = tp.__args__[0]
            parts = [p for p in text.strip("()[]").split(",") if p.strip()]
            return tuple(inner(p.strip()) for p in parts)
        if strict and tp is not str:
            raise PbrlError(f"{where}: cannot be set from text")
        return text
    except ValueError as e:
        hint = f" (expected {expected[tp]})" if tp in expected else ""
        raise PbrlError(
            f"{where}: cannot read '{raw}' as {getattr(tp, '__name__', tp)}{hint}"
        ) from e
