"""User-facing errors.

Anything a user can cause (a bad file, an unknown id, a malformed suite) raises
:class:`PbrlError` with a message that names the file or field and the problem. The CLI
prints the message without a traceback and exits with status 2 (``PBRL_DEBUG=1`` shows
the traceback).
"""

from __future__ import annotations


class PbrlError(Exception):
    """An error caused by user input, reported without a traceback."""


class DataError(PbrlError):
    """A dataset, preference file or label file is malformed."""


class UnknownIdError(PbrlError):
    """An unknown task, dataset, agent, teacher or suite name."""
