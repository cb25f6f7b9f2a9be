"""The table of bad inputs that ``tests/test_bad_input.py`` drives through the CLI.

Each module here (one per area: ``cli``, ``data``, ``prefs``, ``runner``, ``report``) exports
``CASES``, a list of :class:`Case`. A case builds whatever broken file it needs under the
test's working folder (``world.cwd``), returns the ``pbrl`` argv, and names the words the
one-line error must contain. The test then checks, for every case: no traceback, exit status
2, one line ``error: ...`` on stderr (or Click's usage message for usage errors), and that
nothing was written or changed, neither in the working folder nor in the Minari store.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class World:
    """What a case may use: a working folder (the CLI's cwd, snapshotted) and valid inputs.

    ``dataset_id`` is a tiny generated MetaWorld dataset in the Minari store at ``store``;
    ``dataset_path`` its folder there; ``prefs`` a valid preference file on it (12 queries,
    segment 10); ``run`` a finished ``pbrl train`` run folder (bc, 4 steps); ``suite`` a valid
    suite file on the dataset. Everything but ``cwd`` is shared by all cases: copy before
    corrupting (``world.copy``).
    """

    cwd: Path
    store: Path
    dataset_id: str
    dataset_path: Path
    prefs: Path
    run: Path
    suite: Path
    task: str
    extra: dict[str, Path] = field(default_factory=dict)

    def copy(self, src: Path, name: str) -> Path:
        """A private copy of a shared file or folder under the working folder."""
        dst = self.cwd / name
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)
        return dst


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv(world)`` prepares files and returns the pbrl arguments."""

    id: str
    argv: Callable[[World], list[str]]
    # Words (case-insensitive) the error line must contain: typically the file or field.
    expect: tuple[str, ...] = ()
    # True for Click usage errors: the usage message (several lines), exit 2.
    usage: bool = False
    # Paths (relative to cwd) a case may leave changed or created: none by default.
    may_write: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    slow: bool = False
