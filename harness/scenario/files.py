"""Which YAML files are scenarios: what collection and ``python -m harness
validate`` look for in a directory of scenarios and policy manifests."""

from __future__ import annotations

import re
from pathlib import Path

SCENARIO_SUFFIXES = (".yaml", ".yml")
SCENARIO_NAME_SUFFIXES = (".scenario.yaml", ".scenario.yml")

#: How much of a YAML file is read to tell a scenario from another YAML file.
_SNIFF_BYTES = 64 * 1024
_SCENARIO_KEY = re.compile(r"^(namespaces|steps|expect|description)\s*:", re.MULTILINE)
_MANIFEST_KEY = re.compile(r"^(apiVersion|kind)\s*:", re.MULTILINE)


def looks_like_scenario(path: Path) -> bool:
    """A YAML file whose top-level keys are a scenario's (``namespaces``,
    ``description``, ...) rather than a manifest's (``apiVersion``, ``kind``) or
    anything else: how a file found in a scenario directory is told apart from the
    policy files that live next to scenarios."""
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return False
    return bool(_SCENARIO_KEY.search(head)) and not _MANIFEST_KEY.search(head)
