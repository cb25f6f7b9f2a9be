"""Docs, docstrings and comments name only files that exist in the repository.

Every repository path with a file extension (``pbrl/run/report.py``, ``docs/runner.md``,
``results/quick/table.md``) written in a Markdown file, a Python file or a suite must exist.
Dataset ids (``pbrl/metaworld/.../medium-replay-v0``) have no extension and are not paths;
placeholders in capitals (``TASK``) and globs are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = r"(?:pbrl|agents|datasets|envs|tests|bench|docs|results|examples|\.ci)"
PATH = re.compile(
    rf"(?<![\w/.-]){TOP}/[\w./-]*\.(?:py|md|toml|json|png|csv|npz|jsonl|txt)(?![\w/])"
)
SKIP_DIRS = {".git", ".venv", "build", "__pycache__"}


def stale_paths() -> list[str]:
    out = []
    for f in sorted(ROOT.rglob("*")):
        if f.suffix not in (".md", ".py", ".toml") or SKIP_DIRS & set(f.relative_to(ROOT).parts):
            continue
        for n, line in enumerate(f.read_text(errors="replace").splitlines(), 1):
            for m in PATH.finditer(line):
                path = m.group(0)
                if re.search(r"[A-Z]{3,}|\*|\.\.", path):  # placeholders, globs, escapes
                    continue
                if not (ROOT / path).exists():
                    out.append(f"{f.relative_to(ROOT)}:{n}: {path}")
    return out


def test_docs_and_code_name_only_files_that_exist():
    stale = stale_paths()
    assert not stale, "paths that do not exist:\n" + "\n".join(stale)
