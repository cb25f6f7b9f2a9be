"""Progress of long commands on standard error: the library logs (``pbrl.*`` loggers, INFO),
the CLI shows those records, one flushed line each, whether or not stderr is a terminal.

Only pbrl's own loggers are shown: third-party INFO chatter (PyOpenGL's "No
OpenGL_accelerate module loaded", ...) stays out of the output.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at each record (flushed per record)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stderr)
        super().emit(record)


@contextlib.contextmanager
def progress_on_stderr() -> Iterator[None]:
    """Show the library's progress (``pbrl`` loggers, INFO) on standard error for one command.

    One line per record, flushed, so progress appears as it happens also when standard
    error is a pipe or a file; the library throttles its lines (datasets/progress.py).
    """
    logger = logging.getLogger("pbrl")
    handler = StderrHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a root handler (logging.basicConfig) would print it twice
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
