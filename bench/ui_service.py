"""CPU time of the labeling UI's busiest call without HTTP: ``answer_and_next`` (store an
answer and serve the next pair), called in a loop by one thread.

    python bench/ui_service.py [--calls 1000] [--db URL]

The same project as bench/ui_load.py (its ``_setup``: 20 annotators, K = 10, every video
ready); the annotators answer in turn, so each call stores one answer and claims one pair.
200 calls warm up first. Prints the p50 / mean / p99 milliseconds per call and the machine's
load average, and one JSON line. Run it on two checkouts to compare code (``git worktree``):
only the ratio on the same machine at the same time means much.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--db", default=None, help="SQLAlchemy URL of an empty database")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="pbrl-ui-service-"))
    os.environ["MINARI_DATASETS_PATH"] = str(home / "minari")
    os.environ["PBRL_UI_HOME"] = str(home)
    logging.disable(logging.WARNING)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ui_load

    from pbrl.ui.db import open_db
    from pbrl.ui.service import answer_and_next, authenticate, next_query

    url = args.db or f"sqlite:///{home / 'ui.db'}"
    n_queries = (args.calls + 200 + 20) * 11 // 100 + 20
    tokens = ui_load._setup(home, url, n_queries, 10, 20)
    _, sessions = open_db(url)
    people = [authenticate(sessions, t, "load") for t in tokens]
    current = [next_query(sessions, w)["query"]["query_id"] for w in people]
    rng = np.random.default_rng(0)
    choices = ("left", "right", "equal", "skip")

    def loop(n: int) -> list[float]:
        out = []
        for k in range(n):
            i = k % len(people)
            t = time.perf_counter()
            r = answer_and_next(sessions, people[i], current[i], choices[int(rng.integers(4))])
            out.append(time.perf_counter() - t)
            current[i] = r["query"]["query_id"]
        return out

    loop(200)
    ms = np.array(loop(args.calls)) * 1000
    result = {
        "calls": args.calls,
        "db": url.split(":", 1)[0],
        "ms_p50": round(float(np.percentile(ms, 50)), 2),
        "ms_mean": round(float(ms.mean()), 2),
        "ms_p99": round(float(np.percentile(ms, 99)), 2),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
