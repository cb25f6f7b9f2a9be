"""Benchmark suites: parsing, validation and expansion into a job list.

A suite is a TOML or YAML file (or a name shipped in ``pbrl/suites/``)::

    name = "quick"
    seeds = [0, 1]
    steps = 20000            # updates per run (an agent entry may override)
    eval_every = 5000
    eval_episodes = 10
    segment = 64
    budgets = [2500]         # query budgets
    teachers = ["oracle"]
    selector = "uniform"

    [[datasets]]             # a dataset id, or a task + kind to generate
    task = "metaworld/button-press-topdown-v3"
    kind = "medium-replay"
    build = { episodes = 100 }

    [[datasets]]             # kind "online": no dataset, the task's environment itself,
    task = "dmc/walker-walk" # for online learners (agents/pebble.py); their runs ask the
    kind = "online"          # teacher during training, up to the budget (docs/online.md)

    [[agents]]
    name = "iql"             # registry key or dotted path
    label = "iql-true"       # row name in tables (default: name)
    preset = "quick"
    steps = 10000
    overrides = { reward = "true" }
    teachers = ["oracle"]    # this agent's teachers (default: the suite's)

Every field is checked; an error names the file and the field.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from pbrl.errors import PbrlError, UnknownIdError
from pbrl.utils import MAX_SEED, read_text_file

# A dataset entry of kind "online" is a task's environment: its jobs' ``dataset`` is
# ``online/<task id>`` and their learner collects its own data (agents/pebble.py).
ONLINE_KIND = "online"
ONLINE_PREFIX = "online/"


@dataclass(frozen=True)
class DatasetEntry:
    id: str | None = None
    task: str | None = None
    kind: str | None = None
    build: dict[str, Any] = field(default_factory=dict)
    budgets: tuple[int, ...] | None = None
    """This entry's query budgets (default: the suite's)."""
    steps: int | None = None
    """Steps of runs on this entry (default: the suite's; an agent entry's ``steps`` wins)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Agent options for every run on this entry (an agent entry's own overrides win): the
    per-task settings of a protocol, e.g. B-Pref's learning rate and feedback interval."""

    @property
    def online(self) -> bool:
        return self.kind == ONLINE_KIND

    def dataset_id(self) -> str:
        if self.id:
            return self.id
        if self.online:
            return f"{ONLINE_PREFIX}{self.task}"
        domain, name = self.task.split("/", 1)  # type: ignore[union-attr]
        return f"pbrl/{domain}/{name}/{self.kind}-v0"


@dataclass(frozen=True)
class AgentEntry:
    name: str
    label: str
    preset: str | None = None
    steps: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    teachers: tuple[str, ...] | None = None
    """This agent's teachers (default: the suite's), e.g. random labels for PEBBLE only."""


@dataclass(frozen=True)
class Suite:
    name: str
    datasets: tuple[DatasetEntry, ...]
    agents: tuple[AgentEntry, ...]
    seeds: tuple[int, ...] = (0,)
    steps: int = 10000
    eval_every: int = 5000
    eval_episodes: int = 10
    segment: int = 64
    budgets: tuple[int, ...] = (1000,)
    teachers: tuple[str, ...] = ("oracle",)
    selector: str = "uniform"
    label_seed: int | None = None  # None: label with each run's own seed
    description: str = ""
    source: str = ""


@dataclass(frozen=True)
class Job:
    """One training run, fully resolved. Its id is the hash of everything that matters."""

    suite: str
    agent: str
    label: str
    preset: str | None
    overrides: dict[str, Any]
    dataset: str
    teacher: str | None
    budget: int | None
    segment: int | None
    selector: str | None
    label_seed: int | None
    seed: int
    steps: int
    eval_every: int
    eval_episodes: int

    @property
    def uses_prefs(self) -> bool:
        return self.teacher is not None

    @property
    def online(self) -> bool:
        """An online run: ``dataset`` is ``online/<task>``; the teacher is asked while training."""
        return self.dataset.startswith(ONLINE_PREFIX)

    @property
    def task(self) -> str | None:
        """The task of an online run (None otherwise)."""
        return self.dataset[len(ONLINE_PREFIX) :] if self.online else None

    def identity(self) -> dict[str, Any]:
        """What the run id hashes: the label and suite name are display only."""
        d = asdict(self)
        d.pop("suite")
        d.pop("label")
        return d

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return f"{self.agent.rsplit('.', 1)[-1]}-{hashlib.sha256(blob).hexdigest()[:12]}"

    def prefs_key(self) -> str | None:
        if not self.uses_prefs or self.online:
            return None
        blob = json.dumps(
            [self.dataset, self.teacher, self.budget, self.segment, self.selector, self.label_seed]
        ).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_TOP_KEYS = {
    "name",
    "description",
    "datasets",
    "agents",
    "seeds",
    "steps",
    "eval_every",
    "eval_episodes",
    "segment",
    "budgets",
    "teachers",
    "selector",
    "label_seed",
}


def list_suites() -> list[str]:
    return sorted(
        p.name[: -len(".toml")]
        for p in resources.files("pbrl.suites").iterdir()
        if p.name.endswith(".toml")
    )


def load_suite(name_or_path: str) -> Suite:
    """A shipped suite by name, or a TOML/YAML file by path.

    A suite may start from another with ``extends = "NAME_OR_PATH"`` (a shipped suite's name,
    or a file path relative to the extending file): the base suite's fields are taken and
    the extending file's top-level fields replace them (lists are replaced, not merged). The
    suite's name defaults to the extending file's stem.
    """
    raw, where, stem = _load_raw(name_or_path, base_dir=None, chain=())
    return parse_suite(raw, where=where, default_name=stem)


def _load_raw(
    name_or_path: str, *, base_dir: Path | None, chain: tuple[str, ...]
) -> tuple[dict[str, Any], str, str]:
    """(fields with ``extends`` resolved, where (for errors), file stem)."""
    path = Path(name_or_path)
    if base_dir is not None and not path.is_absolute() and path.suffix:
        path = base_dir / path
    # a name without a suite file's suffix is a file only where such a file exists: a folder
    # of the same name (say, the output of `pbrl bench --out quick`) leaves it a suite name
    if path.suffix in (".toml", ".yaml", ".yml") or path.is_file():
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise PbrlError(f"suite file '{path}' {what}")
        where = str(path)
        text = read_text_file(path)
        here: Path | None = path.parent
    else:
        if name_or_path not in list_suites():
            folder = f" ('{path}' is a folder)" if path.is_dir() else ""
            raise UnknownIdError(
                f"unknown suite '{name_or_path}'{folder} (shipped: {', '.join(list_suites())}; "
                "or pass a .toml/.yaml file)"
            )
        text = resources.files("pbrl.suites").joinpath(f"{name_or_path}.toml").read_text()
        where = f"suite '{name_or_path}'"
        path = Path(f"{name_or_path}.toml")
        here = None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise PbrlError(f"{where}: not valid YAML ({' '.join(str(e).split())})") from e
    else:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise PbrlError(f"{where}: not valid TOML ({e})") from e
    if isinstance(raw, dict) and "extends" in raw:
        base = _want(where, "extends", raw["extends"], str, "a suite name or file path")
        if where in chain:
            raise PbrlError(f"{where}: field 'extends' makes a cycle ({' -> '.join(chain)})")
        base_raw, _, _ = _load_raw(base, base_dir=here, chain=(*chain, where))
        own = {k: v for k, v in raw.items() if k != "extends"}
        raw = {**{k: v for k, v in base_raw.items() if k != "name"}, **own}
    return raw, where, path.stem


def _want(where: str, key: str, value: Any, typ: type | tuple[type, ...], what: str) -> Any:
    if isinstance(value, bool) and typ in (int, (int, float)):
        raise PbrlError(f"{where}: field '{key}' must be {what}, got {value!r}")
    if not isinstance(value, typ):
        raise PbrlError(f"{where}: field '{key}' must be {what}, got {value!r}")
    return value


def _int_list(where: str, key: str, value: Any, *, positive: bool) -> tuple[int, ...]:
    if isinstance(value, str) and key == "seeds":
        return parse_seeds(value, where=f"{where}: field 'seeds'")
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    _want(where, key, value, list, "a list of integers")
    if not value:
        raise PbrlError(f"{where}: field '{key}' is empty")
    out = []
    what = "a positive integer" if positive else "a non-negative integer"
    for i, v in enumerate(value):
        if not isinstance(v, int) or isinstance(v, bool) or (positive and v <= 0) or v < 0:
            raise PbrlError(f"{where}: field '{key}[{i}]' must be {what}, got {v!r}")
        if key == "seeds" and v > MAX_SEED:
            raise PbrlError(f"{where}: field 'seeds[{i}]' is above the largest seed, {MAX_SEED}")
        if v in out:
            raise PbrlError(f"{where}: field '{key}' names {v} twice")
        out.append(v)
    if key == "seeds" and len(out) > MAX_SEEDS:
        raise PbrlError(f"{where}: field 'seeds' names over {MAX_SEEDS} seeds")
    return tuple(out)


# At most this many seeds in one sweep: a typo like '0-100000000' is refused at once instead
# of expanding (and hanging) in --dry-run.
MAX_SEEDS = 10_000
_SEED_PART = re.compile(r"(\d+)(?:-(\d+))?")


def parse_seeds(text: str, where: str = "--seeds") -> tuple[int, ...]:
    """'0-4' -> (0,1,2,3,4); '0,2,5' -> (0,2,5). Seeds are non-negative (``MAX_SEED`` at
    most), distinct, and at most :data:`MAX_SEEDS` of them."""
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        m = _SEED_PART.fullmatch(part)
        if m is None:
            if part.startswith("-") or "--" in part:
                raise PbrlError(f"{where}: seeds must be non-negative, got '{part}'")
            raise PbrlError(f"{where}: cannot read seeds '{text}' (use '0-4' or '0,1,2')")
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else int(m.group(2))
        if hi < lo:
            raise PbrlError(f"{where}: the range '{part}' is empty (write low-high)")
        if hi > MAX_SEED:
            raise PbrlError(f"{where}: seed {hi} is above the largest seed, {MAX_SEED}")
        if len(out) + (hi - lo + 1) > MAX_SEEDS:
            raise PbrlError(
                f"{where}: '{text}' names over {MAX_SEEDS} seeds (the most one sweep may run)"
            )
        out.extend(range(lo, hi + 1))
    if not out:
        raise PbrlError(f"{where}: no seeds in '{text}'")
    seen: set[int] = set()
    for x in out:
        if x in seen:
            raise PbrlError(f"{where}: seed {x} is named twice in '{text}'")
        seen.add(x)
    return tuple(out)


_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*")


def check_suite_name(name: Any, where: str) -> str:
    """A suite's name is its default output folder ``runs/<name>``: a plain folder name
    (letters, digits, ``._+-``; no ``/``, no ``..``, not hidden), so output stays in runs/."""
    _want(where, "name", name, str, "a string")
    if not _NAME_RE.fullmatch(name) or ".." in name or len(name) > 100:
        raise PbrlError(
            f"{where}: field 'name' must be a plain folder name (letters, digits, '._+-', "
            f"not starting with '.', no '/' or '..'), got {name!r}"
        )
    return name


def parse_suite(raw: Any, *, where: str, default_name: str = "suite") -> Suite:
    if not isinstance(raw, dict):
        raise PbrlError(f"{where}: a suite must be a table of fields")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise PbrlError(
            f"{where}: unknown field '{sorted(unknown)[0]}' (known: {', '.join(sorted(_TOP_KEYS))})"
        )
    for key in ("datasets", "agents"):
        if key not in raw:
            raise PbrlError(f"{where}: missing field '{key}'")
    if "name" in raw:
        name = check_suite_name(raw["name"], where)
    else:  # the file's stem, made a plain folder name
        name = re.sub(r"[^A-Za-z0-9._+-]+", "_", default_name).lstrip("._").replace("..", "_")
    kw: dict[str, Any] = {"name": name or "suite"}
    for key in ("steps", "eval_every", "eval_episodes", "segment", "label_seed"):
        if key in raw:
            v = _want(where, key, raw[key], int, "an integer")
            if v < 0 or (v == 0 and key != "label_seed"):
                raise PbrlError(f"{where}: field '{key}' must be positive, got {v}")
            if key == "label_seed" and v > MAX_SEED:
                raise PbrlError(
                    f"{where}: field 'label_seed' is above the largest seed, {MAX_SEED}"
                )
            kw[key] = v
    for key in ("description", "selector"):
        if key in raw:
            kw[key] = _want(where, key, raw[key], str, "a string")
    if "seeds" in raw:
        kw["seeds"] = _int_list(where, "seeds", raw["seeds"], positive=False)
    if "budgets" in raw:
        kw["budgets"] = _int_list(where, "budgets", raw["budgets"], positive=True)
    if "teachers" in raw:
        kw["teachers"] = _teachers(where, raw["teachers"])

    datasets = []
    _want(where, "datasets", raw["datasets"], list, "a list of tables")
    for i, d in enumerate(raw["datasets"]):
        w = f"{where}: datasets[{i}]"
        if isinstance(d, str):
            d = {"id": d}
        _want(where, f"datasets[{i}]", d, dict, "a table (id, or task + kind)")
        extra = set(d) - {"id", "task", "kind", "build", "budgets", "steps", "overrides"}
        if extra:
            raise PbrlError(f"{w}: unknown field '{sorted(extra)[0]}'")
        per: dict[str, Any] = {}
        if "budgets" in d:
            per["budgets"] = _int_list(w, "budgets", d["budgets"], positive=True)
        if "steps" in d:
            v = d["steps"]
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise PbrlError(f"{w}: field 'steps' must be a positive integer, got {v!r}")
            per["steps"] = v
        if "overrides" in d:
            per["overrides"] = _want(w, "overrides", d["overrides"], dict, "a table")
        if "id" in d:
            datasets.append(DatasetEntry(id=_want(w, "id", d["id"], str, "a string"), **per))
        else:
            if "task" not in d or "kind" not in d:
                raise PbrlError(f"{w}: needs 'id', or both 'task' and 'kind'")
            task = _want(w, "task", d["task"], str, "a task id like 'metaworld/button-press-v3'")
            if "/" not in task:
                raise PbrlError(f"{w}: field 'task' must look like 'domain/name', got '{task}'")
            build = _want(w, "build", d.get("build", {}), dict, "a table")
            datasets.append(
                DatasetEntry(
                    task=task,
                    kind=_want(w, "kind", d["kind"], str, "a string"),
                    build=build,
                    **per,
                )
            )
    if not datasets:
        raise PbrlError(f"{where}: field 'datasets' is empty")

    agents = []
    _want(where, "agents", raw["agents"], list, "a list of tables")
    for i, a in enumerate(raw["agents"]):
        w = f"{where}: agents[{i}]"
        if isinstance(a, str):
            a = {"name": a}
        _want(where, f"agents[{i}]", a, dict, "a table with 'name'")
        extra = set(a) - {"name", "label", "preset", "steps", "overrides", "teachers"}
        if extra:
            raise PbrlError(f"{w}: unknown field '{sorted(extra)[0]}'")
        if "name" not in a:
            raise PbrlError(f"{w}: missing field 'name'")
        name = _want(w, "name", a["name"], str, "a string")
        steps = a.get("steps")
        if steps is not None and (
            not isinstance(steps, int) or isinstance(steps, bool) or steps <= 0
        ):
            raise PbrlError(f"{w}: field 'steps' must be a positive integer, got {steps!r}")
        agents.append(
            AgentEntry(
                name=name,
                label=_want(w, "label", a.get("label", name), str, "a string"),
                preset=a.get("preset"),
                steps=steps,
                overrides=_want(w, "overrides", a.get("overrides", {}), dict, "a table"),
                teachers=_teachers(w, a["teachers"]) if "teachers" in a else None,
            )
        )
    if not agents:
        raise PbrlError(f"{where}: field 'agents' is empty")
    labels = [a.label for a in agents]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise PbrlError(f"{where}: two agents share the label '{sorted(dup)[0]}' (set 'label')")
    return Suite(datasets=tuple(datasets), agents=tuple(agents), source=where, **kw)


def _teachers(where: str, t: Any) -> tuple[str, ...]:
    if isinstance(t, str):
        t = [t]
    _want(where, "teachers", t, list, "a list of teacher names")
    if not t or not all(isinstance(x, str) for x in t):
        raise PbrlError(f"{where}: field 'teachers' must be a non-empty list of names")
    return tuple(t)


def expand(
    suite: Suite, *, seeds: tuple[int, ...] | None = None, prefs_needed: Any = None
) -> list[Job]:
    """The job list: agents x datasets x teachers x budgets x seeds.

    ``prefs_needed(agent_entry) -> bool`` says whether a learner reads preferences; runs that
    do not (true-/zero-reward IQL, BC on all data) drop teacher and budget from their identity,
    so one run serves every teacher/budget row and is trained once.
    """
    jobs: dict[str, Job] = {}
    for ds in suite.datasets:
        budgets = ds.budgets or suite.budgets
        for agent in suite.agents:
            uses = True if prefs_needed is None else bool(prefs_needed(agent))
            overrides = {**ds.overrides, **agent.overrides}
            teachers = agent.teachers or suite.teachers
            combos = [(t, b) for t in teachers for b in budgets] if uses else [(None, None)]
            for teacher, budget in combos:
                for seed in seeds or suite.seeds:
                    job = Job(
                        suite=suite.name,
                        agent=agent.name,
                        label=agent.label,
                        preset=agent.preset,
                        overrides=overrides,
                        dataset=ds.dataset_id(),
                        teacher=teacher,
                        budget=budget,
                        segment=suite.segment if uses else None,
                        selector=suite.selector if uses else None,
                        label_seed=(
                            (seed if suite.label_seed is None else suite.label_seed)
                            if uses
                            else None
                        ),
                        seed=seed,
                        steps=agent.steps or ds.steps or suite.steps,
                        eval_every=suite.eval_every,
                        eval_episodes=suite.eval_episodes,
                    )
                    jobs.setdefault(job.run_id, job)
    return list(jobs.values())
