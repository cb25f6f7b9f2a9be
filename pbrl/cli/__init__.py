"""The ``pbrl`` command line.

Each command group lives in its own module in this package and is attached in
:mod:`pbrl.cli.app`. Errors a user can cause are :class:`pbrl.errors.PbrlError`: they are
printed as one line, without a traceback, and exit with status 2 (``PBRL_DEBUG=1`` shows
the traceback).
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
        # With standalone_mode=False click returns typer.Exit's code instead of exiting.
        rc = app(args=argv, standalone_mode=False)
        if isinstance(rc, int) and rc != 0:
            sys.exit(rc)
    except PbrlError as e:
        if os.environ.get("PBRL_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # click usage errors come through here with standalone_mode=False
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(1)
        raise
