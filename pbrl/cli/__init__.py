"""The ``pbrl`` command line.

Each command group lives in its own module in this package and is attached in
:mod:`pbrl.cli.app`. Errors a user can cause are :class:`pbrl.errors.PbrlError`: they are
printed as one line, without a traceback, and exit with status 2 (``PBRL_DEBUG=1`` shows
the traceback). Usage errors (an unknown command or option, a missing or malformed
argument) are Click's own: the usage message and exit status 2.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    from pbrl.errors import PbrlError

    # dm_control reads MUJOCO_GL at import: set a headless default before anything loads it.
    os.environ.setdefault("MUJOCO_GL", "egl")
    from pbrl.cli.app import app

    try:
        # Standalone mode: Click prints usage errors with the usage line and exits 2 itself,
        # whichever Click (installed or vendored by Typer) it is; everything ends in SystemExit.
        app(args=argv, prog_name="pbrl")
    except PbrlError as e:
        if os.environ.get("PBRL_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
