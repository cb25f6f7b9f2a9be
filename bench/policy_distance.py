"""How far each trained policy's actions are from the dataset's, on successful and on failed
episodes: a look inside a table's runs that needs no environment.

    python bench/policy_distance.py RUNS_FOLDER [--rows 20000] [--seed 0]

For every finished run in RUNS_FOLDER (a ``pbrl bench`` output folder: each run's
``config.json`` and ``checkpoint.pt``), the learner is rebuilt from its recorded agent,
preset and overrides, its checkpoint loaded, and its deterministic action computed on up to
``--rows`` dataset transitions drawn uniformly (the same rows for every run of a dataset).
The distance of a row is DPPO's: ``|| (pi(s) - a) / 2 ||_2`` with actions in [-1, 1]. The
rows are split by whether their episode succeeded (MetaWorld: any step with success; the
dataset's ``successes``), so the table shows whether a policy sits nearer the actions of
successful episodes than of failed ones, and how near the data it is at all. Prints one
Markdown row per learner (mean over its seeds, and each seed) and writes nothing.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from pbrl.datasets.registry import load_dataset
from pbrl.learn.api import AgentSpec, load_agent_module, make_config


def _episode_success(ds) -> np.ndarray:
    """(N,) bool: the row's episode has a successful step."""
    if ds.successes is None:
        raise SystemExit(f"{ds.id}: stores no successes")
    ok = np.zeros(ds.num_steps, bool)
    for s, n in zip(ds.starts, ds.lengths, strict=True):
        ok[s : s + n] = bool(np.any(ds.successes[s : s + n]))
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    datasets: dict[str, tuple] = {}
    rows: dict[tuple[str, str], list[tuple[int, float, float, float]]] = defaultdict(list)
    for cfg_path in sorted(args.runs.glob("*/config.json")):
        run = cfg_path.parent
        if not (run / "checkpoint.pt").is_file() or not (run / "summary.json").is_file():
            continue
        config = json.loads(cfg_path.read_text())
        spec = config["spec"]
        if config.get("online") or not config.get("dataset_id"):
            continue
        ds_id = config["dataset_id"]
        if ds_id not in datasets:
            ds = load_dataset(spec["dataset"] or ds_id)
            rng = np.random.default_rng(args.seed)
            idx = rng.choice(ds.num_steps, size=min(args.rows, ds.num_steps), replace=False)
            datasets[ds_id] = (ds, idx, _episode_success(ds)[idx])
        ds, idx, ok = datasets[ds_id]
        mod = load_agent_module(spec["agent"])
        cfg = make_config(mod, spec.get("preset"), dict(spec.get("overrides") or {}))
        one = np.ones(ds.act_dim, np.float32)
        agent = mod.Agent(cfg, AgentSpec(ds.obs_dim, ds.act_dim, -one, one, "cpu"))
        state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
        agent.load_state_dict(state["agent"])
        pred = np.asarray(agent.act(ds.observations[idx]), np.float64)
        d = np.linalg.norm((pred - ds.actions[idx]) / 2.0, axis=1)
        summary = json.loads((run / "summary.json").read_text())
        job = run / "job.json"  # the runner's record: the suite's label of the learner
        name = json.loads(job.read_text()).get("label") if job.is_file() else None
        rows[(name or spec["agent"], ds_id)].append(
            (int(spec["seed"]), float(summary.get("final_score", float("nan"))),
             float(d[ok].mean()) if ok.any() else float("nan"),
             float(d[~ok].mean()) if (~ok).any() else float("nan"))
        )  # fmt: skip
    for ds_id, (_ds, idx, ok) in datasets.items():
        print(f"\n{ds_id}: {len(idx)} rows, {ok.mean():.1%} of them from successful episodes")
        print("| learner | seeds | score | distance, successful episodes | failed episodes |")
        print("|---|---|---|---|---|")
        for (name, d_id), rs in sorted(rows.items()):
            if d_id != ds_id:
                continue
            rs.sort()
            cols = [np.mean([r[k] for r in rs]) for k in (1, 2, 3)]
            per = " / ".join(f"{r[2]:.3f}" for r in rs)
            print(f"| {name} | {len(rs)} | {cols[0]:.1f} | {cols[1]:.3f} ({per}) | {cols[2]:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
