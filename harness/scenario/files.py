"""Which YAML files are scenarios: what collection and ``python -m harness
validate`` look for in a directory of scenarios and policy manifests."""

from __future__ import annotations

import re
from pathlib import Path

SCENARIO_SUFFIXES = (".yaml", ".yml")
SCENARIO_NAME_SUFFIXES = (".scenario.yaml", ".scenario.yml")

#: How much of a YAML file is read to tell a scenario from another YAML file.
_SNIFF_BYTES = 64 * 1024
#: Every scenario has these top-level keys, one of each group (docs/scenario-format.md);
#: a file with two of them is a scenario, even one broken further down (its error is
#: then reported), and a file with one (a GitHub action's description) is not.
_SCENARIO_KEYS = (
    re.compile(r"^description\s*:", re.MULTILINE),
    re.compile(r"^(namespaces|workloads)\s*:", re.MULTILINE),
    re.compile(r"^(expect|steps)\s*:", re.MULTILINE),
)
_MANIFEST_KEY = re.compile(r"^(apiVersion|kind)\s*:", re.MULTILINE)


def looks_like_scenario(path: Path) -> bool:
    """A YAML file with at least two of a scenario's three kinds of top-level keys
    (``description``; ``namespaces`` or ``workloads``; ``expect`` or ``steps``) and
    none of a manifest's (``apiVersion``, ``kind``): how a file found in a directory
    searched for scenarios is told apart from the policy files and other YAML beside
    them."""
    try:
        with path.open("rb") as f:
            head = f.read(_SNIFF_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return False
    return sum(1 for key in _SCENARIO_KEYS if key.search(head)) >= 2 and not _MANIFEST_KEY.search(head)
