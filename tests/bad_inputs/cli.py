"""Usage errors: Click's usage message and exit status 2, on any Typer/Click install."""

from __future__ import annotations

from bad_inputs import Case

CASES = [
    Case("no-arguments", lambda w: [], usage=True),
    Case("unknown-command", lambda w: ["bogus"], expect=("bogus",), usage=True),
    Case("unknown-option", lambda w: ["bench", "--bogus"], expect=("--bogus",), usage=True),
    Case("unknown-subcommand", lambda w: ["datasets", "bogus"], expect=("bogus",), usage=True),
    Case("missing-argument", lambda w: ["prefs", "stats"], expect=("missing",), usage=True),
    Case("missing-option", lambda w: ["train", "--agent", "bc"], expect=("missing",), usage=True),
    Case(
        "steps-not-a-number",
        lambda w: ["train", "--agent", "bc", "--dataset", w.dataset_id, "--steps", "abc"],
        expect=("--steps",),
        usage=True,
    ),
    Case(
        "workers-not-a-number",
        lambda w: ["bench", "--workers", "x"],
        expect=("--workers",),
        usage=True,
    ),
]
