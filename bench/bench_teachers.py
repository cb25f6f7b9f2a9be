"""Labels per second for every teacher preset at L = 50 over 1M pairs (issue 3, item 7).

Run: ``python bench/bench_teachers.py [--pairs 1000000] [--length 50] [--chunk 250000]``.
BLAS and OpenMP are pinned to one thread, so the figures are one-core figures. Pairs are
labelled in chunks (the rewards of 1M pairs of length 50 are 800 MB in float64); only the
``label`` calls are timed, not the random data. Dataset-dependent quantities are set directly
(``chunk_return``, ``score_scale``) as ``prepare`` would; the regret teacher uses a linear value
function (a stand-in: a real SAC critic costs a torch forward pass on 2B states).
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402

from pbrl.teachers import SegmentPairs, list_teachers, make_teacher  # noqa: E402


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--length", type=int, default=50)
    ap.add_argument("--chunk", type=int, default=250_000)
    ap.add_argument("--obs-dim", type=int, default=17)
    args = ap.parse_args()
    L, D = args.length, args.obs_dim
    rng = np.random.default_rng(0)
    w = rng.normal(size=D)

    def value_fn(obs: np.ndarray) -> np.ndarray:
        return obs @ w

    teachers = {}
    for name in list_teachers():
        kw = {"value_fn": value_fn} if name == "regret" else {}
        t = make_teacher(name, **kw)
        if hasattr(t, "chunk_return") and (t.eps_skip > 0 or t.eps_equal > 0):
            t = replace(t, chunk_return=2.0 * L)
        if getattr(t, "beta_units", "raw") == "std":
            t = replace(t, score_scale=30.0)
        teachers[name] = t
    teachers["myopic+mistake"] = make_teacher("myopic+mistake")
    teachers["regret+stoc"] = replace(
        make_teacher("regret+stoc", value_fn=value_fn), score_scale=30.0
    )

    elapsed = dict.fromkeys(teachers, 0.0)
    done = 0
    while done < args.pairs:
        b = min(args.chunk, args.pairs - done)
        # MuJoCo-like rewards: per-step ~ N(2, 1) plus a per-segment offset
        ra = rng.normal(2.0, 1.0, (b, L)) + rng.normal(0, 1, (b, 1))
        rb = rng.normal(2.0, 1.0, (b, L)) + rng.normal(0, 1, (b, 1))
        plain = SegmentPairs(ra, rb)
        with_obs = SegmentPairs(
            ra,
            rb,
            obs_a=rng.normal(size=(b, 1, D)),  # the regret teacher reads s_0 only
            obs_b=rng.normal(size=(b, 1, D)),
            next_obs_last_a=rng.normal(size=(b, D)),
            next_obs_last_b=rng.normal(size=(b, D)),
        )
        for name, t in teachers.items():
            pairs = with_obs if name.startswith("regret") else plain
            lrng = np.random.default_rng(done)
            t0 = time.perf_counter()
            prefer, answered = t.label(pairs, lrng)
            elapsed[name] += time.perf_counter() - t0
            assert prefer.shape == (b,) and answered.shape == (b,)
        done += b

    print(
        f"machine: {cpu_name()}, 1 thread, numpy {np.__version__}, Python {platform.python_version()}"
    )
    print(f"{args.pairs:,} pairs, L = {L}, chunks of {args.chunk:,}\n")
    print(f"{'teacher':<18} {'pairs/s':>14} {'ns/pair':>10}")
    for name, s in elapsed.items():
        print(f"{name:<18} {args.pairs / s:>14,.0f} {1e9 * s / args.pairs:>10.1f}")


if __name__ == "__main__":
    main()
