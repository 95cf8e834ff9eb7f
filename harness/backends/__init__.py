"""Backend registry: ``--backend NAME`` → module with ``create(options, progress=None)``.

Modules are imported only when chosen (cluster clients are slow to import), except
for ``add_options``, which every backend module may define to register its pytest
options; those modules therefore keep heavy imports inside functions.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from harness.core.errors import HarnessError

BACKENDS: dict[str, str] = {
    "kind": "harness.backends.kind",
    "existing": "harness.backends.existing",
    "emulated": "harness.backends.emulated",
    "model": "harness.backends.model",
}

DEFAULT_BACKEND = "kind"


def backend_module(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise HarnessError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def unavailable_message(name: str, err: Exception) -> str:
    """Why backend ``name`` cannot start, and how to run the same scenarios at once
    on a backend that needs less."""
    message = f"backend {name} is not available: {err}"
    if name in ("kind", "existing"):
        message += (
            "\nWithout a cluster, the same scenarios run at once on real packets with --backend emulated "
            "(as root), or against the reference model with --backend model."
        )
    elif name == "emulated":
        message += "\nWithout root, the same scenarios run against the reference model with --backend model."
    return message


def available_backend_modules() -> list[ModuleType]:
    """Modules that exist in this installation (for option registration)."""
    found = []
    for path in BACKENDS.values():
        try:
            found.append(importlib.import_module(path))
        except ModuleNotFoundError as err:
            if err.name != path:
                raise
    return found
