"""Progress lines for long dataset work: ``what done/total (pct), rate, ETA`` through logging.

Library code never prints: generators and the diagnosis report through a :class:`RateLog`,
which emits INFO records on its logger at most every ``every_s`` seconds (and always for
the last item), so a log stays short however fast the items come. The CLI decides where
the records go (``pbrl datasets build`` shows them on standard error, flushed per line, so
they appear as they happen also when the output is a pipe or a file).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pbrl.utils import format_duration

#: Seconds between two progress lines of one RateLog (the last line is always written).
PROGRESS_EVERY_S = 5.0


class RateLog:
    """Throttled ``done/total`` progress of one phase, logged with its rate and ETA.

    ``clock`` (seconds, monotonic) is injectable for tests. :meth:`update` takes the
    absolute count done so far; a line is logged when ``every_s`` passed since the last one
    or when the count reaches ``total``.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        total: int,
        *,
        unit: str = "episodes",
        every_s: float = PROGRESS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.total = max(0, int(total))
        self.unit = unit
        self.every_s = float(every_s)
        self.clock = clock
        self.t0 = clock()
        self.last_t = self.t0
        self.start_done: int | None = None
        self.done = 0
        self.lines = 0
        self.finished = False

    def begin(self, done: int = 0) -> None:
        """Start (or restart) timing from ``done`` items already done (a resumed run)."""
        self.t0 = self.last_t = self.clock()
        self.start_done = self.done = int(done)

    def line(self) -> str:
        elapsed = self.clock() - self.t0
        fresh = self.done - (self.start_done or 0)
        rate = fresh / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        if left <= 0:
            eta = f"done in {format_duration(elapsed)}"
        elif rate > 0:
            eta = f"ETA {format_duration(left / rate)}"
        else:
            eta = "ETA ?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"{self.what}: {self.unit} {self.done}/{self.total} ({pct:.0f}%), "
            f"{rate:.1f} {self.unit}/s, {eta}"
        )

    def update(self, done: int) -> None:
        if self.start_done is None:
            self.begin(0)
        self.done = int(done)
        now = self.clock()
        last = self.done >= self.total
        if (last and not self.finished) or (not last and now - self.last_t >= self.every_s):
            self.last_t = now
            self.finished = last
            self.lines += 1
            self.logger.info("%s", self.line())
