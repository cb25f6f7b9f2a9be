"""``pbrl report`` on malformed run folders and unwritable outputs; ``tasks``, ``agents`` and
``version`` with unknown ids and bad options.

Report cases copy the finished ``pbrl train`` run (``world.run``: config.json, summary.json,
eval.csv, no job.json) to ``runs/r1`` and corrupt one file of the copy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from bad_inputs import Case, World


def _run(w: World) -> Path:
    return w.copy(w.run, "runs/r1")


def _summary(**fields: object) -> Callable[[World], list[str]]:
    """The run's summary.json with ``fields`` replaced (None: the JSON null)."""

    def argv(w: World) -> list[str]:
        d = _run(w)
        summary = json.loads((d / "summary.json").read_text())
        summary.update(fields)
        (d / "summary.json").write_text(json.dumps(summary))
        return ["report", "runs"]

    return argv


def _drop(key: str) -> Callable[[World], list[str]]:
    def argv(w: World) -> list[str]:
        d = _run(w)
        summary = json.loads((d / "summary.json").read_text())
        del summary[key]
        (d / "summary.json").write_text(json.dumps(summary))
        return ["report", "runs"]

    return argv


def _raw(name: str, content: bytes) -> Callable[[World], list[str]]:
    def argv(w: World) -> list[str]:
        (_run(w) / name).write_bytes(content)
        return ["report", "runs"]

    return argv


def _link(name: str, target: str) -> Callable[[World], list[str]]:
    def argv(w: World) -> list[str]:
        d = _run(w)
        (d / name).unlink()
        (d / name).symlink_to(target)
        return ["report", "runs"]

    return argv


def _folder(name: str) -> Callable[[World], list[str]]:
    def argv(w: World) -> list[str]:
        d = _run(w)
        (d / name).unlink(missing_ok=True)
        (d / name).mkdir()
        (d / name / "x").write_text("{}")
        return ["report", "runs"]

    return argv


def _job(**fields: object) -> Callable[[World], list[str]]:
    """A job.json (as ``pbrl bench`` writes) beside the run, with ``fields`` over valid ones."""

    def argv(w: World) -> list[str]:
        d = _run(w)
        job = {"agent": "bc", "dataset": w.dataset_id, "seed": 0, "label": "bc"}
        job.update(fields)
        (d / "job.json").write_text(json.dumps(job))
        return ["report", "runs"]

    return argv


def _with_run(*args: str) -> Callable[[World], list[str]]:
    def argv(w: World) -> list[str]:
        _run(w)
        (w.cwd / "file.txt").write_text("a regular file\n")
        return ["report", "runs", *args]

    return argv


def _files(files: dict[str, str]) -> Callable[[World], list[str]]:
    def argv(w: World) -> list[str]:
        for name, text in files.items():
            p = w.cwd / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        return ["agents", "show", next(iter(files)).removesuffix(".py").replace("/", ".")]

    return argv


def _empty(w: World) -> list[str]:
    (w.cwd / "runs").mkdir()
    return ["report", "runs"]


def _no_runs(w: World) -> list[str]:
    (w.cwd / "runs" / "notes").mkdir(parents=True)
    (w.cwd / "runs" / "notes" / "todo.txt").write_text("nothing here\n")
    (w.cwd / "runs" / "eval.csv").write_text("step,score\n1,2\n")
    return ["report", "runs"]


def _unfinished(w: World) -> list[str]:
    (_run(w) / "summary.json").unlink()  # a run that never finished
    return ["report", "runs"]


def _a_file(w: World) -> list[str]:
    (w.cwd / "runs.txt").write_text("x\n")
    return ["report", "runs.txt"]


