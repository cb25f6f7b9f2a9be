"""Two output folders of the same suite, run by run: are they the same results?

    python bench/compare_sweeps.py runs/quick-before runs/quick-after

For every run id in both folders it compares the final score and return exactly, and for
every label file in ``prefs/`` every field (arrays, feedback records, metadata) except the
wall-clock creation times and the store path the dataset was read from. Exit status 0 when
everything matches, 1 otherwise. Used to show that a refactoring changed no result
(docs/architecture.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# Metadata that records when and from where, not what: allowed to differ.
VOLATILE_META = {"created", "dataset_path"}


def run_scores(root: Path) -> dict[str, tuple[str, int, object, object]]:
    out = {}
    for summary in sorted(root.glob("*/summary.json")):
        job = json.loads((summary.parent / "job.json").read_text())
        s = json.loads(summary.read_text())
        label = job.get("label") or job["agent"]
        out[summary.parent.name] = (label, job["seed"], s.get("final_score"), s.get("final_return"))
    return out


def label_differences(a: Path, b: Path) -> list[str]:
    za, zb = np.load(a), np.load(b)
    if sorted(za.files) != sorted(zb.files):
        return ["fields"]
    diff = []
    for key in za.files:
        x, y = za[key], zb[key]
        if key == "meta_json":
            ma, mb = json.loads(x.tobytes()), json.loads(y.tobytes())
            keys = {k for k in set(ma) | set(mb) if ma.get(k) != mb.get(k)} - VOLATILE_META
            diff += [f"meta.{k}" for k in sorted(keys)]
        elif key == "feedback_jsonl":

            def records(z: np.ndarray) -> list[dict]:
                rows = [json.loads(line) for line in z.tobytes().decode().splitlines() if line]
                return [{k: v for k, v in r.items() if k != "time"} for r in rows]

            if records(x) != records(y):
                diff.append("feedback")
        elif x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y):
            diff.append(key)
    return diff


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    a = ap.parse_args()
    ok = True
    ra, rb = run_scores(a.before), run_scores(a.after)
    if set(ra) != set(rb):
        print(f"run ids differ: {sorted(set(ra) ^ set(rb))}")
        ok = False
    same = 0
    for rid in sorted(set(ra) & set(rb), key=lambda r: ra[r][:2]):
        x, y = ra[rid], rb[rid]
        hit = x[2:] == y[2:]
        same += hit
        print(
            f"{'same' if hit else 'DIFF'}  {x[0]:10s} seed {x[1]}  score {x[2]} / {y[2]}  "
            f"return {x[3]} / {y[3]}"
        )
    print(f"{same}/{len(set(ra) & set(rb))} runs identical (final score and return)")
    ok &= same == len(ra) == len(rb)
    for fa in sorted((a.before / "prefs").glob("*.npz")):
        fb = a.after / "prefs" / fa.name
        diff = ["missing"] if not fb.exists() else label_differences(fa, fb)
        print(f"{'same' if not diff else 'DIFF'}  prefs/{fa.name}" + (f"  {diff}" if diff else ""))
        ok &= not diff
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
