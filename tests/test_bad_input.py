"""Every bad input a user can give, driven through the CLI: one line naming the file or field,
exit status 2, no traceback, nothing written.

The table lives in ``tests/bad_inputs/`` (one module per area). Cases run in this process
through :func:`pbrl.cli.main` (what the ``pbrl`` script calls), each in its own working
folder; the folder and the Minari store are snapshotted before and compared after.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from pathlib import Path

import bad_inputs
import pytest
from bad_inputs import Case, World

TASK = "metaworld/button-press-topdown-v3"


def _all_cases() -> list[Case]:
    cases: list[Case] = []
    for mod in sorted(pkgutil.iter_modules(bad_inputs.__path__), key=lambda m: m.name):
        cases.extend(importlib.import_module(f"bad_inputs.{mod.name}").CASES)
    ids = [c.id for c in cases]
    dup = {i for i in ids if ids.count(i) > 1}
    assert not dup, f"duplicate case ids: {sorted(dup)}"
    return cases


CASES = _all_cases()


def run_cli(argv: list[str]) -> int:
    from pbrl.cli import main

    try:
        main(argv)
    except SystemExit as e:
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The valid inputs every case starts from (built once: a few seconds)."""
    base = tmp_path_factory.mktemp("bad-input-world")
    store = base / "minari"
    store.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("MINARI_DATASETS_PATH", str(store))
    mp.chdir(base)
    try:
        from pbrl.datasets.metaworld_gen import build
        from pbrl.datasets.minari_io import minari_root
        from pbrl.datasets.registry import load_dataset
        from pbrl.prefs import label_dataset, save_preferences

        ds_id = build(TASK, "expert", episodes=4, seed=0, workers=1, horizon=60)
        ds_path = minari_root() / ds_id
        assert (ds_path / "data" / "metadata.json").is_file()
        prefs = base / "prefs.npz"
        save_preferences(label_dataset(load_dataset(ds_id), "oracle", 12, 10, 0), prefs)
        run = base / "run"
        rc = run_cli(
            [
                "train",
                "--agent",
                "bc",
                "--dataset",
                ds_id,
                "--steps",
                "4",
                "--seed",
                "0",
                "--eval-every",
                "4",
                "--eval-episodes",
                "1",
                "--device",
                "cpu",
                "--out",
                str(run),
            ]
        )
        assert rc == 0 and (run / "summary.json").is_file()
        suite = base / "suite.toml"
        suite.write_text(
            'name = "tiny"\nseeds = [0]\nsteps = 4\neval_every = 4\neval_episodes = 1\n'
            'segment = 10\nbudgets = [12]\nteachers = ["oracle"]\n'
            f'[[datasets]]\nid = "{ds_id}"\n[[agents]]\nname = "bc"\n'
        )
        yield {
            "store": store,
            "dataset_id": ds_id,
            "dataset_path": ds_path,
            "prefs": prefs,
            "run": run,
            "suite": suite,
        }
    finally:
        mp.undo()


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            size = 0 if p.is_dir() else st.st_size
            out[str(p.relative_to(root))] = (size, st.st_mtime_ns)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, shared, tmp_path, monkeypatch, capsys):
    cwd = tmp_path / "work"
    cwd.mkdir()
    world = World(cwd=cwd, task=TASK, **shared)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(world.store))
    monkeypatch.delenv("PBRL_DEBUG", raising=False)
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(cwd)
    argv = case.argv(world)
    before_cwd, before_store = snapshot(cwd), snapshot(world.store)
    capsys.readouterr()

    rc = run_cli(argv)

    out, err = capsys.readouterr()
    where = f"pbrl {' '.join(argv)}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in out + err, where
    assert rc == 2, f"exit status {rc}, want 2\n{where}"
    if case.usage:
        assert "Usage:" in out + err, where
    else:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), where
    for word in case.expect:
        assert word.lower() in err.lower(), f"error does not mention {word!r}\n{where}"

    after_cwd = snapshot(cwd)
    allowed = set(case.may_write)
    changed = {
        k
        for k in set(before_cwd) | set(after_cwd)
        if before_cwd.get(k) != after_cwd.get(k)
        and not any(k == a or k.startswith(a + os.sep) for a in allowed)
    }
    assert not changed, f"written or changed in the working folder: {sorted(changed)}\n{where}"
    after_store = snapshot(world.store)
    assert after_store == before_store, f"the Minari store changed\n{where}"
