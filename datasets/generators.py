"""The dataset generators, one table: which module builds a domain's datasets.

Read by ``pbrl datasets build`` and by the runner (suites that name a task and a kind), so
a new generator is one module with a ``build(task_id, kind, **options)`` function and a
``KINDS`` tuple, plus one line here.
"""

from __future__ import annotations

import importlib
import types

from pbrl.errors import PbrlError

# domain -> generator module
GENERATORS = {
    "metaworld": "pbrl.datasets.metaworld_gen",
    "mujoco": "pbrl.datasets.sb3_gen",
    "dmc": "pbrl.datasets.sb3_gen",
}


def generator_for(task_id: str) -> types.ModuleType:
    """The generator module of ``task_id``'s domain; a one-line error when it has none."""
    domain = task_id.split("/", 1)[0]
    if domain not in GENERATORS:
        raise PbrlError(
            f"task '{task_id}': no local generator for domain '{domain}' (its datasets are "
            "downloaded: see `pbrl datasets list`)"
        )
    module_name = GENERATORS[domain]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise PbrlError(f"the {domain} generator ({module_name}) is missing") from None