CASES = [
    # --- malformed summary.json ---
    Case(
        "report-summary-not-json",
        _raw("summary.json", b'{"final_score": 1'),
        ("summary.json", "JSON"),
    ),
    Case(
        "report-summary-not-utf8",
        _raw("summary.json", b'{"agent": "\xff\xfe"}'),
        ("summary.json", "UTF-8"),
    ),
    Case("report-summary-empty", _raw("summary.json", b""), ("summary.json", "JSON")),
    Case("report-summary-a-list", _raw("summary.json", b"[1, 2]"), ("summary.json", "object")),
    Case(
        "report-summary-score-null",
        _summary(final_score=None),
        ("no finished runs", "r1", "no score"),
    ),
    Case("report-summary-score-string", _summary(final_score="high"), ("final_score", "number")),
    Case("report-summary-score-bool", _summary(final_score=True), ("final_score", "number")),
    Case("report-summary-score-nan", _summary(final_score=float("nan")), ("final_score", "finite")),
    Case("report-summary-score-inf", _summary(final_score=float("inf")), ("final_score", "finite")),
    Case("report-summary-no-score", _drop("final_score"), ("summary.json", "score")),
    Case("report-summary-no-agent", _drop("agent"), ("summary.json", "agent", "missing")),
    Case("report-summary-no-dataset", _drop("dataset"), ("summary.json", "dataset")),
    Case("report-summary-seed-string", _summary(seed="0"), ("summary.json", "seed")),
    Case("report-summary-seed-negative", _summary(seed=-3), ("summary.json", "seed")),
    Case("report-summary-agent-number", _summary(agent=7), ("summary.json", "agent")),
    # --- malformed job.json (pbrl bench's runs) ---
    Case("report-job-not-json", _raw("job.json", b"{,}"), ("job.json", "JSON")),
    Case("report-job-budget-string", _job(budget="many"), ("job.json", "budget")),
    Case("report-job-budget-zero", _job(budget=0), ("job.json", "budget")),
    Case("report-job-label-number", _job(label=3), ("job.json", "label")),
    Case("report-job-teacher-list", _job(teacher=["oracle"]), ("job.json", "teacher")),
    Case("report-job-seed-float", _job(seed=1.5), ("job.json", "seed")),
    Case("report-job-no-dataset", _job(dataset=None), ("job.json", "dataset", "missing")),
    # --- malformed eval.csv ---
    Case("report-eval-empty", _raw("eval.csv", b""), ("eval.csv", "empty")),
    Case(
        "report-eval-no-score-column", _raw("eval.csv", b"step,ret\n4,1\n"), ("eval.csv", "score")
    ),
    Case(
        "report-eval-score-text",
        _raw("eval.csv", b"step,score\n4,abc\n"),
        ("eval.csv", "line 2", "score"),
    ),
    Case("report-eval-score-nan", _raw("eval.csv", b"step,score\n4,nan\n"), ("eval.csv", "finite")),
    Case(
        "report-eval-score-inf", _raw("eval.csv", b"step,score\n4,-inf\n"), ("eval.csv", "finite")
    ),
    Case("report-eval-step-text", _raw("eval.csv", b"step,score\nfour,1\n"), ("eval.csv", "step")),
    Case(
        "report-eval-step-negative", _raw("eval.csv", b"step,score\n-4,1\n"), ("eval.csv", "step")
    ),
    Case("report-eval-short-row", _raw("eval.csv", b"step,score,x\n4,1\n"), ("eval.csv", "fields")),
    Case("report-eval-long-row", _raw("eval.csv", b"step,score\n4,1,2\n"), ("eval.csv", "fields")),
    Case("report-eval-not-utf8", _raw("eval.csv", b"step,score\n4,\xff\n"), ("eval.csv", "UTF-8")),
    Case("report-eval-nul-byte", _raw("eval.csv", b"step,score\n4,\x001\n"), ("eval.csv",)),
    Case("report-eval-a-device", _link("eval.csv", "/dev/zero"), ("eval.csv", "regular file")),
    Case("report-job-a-folder", _folder("job.json"), ("job.json", "regular file")),
    Case("report-summary-a-folder", _folder("summary.json"), ("summary.json", "regular file")),
    # --- folders without runs ---
    Case("report-empty-folder", _empty, ("no finished runs",)),
    Case("report-folder-without-runs", _no_runs, ("no finished runs",)),
    Case("report-unfinished-run", _unfinished, ("no finished runs",)),
    Case("report-missing-folder", lambda w: ["report", "nope"], ("nope", "does not exist")),
    Case("report-folder-is-a-file", _a_file, ("runs.txt", "not a folder")),
    # --- options and outputs: checked before anything is written ---
    Case("report-format-bogus", _with_run("--format", "bogus"), ("--format", "bogus")),
    Case("report-output-in-proc", _with_run("-o", "/proc/pbrl-table.md"), ("-o", "/proc")),
    Case("report-output-under-a-file", _with_run("-o", "file.txt/t.md"), ("-o", "file.txt")),
    Case("report-output-is-a-folder", _with_run("-o", "runs"), ("-o", "folder")),
    Case(
        "report-plots-dir-in-proc",
        _with_run("--plots", "--plots-dir", "/proc/pbrl-plots"),
        ("--plots-dir", "/proc"),
    ),
    Case(
        "report-plots-dir-under-a-file",
        _with_run("--plots", "--plots-dir", "file.txt/plots"),
        ("--plots-dir", "file.txt"),
    ),
    Case(
        "report-plots-dir-is-a-file",
        _with_run("--plots", "--plots-dir", "file.txt"),
        ("--plots-dir", "file.txt"),
    ),
    Case(
        "report-plots-with-bad-output",
        _with_run("--plots", "--plots-dir", "plots", "-o", "/proc/pbrl-table.md"),
        ("-o",),
    ),
    # --- pbrl tasks ---
    Case("tasks-unknown-domain", lambda w: ["tasks", "list", "--domain", "bogus"], ("bogus",)),
    Case("tasks-unknown-id", lambda w: ["tasks", "info", "mujoco/bogus"], ("mujoco/bogus",)),
    Case("tasks-empty-id", lambda w: ["tasks", "info", ""], ("task id",)),
    Case("tasks-path-as-id", lambda w: ["tasks", "info", "../../etc/passwd"], ("task id",)),
    Case("tasks-info-missing-id", lambda w: ["tasks", "info"], ("missing",), usage=True),
    Case("tasks-unknown-option", lambda w: ["tasks", "list", "--bogus"], ("--bogus",), usage=True),
    # --- pbrl agents ---
    Case("agents-unknown", lambda w: ["agents", "show", "bogus"], ("bogus", "unknown agent")),
    Case("agents-relative-path", lambda w: ["agents", "show", "..x"], ("..x", "dotted")),
    Case("agents-trailing-dot", lambda w: ["agents", "show", "cpl."], ("cpl.", "dotted")),
    Case(
        "agents-missing-module",
        lambda w: ["agents", "show", "pbrl_no_such_pkg.agent"],
        ("pbrl_no_such_pkg",),
    ),
    Case("agents-not-an-agent", lambda w: ["agents", "show", "json.decoder"], ("Config",)),
    Case(
        "agents-plugin-syntax-error",
        _files({"pbrlcase_syntax/agent.py": "class Config(:\n"}),
        ("syntax error", "agent.py", "line 1"),
    ),
    Case(
        "agents-plugin-raises-on-import",
        _files({"pbrlcase_raises/agent.py": "raise RuntimeError('boom\\nsecond line')\n"}),
        ("importing", "boom"),
        # The import compiles the module: its bytecode cache is the only thing written.
        may_write=("pbrlcase_raises/__pycache__",),
    ),
    Case("agents-show-missing-name", lambda w: ["agents", "show"], ("missing",), usage=True),
    Case("agents-list-extra-argument", lambda w: ["agents", "list", "x"], ("x",), usage=True),
    # --- pbrl version ---
    Case("version-extra-argument", lambda w: ["version", "x"], ("x",), usage=True),
    Case("version-unknown-option", lambda w: ["version", "--bogus"], ("--bogus",), usage=True),
]
