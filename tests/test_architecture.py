"""The layers of docs/architecture.md, checked on the source: no import cycles (module-level
or inside functions) and no import from a lower layer into a higher one.

The graph is read with ``ast`` from every module the distribution installs (``pbrl/`` and
the ``envs/``, ``agents/``, ``datasets/`` folders installed as ``pbrl.envs``, ...), so an
import hidden in a function counts as much as one at the top of a file.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# installed package -> folder in the repository (pyproject.toml's package-dir)
FOLDERS = {
    "pbrl": "pbrl",
    "pbrl.envs": "envs",
    "pbrl.agents": "agents",
    "pbrl.datasets": "datasets",
}

# Layer of each package (longest prefix wins); a module may import only its own layer or
# lower ones. Kept in step with docs/architecture.md.
LAYERS = {
    "pbrl": 0,  # the package itself: version only
    "pbrl.errors": 0,
    "pbrl.types": 0,
    "pbrl.utils": 0,
    "pbrl.envs": 1,
    "pbrl.datasets": 2,
    "pbrl.teachers": 3,
    "pbrl.prefs": 3,
    "pbrl.learn": 4,
    "pbrl.agents": 4,
    "pbrl.run": 5,
    "pbrl.suites": 5,
    "pbrl.ui": 5,
    "pbrl.cli": 6,
    "pbrl.__main__": 6,
}


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for pkg, folder in FOLDERS.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base)
            if pkg == "pbrl" and rel.parts[0] in ("envs", "agents", "datasets"):
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([pkg, *parts])] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports anywhere in its file.

    ``from pkg import sub`` where ``sub`` is a module is an edge to ``pkg.sub`` (a package's
    ``__init__`` runs for any submodule import; that is structure, not a dependency).
    """
    mods = _modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in mods else base)
            for t in targets:
                o = owner(t) if t.startswith("pbrl") else None
                if o is not None and o != mod:
                    graph[mod].add(o)
    return graph


def layer(mod: str) -> int:
    best = max(
        (k for k in LAYERS if mod == k or (k != "pbrl" and mod.startswith(k + "."))),
        key=len,
        default=None,
    )
    assert best is not None, f"{mod}: no layer in tests/test_architecture.py LAYERS"
    return LAYERS[best]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    nodes = set(graph) | {t for ts in graph.values() for t in ts}
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    advanced = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_every_module_has_a_layer():
    for mod in _modules():
        layer(mod)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"import cycles (function-local imports included): {found}"


def test_no_import_from_a_lower_layer_into_a_higher_one():
    upward = sorted(
        f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
        for m, ts in import_graph().items()
        for t in ts
        if layer(t) > layer(m)
    )
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_the_checks_catch_a_cycle_and_an_upward_import():
    graph = {"pbrl.prefs.a": {"pbrl.learn.b"}, "pbrl.learn.b": {"pbrl.prefs.a"}}
    assert cycles(graph) == [["pbrl.learn.b", "pbrl.prefs.a"]]
    assert layer("pbrl.learn.b") > layer("pbrl.prefs.a")


def local_project_imports() -> list[str]:
    """Project imports inside functions, outside the CLI (which defers them to keep
    ``pbrl --help`` fast) and outside ``try`` blocks (optional pieces)."""
    out = []
    for mod, path in _modules().items():
        if mod.startswith("pbrl.cli"):
            continue
        tree = ast.parse(path.read_text(), str(path))
        guarded = {
            id(n)
            for t in ast.walk(tree)
            if isinstance(t, ast.Try)
            for b in t.body
            for n in ast.walk(b)
        }
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in guarded:
                    if isinstance(node, ast.ImportFrom):
                        project = bool(node.level) or (node.module or "").startswith("pbrl")
                    else:
                        project = any(a.name.startswith("pbrl") for a in node.names)
                    if project:
                        out.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return sorted(set(out))


def test_project_imports_sit_at_module_level():
    # A function-local import of a project module is how import cycles were hidden.
    assert not local_project_imports(), local_project_imports()


def _private_uses(path: Path) -> list[str]:
    """``from pbrl.x import _name`` and ``module._name`` on an imported project module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    bad: list[str] = []
    project_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "pbrl":
                continue
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    bad.append(f"{where}:{node.lineno}: {node.module}.{a.name}")
                else:
                    project_aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "pbrl":
                    project_aliases.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and isinstance(node.value, ast.Name)
            and node.value.id in project_aliases
        ):
            bad.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr}")
    return bad


def test_no_private_names_across_modules() -> None:
    """pbrl, the learners, datasets, tasks, bench/ and the example use each other's public
    names only (issue 18): a private name is free to change without breaking a caller."""
    files = [
        p
        for folder in (*FOLDERS.values(), "bench", "examples")
        for p in (ROOT / folder).rglob("*.py")
    ]
    bad = [b for p in sorted(set(files)) for b in _private_uses(p)]
    assert not bad, "private names used from another module:\n" + "\n".join(bad)


def test_the_private_name_check_catches_both_forms(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("from pbrl.run.train import _x\nimport pbrl.utils as u\nu._probe(1)\n")
    assert [b.split(": ", 1)[1] for b in _private_uses(f)] == ["pbrl.run.train._x", "u._probe"]


def test_learners_import_the_kit_never_each_other() -> None:
    """An agent file imports pbrl.learn (the kit) and lower layers, never another learner;
    the example plug-in likewise (issue 18)."""
    graph = import_graph()
    bad = sorted(
        f"{m} imports {t}"
        for m, ts in graph.items()
        if m.startswith("pbrl.agents.")
        for t in ts
        if t.startswith("pbrl.agents")
    )
    example = ROOT / "examples" / "my_agent.py"
    for node in ast.walk(ast.parse(example.read_text(), str(example))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pbrl.agents"):
            bad.append(f"examples/my_agent.py imports {node.module}")
        if isinstance(node, ast.Import):
            bad += [
                f"examples/my_agent.py imports {a.name}"
                for a in node.names
                if a.name.startswith("pbrl.agents")
            ]
    assert not bad, "learners importing learners:\n" + "\n".join(bad)


def test_learners_build_adam_through_the_kit() -> None:
    """Every learner's Adam and AdamW come from ``pbrl.learn.kit.fused_adam`` (one kernel over
    all parameters; docs/performance.md), never ``torch.optim.Adam``/``AdamW`` directly."""
    bad = []
    for path in sorted((ROOT / "agents").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr in ("Adam", "AdamW"):
                bad.append(f"agents/{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, "optimizers built outside kit.fused_adam:\n" + "\n".join(bad)
